"""Boot an ISO as a CD in QEMU (BIOS, TCG) and wait for a marker on the serial console."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

# ISOLINUX draws its menu with terminal escapes, which can split a marker on the serial line.
TERMINAL_NOISE = re.compile(rb"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[()%][0-9A-Za-z@]|[@-Z\\-_a-z])|\r")


def assert_boots_to(iso: Path, marker: bytes, serial: Path, timeout: float = 60) -> None:
    """Skip without qemu; otherwise fail unless ``marker`` appears on the serial console within ``timeout``."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        pytest.skip("qemu-system-x86_64 not installed (apt-get install --no-install-recommends qemu-system-x86)")
    argv = [qemu, "-accel", "tcg", "-m", "256", "-nographic", "-no-reboot", "-boot", "d", "-cdrom", str(iso)]
    with serial.open("wb") as sink:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                if marker in TERMINAL_NOISE.sub(b"", serial.read_bytes()):
                    break
                time.sleep(0.25)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    output = TERMINAL_NOISE.sub(b"", serial.read_bytes())
    assert marker in output, output[-800:].decode(errors="replace")
