"""General updates: what a run syncs and checks, and the staging repodata regeneration.

Staging keeps every package it published for the point release (no delete, so
downgrades keep working: ../shared/reference/sync.md §2.1 steps 5-6), and its
metadata is regenerated over all of them. Staging is web-served, so a client
must never see a ``repomd.xml`` that names a missing file. The old scripts
deleted the repodata first and rebuilt it in place (sync.md §2.1 step 4); here:

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
4. :func:`swap_repodata`: the data files are copied into ``<tree>/repodata``
   under temporary names and renamed (their names carry their checksum, so no
   file the current ``repomd.xml`` names changes), then ``repomd.xml``, then its
   signature (or a stale one is removed); only then are the data files no
   ``repomd.xml`` names any more deleted.

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
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from releng.core.checksums import file_digest
from releng.core.compose.prepare_compose import ComposeParams, plan_compose
from releng.core.layout import ComposeLayout, LayoutError, ReleaseTrees, safe_part
from releng.core.modes import FILE_MODE, public_dirs
from releng.core.profile import ReleaseProfile
from releng.core.repodata import (
    REPOMD,
    RepodataError,
    hash_name,
    iter_packages,
    open_metadata,
    read_repomd,
    stale_metadata,
    tree_path,
    verify_tree,
)

CHECKSUM = "sha256"
# xz: every EL dnf reads it (EL8's librepo has no zstd); explicit because createrepo_c 1.x defaults to zstd.
COMPRESSION = "xz"
GROUP_TYPES = ("group", "group_xz", "group_gz", "group_zck")
MERGED_TYPES = {"modules": "modules.yaml", "updateinfo": "updateinfo.xml"}
_MODULE_KEYS = {
    "modulemd": ("name", "stream", "version", "context", "arch"),
    "modulemd-defaults": ("module",),
    "modulemd-translations": ("module", "stream"),
    "modulemd-obsoletes": ("module", "stream", "context", "modified"),
}


class UpdatesError(ValueError):
    """The run's input is wrong (parameters, profile, metadata, keys); retrying cannot help."""


class ToolError(RuntimeError):
    """A tool (createrepo_c, modifyrepo_c, gpg) failed; the message holds its output."""


# --- parameters and plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class UpdatesParams:
    """Validated run parameters of ``general_updates``."""

    repos: tuple[str, ...]
    rc: bool


def validate_params(profile: ReleaseProfile, raw: Mapping) -> UpdatesParams:
    """``repos`` (empty: every repo of the release) must be repo ids of the release, each once."""
    repos = list(raw.get("repos") or profile.repo_ids)
    problems = []
    unknown = [r for r in repos if r not in profile.repo_ids]
    if unknown:
        problems.append(f"repos {', '.join(map(repr, unknown))} are not repos of {profile.name} "
                        f"(it has {', '.join(profile.repo_ids)}); use build-system repo ids, or none for all")
    if len(set(repos)) != len(repos):
        problems.append("repos lists a repo twice")
    if problems:
        raise UpdatesError(f"the parameters do not make a valid {profile.name} update run:\n- "
                           + "\n- ".join(problems))
    return UpdatesParams(tuple(r for r in profile.repo_ids if r in repos), bool(raw.get("rc", False)))


def updates_layout(profile: ReleaseProfile, compose_root: Path, timestamp: str) -> ComposeLayout:
    """The run's work area ``<compose_root>/<major>/<Short>-<X.Y>-updates-<ts>``, laid out like a compose
    (``compose/<RepoDir>/<arch>/os`` ...) so that it maps one to one onto the staging release directory."""
    return ComposeLayout(profile, Path(compose_root),
                         safe_part(f"{profile.shortname}-{profile.revision}-updates-{timestamp}", "updates id"))


def work_areas(profile: ReleaseProfile, compose_root: Path) -> list[Path]:
    """The release's updates work areas under ``compose_root``: a run's own and those failed runs left."""
    major_dir = Path(compose_root) / str(profile.major)
    prefix = f"{profile.shortname}-{profile.revision}-updates-"
    return sorted(p for p in major_dir.glob(f"{prefix}*") if p.is_dir() and not p.is_symlink())


