""".treeinfo of the trees made from lorax's output, written with productmd (never by hand).

Rules applied to lorax's own ``.treeinfo``:

* release name, short name and version from the release profile;
* the non-empty ``[images-<platform>]`` entries are kept (a disc drops ``boot.iso``) and every
  kept image plus the stage2 images get a ``sha256`` entry in ``[checksums]``, computed on the
  files of the tree the ``.treeinfo`` describes (and checked against lorax's own entry);
* one variant per repo of the image: in a repo tree the main variant is ``.``/``Packages`` and
  the others ``../../../<Repo>/<arch>/<os|kickstart>``; on a disc every variant is ``<Repo>``;
* a disc gets ``[media] discnum=1 totaldiscs=1``.

A kickstart tree points its other variants at ``kickstart``, an os tree at ``os``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import productmd.treeinfo

from releng.core.checksums import file_digest
from releng.core.disc import discinfo_text, media_repo_text
from releng.core.fs import atomic_write
from releng.core.profile import IsoImage, ReleaseProfile

TREE_KINDS = ("os", "kickstart")


class TreeInfoError(ValueError):
    """A lorax .treeinfo cannot be turned into the tree's .treeinfo."""


class DigestCache:
    """SHA-256 per file, computed once per (device, inode, size, mtime): hard links share it."""

    def __init__(self) -> None:
        self._digests: dict[tuple[int, int, int, int], str] = {}

    @staticmethod
    def _key(path: Path) -> tuple[int, int, int, int]:
        st = os.stat(path)
        return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns

    def seed(self, path: Path, hexdigest: str) -> None:
        """Record a digest computed elsewhere (e.g. the boot ISO's, hashed once for its CHECKSUM)."""
        self._digests[self._key(path)] = hexdigest

    def digest(self, path: Path) -> str:
        key = self._key(path)
        if key not in self._digests:
            self._digests[key] = file_digest(path)
        return self._digests[key]


def load(path: Path) -> productmd.treeinfo.TreeInfo:
    ti = productmd.treeinfo.TreeInfo()
    try:
        ti.load(str(path))
    except FileNotFoundError:
        raise TreeInfoError(f"{path} does not exist; the lorax result has no .treeinfo") from None
    except Exception as exc:  # productmd raises ValueError, KeyError and configparser errors alike
        raise TreeInfoError(f"{path} is not a valid .treeinfo: {type(exc).__name__}: {exc}") from exc
    return ti


def write_tree_treeinfo(lorax_tree: Path, tree_root: Path, profile: ReleaseProfile, arch: str, kind: str,
                        image: IsoImage, digests: DigestCache | None = None) -> productmd.treeinfo.TreeInfo:
    """Write ``tree_root/.treeinfo`` for a repo tree (``BaseOS/<arch>/os`` or ``kickstart``) holding lorax's files."""
    if kind not in TREE_KINDS:
        raise TreeInfoError(f"tree kind {kind!r} is not one of {', '.join(TREE_KINDS)}")
    main = _main_variant(profile, image)
    ti = _rewritten(Path(lorax_tree), Path(tree_root), profile, arch, disc=False, digests=digests or DigestCache())
    for repo_id in image.repos:
        name = profile.repo(repo_id).dir
        if name == main:
            _set_variant(ti, name, ".", "Packages")
        else:
            path = f"../../../{name}/{arch}/{kind}"
            _set_variant(ti, name, path, f"{path}/Packages")
    _dump(ti, Path(tree_root) / ".treeinfo", main)
    return ti


def write_disc_treeinfo(lorax_tree: Path, dest: Path, profile: ReleaseProfile, arch: str, image: IsoImage,
                        digests: DigestCache | None = None) -> productmd.treeinfo.TreeInfo:
    """Write the ``.treeinfo`` for the root of a disc (the DVD) built from ``lorax_tree``'s boot files.

    Variant paths are relative to the ISO root (``<Repo>``, ``<Repo>/Packages``); checksums are of
    ``lorax_tree``'s files, which the disc carries at the same paths.
    """
    main = _main_variant(profile, image)
    ti = _rewritten(Path(lorax_tree), Path(lorax_tree), profile, arch, disc=True, digests=digests or DigestCache())
    for repo_id in image.repos:
        name = profile.repo(repo_id).dir
        _set_variant(ti, name, name, f"{name}/Packages")
    ti.media.discnum = 1
    ti.media.totaldiscs = 1
    _dump(ti, Path(dest), main)
    return ti


