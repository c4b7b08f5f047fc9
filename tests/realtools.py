"""Checks with real external clients shared by unit and end-to-end tests: transmission reading and verifying
a torrent, gpg and sha256sum reading a clear-signed CHECKSUM."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path


def transmission_show(torrent: Path) -> str:
    """transmission-show's listing of a torrent (name, hash, piece size, trackers, web seeds, files)."""
    out = subprocess.run(["transmission-show", str(torrent)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def section(listing: str, title: str) -> list[str]:
    """The lines of one transmission-show section (TRACKERS, WEBSEEDS, FILES), stripped, empty ones dropped."""
    m = re.search(rf"^{title}\n(.*?)(?=^[A-Z]+\n|\Z)", listing, re.S | re.M)
    return [line.strip() for line in (m.group(1) if m else "").splitlines() if line.strip()]


def transmission_verifies(torrent: Path, data_dir: Path, work: Path, timeout: float = 60) -> bool:
    """transmission-cli checks the data in ``data_dir`` against every piece of ``torrent`` (``--verify``) and
    calls its finish script only when the torrent is complete; True when it did. Peers, DHT, LPD and port
    mapping are off, so nothing leaves the machine; the client is stopped afterwards."""
    config = work / "transmission"
    config.mkdir(parents=True)
    (config / "settings.json").write_text(json.dumps({
        "dht-enabled": False, "lpd-enabled": False, "pex-enabled": False, "utp-enabled": False,
        "port-forwarding-enabled": False, "peer-port-random-on-start": True, "rpc-enabled": False, "message-level": 2}))
    done = work / "complete"
    script = work / "finished.sh"
    script.write_text(f"#!/bin/sh\ntouch '{done}'\n")
    script.chmod(0o755)
    log = (work / "transmission.log").open("w")
    proc = subprocess.Popen(["transmission-cli", "-g", str(config), "-w", str(data_dir), "-v", "-M",
                             "-f", str(script), str(torrent)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not done.exists() and proc.poll() is None:
            time.sleep(0.2)
        return done.exists()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def agent_running(home: Path) -> bool:
    """A gpg-agent process serves GnuPG home ``home`` (looked up in the process table)."""
    for _ in range(20):  # gpgconf --kill asks the agent to exit; it may take a moment
        found = subprocess.run(["pgrep", "-f", f"gpg-agent --homedir {home} "], capture_output=True)
        if found.returncode != 0:
            return False
        time.sleep(0.1)
    return True


def check_signed_checksum(directory: Path, home: Path, fingerprint: str) -> None:
    """``directory/CHECKSUM`` is clear-signed by ``fingerprint`` (gpg --verify) and sha256sum -c, plain and
    --ignore-missing, accepts it with every listed file OK."""
    checksum = directory / "CHECKSUM"
    text = checksum.read_text()
    assert text.startswith("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n"), text[:200]
    verify = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--status-fd", "1", "--verify", str(checksum)],
                            capture_output=True, text=True)
    assert verify.returncode == 0 and f"VALIDSIG {fingerprint}" in verify.stdout, verify.stdout + verify.stderr
    names = re.findall(r"^SHA256 \((.+)\) = [0-9a-f]{64}$", text, re.M)
    assert names
    for argv in (["sha256sum", "-c", "CHECKSUM"], ["sha256sum", "-c", "--ignore-missing", "CHECKSUM"]):
        check = subprocess.run(argv, cwd=directory, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        assert sorted(re.findall(r"^(.+): OK$", check.stdout, re.M)) == sorted(names), check.stdout
