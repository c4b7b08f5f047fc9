"""Signatures: gpg's ``VALIDSIG`` status lines, detached ``repomd.xml.asc`` checks, and ``rpm -K`` verdicts."""

from __future__ import annotations

import base64
import os
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from releng.core.gpg import NO_AUTOSTART
from releng.core.repo.repomd import RepoError


def validsig_fingerprints(status: str) -> set[str]:
    """The fingerprints gpg's ``--status-fd`` output names in its ``VALIDSIG`` lines (signing key and primary key)."""
    found: set[str] = set()
    for line in status.splitlines():
        if line.startswith("[GNUPG:] VALIDSIG "):
            fields = line.split()
            found |= {fields[2], fields[-1]}
    return found


class SignatureChecker:
    """Verifies detached ``repomd.xml.asc`` signatures against exactly one public key.

    The public part of ``key`` is exported from ``gnupghome`` (the signer's
    keyring) into a private keyring, so no other key in either keyring counts.
    Only public keys are involved, so gpg runs without an agent (``--no-autostart``): nothing is left
    running when the private keyring is removed.
    """

    def __init__(self, key: str, gnupghome: Path | None):
        self.key = key
        self._tmp = tempfile.TemporaryDirectory(prefix="releng-verify-gpg-")
        self.home = Path(self._tmp.name)
        os.chmod(self.home, 0o700)
        export = ["gpg", "--batch", "--armor", "--export", key]
        if gnupghome is not None:
            export[1:1] = ["--homedir", str(gnupghome)]
        pub = subprocess.run(export, capture_output=True, check=False)
        if pub.returncode != 0 or not pub.stdout.strip():
            where = gnupghome or "~/.gnupg"
            raise RepoError(f"signing key {key!r} is not in the keyring {where} (RELENG_REPO_SIGNING_KEY / "
                            f"RELENG_GNUPGHOME); import its public key there or unset RELENG_REPO_SIGNING_KEY")
        self._gpg(["--import"], input=pub.stdout)
        listing = self._gpg(["--with-colons", "--list-keys"]).stdout.decode()
        self.fingerprints = {line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")}

    def _gpg(self, args: list[str], input: bytes | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--no-tty", NO_AUTOSTART, *args],
                              input=input, capture_output=True, check=True)

    def problem(self, repomd: Path) -> str | None:
        asc = repomd.with_name("repomd.xml.asc")
        if not asc.is_file():
            return f"{asc}: missing; signing is on (RELENG_REPO_SIGNING_KEY={self.key}), so every repomd.xml needs it"
        result = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--no-tty", NO_AUTOSTART,
                                 "--status-fd", "1", "--verify", str(asc), str(repomd)], capture_output=True,
                                check=False)
        status = result.stdout.decode(errors="replace")
        if result.returncode != 0 or not validsig_fingerprints(status) & self.fingerprints:
            detail = (result.stderr.decode(errors="replace").strip().splitlines() or ["no detail"])[-1]
            return f"{asc}: does not verify {repomd.name} with key {self.key} ({detail})"
        return None

    def clearsigned_problem(self, path: Path) -> str | None:
        """None when ``path`` is clear-signed with a good signature by the key, else what is wrong."""
        result = subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--no-tty", NO_AUTOSTART,
                                 "--status-fd", "1", "--verify", str(path)], capture_output=True, check=False)
        if result.returncode != 0 or not validsig_fingerprints(result.stdout.decode(errors="replace")) \
                & self.fingerprints:
            detail = (result.stderr.decode(errors="replace").strip().splitlines() or ["no detail"])[-1]
            return f"{path}: its clear-signature does not verify with key {self.key} ({detail})"
        return None

    def close(self) -> None:
        self._tmp.cleanup()


def dearmor(armored: str) -> bytes:
    """The binary OpenPGP packets of ASCII-armored key blocks (what ``gpgv --keyring`` reads)."""
    out = bytearray()
    body: list[str] | None = None
    for line in armored.splitlines():
        line = line.strip()
        if line.startswith("-----BEGIN PGP"):
            body = []
        elif line.startswith("-----END PGP"):
            if body is None:
                raise ValueError("END line without BEGIN in armored key")
            out += base64.b64decode("".join(body))
            body = None
        elif body is not None and line and ":" not in line and not (line.startswith("=") and len(line) == 5):
            body.append(line)
    if not out:
        raise ValueError("no armored OpenPGP block found")
    return bytes(out)


def gpgv_argv(keyring: Path, signature: Path, data: Path) -> list[str]:
    return ["gpgv", "--quiet", "--keyring", str(Path(keyring).resolve()), str(signature), str(data)]


# --- rpm -K ------------------------------------------------------------------------------------


def checksig_argv(installroot: Path, files: Iterable[Path]) -> list[str]:
    """``rpm -K`` of packages against the keys in ``installroot``'s rpm database (and no other keys)."""
    return ["rpm", "--root", str(installroot), "--checksig", *map(str, files)]


class SignatureToolError(RuntimeError):
    """``rpm -K`` itself failed (its exit code contradicts its verdicts); retrying may help."""


def unverified_signatures(files: Iterable[Path | str], stdout: str) -> list[str]:
    """The packages of ``files`` whose ``rpm -K`` verdict is not ``signatures OK``, in order.

    rpm prints one ``<path>: <verdict>`` line per package on stdout: ``digests signatures OK``,
    ``digests OK`` (unsigned, exit 0), ``digests SIGNATURES NOT OK`` (wrong or missing key). A package
    is good only by its own verdict line; other lines (stderr, warnings, messages about other paths) are
    not verdicts, and a package without one (not an rpm, unreadable, missing) is bad.
    """
    verdicts: dict[str, str] = {}
    for line in stdout.splitlines():
        path, sep, verdict = line.rstrip().rpartition(": ")
        if sep and path not in verdicts:
            verdicts[path] = verdict
    bad = []
    for name in map(str, files):
        found = verdicts.get(name)
        if found is None:
            bad.append(f"{name}: no verdict from rpm -K (not a readable rpm package?)")
        elif not found.endswith("signatures OK"):
            bad.append(f"{name}: {found}")
    return bad


def check_signatures(installroot: Path, files: Iterable[Path], *, env: Mapping[str, str] | None = None,
                     batch: int = 500) -> list[str]:
    """Run ``rpm -K`` over ``files`` in batches; the :func:`unverified_signatures` lines of every batch.

    Raises SignatureToolError when rpm exits non-zero although every package of a batch has an OK verdict.
    """
    files = list(files)
    bad: list[str] = []
    for start in range(0, len(files), batch):
        chunk = files[start:start + batch]
        done = subprocess.run(checksig_argv(installroot, chunk), capture_output=True, text=True, errors="replace",
                              env=dict(env) if env is not None else None, stdin=subprocess.DEVNULL)
        found = unverified_signatures(chunk, done.stdout)
        if done.returncode != 0 and not found:
            detail = "\n".join(done.stderr.strip().splitlines()[-10:]) or "no message"
            raise SignatureToolError(f"rpm -K exited {done.returncode} although every package it was given "
                                     f"verified: {detail}")
        bad += found
    return bad
