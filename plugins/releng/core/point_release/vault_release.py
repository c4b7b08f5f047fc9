"""``vault_release``: move a superseded point release from ``mirror/pub/<short>/X.Y`` to ``mirror/vault/<short>/X.Y``.

The old ``vault-release.sh`` copied the release with rsync and no
``--link-dest``, doubling its storage. Here the vault is made of hard links:
every file outside ``repodata/`` in the vault is the same inode as in the
release, so the vault costs the repository metadata and the directories, no
second copy of packages, ISOs or images. ``repodata/`` is copied (new inodes):
the vault's metadata is its own, checked there (every file ``repomd.xml`` names,
with its checksum) and, when ``RELENG_REPO_SIGNING_KEY`` is set, signed with the
release key when its ``repomd.xml.asc`` is not a good signature by that key;
nothing done to it reaches the published release's inodes.

Steps, each converging when run again after a crash:

1. the vault tree is built in ``<state>/vault-work/`` (outside every mirrored
   category, on the production file system), entries already there and right
   are kept, anything else is replaced or removed;
2. its metadata is verified and signed, then the whole tree is renamed into
   ``mirror/vault/<short>/X.Y`` at once, so mirrors never see half a vault;
3. the release leaves ``mirror/pub`` by one rename into ``<state>/retired/``
   (mirrors see it complete or gone), and is removed from there.

Hard links cannot cross file systems: when the release, the vault category and
the state directory are not on one file system, the step refuses before
anything is written.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from releng.core.fs import fsync_dir, human_bytes
from releng.core.modes import FILE_MODE, public_dirs
from releng.core.promotion.base import PromotionError
from releng.core.promotion.lock import production_lock
from releng.core.promotion.target import PromotionTarget
from releng.core.promotion.update_file_lists import mark_lists_stale
from releng.core.repo.verify import verify_tree
from releng.core.staging.signing import gpg_session, require_key
from releng.core.staging.sync_to_staging import publish_signed_repomd, repomd_files

REPODATA = "repodata"
Log = Callable[[str], None]


def _quiet(_m: str) -> None:
    pass


class VaultError(PromotionError):
    """The release cannot be vaulted as asked; the message says why and what to do. Nothing was changed."""


def is_repodata(rel: str) -> bool:
    """True for a path inside a ``repodata/`` directory (copied, not linked, into the vault)."""
    return REPODATA in rel.split("/")[:-1]


def walk(root: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, lstat) of everything under ``root``, parents before children, names sorted; links are
    not followed."""
    stack = [""]
    while stack:
        rel = stack.pop()
        names = sorted(os.listdir(root / rel if rel else root), reverse=True)
        subdirs = []
        for name in reversed(names):
            child = f"{rel}/{name}" if rel else name
            st = os.lstat(root / child)
            yield child, st
            if stat.S_ISDIR(st.st_mode):
                subdirs.append(child)
        stack.extend(reversed(subdirs))


def _device(path: Path) -> int:
    """st_dev of ``path``, or of its nearest existing parent."""
    path = Path(path)
    while not path.exists():
        path = path.parent
    return os.stat(path).st_dev


def filesystem_problem(release: Path, vault_category: Path, work_root: Path) -> str | None:
    """Why the vault cannot be hard-linked to ``release`` (different file systems), or None."""
    devices = {p: _device(p) for p in (release, vault_category, work_root)}
    if len(set(devices.values())) == 1:
        return None
    where = ", ".join(f"{p} (device {d})" for p, d in devices.items())
    return (f"the vault is made of hard links to the release's files, which cannot cross file systems, but {where} "
            "are not all on one file system. Put mirror/pub, mirror/vault and the production root's .releng on one "
            "file system (RELENG_PRODUCTION_ROOT), then run the point release again; nothing was changed")


