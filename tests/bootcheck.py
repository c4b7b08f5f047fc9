"""Boot an ISO in QEMU for a test, through the product's boot check (releng.core.bootcheck)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from releng.core import bootcheck


def assert_boots_to(iso: Path, marker: bytes, serial: Path, timeout: float = 60) -> None:
    """Skip without qemu; otherwise fail unless ``marker`` appears on the serial console within ``timeout``.

    ``serial`` names the console log; QEMU's own messages go beside it.
    """
    if shutil.which(bootcheck.QEMU) is None:
        pytest.skip(f"{bootcheck.QEMU} not installed (apt-get install --no-install-recommends qemu-system-x86)")
    work = serial.parent / f"{serial.stem}-qemu"
    result = bootcheck.boot_to_menu(iso, work, markers=(marker,), timeout=timeout)
    shutil.copyfile(work / "serial.log", serial)
    assert result.ok, f"{result.detail}\n{result.console_tail}"
