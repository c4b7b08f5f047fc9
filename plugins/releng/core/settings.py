"""Site settings: the ``RELENG_*`` environment variables, read in one place.

Everything that differs between sites (paths, URLs, bucket, backends, who may
approve) comes from here; release facts come from the release profiles.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

from releng.core.profile import _NAME_RE as RELEASE_NAME

LORAX_BACKENDS = ("kubernetes", "local")
TREE_ROOTS = ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")


class SettingsError(ValueError):
    """A RELENG_* variable has a value the pipeline cannot use."""


@dataclass(frozen=True)
class Settings:
    """The site settings; build with :meth:`from_env`."""

    config_dir: Path
    compose_root: Path
    staging_root: Path
    production_root: Path
    peridot_url: str
    s3_bucket: str
    s3_conn_id: str
    lorax_backend: str
    approvers: tuple[str, ...]
    gpg_key_dir: Path
    lorax_image: str
    lorax_namespace: str
    lorax_cpu: str
    lorax_memory: str
    lorax_s3_secret: str
    updates_schedule: str
    updates_releases: tuple[str, ...]
    default_release: str
    repo_signing_key: str
    gnupghome: Path | None
    promotion_max_delete: float
    approval_timeout_hours: float
    extra_files_git: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: ``os.environ``), applying the defaults."""
        env = os.environ if env is None else env

        def get(name: str) -> str:
            value = env.get(name, "").strip()
            return value or DEFAULTS.get(name, "")

        backend = get("RELENG_LORAX_BACKEND")
        if backend not in LORAX_BACKENDS:
            raise SettingsError(
                f"RELENG_LORAX_BACKEND={backend!r} is not one of {', '.join(LORAX_BACKENDS)}; "
                "use 'kubernetes' in production or 'local' on a single host"
            )
        peridot_url = get("RELENG_PERIDOT_URL").rstrip("/")
        if not peridot_url.startswith(("http://", "https://")):
            raise SettingsError(
                f"RELENG_PERIDOT_URL={peridot_url!r} is not an http(s) URL; "
                "set it to the build system's yum repos base, e.g. https://yumrepofs.build.resf.org/v1/projects"
            )
        bucket = get("RELENG_S3_BUCKET")
        if len(bucket) < 3:
            raise SettingsError(f"RELENG_S3_BUCKET={bucket!r} is too short; S3 bucket names have at least 3 characters")
        approvers = tuple(a for a in (p.strip() for p in env.get("RELENG_APPROVERS", "").split(",")) if a)
        schedule = get("RELENG_UPDATES_SCHEDULE")
        if len(schedule.split()) != 5 and not schedule.startswith("@"):
            raise SettingsError(
                f"RELENG_UPDATES_SCHEDULE={schedule!r} is not a cron expression; use five fields, e.g. '0 3 * * *'"
            )
        updates_releases = _release_names(get, "RELENG_UPDATES_RELEASES")
        default_release = _release_names(get, "RELENG_DEFAULT_RELEASE", at_most_one=True)
        max_delete = _number(get, "RELENG_PROMOTION_MAX_DELETE", 0.0, 1.0,
                             "the share of production files a promotion may delete, e.g. 0.1")
        timeout = _number(get, "RELENG_APPROVAL_TIMEOUT_HOURS", 0.01, 24 * 30, "hours, e.g. 24")
        gnupghome = get("RELENG_GNUPGHOME")
        roots = _tree_roots(get)
        return cls(
            config_dir=Path(get("RELENG_CONFIG_DIR")),
            compose_root=roots["RELENG_COMPOSE_ROOT"],
            staging_root=roots["RELENG_STAGING_ROOT"],
            production_root=roots["RELENG_PRODUCTION_ROOT"],
            peridot_url=peridot_url,
            s3_bucket=bucket,
            s3_conn_id=get("RELENG_S3_CONN_ID"),
            lorax_backend=backend,
            approvers=approvers,
            gpg_key_dir=Path(get("RELENG_GPG_KEY_DIR")),
            lorax_image=get("RELENG_LORAX_IMAGE"),
            lorax_namespace=get("RELENG_LORAX_NAMESPACE"),
            lorax_cpu=get("RELENG_LORAX_CPU"),
            lorax_memory=get("RELENG_LORAX_MEMORY"),
            lorax_s3_secret=get("RELENG_LORAX_S3_SECRET"),
            updates_schedule=schedule,
            updates_releases=updates_releases,
            default_release=default_release[0] if default_release else "",
            repo_signing_key=get("RELENG_REPO_SIGNING_KEY"),
            gnupghome=Path(gnupghome) if gnupghome else None,
            promotion_max_delete=max_delete,
            approval_timeout_hours=timeout,
            extra_files_git=get("RELENG_EXTRA_FILES_GIT"),
        )

    def as_env(self) -> dict[str, str]:
        """The settings as ``RELENG_*`` variables (what a started stack prints and exports)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = ",".join(value)
            out[f"RELENG_{f.name.upper()}"] = "" if value is None else str(value)
        return out


def _tree_roots(get: Callable[[str], str]) -> dict[str, Path]:
    """The compose, staging and production roots: absolute, not ``/``, and none equal to or inside another.

    Compared after resolving symlinks and ``..``: a compose writes its root and staging, and only an approved
    promotion may write production, so trees that overlap would let a compose publish without approval.
    """
    real: dict[str, Path] = {}
    for name in TREE_ROOTS:
        raw = get(name)
        hint = f"set an absolute directory of its own, e.g. {DEFAULTS[name]}"
        if not os.path.isabs(raw):
            raise SettingsError(f"{name}={raw!r} is a relative path, which every process would resolve from its "
                                f"own working directory; {hint}")
        resolved = os.path.realpath(raw)
        if resolved == "/":
            raise SettingsError(f"{name}={raw!r} is the root directory{_resolved_note(name, raw, resolved)}; {hint}")
        real[name] = Path(resolved)
    for a, b in itertools.combinations(TREE_ROOTS, 2):
        if real[a] == real[b]:
            relation = f"{a}={get(a)!r} and {b}={get(b)!r} are the same directory"
        elif real[b] in real[a].parents:
            relation = f"{a}={get(a)!r} is inside {b}={get(b)!r}"
        elif real[a] in real[b].parents:
            relation = f"{b}={get(b)!r} is inside {a}={get(a)!r}"
        else:
            continue
        notes = "".join(_resolved_note(n, get(n), str(real[n])) for n in (a, b))
        raise SettingsError(
            f"{relation}{notes}: a compose or an update would write where only an approved promotion may. "
            f"Set {', '.join(TREE_ROOTS[:-1])} and {TREE_ROOTS[-1]} to separate directories, none inside another")
    return {name: Path(get(name)) for name in TREE_ROOTS}


def _resolved_note(name: str, raw: str, resolved: str) -> str:
    return f" ({name} resolves to {resolved})" if os.path.normpath(raw) != resolved else ""


def _release_names(get: Callable[[str], str], name: str, *, at_most_one: bool = False) -> tuple[str, ...]:
    """Release profile names, comma-separated (empty entries ignored), each once; () when the variable is empty.

    Only the names' form is checked here; which profiles exist is known from RELENG_CONFIG_DIR when a DAG is
    parsed or a task runs.
    """
    raw = get(name)
    names = tuple(n.strip() for n in raw.split(",") if n.strip())
    example = "el9" if at_most_one else "el9,el10"
    what = ("one release profile name, e.g. 'el9', or nothing for the newest release" if at_most_one else
            "release profile names separated by commas, e.g. 'el9,el10', or nothing for every profile in "
            "RELENG_CONFIG_DIR")
    if raw.strip() and not names:
        raise SettingsError(f"{name}={raw!r} names no release; set it to {what}")
    bad = [n for n in names if not RELEASE_NAME.match(n)]
    if bad:
        kind = "is not a release profile name" if len(bad) == 1 else "are not release profile names"
        raise SettingsError(f"{name}={raw!r}: {', '.join(map(repr, bad))} {kind} (lower-case letters, digits, '.', "
                            f"'_' or '-': the profile's file name without .yaml); set it to {what}")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SettingsError(f"{name}={raw!r} names {', '.join(twice)} more than once; list each release once, "
                            f"e.g. '{example}'")
    if at_most_one and len(names) > 1:
        raise SettingsError(f"{name}={raw!r} names {len(names)} releases; set it to {what}")
    return names


def _number(get, name: str, low: float, high: float, hint: str) -> float:
    raw = get(name)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number; {hint}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name}={raw!r} is out of range [{low}, {high}]; {hint}")
    return value


# The checkout's config/releases, so `python -m releng validate` works from a clone.
_CHECKOUT_RELEASES = Path(__file__).resolve().parents[3] / "config" / "releases"

DEFAULTS: dict[str, str] = {
    "RELENG_CONFIG_DIR": str(_CHECKOUT_RELEASES),
    "RELENG_COMPOSE_ROOT": "/mnt/compose",
    "RELENG_STAGING_ROOT": "/mnt/repos-staging",
    "RELENG_PRODUCTION_ROOT": "/mnt/repos-production",
    "RELENG_PERIDOT_URL": "https://yumrepofs.build.resf.org/v1/projects",
    "RELENG_S3_BUCKET": "resf-empanadas",
    "RELENG_S3_CONN_ID": "releng_s3",
    "RELENG_LORAX_BACKEND": "kubernetes",
    # Where EL hosts keep the distribution's public keys (rocky-gpg-keys installs them there).
    "RELENG_GPG_KEY_DIR": "/etc/pki/rpm-gpg",
    # Lorax pods (RELENG_LORAX_BACKEND=kubernetes): an EL image with lorax, mock and python3-boto3.
    "RELENG_LORAX_IMAGE": "ghcr.io/rocky-linux/sig-core-toolkit:latest",
    "RELENG_LORAX_NAMESPACE": "empanadas",
    "RELENG_LORAX_CPU": "4",
    "RELENG_LORAX_MEMORY": "8Gi",
    # Kubernetes secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and optionally AWS_ENDPOINT_URL).
    "RELENG_LORAX_S3_SECRET": "empanadas-s3",
    "RELENG_UPDATES_SCHEDULE": "0 3 * * *",
    # Empty: scheduled updates cover every release profile in RELENG_CONFIG_DIR.
    "RELENG_UPDATES_RELEASES": "",
    # Empty: the trigger forms offer the newest release (by major.minor) first.
    "RELENG_DEFAULT_RELEASE": "",
    # Empty: repomd.xml is not signed. Otherwise the key id/fingerprint in RELENG_GNUPGHOME (or ~/.gnupg).
    "RELENG_REPO_SIGNING_KEY": "",
    "RELENG_GNUPGHOME": "",
    "RELENG_PROMOTION_MAX_DELETE": "0.1",
    "RELENG_APPROVAL_TIMEOUT_HOURS": "24",
    # Empty: the profiles' extra_files.git_repo. Otherwise a mirror of it (same branches and paths).
    "RELENG_EXTRA_FILES_GIT": "",
}


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
