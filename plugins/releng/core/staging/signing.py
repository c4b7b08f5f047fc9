"""The release key staging's ``repomd.xml`` files are signed with (``RELENG_REPO_SIGNING_KEY``).

A signature counts only when gpg reports it VALIDSIG by one of the configured
key's fingerprints, not by any key in the keyring: after a key change the old
signatures must be replaced.
"""

from __future__ import annotations

from pathlib import Path

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
    return [*_gpg(gnupghome), "--with-colons", "--list-secret-keys", key]


def key_fingerprints(key: str, gnupghome: Path | None) -> set[str]:
    """The fingerprints (key and subkeys) of the secret key ``key`` names; empty when the keyring lacks it."""
    listing = run(secret_key_argv(key, gnupghome), check=False)
    if listing.returncode != 0:
        return set()
    return {line.split(":")[9] for line in listing.stdout.splitlines() if line.startswith("fpr:")}


def signing_key_problem(key: str, gnupghome: Path | None) -> str | None:
    """None when ``key`` has a secret key in the keyring, else what is wrong and how to fix it."""
    if key_fingerprints(key, gnupghome):
        return None
    return (f"RELENG_REPO_SIGNING_KEY={key} has no secret key in {gnupghome or '~/.gnupg'} (RELENG_GNUPGHOME); "
            "import the key there, or unset RELENG_REPO_SIGNING_KEY to publish unsigned repodata")


def require_key(key: str, gnupghome: Path | None) -> set[str]:
    """The fingerprints of ``key``; SigningError when the keyring has no secret key for it."""
    fingerprints = key_fingerprints(key, gnupghome)
    if not fingerprints:
        raise SigningError(signing_key_problem(key, gnupghome))
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
    run(sign_argv(repomd, key, gnupghome))
    if not signed_by(repomd, fingerprints, gnupghome):
        raise ToolError(f"{label or repomd.parent}: gpg signed {repomd} with {key}, but the signature does not "
                        "verify")
    return fingerprints
