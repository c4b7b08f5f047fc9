"""update_repodata: regenerate one staging tree's repodata over all its packages and swap it in.

Staging keeps every package it published for the point release (no delete, so
downgrades keep working), and its metadata is regenerated over all of them.
Staging is web-served, so a client must never see a ``repomd.xml`` that names a
missing file; the new repodata is never built in place:

1. ``createrepo_c --update`` writes the new repodata into a scratch directory
   *outside* the tree, reusing the tree's current metadata (and the freshly
   synced repo's) for packages whose size and mtime are unchanged. It is given
   the comps group file (absolute path) from the build system's new repodata,
   else the one staging has.
2. ``modules`` and ``updateinfo`` are merged (staging's entries plus the build
   system's, the build system's winning for the same module stream version or
   advisory id: old packages stay listed, so their module and advisory must
   too) and added with ``modifyrepo_c``.
3. ``repomd.xml`` is signed (detached, armored ``repomd.xml.asc``) when a key is
   configured, and the signature is checked before anything is published.
4. :func:`swap_repodata`: the data files are written into ``<tree>/repodata``
   under temporary names and renamed (their names carry their checksum, so no
   file the current ``repomd.xml`` names changes), then ``repomd.xml``, then its
   signature (or a stale one is removed); only then are the data files no
   ``repomd.xml`` names any more deleted.

A tree whose input did not change (every package the build system's repo
lists is already in staging's metadata with the same checksum, and the groups,
modules and advisories add nothing) is left byte-identical: no createrepo_c run,
no new ``repomd.xml``. When it does change, the new metadata keeps the
compression staging's metadata has (createrepo_c's own default differs between
versions), and a ``repomd.xml`` that was signed is signed again: without a
signing key the tree is refused, never published unsigned.

``--retain-old-md`` is not passed: createrepo_c never writes into the published
directory here (its retention would act on the empty scratch directory), and
the swap deletes the superseded files itself, after the new ``repomd.xml`` is
in place. Keeping a generation longer would only carry stale metadata into
production and the mirror file lists; a client that read the old
``repomd.xml`` in the instant before the swap retries and gets the new one.
"""

from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from releng.core.checksums import file_digest
from releng.core.fs import atomic_write
from releng.core.modes import public_dirs
from releng.core.profile import ReleaseProfile
from releng.core.repo.metadata import open_metadata
from releng.core.repo.primary import iter_packages
from releng.core.repo.repomd import REPOMD, RepoError, hash_name, read_repomd, stale_metadata, tree_path
from releng.core.repo.verify import verify_repo
from releng.core.run import run
from releng.core.staging.signing import require_key, sign_repomd, signed_by
from releng.core.updates import UpdatesError

CHECKSUM = "sha256"
# For a new tree: xz, which every EL dnf reads (EL8's librepo has no zstd); explicit because createrepo_c 1.x
# defaults to zstd. A tree that has metadata keeps its compression (see compression_of).
COMPRESSION = "xz"
# createrepo_c's --compress-type names by file suffix.
_COMPRESSION_BY_SUFFIX = {".gz": "gz", ".xz": "xz", ".bz2": "bz2", ".zst": "zstd"}
GROUP_TYPES = ("group", "group_xz", "group_gz", "group_zck")
ADDED_SHOWN = 20  # new NEVRAs a tree's task result lists
MERGED_TYPES = {"modules": "modules.yaml", "updateinfo": "updateinfo.xml"}
_MODULE_KEYS = {
    "modulemd": ("name", "stream", "version", "context", "arch"),
    "modulemd-defaults": ("module",),
    "modulemd-translations": ("module", "stream"),
    "modulemd-obsoletes": ("module", "stream", "context", "modified"),
}


# --- argv builders --------------------------------------------------------------------------------