@dataclass
class VaultSize:
    """What a vault holds: files linked (no new space) and repodata files copied (the vault's cost)."""

    linked_files: int = 0
    linked_bytes: int = 0
    repodata_files: int = 0
    repodata_bytes: int = 0
    dirs: int = 0
    links: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def measure(release: Path) -> VaultSize:
    size = VaultSize()
    for rel, st in walk(release):
        if stat.S_ISDIR(st.st_mode):
            size.dirs += 1
        elif stat.S_ISLNK(st.st_mode):
            size.links += 1
        elif is_repodata(rel):
            size.repodata_files += 1
            size.repodata_bytes += st.st_size
        else:
            size.linked_files += 1
            size.linked_bytes += st.st_size
    return size


def _kind(st: os.stat_result) -> str:
    return "d" if stat.S_ISDIR(st.st_mode) else "l" if stat.S_ISLNK(st.st_mode) else \
        "f" if stat.S_ISREG(st.st_mode) else "?"


def differences(release: Path, vault: Path, *, limit: int = 20) -> list[str]:
    """How ``vault`` differs from a hard-linked vault of ``release`` (empty: it is one).

    Outside ``repodata/`` a file must be the release's inode; inside, it must have the same bytes, except a
    ``repomd.xml.asc`` (the vault may hold its own signature of the same ``repomd.xml``).
    """
    found: list[str] = []
    seen = set()
    missing: set[str] = set()
    for rel, st in walk(release):
        seen.add(rel)
        if rel.rpartition("/")[0] in missing:  # below a directory already reported missing
            missing.add(rel)
            continue
        try:
            vst = os.lstat(vault / rel)
        except FileNotFoundError:
            found.append(f"{rel}: missing from the vault")
            missing.add(rel)
        else:
            kind = _kind(st)
            if kind != _kind(vst):
                found.append(f"{rel}: a {_kind(vst)} in the vault, a {kind} in the release")
            elif kind == "l" and os.readlink(release / rel) != os.readlink(vault / rel):
                found.append(f"{rel}: the link points elsewhere in the vault")
            elif kind == "f" and not is_repodata(rel) and (vst.st_ino, vst.st_dev) != (st.st_ino, st.st_dev):
                found.append(f"{rel}: not a hard link to the release's file")
            elif (kind == "f" and is_repodata(rel) and not rel.endswith("repomd.xml.asc")
                  and not filecmp.cmp(release / rel, vault / rel, shallow=False)):
                found.append(f"{rel}: different metadata in the vault")
        if len(found) >= limit:
            return found
    for rel, _st in walk(vault):
        if rel not in seen:
            found.append(f"{rel}: in the vault only")
            if len(found) >= limit:
                break
    return found


