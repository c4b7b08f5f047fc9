"""Site settings: the ``RELENG_*`` environment variables, read in one place.

Everything that differs between sites (paths, URLs, bucket, backends, who may
approve) comes from here; release facts come from the release profiles.
"""

from __future__ import annotations

import itertools
import os
import shlex
import string
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
    notify_email: tuple[str, ...]
    notify_approvers_email: tuple[str, ...]
    notify_webhook: str
    notify_from: str
    smtp_conn_id: str
    airflow_url: str
    compose_deadline_hours: float | None
    approval_reminder_hours: float | None
    mirror_handoff_command: str
    mirror_handoff_url: str
    mirror_handoff_attempts: int
    mirror_handoff_retry_delay: float
    download_url: str
    torrent_trackers: tuple[str, ...]
    torrent_piece_size: int | None
    repodata_pool_slots: int
    test_site: bool
    vetting_boot_timeout: float

    @property
    def mirror_handoff_argv(self) -> tuple[str, ...]:
        """RELENG_MIRROR_HANDOFF_COMMAND split like a shell would (no shell runs it); () when unset."""
        return tuple(shlex.split(self.mirror_handoff_command))

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
        compose_deadline = _optional_hours(get, "RELENG_COMPOSE_DEADLINE_HOURS", 24 * 30,
                                           "hours after a full_compose run is queued, e.g. 12")
        reminder = _optional_hours(get, "RELENG_APPROVAL_REMINDER_HOURS", 24 * 30,
                                   "hours before RELENG_APPROVAL_TIMEOUT_HOURS runs out, e.g. 4")
        if reminder is not None and reminder >= timeout:
            raise SettingsError(
                f"RELENG_APPROVAL_REMINDER_HOURS={get('RELENG_APPROVAL_REMINDER_HOURS')!r} is not less than "
                f"RELENG_APPROVAL_TIMEOUT_HOURS={get('RELENG_APPROVAL_TIMEOUT_HOURS')!r}: the reminder would come "
                "when the approval has already timed out; set it to fewer hours than the timeout, or leave it empty")
        attempts = _number(get, "RELENG_MIRROR_HANDOFF_ATTEMPTS", 1, 20, "a whole number of attempts, e.g. 3")
        if attempts != int(attempts):
            raise SettingsError(f"RELENG_MIRROR_HANDOFF_ATTEMPTS={get('RELENG_MIRROR_HANDOFF_ATTEMPTS')!r} is not a "
                                "whole number; a whole number of attempts, e.g. 3")
        slots = _number(get, "RELENG_REPODATA_POOL_SLOTS", 1, 64,
                        "how many staging trees update_repodata regenerates at once, e.g. 4")
        if slots != int(slots):
            raise SettingsError(f"RELENG_REPODATA_POOL_SLOTS={get('RELENG_REPODATA_POOL_SLOTS')!r} is not a whole "
                                "number; how many staging trees update_repodata regenerates at once, e.g. 4")
        test_site = get("RELENG_TEST_SITE").lower()
        if test_site not in ("true", "false"):
            raise SettingsError(f"RELENG_TEST_SITE={test_site!r} is neither 'true' nor 'false'; 'true' only on a "
                                "test site (it lets the lorax stand-in build boot trees where lorax is missing)")
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
            notify_email=_addresses(get, "RELENG_NOTIFY_EMAIL"),
            notify_approvers_email=_addresses(get, "RELENG_NOTIFY_APPROVERS_EMAIL"),
            notify_webhook=_http_url(get, "RELENG_NOTIFY_WEBHOOK", "the URL that receives the notifications as "
                                     "JSON POSTs, e.g. https://chat.example.org/hooks/releng"),
            notify_from=_one_address(get, "RELENG_NOTIFY_FROM"),
            smtp_conn_id=get("RELENG_SMTP_CONN_ID"),
            airflow_url=_http_url(get, "RELENG_AIRFLOW_URL", "the address people open the Airflow UI at, e.g. "
                                  "https://airflow.example.org").rstrip("/"),
            compose_deadline_hours=compose_deadline,
            approval_reminder_hours=reminder,
            mirror_handoff_command=_handoff_command(get),
            mirror_handoff_url=_http_url(get, "RELENG_MIRROR_HANDOFF_URL", "the URL the hand-off POSTs the "
                                         "promoted release to, e.g. https://mirrormanager.example.org/api/push"),
            mirror_handoff_attempts=int(attempts),
            mirror_handoff_retry_delay=_number(get, "RELENG_MIRROR_HANDOFF_RETRY_DELAY", 0, 3600,
                                               "seconds between hand-off attempts, e.g. 60"),
            download_url=_download_url(get),
            torrent_trackers=_trackers(get),
            torrent_piece_size=_piece_size(get),
            repodata_pool_slots=int(slots),
            test_site=test_site == "true",
            vetting_boot_timeout=_number(get, "RELENG_VETTING_BOOT_TIMEOUT", 5, 3600,
                                         "seconds a vetting boot of an ISO may take to show its boot menu, e.g. 120"),
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


