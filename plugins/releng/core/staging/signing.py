"""The release key staging's ``repomd.xml`` files and the compose's ``CHECKSUM`` files are signed with
(``RELENG_REPO_SIGNING_KEY``).

A signature counts only when gpg reports it VALIDSIG by one of the configured
key's fingerprints, not by any key in the keyring: after a key change the old
signatures must be replaced.

Every function here that makes gpg start an agent (listing secret keys, signing) runs inside
:func:`releng.core.gpg.agent_session`, so the agent is stopped when the step ends; a caller running many of
them wraps them in one session (``gpg_session``) and the agent is started once.
"""

from __future__ import annotations

import os
from pathlib import Path

from releng.core.checksums import clearsigned_body
from releng.core.fs import atomic_write, fsync_dir
from releng.core.gpg import agent_session
from releng.core.repo.signatures import validsig_fingerprints
from releng.core.run import ToolError, run


class SigningError(ValueError):
    """The configured signing key cannot be used (not in the keyring); retrying cannot help."""


def _gpg(gnupghome: Path | None) -> list[str]:
    return ["gpg", *(["--homedir", str(gnupghome)] if gnupghome else []), "--batch", "--no-tty"]


def sign_argv(repomd: Path, key: str, gnupghome: Path | None = None) -> list[str]:
    """Detached, armored signature ``repomd.xml.asc`` next to ``repomd``."""
    return [*_gpg(gnupghome), "--yes", "--local-user", key, "--armor", "--detach-sign",
            "--output", f"{repomd}.asc", str(repomd)]


def verify_signature_argv(repomd: Path, gnupghome: Path | None = None) -> list[str]:
    return [*_gpg(gnupghome), "--status-fd", "1", "--verify", f"{repomd}.asc", str(repomd)]


def secret_key_argv(key: str, gnupghome: Path | None = None) -> list[str]:
    return [*_gpg(gnupghome), "--status-fd", "2", "--with-colons", "--list-secret-keys", key]


# gpg's status line when a key listing fails, and the error codes (gpg-error's, low 16 bits) that mean the keyring
# holds no such key: GPG_ERR_NO_PUBKEY, GPG_ERR_NO_SECKEY. Any other (GPG_ERR_NO_AGENT, a keyring it cannot read
# or lock) is gpg failing to answer.
_LIST_ERROR = "[GNUPG:] ERROR keylist.getkey "
_NO_KEY_CODES = {9, 17}


def key_fingerprints(key: str, gnupghome: Path | None) -> set[str]:
    """The fingerprints (key and subkeys) of the secret key ``key`` names; empty when the keyring lacks it.

    ToolError when gpg could not answer (its agent did not start or answer, the keyring is locked or
    unreadable): that is not "no such key", and retrying may help."""
    with agent_session(gnupghome):  # gpg asks the agent which secret keys exist
        listing = run(secret_key_argv(key, gnupghome), check=False)
    found = {line.split(":")[9] for line in listing.stdout.splitlines() if line.startswith("fpr:")}
    if listing.returncode == 0 or found:
        return found
    codes = [line[len(_LIST_ERROR):].strip() for line in listing.stderr.splitlines() if line.startswith(_LIST_ERROR)]
    if codes and all(code.isdigit() and int(code) & 0xFFFF in _NO_KEY_CODES for code in codes):
        return set()
    said = [line for line in listing.stderr.splitlines() if line.startswith("gpg: ")]
    raise ToolError(f"gpg could not list the secret keys in {gnupghome or '~/.gnupg'} (RELENG_GNUPGHOME) to look "
                    f"for {key} (exit {listing.returncode}): " + "; ".join(said[-3:] or ["no message"]) +
                    "; this is gpg failing, not a missing key: retry, and if it persists check that gpg-agent can "
                    "start for that home", argv=listing.args, returncode=listing.returncode, output=listing.stderr)


def _no_key_message(key: str, gnupghome: Path | None) -> str:
    return (f"RELENG_REPO_SIGNING_KEY={key} has no secret key in {gnupghome or '~/.gnupg'} (RELENG_GNUPGHOME); "
            "import the key there, or unset RELENG_REPO_SIGNING_KEY to publish unsigned repodata")