def _replace_with(make: Callable[[Path], None], dest: Path) -> None:
    """Make ``dest`` by ``make(temp path)`` beside it, then one rename over whatever ``dest`` was."""
    tmp = dest.with_name(f".{dest.name}.vault-tmp")
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
    make(tmp)
    if dest.is_dir() and not dest.is_symlink():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def build(release: Path, work: Path, *, log: Log = _quiet) -> dict:
    """Make ``work`` a hard-linked vault of ``release`` (repodata copied); what is already right is kept."""
    public_dirs(work)
    counts = {"linked": 0, "copied": 0, "kept": 0, "removed": 0}
    seen = set()
    dirs: list[tuple[str, os.stat_result]] = []
    last = time.monotonic()
    for n, (rel, st) in enumerate(walk(release), 1):
        seen.add(rel)
        src, dest = release / rel, work / rel
        try:
            dst = os.lstat(dest)
        except FileNotFoundError:
            dst = None
        kind = _kind(st)
        if kind == "d":
            if dst is not None and _kind(dst) != "d":
                dest.unlink()
                dst = None
            if dst is None:
                dest.mkdir()
            dirs.append((rel, st))
        elif kind == "l":
            target = os.readlink(src)
            if dst is not None and _kind(dst) == "l" and os.readlink(dest) == target:
                counts["kept"] += 1
            else:
                def symlink(tmp: Path, t: str = target) -> None:
                    os.symlink(t, tmp)
                _replace_with(symlink, dest)
                counts["linked"] += 1
        elif kind == "f" and not is_repodata(rel):
            if dst is not None and (dst.st_ino, dst.st_dev) == (st.st_ino, st.st_dev):
                counts["kept"] += 1
            else:
                def link(tmp: Path, s: Path = src) -> None:
                    os.link(s, tmp)
                _replace_with(link, dest)
                counts["linked"] += 1
        elif kind == "f":
            if (dst is not None and _kind(dst) == "f" and dst.st_size == st.st_size
                    and (rel.endswith("repomd.xml.asc") or filecmp.cmp(src, dest, shallow=False))):
                counts["kept"] += 1
            else:
                def copy(tmp: Path, s: Path = src) -> None:
                    shutil.copy2(s, tmp)
                    os.chmod(tmp, FILE_MODE)
                _replace_with(copy, dest)
                counts["copied"] += 1
        if time.monotonic() - last >= 10:
            last = time.monotonic()
            log(f"vault: {n} entries done ({counts['linked']} linked, {counts['copied']} copied)")
    for rel, _st in sorted(walk(work), key=lambda e: -e[0].count("/")):
        if rel not in seen:  # a crashed run's temp names, or what the release no longer has
            path = work / rel
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            counts["removed"] += 1
    for rel, st in sorted(dirs, key=lambda e: -e[0].count("/")):  # deepest first: setting a time moves none
        os.chmod(work / rel, stat.S_IMODE(st.st_mode))
        os.utime(work / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    return counts


def sign_and_verify(tree: Path, *, signing_key: str, gnupghome: Path | None, log: Log = _quiet) -> dict:
    """Sign every ``repomd.xml`` under ``tree`` whose signature is not a good one by ``signing_key`` (when set),
    then check every repository's metadata and signature; VaultError listing the problems."""
    signed = 0
    if signing_key:
        fingerprints = require_key(signing_key, gnupghome)
        with gpg_session(gnupghome):  # signed beside it and renamed in: a vault already published stays whole
            signed = sum(publish_signed_repomd(tree / rel, tree / rel, signing_key, gnupghome, fingerprints)
                         for rel in repomd_files(tree))
    report = verify_tree(tree, signing_key=signing_key, gnupghome=gnupghome, log=log)
    problems = report.problems(None)
    if problems:
        raise VaultError(f"the vault's metadata does not verify ({len(problems)} problems; the release's own "
                         "metadata is broken: fix it in production first, then run the point release again):\n"
                         + "\n".join(problems[:30]))
    return {"repos": report.repos, "signed": signed, "signatures": report.signatures}


def retire(release: Path, retired_root: Path, *, log: Log = _quiet) -> bool:
    """Take ``release`` out of its category with one rename into ``retired_root``, then remove it there."""
    clean_retired(retired_root)
    if not release.exists():
        return False
    public_dirs(retired_root)
    parked = retired_root / release.name
    os.replace(release, parked)
    fsync_dir(release.parent)
    log(f"{release} left mirror/pub (one rename); removing it from {retired_root}")
    clean_retired(retired_root)
    return True


def clean_retired(retired_root: Path) -> None:
    """Remove what an earlier retire left half-deleted."""
    if retired_root.is_dir():
        for entry in retired_root.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def vault_release(release: Path, vault: Path, *, work_root: Path, retired_root: Path, signing_key: str = "",
                  gnupghome: Path | None = None, mark_changed: Callable[[Path], object] = lambda _p: None,
                  log: Log = _quiet) -> dict:
    """Move ``release`` (``mirror/pub/rocky/9.6``) to ``vault`` (``mirror/vault/rocky/9.6``) with hard links.

    ``mark_changed(path)`` is called before each production path is written (the file lists' stale markers).
    Converges when run again after a crash at any point; VaultError (nothing changed) when the trees are on
    different file systems or ``vault`` already holds something else.
    """
    start = time.monotonic()
    if not release.exists():
        clean_retired(retired_root)
        if vault.is_dir():
            log(f"{release.name} is already in the vault ({vault}) and gone from {release.parent}; nothing to do")
            return {"vault": str(vault), "state": "already vaulted", "retired": False}
        raise VaultError(f"neither {release} nor {vault} exists: there is no point release {release.name} to "
                         "vault. Check the previous release named in the point release's report")
    if problem := filesystem_problem(release, vault.parent, work_root):
        raise VaultError(problem)
    size = measure(release)
    result: dict = {"vault": str(vault), "release": str(release), **size.as_dict()}
    if vault.exists():
        diff = differences(release, vault)
        if diff:
            raise VaultError(f"{vault} already exists and is not a hard-linked vault of {release} "
                             f"({len(diff)}+ differences, e.g. {'; '.join(diff[:5])}); nothing was changed. Look "
                             "at what it holds, move it away by hand, then run the point release again")
        result["state"] = "vault already made"
        result["metadata"] = sign_and_verify(vault, signing_key=signing_key, gnupghome=gnupghome, log=log)
    else:
        work = work_root / vault.name
        log(f"vaulting {release}: {size.linked_files} files ({human_bytes(size.linked_bytes)}) hard-linked, "
            f"{size.repodata_files} repodata files ({human_bytes(size.repodata_bytes)}) copied, in {work}")
        result["build"] = build(release, work, log=log)
        result["metadata"] = sign_and_verify(work, signing_key=signing_key, gnupghome=gnupghome, log=log)
        mark_changed(vault)
        public_dirs(vault.parent)
        os.rename(work, vault)  # one rename: mirrors see no vault or all of it
        fsync_dir(vault.parent)
        result["state"] = "vaulted"
    mark_changed(release)
    result["retired"] = retire(release, retired_root, log=log)
    result["seconds"] = round(time.monotonic() - start, 3)
    log(f"{release.name} is in {vault}; {human_bytes(size.repodata_bytes)} of new repodata, "
        f"{human_bytes(size.linked_bytes)} shared with the release's inodes; {release} "
        f"{'removed' if result['retired'] else 'was already gone'} ({result['seconds']:.1f} s)")
    return result


VAULT_WORK = "vault-work"
RETIRED = "retired"


def vault_step(record: Mapping, *, signing_key: str = "", gnupghome: Path | None = None,
               log: Log = _quiet) -> dict:
    """The ``vault_release`` step of an approved point release, under the production lock.

    Refuses (VaultError, nothing changed) while a production link still points at the release to retire:
    ``switch_links`` must have run.
    """
    vault_plan = record["point_release"].get("vault")
    if not vault_plan:
        log("no earlier point release in production; nothing moves to the vault")
        return {"state": "nothing to vault"}
    target = PromotionTarget.from_dict(record)
    release, vault = Path(vault_plan["release"]), Path(vault_plan["vault"])
    root = target.state.root.parent
    for path in (release, vault):
        if root / "mirror" not in path.parents or ".." in path.parts:
            raise VaultError(f"{path} is not inside {root / 'mirror'}; the record is damaged: run the point release "
                             "again")
    with production_lock(target.state, exclusive=True, holder=f"{record['run_id']} vault_release", log=log):
        if release.is_dir():
            real = os.path.realpath(release)
            pointing = [e.name for e in os.scandir(release.parent)
                        if e.is_symlink() and os.path.realpath(e.path) == real]
            if pointing:
                raise VaultError(f"{', '.join(sorted(pointing))} in {release.parent} still point at {release.name}; "
                                 "switch_links must point them at the new release first (clear switch_links)")
        return vault_release(release, vault, work_root=target.state.root / VAULT_WORK,
                             retired_root=target.state.root / RETIRED, signing_key=signing_key,
                             gnupghome=gnupghome, mark_changed=lambda p: mark_lists_stale(target, p), log=log)