# The placeholders RELENG_MIRROR_HANDOFF_COMMAND may use; the same values are in the command's environment.
HANDOFF_PLACEHOLDERS = ("release", "production_dir", "staging_dir", "category", "run_id", "digest")


def _handoff_command(get: Callable[[str], str]) -> str:
    """The hand-off command line, checked: it splits like a shell line and names only known placeholders."""
    name, raw = "RELENG_MIRROR_HANDOFF_COMMAND", get("RELENG_MIRROR_HANDOFF_COMMAND")
    hint = (f"set it to a command line such as '/usr/local/bin/push-mirrors --release {{release}}'; placeholders: "
            f"{', '.join('{' + p + '}' for p in HANDOFF_PLACEHOLDERS)}")
    try:
        argv = shlex.split(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} does not split into words ({exc}); {hint}") from None
    for word in argv:
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(word) if f is not None]
        except ValueError as exc:
            raise SettingsError(f"{name}={raw!r}: {word!r} has a stray brace ({exc}); write a literal brace as "
                                f"'{{{{' or '}}}}'; {hint}") from None
        unknown = [f for f in fields if f not in HANDOFF_PLACEHOLDERS]
        if unknown:
            raise SettingsError(f"{name}={raw!r} names unknown placeholder(s) {', '.join(map(repr, unknown))}; "
                                f"{hint}")
    return raw


def _addresses(get: Callable[[str], str], name: str) -> tuple[str, ...]:
    """E-mail addresses, comma-separated; () when the variable is empty."""
    raw = get(name)
    names = tuple(a.strip() for a in raw.split(",") if a.strip())
    bad = [a for a in names if a.count("@") != 1 or any(c.isspace() for c in a) or a.startswith("@")
           or a.endswith("@")]
    if bad:
        raise SettingsError(f"{name}={raw!r}: {', '.join(map(repr, bad))} is not an e-mail address; set it to "
                            "addresses separated by commas, e.g. 'releng@example.org,ops@example.org', or nothing")
    return names


def _one_address(get: Callable[[str], str], name: str) -> str:
    found = _addresses(get, name)
    if len(found) > 1:
        raise SettingsError(f"{name}={get(name)!r} names {len(found)} addresses; set it to the one sender address, "
                            "e.g. 'releng@example.org', or nothing for the SMTP connection's from_email")
    return found[0] if found else ""


def _http_url(get: Callable[[str], str], name: str, what: str) -> str:
    """An http(s) URL, or '' when the variable is empty."""
    raw = get(name)
    if raw and (not raw.startswith(("http://", "https://")) or len(raw.split("://", 1)[1].strip("/")) == 0
                or any(c.isspace() for c in raw)):
        raise SettingsError(f"{name}={raw!r} is not an http(s) URL; set it to {what}, or leave it empty")
    return raw


def _optional_hours(get: Callable[[str], str], name: str, high: float, hint: str) -> float | None:
    """Hours, more than 0; None when the variable is empty (no such deadline)."""
    if not get(name):
        return None
    value = _number(get, name, 0, high, hint + ", or leave it empty for none")
    if value <= 0:
        raise SettingsError(f"{name}={get(name)!r} is not more than 0; {hint}, or leave it empty for none")
    return value


def _download_url(get: Callable[[str], str]) -> str:
    """RELENG_DOWNLOAD_URL: required, an http(s) URL without a trailing slash."""
    name = "RELENG_DOWNLOAD_URL"
    what = (f"the URL that serves RELENG_PRODUCTION_ROOT/mirror (the torrents' web seeds), e.g. "
            f"{DEFAULTS[name]}")
    if not get(name).strip("/"):
        raise SettingsError(f"{name}={get(name)!r} is empty; set it to {what}")
    url = _http_url(get, name, what)
    if any(c in url for c in "?#"):
        raise SettingsError(f"{name}={url!r} has a query or fragment, which a file path cannot follow; set it to "
                            f"{what}")
    return url.rstrip("/")


TRACKER_SCHEMES = ("http://", "https://", "udp://")