def _main_variant(profile: ReleaseProfile, image: IsoImage) -> str:
    if not image.repos:
        raise TreeInfoError(f"image {image.name!r} of {profile.name} lists no repos; a .treeinfo needs a variant")
    main = image.variant if image.variant in image.repos else image.repos[0]
    return profile.repo(main).dir


def _is_boot_iso(name: str, path: str) -> bool:
    return name == "boot.iso" or Path(path).name == "boot.iso"


def _rewritten(lorax_tree: Path, tree_root: Path, profile: ReleaseProfile, arch: str, *, disc: bool,
               digests: DigestCache) -> productmd.treeinfo.TreeInfo:
    source = lorax_tree / ".treeinfo"
    ti = load(source)
    if ti.tree.arch != arch:
        raise TreeInfoError(f"{source} describes arch {ti.tree.arch!r}, not {arch!r}; "
                            "the lorax result is for another arch")
    ti.release.name = profile.distname
    ti.release.short = profile.shortname
    ti.release.version = profile.revision
    recorded = dict(ti.checksums.checksums)
    ti.checksums.checksums = {}
    for platform, images in list(ti.images.images.items()):
        kept = {name: path for name, path in images.items() if path and not (disc and _is_boot_iso(name, path))}
        ti.images.images[platform] = kept
        for path in kept.values():
            _add_checksum(ti, source, tree_root, path, digests, recorded)
    for path in (ti.stage2.mainimage, ti.stage2.instimage):
        if path:
            _add_checksum(ti, source, tree_root, path, digests, recorded)
    return ti


def _add_checksum(ti: productmd.treeinfo.TreeInfo, source: Path, root: Path, relative: str, digests: DigestCache,
                  recorded: dict) -> None:
    relative = os.path.normpath(relative)
    path = root / relative
    if relative.startswith("..") or not path.is_file():
        raise TreeInfoError(f"{source} lists the image {relative!r}, which is not a file in {root}")
    hexdigest = digests.digest(path)
    algo, old = recorded.get(relative, ("sha256", None))
    if algo == "sha256" and old and old != hexdigest:
        raise TreeInfoError(f"{path} has sha256 {hexdigest} but {source} records {old}; the tree is corrupt, "
                            "pull the lorax result again")
    ti.checksums.add(relative, "sha256", hexdigest)


def _set_variant(ti: productmd.treeinfo.TreeInfo, name: str, repository: str, packages: str) -> None:
    if name in ti.variants.variants:
        variant = ti.variants[name]
    else:
        variant = productmd.treeinfo.Variant(ti)
        variant.id = variant.uid = variant.name = name
        variant.type = "variant"
        ti.variants.add(variant)
    variant.paths.repository = repository
    variant.paths.packages = packages


def _dump(ti: productmd.treeinfo.TreeInfo, path: Path, main_variant: str) -> None:
    """Validate and write atomically: readers see the old or the new file, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    ti.dump(text, main_variant=main_variant)
    atomic_write(path, text.getvalue())


def write_repo_treeinfo(tree: Path, profile: ReleaseProfile, arch: str, variant: str, timestamp: int) -> None:
    """The basic ``.treeinfo``, ``.discinfo`` and ``media.repo`` of a plain repo tree: one variant at
    ``.``/``Packages``. Trees with a lorax ``.treeinfo`` are left alone."""
    if (tree / ".treeinfo").exists() and load(tree / ".treeinfo").images.images:
        return
    ti = productmd.treeinfo.TreeInfo()
    ti.release.name, ti.release.short, ti.release.version = profile.distname, profile.shortname, profile.revision
    ti.release.type = "ga"
    ti.tree.arch, ti.tree.build_timestamp = arch, int(timestamp)
    ti.tree.platforms.add(arch)
    _set_variant(ti, variant, ".", "Packages")
    _dump(ti, tree / ".treeinfo", variant)
    for name, text in ((".discinfo", discinfo_text(timestamp, profile.fullname, arch)),
                       ("media.repo", media_repo_text(timestamp, profile.fullname))):
        atomic_write(tree / name, text)