@dataclass(frozen=True)
class UpdatesPlan:
    """What one run does: the trees to sync (and regenerate in staging) and the closure checks."""

    trees: list[dict] = field(default_factory=list)  # {"repo", "arch", "kind"}
    repoclosure: list[dict] = field(default_factory=list)  # {"repo", "arch"}
    closure_repos: dict[tuple[str, str], bool] = field(default_factory=dict)  # (repo, arch) -> updated by this run


def plan_updates(profile: ReleaseProfile, params: UpdatesParams) -> UpdatesPlan:
    """os, debug and source trees of the chosen repos; closure of each chosen repo in the repoclosure map, and
    which trees each check reads (the run's own for updated repos, staging's for the others)."""
    full = plan_compose(profile, ComposeParams(profile.arches, params.rc, True, True, (), True))
    chosen = set(params.repos)
    trees = [item for item in full.reposync if item["repo"] in chosen]
    closure = [item for item in full.repoclosure if item["repo"] in chosen]
    reads: dict[tuple[str, str], bool] = {}
    for item in closure:
        for repo in (item["repo"], *profile.repoclosure[item["repo"]]):
            reads[(repo, item["arch"])] = repo in chosen
    return UpdatesPlan(trees, closure, reads)


def staging_tree(layout: ComposeLayout, staging_dir: Path, repo: str, arch: str, kind: str) -> Path:
    """The staging tree that corresponds to a tree of the work area (same path below the release dir)."""
    return Path(staging_dir) / layout.repo_tree(repo, arch, kind).relative_to(layout.compose)


