"""What identifies an installable tree or disc: ``.discinfo``, ``media.repo`` and the ISO 9660 volume id."""

from __future__ import annotations

from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

MAX_VOLID = 32  # ISO 9660 volume identifier field
_PVD_OFFSET = 16 * 2048  # the Primary Volume Descriptor is sector 16


class NotAnIsoError(ValueError):
    """The file has no ISO 9660 primary volume descriptor."""


def discinfo_text(timestamp: int, fullname: str, arch: str) -> str:
    """``.discinfo``: an integer timestamp, name, arch, disc list."""
    return f"{int(timestamp)}\n{fullname}\n{arch}\nALL\n"


def media_repo_text(timestamp: int, fullname: str) -> str:
    return (f"[InstallMedia]\nname={fullname}\nmediaid={int(timestamp)}\nmetadata_expire=-1\n"
            "gpgcheck=0\ncost=500\n")


def read_volid(iso: Path) -> str:
    """The Primary Volume Descriptor's volume id (pycdlib; the raw PVD when pycdlib cannot parse it)."""
    cd = pycdlib.PyCdlib()
    try:
        cd.open(str(iso))
    except PyCdlibException:
        return _raw_volid(iso)
    try:
        return cd.pvd.volume_identifier.decode("ascii", "replace").strip()
    finally:
        cd.close()


def _raw_volid(iso: Path) -> str:
    with open(iso, "rb") as f:
        f.seek(_PVD_OFFSET)
        pvd = f.read(2048)
    if len(pvd) < 72 or pvd[0] != 1 or pvd[1:6] != b"CD001":
        raise NotAnIsoError(f"{iso} has no ISO 9660 primary volume descriptor; it is not an ISO image")
    return pvd[40:72].decode("ascii", "replace").strip()
