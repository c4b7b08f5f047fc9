"""The bucket layout the real pipeline uses for lorax results and cloud images.

Lorax:       ``buildiso-<major>-<kubearch>/<epoch>/lorax-<revision>-<arch>.tar.gz``
Cloud image: ``buildimage-<revision>-<arch>/<name>/<epoch>/<name>.<format>`` where
             ``<name>`` is ``<Short>-<major>-<Type>[-<Variant>]-<revision>-<YYYYMMDD>.<build>.<arch>``

Each object carries its SHA-256 in the ``sha256`` user metadata so a download
can be verified before anything uses it.
"""

from __future__ import annotations

import re

from releng.core.arches import kube_arch

CHECKSUM_METADATA = "sha256"
_EPOCH_RE = re.compile(r"^\d{9,11}$")


def lorax_prefix(major: int, arch: str) -> str:
    return f"buildiso-{major}-{kube_arch(arch)}/"


def lorax_tarball_name(revision: str, arch: str) -> str:
    return f"lorax-{revision}-{arch}.tar.gz"


def lorax_key(major: int, revision: str, arch: str, epoch: int) -> str:
    return f"{lorax_prefix(major, arch)}{epoch}/{lorax_tarball_name(revision, arch)}"


def cloud_image_prefix(revision: str, arch: str) -> str:
    kube_arch(arch)  # validates the arch
    return f"buildimage-{revision}-{arch}/"


def cloud_image_name(shortname: str, major: int, image_type: str, variant: str | None, revision: str,
                     date: str, build: int, arch: str) -> str:
    kind = f"{image_type}-{variant}" if variant else image_type
    return f"{shortname}-{major}-{kind}-{revision}-{date}.{build}.{arch}"


def cloud_image_key(name: str, revision: str, arch: str, epoch: int, fmt: str) -> str:
    return f"{cloud_image_prefix(revision, arch)}{name}/{epoch}/{name}.{fmt}"


def epoch_of(key: str) -> int | None:
    """The upload epoch directory of a lorax or cloud image key, or None when the key has none."""
    for part in key.split("/")[:-1]:
        if _EPOCH_RE.match(part):
            return int(part)
    return None