def _trackers(get: Callable[[str], str]) -> tuple[str, ...]:
    """RELENG_TORRENT_TRACKERS: announce URLs, comma-separated, each once; () for trackerless torrents."""
    name, raw = "RELENG_TORRENT_TRACKERS", get("RELENG_TORRENT_TRACKERS")
    hint = ("set it to announce URLs separated by commas, e.g. 'udp://tracker.example.org:1337/announce,"
            "https://tracker.example.org/announce', or nothing for trackerless torrents (web seed, DHT and peer "
            "exchange)")
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    for url in urls:
        rest = url.split("://", 1)[1] if "://" in url else ""
        host = rest.split("/", 1)[0]
        if not url.startswith(TRACKER_SCHEMES) or not host or any(c.isspace() for c in url):
            raise SettingsError(f"{name}={raw!r}: {url!r} is not an http, https or udp announce URL; {hint}")
        if url.startswith("udp://") and not host.rpartition(":")[2].isdigit():
            raise SettingsError(f"{name}={raw!r}: {url!r} has no port; a UDP tracker needs one "
                                f"(udp://host:port/announce); {hint}")
    twice = sorted({u for u in urls if urls.count(u) > 1})
    if twice:
        raise SettingsError(f"{name}={raw!r} names {', '.join(twice)} more than once; list each tracker once")
    return urls


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2, "mib": 1024 ** 2}
PIECE_SIZE_MIN = 16 * 1024
PIECE_SIZE_MAX = 16 * 1024 * 1024


def _piece_size(get: Callable[[str], str]) -> int | None:
    """RELENG_TORRENT_PIECE_SIZE: a power of two from 16 KiB to 16 MiB (``4MiB``, ``256KiB``, ``4194304``);
    None (empty) for a size chosen from each image's size."""
    name, raw = "RELENG_TORRENT_PIECE_SIZE", get("RELENG_TORRENT_PIECE_SIZE")
    hint = ("set it to a power of two from 16KiB to 16MiB, e.g. '4MiB' or '262144', or leave it empty for a size "
            "chosen per image (512 to 2048 pieces)")
    if not raw:
        return None
    text = raw.replace(" ", "").lower()
    digits = text.rstrip("kmib")
    unit = text[len(digits):]
    if not digits.isdigit() or unit not in _SIZE_UNITS:
        raise SettingsError(f"{name}={raw!r} is not a size; {hint}")
    size = int(digits) * _SIZE_UNITS[unit]
    if size & (size - 1) or not PIECE_SIZE_MIN <= size <= PIECE_SIZE_MAX:
        raise SettingsError(f"{name}={raw!r} ({size} bytes) is not a power of two from 16 KiB to 16 MiB; {hint}")
    return size


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
    # Seconds a QEMU boot of a staged ISO may take to show its boot menu (vet_isos), KVM or not.
    "RELENG_VETTING_BOOT_TIMEOUT": "120",
    # Empty: the profiles' extra_files.git_repo. Otherwise a mirror of it (same branches and paths).
    "RELENG_EXTRA_FILES_GIT": "",
    # Notifications: empty targets send nothing. Mail goes through the Airflow SMTP connection RELENG_SMTP_CONN_ID;
    # an empty RELENG_NOTIFY_FROM takes the connection's from_email.
    "RELENG_NOTIFY_EMAIL": "",
    "RELENG_NOTIFY_APPROVERS_EMAIL": "",
    "RELENG_NOTIFY_WEBHOOK": "",
    "RELENG_NOTIFY_FROM": "",
    "RELENG_SMTP_CONN_ID": "releng_smtp",
    # Empty: Airflow's [api] base_url, for the links in notifications.
    "RELENG_AIRFLOW_URL": "",
    # Empty: no deadline alert.
    "RELENG_COMPOSE_DEADLINE_HOURS": "",
    "RELENG_APPROVAL_REMINDER_HOURS": "",
    # Empty command and URL: promote_to_production's mirror_handoff is skipped.
    "RELENG_MIRROR_HANDOFF_COMMAND": "",
    "RELENG_MIRROR_HANDOFF_URL": "",
    "RELENG_MIRROR_HANDOFF_ATTEMPTS": "3",
    "RELENG_MIRROR_HANDOFF_RETRY_DELAY": "60",
    # The URL RELENG_PRODUCTION_ROOT/mirror is served at: torrents' web seeds are <this>/pub/<short>/<X.Y>/...
    "RELENG_DOWNLOAD_URL": "https://download.rockylinux.org",
    # Empty: trackerless torrents (web seed, DHT and peer exchange find the data).
    "RELENG_TORRENT_TRACKERS": "",
    # Empty: the piece size is chosen per image from its size.
    "RELENG_TORRENT_PIECE_SIZE": "",
    # Slots of the `repodata` pool: update_repodata instances (one staging tree each) running at once.
    "RELENG_REPODATA_POOL_SLOTS": "4",
    # true only on a test site (the local stack, CI): where lorax is not installed, the lorax stand-in builds a
    # lorax-shaped boot tree from fixture files. Elsewhere a missing lorax fails build_lorax.
    "RELENG_TEST_SITE": "false",
}


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings.from_env()
