"""Checks with real external clients shared by unit and end-to-end tests: transmission reading and verifying
a torrent, gpg and sha256sum reading a clear-signed CHECKSUM."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
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
    calls its finish script only when the torrent is complete; True when it did. Pieces missing from
    ``data_dir`` it downloads from the torrent's web seeds (an empty ``data_dir`` is a plain download). Peers,
    DHT, LPD and port mapping are off, so nothing but the web seed is asked; the client is stopped afterwards."""
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


class _RangeHandler(SimpleHTTPRequestHandler):
    """Python's file server plus single byte ranges (``Range: bytes=a-b``), which BitTorrent web seeds ask for."""

    ranges: list[str]  # every Range header received, for the test to see the client used the web seed

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        path = self.translate_path(self.path)
        wanted = self.headers.get("Range")
        if not wanted or not os.path.isfile(path):
            self._left = None
            return super().send_head()
        self.ranges.append(wanted)
        size = os.path.getsize(path)
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
        if not m or int(m.group(1)) >= size:
            self.send_error(416, "Requested Range Not Satisfiable")
            return None
        start, end = int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)
        f = open(path, "rb")  # closed by the handler after copyfile
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile) -> None:
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        while left > 0:
            chunk = source.read(min(64 * 1024, left))
            if not chunk:
                break
            outputfile.write(chunk)
            left -= len(chunk)


@contextlib.contextmanager
def range_server(directory: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``directory`` over HTTP on 127.0.0.1 with byte ranges: (base URL, Range headers received)."""
    received: list[str] = []
    handler = type("Handler", (_RangeHandler,), {"ranges": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(directory)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


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
