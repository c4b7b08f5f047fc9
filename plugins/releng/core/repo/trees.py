"""Synced trees on disk: hard links to unchanged packages, copies of repodata, the kickstart tree.

librepo (under ``dnf reposync``) rewrites a file whose checksum does not match
*in place*, so a hard link shared with another tree would change that tree too.
:func:`link_unchanged` therefore links only packages whose href and checksum
are identical in both repodata, and :func:`break_shared_links` removes any
other shared file dnf could rewrite.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from releng.core.repo.primary import PackageEntry, package_index
from releng.core.repo.repomd import RepoError, tree_path
from releng.core.repo.verify import TreeReport, file_matches, files_under, verify_repo


class CrossMountError(RepoError):
    """A hard link that the layout promises failed because the two trees are on different mounts."""


def cross_mount_error(previous: Path, dest: Path) -> CrossMountError:
    return CrossMountError(
        f"cannot hard-link packages from {previous} into {dest}: they are on different mounts ([Errno 18] "
        "Invalid cross-device link). Linux refuses a hard link between two mounts even of one file system "
        "(two bind mounts or two volumes of the same disk), so every package would be downloaded again. Put "
        "RELENG_COMPOSE_ROOT, RELENG_STAGING_ROOT and RELENG_PRODUCTION_ROOT on one mount: in docker-compose.yaml "
        "the one data volume (RELENG_DATA_HOST_DIR at /mnt/releng), on Kubernetes one ReadWriteMany volume with "
        "the three trees as subdirectories of one mount")


def _link_into(src: Path, dest: Path) -> None:
    """Make ``dest`` a hard link of ``src``, replacing whatever is there in one rename.

    The common case, nothing at ``dest`` yet, is one ``link`` call (a no-op resync links tens of
    thousands of packages); the parent is made and an existing file replaced only when needed.
    """
    try:
        os.link(src, dest)
        return
    except FileNotFoundError:
        if not os.path.exists(src):
            raise
        dest.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        pass
    tmp = dest.with_name(f".{dest.name}.link")
    tmp.unlink(missing_ok=True)
    os.link(src, tmp)
    os.replace(tmp, dest)


def link_unchanged(dest: Path, previous: Path, wanted: Iterable[PackageEntry],
                   previous_index: Mapping[str, PackageEntry] | None = None) -> list[str]:
    """Hard-link into ``dest`` each wanted package that ``previous`` has unchanged; return the hrefs linked.

    Unchanged means the previous tree's repodata (``previous_index`` when the caller has read it
    already) lists the same href with the same checksum and the file there has the listed size.
    Raises RepoError when ``previous`` has no readable repodata, CrossMountError when it is on another mount
    (or file system): the hard links the layout promises are impossible there, which is a deployment error.
    """
    dest, previous = Path(dest), Path(previous)
    before = package_index(previous) if previous_index is None else previous_index
    linked = []
    for entry in wanted:
        old = before.get(entry.href)
        if old is None or (old.checksum_type, old.checksum, old.size) != (entry.checksum_type, entry.checksum,
                                                                           entry.size):
            continue
        src = tree_path(previous, entry.href)
        target = tree_path(dest, entry.href)
        try:
            if os.stat(src).st_size != entry.size:
                continue
            if target.exists() and os.path.samefile(src, target):
                linked.append(entry.href)
                continue
            _link_into(src, target)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise cross_mount_error(previous, dest) from None
            raise
        linked.append(entry.href)
    return linked


def break_shared_links(dest: Path, wanted: Mapping[str, PackageEntry], keep: Iterable[str] = ()) -> list[str]:
    """Remove files in ``dest/Packages`` that share their inode with another tree and that dnf could rewrite.

    A shared file stays when its href is in ``keep`` (just linked from an identical package) or when its
    size and checksum match what ``wanted`` (the metadata dnf will use) says: dnf then skips it. Every
    other shared file is unlinked, so dnf downloads a fresh copy instead of writing through the link.
    """
    dest = Path(dest)
    kept = set(keep)
    removed = []
    for rel in files_under(dest, "Packages"):
        path = dest / rel
        st = os.lstat(path)
        if st.st_nlink < 2 or rel in kept:
            continue
        entry = wanted.get(rel)
        if entry is not None and file_matches(path, entry):
            continue
        path.unlink()
        removed.append(rel)
    return removed


def samefile_count(dest: Path, other: Path, hrefs: Iterable[str]) -> int:
    """How many of ``hrefs`` are the same file (inode) in ``dest`` and ``other``."""
    count = 0
    for href in hrefs:
        try:
            if os.path.samefile(tree_path(dest, href), tree_path(other, href)):
                count += 1
        except FileNotFoundError:
            continue
    return count


def _replace_dir(src: Path, target: Path, *, link: bool) -> None:
    """Make ``target`` a copy (``link``: a tree of hard links) of ``src``: built beside it, then renamed in."""
    partial, old = target.with_name(f".{target.name}.partial"), target.with_name(f".{target.name}.old")
    for leftover in (partial, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, partial, copy_function=os.link if link else shutil.copy2)
    if target.exists():
        os.rename(target, old)
    os.rename(partial, target)
    if old.exists():
        shutil.rmtree(old)


def copy_repodata(source_tree: Path, dest_tree: Path) -> None:
    """Replace ``dest_tree/repodata`` with a copy of ``source_tree/repodata`` (a copy: dest may be rewritten later)."""
    _replace_dir(Path(source_tree) / "repodata", Path(dest_tree) / "repodata", link=False)


def make_kickstart_tree(os_tree: Path, kickstart_tree: Path) -> TreeReport:
    """Make the kickstart tree from a synced ``os`` tree: Packages/ as hard links, repodata/ copied.

    The kickstart tree has the os tree's content, so links cost no space or bandwidth where a second
    download would. Only ``Packages/`` and ``repodata/`` are replaced (each built beside the target and
    renamed in), so anything else already in the kickstart tree (the lorax installer tree merged later)
    stays. Returns the kickstart tree's verification (sizes; the bytes are the os tree's, verified by its sync).
    """
    os_tree, ks = Path(os_tree), Path(kickstart_tree)
    source = verify_repo(os_tree, checksums=False)
    if not source.ok:
        raise RepoError(f"{os_tree} is not a complete tree, so no kickstart tree is made from it: "
                        + "; ".join(source.problems(5)))
    _replace_dir(os_tree / "Packages", ks / "Packages", link=True)
    copy_repodata(os_tree, ks)
    return verify_repo(ks, checksums=False)