def distro_tag(profile: ReleaseProfile) -> str:
    """createrepo_c's ``--distro`` value: ``cpe:/o:rocky:rocky:9,Rocky Linux 9``."""
    short = profile.shortname.lower()
    return f"cpe:/o:{short}:{short}:{profile.major},{profile.distname} {profile.major}"


def createrepo_update_argv(tree: Path, outputdir: Path, *, reuse: Sequence[Path] = (), groupfile: Path | None = None,
                           distro: str = "", workers: int = 2, compression: str = COMPRESSION) -> list[str]:
    """``createrepo_c --update`` of the packages in ``tree``, metadata written to ``outputdir/repodata``.

    ``reuse``: repos whose metadata is reused for packages with unchanged size and mtime.
    ``--error-exit-val`` makes an unreadable package fail the run (createrepo_c skips it and exits 0 otherwise).
    """
    argv = ["createrepo_c", "--update", "--outputdir", str(outputdir), "--checksum", CHECKSUM,
            f"--general-compress-type={compression}", "--no-database", "--unique-md-filenames", "--error-exit-val",
            "--workers", str(max(1, workers))]
    for path in reuse:
        argv += ["--update-md-path", str(path)]
    if groupfile is not None:
        groupfile = Path(groupfile)
        if not groupfile.is_absolute():
            raise UpdatesError(f"group file {groupfile} must be an absolute path (createrepo_c resolves a relative "
                               "one against the repo directory)")
        argv += ["--groupfile", str(groupfile)]
    if distro:
        argv.append(f"--distro={distro}")
    return [*argv, str(tree)]


def modifyrepo_argv(metadata: Path, repodata: Path, mdtype: str, compression: str = COMPRESSION) -> list[str]:
    """Add ``metadata`` to ``repodata`` as record ``mdtype`` (compressed, checksum-named)."""
    return ["modifyrepo_c", f"--mdtype={mdtype}", f"--compress-type={compression}", "--checksum", CHECKSUM,
            "--unique-md-filenames", str(metadata), str(repodata)]


# --- metadata carried over ------------------------------------------------------------------------


def compression_of(tree: Path, mdtype: str = "primary") -> str | None:
    """The compression of ``tree``'s ``mdtype`` record (createrepo_c's name for it), None when the tree has no
    such record or it is stored uncompressed."""
    if not (Path(tree) / REPOMD).is_file():
        return None
    for record in read_repomd(tree):
        if record.type == mdtype:
            return _COMPRESSION_BY_SUFFIX.get(Path(record.href).suffix)
    return None


def metadata_text(tree: Path, types: Iterable[str]) -> str | None:
    """The decompressed text of the first record of ``types`` in ``tree``'s repodata, or None."""
    path = Path(tree) / REPOMD
    if not path.is_file():
        return None
    records = {r.type: r for r in read_repomd(tree)}
    for mdtype in types:
        if mdtype in records:
            with open_metadata(tree_path(tree, records[mdtype].href)) as f:
                return f.read().decode("utf-8")
    return None


