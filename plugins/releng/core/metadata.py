"""Compose metadata with productmd: composeinfo.json, images.json, rpms.json (never hand-written).

The ids in all three agree with COMPOSE_ID, and ISO/image paths go only to the variants that have them.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import productmd.composeinfo as pm_composeinfo
import productmd.images as pm_images
import productmd.rpms as pm_rpms

from releng.core.checksums import parse_checksum_file
from releng.core.fs import atomic_write
from releng.core.layout import ComposeLayout, variant_id
from releng.core.run import run

# cloud image format (profile) -> (productmd type, productmd format); Vagrant boxes depend on the variant.
_CLOUD_TYPES: dict[str, tuple[str, str]] = {
    "qcow2": ("qcow2", "qcow2"),
    "vhd": ("vpc", "vhd"),
    "tar.xz": ("container", "tar.xz"),
    "raw.xz": ("raw-xz", "raw.xz"),
    "wsl": ("wsl2", "wsl"),
}
_VAGRANT_TYPES: dict[str, str] = {"Libvirt": "vagrant-libvirt", "Vbox": "vagrant-virtualbox",
                                  "VMware": "vagrant-vmware-fusion"}


def cloud_image_type(fmt: str, variant: str | None) -> tuple[str, str]:
    """productmd (type, format) of a cloud image; ValueError names a format productmd cannot describe."""
    if fmt == "box":
        kind = _VAGRANT_TYPES.get(variant or "")
        if kind is None:
            known = ", ".join(_VAGRANT_TYPES)
            raise ValueError(f"Vagrant variant {variant!r} has no productmd image type; known: {known}")
        return kind, f"{kind}.box"
    try:
        return _CLOUD_TYPES[fmt]
    except KeyError:
        raise ValueError(f"cloud image format {fmt!r} has no productmd image type; known: "
                         f"{', '.join([*_CLOUD_TYPES, 'box'])}") from None


def _header(meta, layout: ComposeLayout, date: str) -> None:
    meta.compose.id = layout.compose_id
    meta.compose.type = "production"
    meta.compose.date = date
    meta.compose.respin = layout.respin


def compose_info(layout: ComposeLayout, arches: Iterable[str], date: str, rc: bool,
                 iso_variants: Iterable[str] = (), has_images: bool = False) -> pm_composeinfo.ComposeInfo:
    """One variant per repo (on-disk name), with os/debug/source paths for every chosen arch."""
    profile = layout.profile
    ci = pm_composeinfo.ComposeInfo()
    ci.release.name, ci.release.short = profile.distname, profile.shortname
    ci.release.version, ci.release.type = profile.revision, "ga"
    _header(ci, layout, date)
    if rc:
        ci.compose.label = f"RC-{profile.revision}"
    arches = tuple(arches)
    iso_variants = set(iso_variants)
    for repo in profile.repos:
        variant = pm_composeinfo.Variant(ci)
        variant.id = variant.uid = variant_id(repo.dir)
        variant.name = repo.dir
        variant.type = "variant"
        repo_arches = profile.repo_arches(repo.id, arches)
        variant.arches = set(repo_arches)
        source = _rel(layout, repo.id, "src", "source")
        for arch in repo_arches:
            os_tree, debug_tree = _rel(layout, repo.id, arch, "os"), _rel(layout, repo.id, arch, "debug")
            variant.paths.os_tree[arch] = variant.paths.repository[arch] = os_tree
            variant.paths.packages[arch] = f"{os_tree}/Packages"
            variant.paths.debug_tree[arch] = variant.paths.debug_repository[arch] = debug_tree
            variant.paths.debug_packages[arch] = f"{debug_tree}/Packages"
            variant.paths.source_tree[arch] = variant.paths.source_repository[arch] = source
            variant.paths.source_packages[arch] = f"{source}/Packages"
            if repo.dir in iso_variants and arch in arches:
                variant.paths.isos[arch] = f"isos/{arch}"
            if has_images and repo.dir == "BaseOS" and arch in arches:
                variant.paths.images[arch] = f"images/{arch}"
        ci.variants.add(variant)
    return ci


def _rel(layout: ComposeLayout, repo_id: str, arch: str, kind: str) -> str:
    return str(layout.repo_tree(repo_id, arch, kind).relative_to(layout.compose))


@dataclass(frozen=True)
class ImageRecord:
    """A deliverable for images.json; ``path`` is relative to ``compose/``."""

    path: str
    arch: str
    variant: str
    type: str
    format: str
    size: int
    mtime: int
    sha256: str
    volume_id: str | None = None
    bootable: bool = False
    implant_md5: str | None = None
    subvariant: str = ""


def images_manifest(layout: ComposeLayout, records: Iterable[ImageRecord], date: str) -> pm_images.Images:
    images = pm_images.Images()
    _header(images, layout, date)
    for r in records:
        image = pm_images.Image(images)
        image.path, image.arch, image.type, image.format = r.path, r.arch, r.type, r.format
        image.size, image.mtime, image.volume_id, image.bootable = r.size, r.mtime, r.volume_id, r.bootable
        image.implant_md5, image.subvariant = r.implant_md5, r.subvariant or r.variant
        image.disc_number = image.disc_count = 1
        image.checksums = {"sha256": r.sha256}
        images.add(r.variant, r.arch, image)
    return images


def recorded_sha256(path: Path) -> str:
    """The digest the deliverable's own ``.CHECKSUM`` recorded (hash once; never re-read a multi-GB ISO)."""
    sidecar = path.with_name(path.name + ".CHECKSUM")
    for algo, name, hexdigest in parse_checksum_file(sidecar.read_text()):
        if algo == "sha256" and name == path.name:
            return hexdigest
    raise ValueError(f"{sidecar} has no SHA256 line for {path.name}; rebuild the deliverable's checksum")