def closure_view(layout: ComposeLayout, staging_dir: Path, plan: UpdatesPlan) -> Path:
    """``work/closure/<RepoDir>/<arch>/os`` links: to the run's synced tree for an updated repo, to staging's
    for a repo the run only depends on. Repoclosure reads this directory as its compose directory, so the new
    packages are checked against what staging will hold. Raises UpdatesError naming each dependency that is
    neither updated nor in staging."""
    targets = {(repo, arch): layout.repo_tree(repo, arch) if updated
               else staging_tree(layout, staging_dir, repo, arch, "os")
               for (repo, arch), updated in sorted(plan.closure_repos.items())}
    missing = [f"{repo} {arch} ({target})" for (repo, arch), target in targets.items()
               if not plan.closure_repos[(repo, arch)] and not (target / REPOMD).is_file()]
    if missing:
        checked = sorted({i["repo"] for i in plan.repoclosure})
        raise UpdatesError(f"the closure check of {', '.join(checked)} needs repos this run does not update and "
                           f"staging does not have: {'; '.join(missing)}. Add them to `repos`, or stage the "
                           "release with full_compose first")
    view = layout.work / "closure"
    for (repo, arch), target in targets.items():
        link = view / layout.profile.repo(repo).dir / arch / "os"
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(".os.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
    return view


def release_staging_dir(profile: ReleaseProfile, staging_root: Path, production_root: Path, rc: bool) -> Path:
    try:
        return ReleaseTrees(profile, Path(staging_root), Path(production_root)).staging_dir(rc)
    except LayoutError as exc:
        raise UpdatesError(str(exc)) from None


# --- argv builders --------------------------------------------------------------------------------


def distro_tag(profile: ReleaseProfile) -> str:
    """createrepo_c's ``--distro`` value: ``cpe:/o:rocky:rocky:9,Rocky Linux 9`` (sync/common's)."""
    short = profile.shortname.lower()
    return f"cpe:/o:{short}:{short}:{profile.major},{profile.distname} {profile.major}"


def createrepo_update_argv(tree: Path, outputdir: Path, *, reuse: Sequence[Path] = (), groupfile: Path | None = None,
                           distro: str = "", workers: int = 2) -> list[str]:
    """``createrepo_c --update`` of the packages in ``tree``, metadata written to ``outputdir/repodata``.

    ``reuse``: repos whose metadata is reused for packages with unchanged size and mtime.
    ``--error-exit-val`` makes an unreadable package fail the run (createrepo_c skips it and exits 0 otherwise).
    """
    argv = ["createrepo_c", "--update", "--outputdir", str(outputdir), "--checksum", CHECKSUM,
            f"--general-compress-type={COMPRESSION}", "--no-database", "--unique-md-filenames", "--error-exit-val",
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


def modifyrepo_argv(metadata: Path, repodata: Path, mdtype: str) -> list[str]:
    """Add ``metadata`` to ``repodata`` as record ``mdtype`` (compressed, checksum-named)."""
    return ["modifyrepo_c", f"--mdtype={mdtype}", f"--compress-type={COMPRESSION}", "--checksum", CHECKSUM,
            "--unique-md-filenames", str(metadata), str(repodata)]


def _gpg(gnupghome: Path | None) -> list[str]:
    return ["gpg", *(["--homedir", str(gnupghome)] if gnupghome else []), "--batch", "--no-tty"]


def sign_argv(repomd: Path, key: str, gnupghome: Path | None = None) -> list[str]:
    """Detached, armored signature ``repomd.xml.asc`` next to ``repomd``."""
    return [*_gpg(gnupghome), "--yes", "--local-user", key, "--armor", "--detach-sign",
            "--output", f"{repomd}.asc", str(repomd)]


def verify_signature_argv(repomd: Path, gnupghome: Path | None = None) -> list[str]:
    return [*_gpg(gnupghome), "--status-fd", "1", "--verify", f"{repomd}.asc", str(repomd)]


def secret_key_argv(key: str, gnupghome: Path | None = None) -> list[str]:
    return [*_gpg(gnupghome), "--with-colons", "--list-secret-keys", key]


def _run(argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, errors="replace", stdin=subprocess.DEVNULL,
                            env={**os.environ, "LC_ALL": "C.UTF-8"})
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise ToolError(f"{argv[0]} exited {result.returncode}: {' '.join(argv)}\n{output}")
    return result


def key_fingerprints(key: str, gnupghome: Path | None) -> set[str]:
    """The fingerprints (key and subkeys) of the secret key ``key`` names; empty when the keyring lacks it."""
    listing = _run(secret_key_argv(key, gnupghome), check=False)
    if listing.returncode != 0:
        return set()
    return {line.split(":")[9] for line in listing.stdout.splitlines() if line.startswith("fpr:")}


def signing_key_problem(key: str, gnupghome: Path | None) -> str | None:
    """None when ``key`` has a secret key in the keyring, else what is wrong and how to fix it."""
    if key_fingerprints(key, gnupghome):
        return None
    return (f"RELENG_REPO_SIGNING_KEY={key} has no secret key in {gnupghome or '~/.gnupg'} (RELENG_GNUPGHOME); "
            "import the key there, or unset RELENG_REPO_SIGNING_KEY to publish unsigned repodata")


def sign_repomd(repomd: Path, key: str, gnupghome: Path | None, fingerprints: set[str] | None = None, *,
                label: str = "") -> set[str]:
    """Sign ``repomd`` with ``key`` (detached, armored ``<repomd>.asc``) and check that the signature verifies
    with one of the key's fingerprints, which are returned. UpdatesError when the keyring has no secret ``key``,
    ToolError when gpg fails or its signature does not verify."""
    fingerprints = fingerprints or key_fingerprints(key, gnupghome)
    if not fingerprints:
        raise UpdatesError(signing_key_problem(key, gnupghome))
    _run(sign_argv(repomd, key, gnupghome))
    if not signed_by(repomd, fingerprints, gnupghome):
        raise ToolError(f"{label or repomd.parent}: gpg signed {repomd} with {key}, but the signature does not "
                        "verify")
    return fingerprints


def signed_by(repomd: Path, fingerprints: set[str], gnupghome: Path | None) -> bool:
    """``repomd``'s ``.asc`` is a good signature made by one of ``fingerprints`` (not just by any key in the
    keyring: after a key change the old signatures must be replaced)."""
    if not Path(f"{repomd}.asc").is_file():
        return False
    result = _run(verify_signature_argv(repomd, gnupghome), check=False)
    valid = [line.split() for line in result.stdout.splitlines() if line.startswith("[GNUPG:] VALIDSIG ")]
    return result.returncode == 0 and any({fields[2], fields[-1]} & fingerprints for fields in valid)


# --- metadata carried over ------------------------------------------------------------------------


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
    docs, current = [], []
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
    """Copy ``src`` to ``dest`` under a temporary name in dest's directory, then rename it into place."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copy2(src, tmp)
    os.chmod(tmp, FILE_MODE)  # createrepo_c's output follows the umask
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dest)


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
            raise RepodataError(f"{new_repodata / 'repomd.xml'} names {record.href}, outside repodata/")
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

    def as_dict(self) -> dict:
        return {"tree": self.tree, "packages": self.packages, "added": self.added, "changed": self.changed,
                "signed": self.signed, "metadata": self.metadata}


def regenerate_repodata(job: RepodataJob, log: Callable[[str], None] = lambda _m: None) -> RepodataResult:
    """Regenerate ``job.tree``'s repodata over all its packages and swap it in (see the module doc).

    Raises UpdatesError for wrong input (missing comps or modules, a package the metadata cannot match) and
    ToolError when a tool fails.
    """
    tree, synced, scratch = Path(job.tree), Path(job.synced), Path(job.scratch)
    if not (synced / REPOMD).is_file():
        raise UpdatesError(f"{job.label}: {synced} has no {REPOMD}; the repo was not synced")
    if scratch.exists():
        shutil.rmtree(scratch)
    inputs, out = scratch / "inputs", scratch / "out"
    inputs.mkdir(parents=True)
    out.mkdir()
    before = {p.nevra for p in iter_packages(tree)} if (tree / REPOMD).is_file() else set()

    groups = metadata_text(synced, GROUP_TYPES) or metadata_text(tree, GROUP_TYPES)
    if groups is None and job.comps_required:
        raise UpdatesError(f"{job.label}: the profile says this repo carries comps groups, but neither the build "
                           f"system's repodata ({synced}) nor staging ({tree}) has a group file; fix the build "
                           "system's repo, or set `comps: false` for the repo in the profile")
    groupfile = None
    if groups is not None:
        groupfile = inputs / "comps.xml"
        groupfile.write_text(groups)
    reuse = [p for p in (tree, synced) if (p / REPOMD).is_file()]
    _run(createrepo_update_argv(tree, out, reuse=reuse, groupfile=groupfile.resolve() if groupfile else None,
                                distro=job.distro, workers=job.workers))

    merged = {
        "modules": merge_modules(metadata_text(tree, ("modules",)), metadata_text(synced, ("modules",)),
                                 job.label),
        "updateinfo": merge_updateinfo(metadata_text(tree, ("updateinfo",)), metadata_text(synced, ("updateinfo",)),
                                       job.label),
    }
    if merged["modules"] is None and job.modules_required:
        raise UpdatesError(f"{job.label}: the profile says this repo carries modules, but neither the build "
                           f"system's repodata ({synced}) nor staging ({tree}) has modules metadata; fix the build "
                           "system's repo, or set `modules: false` for the repo in the profile")
    for mdtype, text in merged.items():
        if text is not None:
            path = inputs / MERGED_TYPES[mdtype]
            path.write_text(text)
            _run(modifyrepo_argv(path, out / "repodata", mdtype))

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
    report = verify_tree(tree, checksums=False)
    if not report.ok:
        raise UpdatesError(f"{job.label}: {tree} does not verify after the swap: " + "; ".join(report.problems(5)))
    added = sorted(after - before)
    log(f"{job.label}: {len(after)} packages ({len(added)} new, {len(before)} before); metadata {', '.join(types)}; "
        f"{swap.copied} files published, {swap.unchanged} kept, {len(swap.removed)} superseded removed; "
        + ("repomd.xml signed" if swap.signed else "repomd.xml not signed"))
    shutil.rmtree(scratch)
    return RepodataResult(str(tree), len(after), added, True, swap.signed, types)


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