def _yaml_documents(text: str, where: str) -> list[str]:
    """The documents of a YAML stream, split at the column-0 ``---`` / ``...`` markers that end them."""
    docs: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.rstrip() in ("---", "..."):
            if any(part.strip() for part in current):
                docs.append("\n".join(current).strip("\n"))
            current = []
        else:
            current.append(line)
    if any(part.strip() for part in current):
        docs.append("\n".join(current).strip("\n"))
    for doc in docs:
        try:
            data = yaml.safe_load(doc)
        except yaml.YAMLError as exc:
            raise UpdatesError(f"{where}: modules metadata is not valid YAML: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
            raise UpdatesError(f"{where}: modules metadata holds a document without a `data` mapping")
    return docs


def _module_identity(doc: str) -> tuple:
    data = yaml.safe_load(doc)
    keys = _MODULE_KEYS.get(data.get("document"))
    if keys is None:
        return ("text", doc)
    return (data["document"], *(str(data["data"].get(k)) for k in keys))


def merge_modules(old: str | None, new: str | None, where: str = "modules") -> str | None:
    """Staging's module documents plus the build system's; for the same identity (module stream version
    context arch; the module for defaults) the build system's wins. Documents keep their text."""
    if old is None and new is None:
        return None
    merged: dict[tuple, str] = {}
    for doc in _yaml_documents(old or "", f"{where} (staging)"):
        merged[_module_identity(doc)] = doc
    for doc in _yaml_documents(new or "", f"{where} (build system)"):
        merged[_module_identity(doc)] = doc
    return "".join(f"---\n{doc}\n...\n" for doc in merged.values())


def merge_updateinfo(old: str | None, new: str | None, where: str = "updateinfo") -> str | None:
    """Staging's advisories plus the build system's; the build system's wins for the same advisory id."""
    if old is None and new is None:
        return None
    merged: dict[str, str] = {}
    for text, source in ((old, "staging"), (new, "build system")):
        if not text:
            continue
        try:
            root = ET.fromstring(text.encode("utf-8"))
        except ET.ParseError as exc:
            raise UpdatesError(f"{where} ({source}): updateinfo is not valid XML: {exc}") from None
        for update in root.iter("update"):
            advisory = (update.findtext("id") or "").strip()
            if not advisory:
                raise UpdatesError(f"{where} ({source}): an <update> has no <id>")
            update.tail = None
            merged[advisory] = ET.tostring(update, encoding="unicode")
    body = "".join(f"  {text.strip()}\n" for text in merged.values())
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<updates>\n{body}</updates>\n'


# --- the swap -------------------------------------------------------------------------------------


@dataclass
class SwapResult:
    copied: int = 0
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    signed: bool = False


def _publish_file(src: Path, dest: Path) -> None:
    """Write ``src``'s bytes at ``dest`` all at once, published mode (createrepo_c's output follows the umask)."""
    atomic_write(dest, Path(src).read_bytes())


def swap_repodata(new_tree: Path, tree: Path) -> SwapResult:
    """Publish ``new_tree/repodata`` as ``tree/repodata``; at every instant ``tree``'s repomd.xml names files
    that exist. Data files first (checksum-named: an existing one with that name and size is the same file),
    then repomd.xml, then repomd.xml.asc (a stale one removed when the new metadata is unsigned), then the
    data files no repomd.xml names are deleted. A rerun after an interruption converges."""
    new_repodata, repodata = Path(new_tree) / "repodata", Path(tree) / "repodata"
    records = read_repomd(new_tree)
    public_dirs(repodata)
    for leftover in repodata.glob(".*.tmp"):
        leftover.unlink()
    result = SwapResult()
    for record in records:
        src, dest = tree_path(new_tree, record.href), tree_path(tree, record.href)
        if dest.parent != repodata:
            raise RepoError(f"{new_repodata / 'repomd.xml'} names {record.href}, outside repodata/")
        if dest.is_file() and file_digest(dest, hash_name(record.checksum_type)) == record.checksum:
            result.unchanged += 1
            continue
        _publish_file(src, dest)
        result.copied += 1
    _publish_file(new_repodata / "repomd.xml", repodata / "repomd.xml")
    signature = new_repodata / "repomd.xml.asc"
    if signature.is_file():
        _publish_file(signature, repodata / "repomd.xml.asc")
        result.signed = True
    elif (repodata / "repomd.xml.asc").exists():
        (repodata / "repomd.xml.asc").unlink()
    for stale in stale_metadata(tree):
        stale.unlink()
        result.removed.append(stale.name)
    return result


def record_checksums(tree: Path) -> set[tuple[str, str]]:
    """``{(type, checksum)}`` of a tree's repomd.xml; empty when it has none."""
    if not (Path(tree) / REPOMD).is_file():
        return set()
    return {(r.type, r.checksum) for r in read_repomd(tree)}


# --- the regeneration -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RepodataJob:
    """One staging tree to regenerate after new packages were synced into it."""

    tree: Path  # the staging tree (Packages/ and repodata/)
    synced: Path  # the same repo as just synced from the build system (its repodata is the new input)
    scratch: Path  # an empty work directory on any file system
    label: str
    distro: str
    comps_required: bool = False
    modules_required: bool = False
    signing_key: str = ""
    gnupghome: Path | None = None
    workers: int = 2


@dataclass
class RepodataResult:
    tree: str
    packages: int
    added: list[str]
    changed: bool
    signed: bool
    metadata: list[str]


def regenerate_repodata(job: RepodataJob, log: Callable[[str], None] = lambda _m: None) -> RepodataResult:
    """Regenerate ``job.tree``'s repodata over all its packages and swap it in (see the module doc).

    Raises UpdatesError for wrong input (missing comps or modules, a package the metadata cannot match),
    SigningError for a key the keyring lacks, and ToolError when a tool fails.
    """
    tree, synced, scratch = Path(job.tree), Path(job.synced), Path(job.scratch)
    if not (synced / REPOMD).is_file():
        raise UpdatesError(f"{job.label}: {synced} has no {REPOMD}; the repo was not synced")
    if scratch.exists():
        shutil.rmtree(scratch)
    inputs, out = scratch / "inputs", scratch / "out"
    inputs.mkdir(parents=True)
    out.mkdir()
    has_metadata = (tree / REPOMD).is_file()
    before = {p.nevra for p in iter_packages(tree)} if has_metadata else set()
    staged_groups = metadata_text(tree, GROUP_TYPES)
    new_groups = metadata_text(synced, GROUP_TYPES)
    merged = {
        "modules": merge_modules(metadata_text(tree, ("modules",)), metadata_text(synced, ("modules",)),
                                 job.label),
        "updateinfo": merge_updateinfo(metadata_text(tree, ("updateinfo",)), metadata_text(synced, ("updateinfo",)),
                                       job.label),
    }
    groups = new_groups or staged_groups
    if groups is None and job.comps_required:
        raise UpdatesError(f"{job.label}: the profile says this repo carries comps groups, but neither the build "
                           f"system's repodata ({synced}) nor staging ({tree}) has a group file; fix the build "
                           "system's repo, or set `comps: false` for the repo in the profile")
    if merged["modules"] is None and job.modules_required:
        raise UpdatesError(f"{job.label}: the profile says this repo carries modules, but neither the build "
                           f"system's repodata ({synced}) nor staging ({tree}) has modules metadata; fix the build "
                           "system's repo, or set `modules: false` for the repo in the profile")
    signed_now = (tree / "repodata" / "repomd.xml.asc").exists()

    reasons = input_changes(tree, synced, staged_groups, new_groups, merged) if has_metadata else ["no metadata"]
    if not reasons:
        kept = _keep_metadata(job, tree, scratch, log)
        shutil.rmtree(scratch)
        return RepodataResult(str(tree), len(before), [], kept == "signed", kept is not None,
                              sorted(r.type for r in read_repomd(tree)))
    if signed_now and not job.signing_key:
        raise UpdatesError(f"{job.label}: staging's {tree / 'repodata' / 'repomd.xml'} is signed "
                           f"(repomd.xml.asc) and this run changes it ({'; '.join(reasons)}), but no signing key is "
                           "set, so the new metadata could only be published unsigned; set RELENG_REPO_SIGNING_KEY "
                           "(and RELENG_GNUPGHOME) to the release's repo key. Staging is unchanged")
    compression = compression_of(tree) or COMPRESSION
    log(f"{job.label}: regenerating ({'; '.join(reasons)}); {compression} compression")

    groupfile = None
    if groups is not None:
        groupfile = inputs / "comps.xml"
        groupfile.write_text(groups)
    reuse = [p for p in (tree, synced) if (p / REPOMD).is_file()]
    run(createrepo_update_argv(tree, out, reuse=reuse, groupfile=groupfile.resolve() if groupfile else None,
                                distro=job.distro, workers=job.workers, compression=compression))

    for mdtype, text in merged.items():
        if text is not None:
            path = inputs / MERGED_TYPES[mdtype]
            path.write_text(text)
            run(modifyrepo_argv(path, out / "repodata", mdtype, compression_of(tree, mdtype) or compression))

    _check_new_metadata(job, out, tree, synced)
    repomd = out / "repodata" / "repomd.xml"
    fingerprints: set[str] = set()
    if job.signing_key:
        fingerprints = sign_repomd(repomd, job.signing_key, job.gnupghome, label=job.label)
    after = {p.nevra for p in iter_packages(out)}
    types = sorted(r.type for r in read_repomd(out))

    signature_current = (signed_by(tree / REPOMD, fingerprints, job.gnupghome) if job.signing_key
                         else not (tree / "repodata" / "repomd.xml.asc").exists())
    if record_checksums(out) == record_checksums(tree) and signature_current:
        log(f"{job.label}: {len(after)} packages, metadata unchanged; nothing published")
        shutil.rmtree(scratch)
        return RepodataResult(str(tree), len(after), [], False, bool(job.signing_key), types)
    swap = swap_repodata(out, tree)
    report = verify_repo(tree, checksums=False)
    if not report.ok:
        raise UpdatesError(f"{job.label}: {tree} does not verify after the swap: " + "; ".join(report.problems(5)))
    added = sorted(after - before)
    log(f"{job.label}: {len(after)} packages ({len(added)} new, {len(before)} before); metadata {', '.join(types)}; "
        f"{swap.copied} files published, {swap.unchanged} kept, {len(swap.removed)} superseded removed; "
        + ("repomd.xml signed" if swap.signed else "repomd.xml not signed"))
    shutil.rmtree(scratch)
    return RepodataResult(str(tree), len(after), added, True, swap.signed, types)


def input_changes(tree: Path, synced: Path, staged_groups: str | None, new_groups: str | None,
                  merged: Mapping[str, str | None]) -> list[str]:
    """Why ``tree``'s metadata must be regenerated after ``synced`` was synced into it; empty when the build
    system's repo brings nothing staging's metadata lacks (its packages, by path and checksum; its groups; its
    module documents and advisories)."""
    listed = {(p.href, p.checksum) for p in iter_packages(tree)}
    new = [p for p in iter_packages(synced) if (p.href, p.checksum) not in listed]
    reasons = []
    if new:
        reasons.append(f"{len(new)} packages not in staging's metadata, e.g. {', '.join(p.href for p in new[:3])}")
    if new_groups is not None and new_groups != staged_groups:
        reasons.append("new comps groups")
    if merged["modules"] is not None and merged["modules"] != merge_modules(metadata_text(tree, ("modules",)), None):
        reasons.append("new module documents")
    if merged["updateinfo"] is not None and \
            merged["updateinfo"] != merge_updateinfo(metadata_text(tree, ("updateinfo",)), None):
        reasons.append("new advisories")
    return reasons


def _keep_metadata(job: RepodataJob, tree: Path, scratch: Path, log: Callable[[str], None]) -> str | None:
    """A tree with nothing new keeps its metadata byte for byte. Only its signature is replaced, when a signing
    key is set and ``repomd.xml`` is not signed by it (a rotated key). Returns "kept" (signed and left alone),
    "signed" (signature replaced) or None (unsigned, left alone)."""
    repomd, asc = tree / "repodata" / "repomd.xml", tree / "repodata" / "repomd.xml.asc"
    if not job.signing_key:
        log(f"{job.label}: nothing new; metadata left as it is")
        return "kept" if asc.exists() else None
    fingerprints = require_key(job.signing_key, job.gnupghome)
    if signed_by(repomd, fingerprints, job.gnupghome):
        log(f"{job.label}: nothing new; metadata left as it is (signed by {job.signing_key})")
        return "kept"
    copy = scratch / "resign" / "repomd.xml"
    copy.parent.mkdir(parents=True)
    shutil.copy2(repomd, copy)
    sign_repomd(copy, job.signing_key, job.gnupghome, label=job.label)
    if copy.read_bytes() != repomd.read_bytes():
        raise UpdatesError(f"{job.label}: {repomd} changed while it was being signed; rerun the task")
    _publish_file(copy.with_name("repomd.xml.asc"), asc)
    log(f"{job.label}: nothing new; repomd.xml signed again with {job.signing_key} (it was not signed by it)")
    return "signed"


def _check_new_metadata(job: RepodataJob, out: Path, tree: Path, synced: Path) -> None:
    """The new metadata lists every package the build system's repo has, and each listed file is in the tree
    with the listed size (nothing is published otherwise)."""
    listed = {}
    for entry in iter_packages(out):
        listed[entry.href] = entry
        try:
            size = os.stat(tree_path(tree, entry.href)).st_size
        except FileNotFoundError:
            raise UpdatesError(f"{job.label}: the new metadata lists {entry.href}, which is not in {tree}") from None
        if size != entry.size:
            raise UpdatesError(f"{job.label}: {entry.href} in {tree} has {size} bytes, the new metadata says "
                               f"{entry.size}")
    missing = [p.href for p in iter_packages(synced) if p.href not in listed]
    if missing:
        raise UpdatesError(f"{job.label}: {len(missing)} packages of the build system's repo are not in {tree} "
                           f"after the staging sync, e.g. {', '.join(missing[:5])}; rerun sync_to_staging")


# --- the task -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TreeUpdate:
    """update_repodata's result for one tree, which emit_staging_asset reads."""

    repo: str
    arch: str
    kind: str
    tree: str
    packages: int
    added: int
    added_sample: list[str]
    changed: bool
    signed: bool
    metadata: list[str]

    def to_xcom(self) -> dict:
        return {"repo": self.repo, "arch": self.arch, "kind": self.kind, "tree": self.tree,
                "packages": self.packages, "added": self.added, "added_sample": list(self.added_sample),
                "changed": self.changed, "signed": self.signed, "metadata": list(self.metadata)}

    @classmethod
    def from_xcom(cls, data: Mapping) -> TreeUpdate:
        return cls(str(data["repo"]), str(data["arch"]), str(data["kind"]), str(data["tree"]), int(data["packages"]),
                   int(data["added"]), list(data["added_sample"]), bool(data["changed"]), bool(data["signed"]),
                   list(data["metadata"]))


def update_repodata(profile: ReleaseProfile, repo: str, arch: str, kind: str, *, tree: Path, synced: Path,
                    scratch: Path, signing_key: str = "", gnupghome: Path | None = None, workers: int = 2,
                    log: Callable[[str], None] = lambda _m: None) -> TreeUpdate:
    """Regenerate the staging ``tree`` of ``repo`` ``arch`` ``kind`` after the run synced it as ``synced``; comps
    and modules are required where the profile says the repo's os tree carries them."""
    carries = profile.repo(repo)
    job = RepodataJob(tree=Path(tree), synced=Path(synced), scratch=Path(scratch), label=f"{repo} {arch} {kind}",
                      distro=distro_tag(profile), comps_required=carries.comps and kind == "os",
                      modules_required=carries.modules and kind == "os", signing_key=signing_key,
                      gnupghome=gnupghome, workers=workers)
    result = regenerate_repodata(job, log=log)
    return TreeUpdate(repo, arch, kind, result.tree, result.packages, len(result.added), result.added[:ADDED_SHOWN],
                      result.changed, result.signed, result.metadata)
