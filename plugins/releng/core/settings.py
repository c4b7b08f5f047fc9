"""Site settings: the ``RELENG_*`` environment variables, read in one place.

Everything that differs between sites (paths, URLs, bucket, backends, who may
approve) comes from here; release facts come from the release profiles.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

LORAX_BACKENDS = ("kubernetes", "local")


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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings from ``env`` (default: ``os.environ``), applying the defaults."""
        env = os.environ if env is None else env

        def get(name: str) -> str:
            value = env.get(name, "").strip()
            return value or DEFAULTS[name]

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
        return cls(
            config_dir=Path(get("RELENG_CONFIG_DIR")),
            compose_root=Path(get("RELENG_COMPOSE_ROOT")),
            staging_root=Path(get("RELENG_STAGING_ROOT")),
            production_root=Path(get("RELENG_PRODUCTION_ROOT")),
            peridot_url=peridot_url,
            s3_bucket=bucket,
            s3_conn_id=get("RELENG_S3_CONN_ID"),
            lorax_backend=backend,
            approvers=approvers,
            gpg_key_dir=Path(get("RELENG_GPG_KEY_DIR")),
        )

    def as_env(self) -> dict[str, str]:
        """The settings as ``RELENG_*`` variables (what a started stack prints and exports)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f"RELENG_{f.name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out


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
}


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