def signing_key_problem(key: str, gnupghome: Path | None) -> str | None:
    """None when ``key`` has a secret key in the keyring, else what is wrong and how to fix it (ToolError when
    gpg could not answer)."""
    return None if key_fingerprints(key, gnupghome) else _no_key_message(key, gnupghome)


def require_key(key: str, gnupghome: Path | None) -> set[str]:
    """The fingerprints of ``key``; SigningError when the keyring has no secret key for it (asked once: a
    second question could get another answer), ToolError when gpg could not answer."""
    fingerprints = key_fingerprints(key, gnupghome)
    if not fingerprints:
        raise SigningError(_no_key_message(key, gnupghome))
    return fingerprints


def signed_by(repomd: Path, fingerprints: set[str], gnupghome: Path | None) -> bool:
    """``repomd``'s ``.asc`` is a good signature made by one of ``fingerprints``."""
    if not Path(f"{repomd}.asc").is_file():
        return False
    result = run(verify_signature_argv(repomd, gnupghome), check=False)
    return result.returncode == 0 and bool(validsig_fingerprints(result.stdout) & fingerprints)


def sign_repomd(repomd: Path, key: str, gnupghome: Path | None, fingerprints: set[str] | None = None, *,
                label: str = "") -> set[str]:
    """Sign ``repomd`` with ``key`` (detached, armored ``<repomd>.asc``) and check that the signature verifies
    with one of the key's fingerprints, which are returned. SigningError when the keyring has no secret ``key``,
    ToolError when gpg fails or its signature does not verify."""
    fingerprints = fingerprints or require_key(key, gnupghome)
    with agent_session(gnupghome):
        run(sign_argv(repomd, key, gnupghome))
    if not signed_by(repomd, fingerprints, gnupghome):
        raise ToolError(f"{label or repomd.parent}: gpg signed {repomd} with {key}, but the signature does not "
                        "verify")
    return fingerprints


# --- clear-signed text files (CHECKSUM) ----------------------------------------------------------------------


# One name for callers that sign many files in one step: the agent is started once and stopped at the end.
gpg_session = agent_session


def clearsign_argv(key: str, gnupghome: Path | None = None) -> list[str]:
    """Clear-sign stdin to stdout with ``key`` (SHA-256 digest)."""
    return [*_gpg(gnupghome), "--local-user", key, "--digest-algo", "SHA256", "--clearsign"]


def verify_clearsigned_argv(path: Path, gnupghome: Path | None = None) -> list[str]:
    return [*_gpg(gnupghome), "--status-fd", "1", "--verify", str(path)]


def clearsigned_by(path: Path, fingerprints: set[str], gnupghome: Path | None) -> bool:
    """``path`` is a clear-signed file with a good signature by one of ``fingerprints``."""
    if not Path(path).is_file():
        return False
    result = run(verify_clearsigned_argv(path, gnupghome), check=False)
    return result.returncode == 0 and bool(validsig_fingerprints(result.stdout) & fingerprints)


def clearsign_file(path: Path, body: str, key: str, gnupghome: Path | None,
                   fingerprints: set[str] | None = None) -> bool:
    """Write ``body`` to ``path`` clear-signed with ``key``, atomically, and check the signature verifies.

    A file already holding exactly ``body`` with a good signature by the key is kept (False); True when the
    file was signed and written. SigningError when the keyring has no secret ``key``, ToolError when gpg fails
    or its signature does not verify.
    """
    path = Path(path)
    fingerprints = fingerprints or require_key(key, gnupghome)
    if path.is_file() and clearsigned_body(path.read_text(errors="replace")) == body \
            and clearsigned_by(path, fingerprints, gnupghome):
        return False
    with agent_session(gnupghome):
        signed = run(clearsign_argv(key, gnupghome), input=body, what="gpg --clearsign").stdout
    if clearsigned_body(signed) != body:
        raise ToolError(f"gpg --clearsign of {path} with {key} did not return the text it was given")
    tmp = path.with_name(f".{path.name}.signing")
    try:
        atomic_write(tmp, signed)
        if not clearsigned_by(tmp, fingerprints, gnupghome):
            raise ToolError(f"gpg clear-signed {path} with {key}, but the signature does not verify")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return True
