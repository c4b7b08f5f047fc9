"""Boot an ISO as a CD in QEMU (x86_64, BIOS) and watch the serial console until its boot menu shows.

QEMU runs with no display and no default devices (``-nodefaults -nographic``): SeaBIOS then mirrors the text
screen to the serial port, and ISOLINUX, finding no VGA, draws its menu in text mode there. So a real lorax
ISO, whose ``isolinux.cfg`` has no ``serial`` line, shows its menu on the serial console too.

KVM is used when ``/dev/kvm`` opens read-write; a KVM that QEMU cannot run the boot loader under (``KVM
internal error``: nested virtualisation often cannot emulate ISOLINUX's real-mode code) is reported and the
boot is done again with TCG. Every boot is bounded by a timeout, and QEMU is killed and waited for whatever
happens, so nothing is left running.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
# ISOLINUX's menu (menu.c32 / vesamenu.c32) with a timeout, as lorax writes it.
MENU_MARKERS: tuple[bytes, ...] = (b"Automatic boot in", b"Press [Tab] to edit option")
# Firmware or boot loader giving up: no need to wait for the timeout.
FAILURE_MARKERS: tuple[bytes, ...] = (b"No bootable device", b"Boot failed", b"checksum error", b"Kernel panic")
KVM_FAILURE = b"KVM internal error"
DEFAULT_TIMEOUT = 120.0
MEMORY_MB = 256
POLL_SECONDS = 0.25

# Terminal escapes (menus drawn with them can split a marker on the serial line) and carriage returns.
TERMINAL_NOISE = re.compile(rb"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|[()%][0-9A-Za-z@]|[@-Z\\-_a-z])|\r")


class BootCheckUnavailable(RuntimeError):
    """QEMU is not installed; the message says how to install it."""


@dataclass(frozen=True)
class BootResult:
    """What a boot showed: ``ok`` when a marker appeared; ``detail`` says what happened in one line."""

    ok: bool
    accel: str
    seconds: float
    marker: str
    detail: str
    console_tail: str

    def to_dict(self) -> dict:
        return asdict(self)


def kvm_usable(device: str = "/dev/kvm") -> bool:
    """``/dev/kvm`` exists and this process may open it read-write."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    os.close(fd)
    return True


def qemu_argv(iso: Path, serial_log: Path, accel: str, *, qemu: str = QEMU, memory_mb: int = MEMORY_MB) -> list[str]:
    """Boot ``iso`` as a CD (BIOS), serial console to ``serial_log``, no display, no monitor, no network."""
    return [qemu, "-accel", accel, "-m", str(memory_mb), "-nodefaults", "-nographic", "-monitor", "none",
            "-no-reboot", "-boot", "d", "-cdrom", str(iso), "-serial", f"file:{serial_log}"]


def console_text(raw: bytes) -> bytes:
    return TERMINAL_NOISE.sub(b"", raw)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _tail(text: bytes, chars: int = 800) -> str:
    return text[-chars:].decode("utf-8", "replace")


def _boot_once(iso: Path, serial_log: Path, qemu_log: Path, accel: str, markers: Sequence[bytes], timeout: float,
               qemu: str) -> BootResult:
    serial_log.unlink(missing_ok=True)
    start = time.monotonic()
    with qemu_log.open("wb") as sink:
        proc = subprocess.Popen(qemu_argv(iso, serial_log, accel, qemu=qemu), stdin=subprocess.DEVNULL,
                                stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = start + timeout
            while True:
                text = console_text(_read(serial_log))
                found = next((m for m in markers if m in text), None)
                if found is not None:
                    return BootResult(True, accel, round(time.monotonic() - start, 1), found.decode(),
                                      f"reached the boot menu ({found.decode()!r} on the serial console) in "
                                      f"{time.monotonic() - start:.1f} s with {accel}", _tail(text))
                if KVM_FAILURE in _read(qemu_log):
                    return BootResult(False, accel, round(time.monotonic() - start, 1), "",
                                      "KVM internal error (QEMU cannot run this boot loader under this KVM)",
                                      _tail(text))
                failed = next((m for m in FAILURE_MARKERS if m in text), None)
                if failed is not None:
                    time.sleep(POLL_SECONDS)  # the rest of the firmware's message
                    text = console_text(_read(serial_log))
                    return BootResult(False, accel, round(time.monotonic() - start, 1), "",
                                      f"the boot failed: {failed.decode()!r} on the serial console", _tail(text))
                if proc.poll() is not None:
                    qemu_said = _read(qemu_log).decode("utf-8", "replace").strip().splitlines()
                    return BootResult(False, accel, round(time.monotonic() - start, 1), "",
                                      f"QEMU exited {proc.returncode} before the boot menu showed"
                                      + (f" ({qemu_said[-1]})" if qemu_said else ""), _tail(text))
                if time.monotonic() >= deadline:
                    return BootResult(False, accel, round(time.monotonic() - start, 1), "",
                                      f"no boot menu on the serial console within {timeout:g} s", _tail(text))
                time.sleep(POLL_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def boot_to_menu(iso: Path, work_dir: Path, *, markers: Sequence[bytes] = MENU_MARKERS,
                 timeout: float = DEFAULT_TIMEOUT, use_kvm: bool | None = None, qemu: str = QEMU) -> BootResult:
    """Boot ``iso`` in QEMU until one of ``markers`` shows on the serial console, or ``timeout`` seconds pass.

    The serial console is kept in ``work_dir/serial.log`` and QEMU's own messages in ``work_dir/qemu.log``.
    ``use_kvm`` None: KVM when :func:`kvm_usable`, falling back to TCG when QEMU hits a KVM internal error.
    Raises :class:`BootCheckUnavailable` when QEMU is not installed.
    """
    binary = shutil.which(qemu)
    if binary is None:
        raise BootCheckUnavailable(f"{qemu} is not installed; install it (scripts/install-system-tools.sh: "
                                   "qemu-system-x86) to boot-check ISOs")
    work_dir.mkdir(parents=True, exist_ok=True)
    serial_log, qemu_log = work_dir / "serial.log", work_dir / "qemu.log"
    kvm = (kvm_usable() and not _KVM_FAILED) if use_kvm is None else use_kvm
    if kvm:
        result = _boot_once(iso, serial_log, qemu_log, "kvm", markers, timeout, binary)
        if result.ok or KVM_FAILURE not in _read(qemu_log):
            return result
        _KVM_FAILED.append(result.detail)  # this process's later boots go straight to TCG
        fallback = _boot_once(iso, serial_log, qemu_log, "tcg", markers, timeout, binary)
        return BootResult(fallback.ok, fallback.accel, fallback.seconds, fallback.marker,
                          f"{fallback.detail} (KVM failed first: {result.detail})", fallback.console_tail)
    result = _boot_once(iso, serial_log, qemu_log, "tcg", markers, timeout, binary)
    if use_kvm is None and _KVM_FAILED:
        return BootResult(result.ok, result.accel, result.seconds, result.marker,
                          f"{result.detail} (KVM failed earlier in this process: {_KVM_FAILED[0]})",
                          result.console_tail)
    return result


_KVM_FAILED: list[str] = []