def implanted_md5(iso: Path) -> str | None:
    """The MD5 implantisomd5 embedded (None when the ISO carries none)."""
    out = run(["checkisomd5", "--md5sumonly", iso], check=False)
    for token in out.stdout.split():
        if len(token) == 32 and all(c in "0123456789abcdef" for c in token):
            return token
    return None


@dataclass(frozen=True)
class RpmRecord:
    """A package for rpms.json; ``path`` is relative to ``compose/``."""

    variant: str
    arch: str
    nevra: str
    path: str
    sigkey: str | None
    category: str  # binary | debug | source
    srpm_nevra: str | None


def srpm_nevra(sourcerpm: str | None, epoch: str | int | None) -> str | None:
    """productmd's source NEVRA of a binary: ``foo-1.0-1.el9.src.rpm`` with the binary's epoch 2 ->
    ``foo-2:1.0-1.el9.src``. The sourcerpm header carries no epoch; a source package and its binaries
    share one, so the binary's is the source's (Pungi does the same)."""
    if not sourcerpm:
        return None
    name, version, release = sourcerpm.removesuffix(".src.rpm").rsplit("-", 2)
    return f"{name}-{epoch or 0}:{version}-{release}.src"


def rpms_manifest(layout: ComposeLayout, records: Iterable[RpmRecord], date: str) -> pm_rpms.Rpms:
    rpms = pm_rpms.Rpms()
    _header(rpms, layout, date)
    for r in records:
        rpms.add(r.variant, r.arch, r.nevra, r.path, r.sigkey, r.category, r.srpm_nevra)
    return rpms


def signature_keys(paths: Iterable[Path], batch: int = 500) -> dict[Path, str | None]:
    """Short key id each package is signed with (None for unsigned), with few rpm calls."""
    paths = list(paths)
    out: dict[Path, str | None] = {}
    qf = "%{RSAHEADER:pgpsig}|%{DSAHEADER:pgpsig}|%{SIGPGP:pgpsig}\\n"
    for start in range(0, len(paths), batch):
        chunk = paths[start:start + batch]
        result = run(["rpm", "-qp", "--nosignature", "--nodigest", "--qf", qf, *chunk])
        for path, line in zip(chunk, result.stdout.splitlines(), strict=True):
            key = next((part.rsplit("Key ID ", 1)[1].strip() for part in line.split("|") if "Key ID " in part), None)
            out[path] = key[-8:].lower() if key else None
    return out


def dump(meta, path: Path) -> Path:
    """productmd dump, reloaded to validate, then written atomically."""
    out = io.StringIO()
    meta.dump(out)
    type(meta)().load(io.StringIO(out.getvalue()))
    return atomic_write(path, out.getvalue())


def iso_variants(layout: ComposeLayout, image_names: Iterable[str]) -> set[str]:
    """Variants (on-disk names) that get ISO paths: the lorax variant (boot ISO) and each built image's variant."""
    profile = layout.profile
    if profile.lorax is None:
        return set()  # a SIG's compose: repos only, no variant gets ISO paths
    ids = {profile.lorax_settings().variant, *(profile.iso_images[name].variant for name in image_names)}
    return {profile.repo(i).dir if i in profile.repo_ids else i for i in ids}
