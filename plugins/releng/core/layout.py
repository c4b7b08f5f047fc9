"""Where things live: compose ids and trees, ISO names, and the staging/production release directories.

Compose tree (the layout empanadas writes, which Rocky's mirrors and tools expect)::

    <compose_root>/<major>/<Short>-<revision>-<YYYYMMDD.HHMMSS>.<n>/
        compose/<RepoDir>/<arch>/{os,kickstart,debug/tree}   compose/<RepoDir>/source/tree
        compose/isos/<arch>  compose/images/<arch>  compose/metadata/
        work/{lorax,isos,images,logs,dnf}/...
        STATUS
    <compose_root>/<major>/latest-<Short>-<profile> -> <Short>-<revision>-<TS>.<n>

The channel of the profile moves the compose root: ``<major>-beta`` and ``<major>-LookAhead`` instead of
``<major>``. A SIG compose is ``<compose_root>/<major>/SIG-<sig>-<revision>-<TS>.<n>`` and its repos are
``compose/<major>/<sig>/<arch>/<Repo>``, ``<arch>/<Repo>-debug`` and ``source/<Repo>`` (empanadas' sync_sig).

Release directories (as Rocky's sync scripts lay them out)::

    <staging_root>/mirror/pub/<category>/<revision>[-<RC>]     what a compose or an update stages
    <staging_root>/mirror/pub/<category>/<revision>-beta       beta (link <major>-BETA), never promoted
    <staging_root>/mirror/pub/<category>/<revision>-LookAhead  lookahead (link <major>-LookAhead), never promoted
    <staging_root>/mirror/pub/sig/<major>/<sig>                a SIG
    <production_root>/mirror/pub/<category>/<revision>         what a promotion publishes
    <production_root>/mirror/pub/sig/<major>/<sig>             a promoted SIG
    <production_root>/mirror/pub/<category>/{<major>,latest-<major>} -> <revision>   the current point release
    <production_root>/mirror/vault/<category>/<revision>       a superseded point release (point_release)

Every path built here is checked to stay under its root, so no empty or odd
value can turn into ``/`` or a parent directory (the old scripts' hazard).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from releng.core.profile import BETA, LOOKAHEAD, STABLE, ReleaseProfile

# <Short>-<X.Y>-<YYYYMMDD.HHMMSS>.<n>: n counts composes started in the same second (Pungi's respin); ids
# without it are composes made before the counter existed. A SIG's Short is SIG-<sig>.
COMPOSE_ID_RE = re.compile(r"^(?P<short>[A-Za-z0-9]+(?:-[a-z0-9]+)*)-(?P<revision>\d+\.\d+)-(?P<date>\d{8})\."
                           r"(?P<time>\d{6})(?:\.(?P<respin>\d+))?$")
# The compose root's suffix and the staging directory's suffix of each channel (the names Rocky's trees use).
CHANNEL_COMPOSE_SUFFIX = {STABLE: "", BETA: "-beta", LOOKAHEAD: "-LookAhead"}
CHANNEL_STAGING_SUFFIX = {BETA: "-beta", LOOKAHEAD: "-LookAhead"}
CHANNEL_LINK_SUFFIX = {BETA: "BETA", LOOKAHEAD: "LookAhead"}
SIG_CATEGORY = "sig"
_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
STATUSES = ("STARTED", "FINISHED", "FINISHED_INCOMPLETE", "DOOMED")


class LayoutError(ValueError):
    """A path component is empty or unsafe; nothing is created from it."""


def safe_part(value: str, what: str) -> str:
    """Refuse empty, '.', '..', slashes and other characters that could move a path."""
    if not isinstance(value, str) or not _SAFE_PART.match(value) or value in (".", ".."):
        raise LayoutError(f"{what} {value!r} is not a safe path component (letters, digits, '.', '_', '+', '-')")
    return value


def compose_timestamp(when: datetime | None = None) -> str:
    """``YYYYMMDD.HHMMSS`` in UTC (empanadas used local time, which breaks ordering across DST)."""
    return (when or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%d.%H%M%S")


def compose_short(profile: ReleaseProfile) -> str:
    """The compose's short name: the profile's (``Rocky``), or ``SIG-<sig>`` for a SIG."""
    return f"SIG-{profile.sig}" if profile.sig else profile.shortname


def compose_major_dir(profile: ReleaseProfile, compose_root: Path) -> Path:
    """``<compose_root>/<major>``, ``<major>-beta`` or ``<major>-LookAhead`` by the profile's channel."""
    return Path(compose_root) / safe_part(f"{profile.major}{CHANNEL_COMPOSE_SUFFIX[profile.channel]}",
                                          "compose root directory")


def compose_id(profile: ReleaseProfile, timestamp: str, respin: int | None = None) -> str:
    """``<Short>-<X.Y>-<timestamp>``, with ``.<respin>`` when given (every new compose has one)."""
    cid = f"{compose_short(profile)}-{profile.revision}-{timestamp}"
    if respin is not None:
        if not isinstance(respin, int) or isinstance(respin, bool) or respin < 0:
            raise LayoutError(f"compose counter {respin!r} is not a non-negative integer")
        cid += f".{respin}"
    if not COMPOSE_ID_RE.match(cid):
        raise LayoutError(f"compose id {cid!r} does not have the form <Short>-<X.Y>-<YYYYMMDD.HHMMSS>[.<n>]")
    return cid


def variant_id(repo_dir: str) -> str:
    """A repo's productmd variant id: its directory name without what productmd refuses (``cloud-common`` is
    ``cloudcommon``; ``BaseOS`` stays ``BaseOS``)."""
    vid = re.sub(r"[^A-Za-z0-9]", "", repo_dir)
    if not vid:
        raise LayoutError(f"repo directory {repo_dir!r} gives no productmd variant id (letters and digits)")
    return vid


def rc_suffix(profile: ReleaseProfile, rc: bool) -> str:
    return f"-{safe_part(profile.rclvl, 'rc level')}" if rc else ""


def repo_dir_name(profile: ReleaseProfile, repo_id: str) -> str:
    return profile.repo(repo_id).dir


def published_dir(profile: ReleaseProfile, compose_dir: Path) -> Path:
    """What of a compose's ``compose/`` directory is staged: all of it, or a SIG's ``<major>/<sig>``."""
    if profile.sig:
        return Path(compose_dir) / str(profile.major) / safe_part(profile.sig, "SIG name")
    return Path(compose_dir)


def repo_tree(profile: ReleaseProfile, compose_dir: Path, repo_id: str, arch: str, kind: str = "os") -> Path:
    """A repo tree under a compose's ``compose/`` directory: ``<Repo>/<arch>/os``, ``kickstart``, ``debug``
    (``<arch>/debug/tree``) or ``source`` (``source/tree``); a SIG's ``<major>/<sig>/<arch>/<Repo>``,
    ``<arch>/<Repo>-debug`` or ``source/<Repo>`` (no kickstart trees)."""
    if profile.sig:
        name = repo_dir_name(profile, repo_id)
        root = published_dir(profile, compose_dir)
        if kind == "source":
            return root / "source" / name
        if kind in ("os", "debug"):
            return root / safe_part(arch, "arch") / (name if kind == "os" else f"{name}-debug")
        raise LayoutError(f"a SIG compose has no {kind!r} trees; use os, debug or source")
    base = Path(compose_dir) / repo_dir_name(profile, repo_id)
    if kind == "source":
        return base / "source" / "tree"
    if kind == "debug":
        return base / safe_part(arch, "arch") / "debug" / "tree"
    if kind in ("os", "kickstart"):
        return base / safe_part(arch, "arch") / kind
    raise LayoutError(f"unknown tree kind {kind!r}; use os, kickstart, debug or source")


@dataclass(frozen=True)
class ComposeLayout:
    """Paths and names of one compose."""

    profile: ReleaseProfile
    compose_root: Path
    compose_id: str

    @classmethod
    def new(cls, profile: ReleaseProfile, compose_root: Path, timestamp: str,
            respin: int | None = None) -> ComposeLayout:
        return cls(profile, Path(compose_root), compose_id(profile, timestamp, respin))

    @property
    def timestamp(self) -> int:
        """The compose id's time as a Unix timestamp (build_timestamp of its trees)."""
        m = COMPOSE_ID_RE.match(self.compose_id)
        if m is None:
            raise LayoutError(f"{self.compose_id!r} is not a compose id")
        return int(datetime.strptime(f"{m['date']}{m['time']}", "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp())

    @property
    def respin(self) -> int:
        """The compose id's ``.<n>`` counter (0 for an id without one)."""
        m = COMPOSE_ID_RE.match(self.compose_id)
        return int(m["respin"] or 0) if m else 0

    # --- top level -----------------------------------------------------------------------
    @property
    def major_dir(self) -> Path:
        return compose_major_dir(self.profile, self.compose_root)

    @property
    def top(self) -> Path:
        return self.major_dir / safe_part(self.compose_id, "compose id")

    @property
    def compose(self) -> Path:
        return self.top / "compose"

    @property
    def work(self) -> Path:
        return self.top / "work"

    @property
    def status_file(self) -> Path:
        return self.top / "STATUS"

    @property
    def latest_link(self) -> Path:
        return self.major_dir / f"latest-{compose_short(self.profile)}-{safe_part(self.profile.profile, 'profile')}"

    @property
    def metadata(self) -> Path:
        return self.compose / "metadata"

    @property
    def published(self) -> Path:
        """The part of the compose that is staged: ``compose/``, or a SIG's ``compose/<major>/<sig>``."""
        return published_dir(self.profile, self.compose)

    # --- repos ---------------------------------------------------------------------------
    def repo_tree(self, repo_id: str, arch: str, kind: str = "os") -> Path:
        """See :func:`repo_tree`."""
        return repo_tree(self.profile, self.compose, repo_id, arch, kind)

    # --- work areas ----------------------------------------------------------------------
    def lorax_dir(self, arch: str) -> Path:
        return self.work / "lorax" / safe_part(arch, "arch")

    def work_isos(self, arch: str) -> Path:
        return self.work / "isos" / safe_part(arch, "arch")

    def work_images(self, arch: str) -> Path:
        return self.work / "images" / safe_part(arch, "arch")

    def iso_dir(self, arch: str) -> Path:
        return self.compose / "isos" / safe_part(arch, "arch")

    def images_dir(self, arch: str) -> Path:
        return self.compose / "images" / safe_part(arch, "arch")

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    # --- names ---------------------------------------------------------------------------
    def volid(self, arch: str, rc: bool, image: str = "dvd") -> str:
        """Lorax/DVD volume id ``Rocky-9-7[-RC1]-x86_64-dvd``; ISO 9660 allows 32 characters."""
        p = self.profile
        vol = f"{p.shortname}-{p.major}-{p.minor}{rc_suffix(p, rc)}-{arch}-{image}"
        if len(vol) > 32:
            raise LayoutError(f"volume id {vol!r} is {len(vol)} characters; ISO 9660 allows 32")
        return vol

    def iso_name(self, arch: str, image: str, rc: bool) -> str:
        """``Rocky-9.7[-RC1]-x86_64-dvd.iso`` (empanadas dropped the RC suffix for DVDs: a bug)."""
        p = self.profile
        return f"{p.shortname}-{p.revision}{rc_suffix(p, rc)}-{safe_part(arch, 'arch')}-{safe_part(image, 'image')}.iso"

    def iso_generic_name(self, arch: str, image: str) -> str:
        return f"{self.profile.shortname}-{arch}-{image}.iso"

    def iso_latest_name(self, arch: str, image: str) -> str:
        return f"{self.profile.shortname}-{self.profile.major}-latest-{arch}-{image}.iso"


@dataclass(frozen=True)
class ReleaseTrees:
    """Staging and production release directories of one profile (sync/common's REV and TARGET)."""

    profile: ReleaseProfile
    staging_root: Path
    production_root: Path

    @property
    def category_name(self) -> str:
        """The category's name (``rocky``, ``sig``): the file lists' suffix."""
        return SIG_CATEGORY if self.profile.sig else safe_part(self.profile.shortname.lower(), "short name")

    @property
    def category(self) -> str:
        return f"mirror/pub/{self.category_name}"

    def staging_name(self, rc: bool) -> str:
        """``9.7[-RC1]``; ``9.8-beta`` or ``9.8-LookAhead`` for a channel (its rc shows in names only); a SIG's
        ``<major>/<sig>``."""
        p = self.profile
        if p.sig:
            return f"{p.major}/{safe_part(p.sig, 'SIG name')}"
        suffix = CHANNEL_STAGING_SUFFIX.get(p.channel, rc_suffix(p, rc))
        return safe_part(f"{p.revision}{suffix}", "staging release directory")

    def staging_category(self) -> Path:
        return _under(self.staging_root, self.category)

    def staging_dir(self, rc: bool) -> Path:
        return _under(self.staging_root, f"{self.category}/{self.staging_name(rc)}")

    def production_category(self) -> Path:
        return _under(self.production_root, self.category)

    def production_dir(self) -> Path:
        """Production drops the RC suffix: ``9.7-RC1`` in staging is ``9.7`` in production; a SIG keeps its
        ``<major>/<sig>``. Beta and lookahead have none: they are never promoted."""
        p = self.profile
        if not p.promotable:
            raise LayoutError(f"{p.name} is a {p.channel} release: it lives only in staging and has no production "
                              "directory")
        if p.sig:
            return _under(self.production_root, f"{self.category}/{self.staging_name(False)}")
        return _under(self.production_root, f"{self.category}/{safe_part(p.revision, 'revision')}")

    def production_release_dir(self, revision: str) -> Path:
        """Production's directory of any point release of this distribution (``mirror/pub/rocky/9.6``)."""
        return _under(self.production_root, f"{self.category}/{safe_part(revision, 'revision')}")

    @property
    def vault_category(self) -> str:
        return f"mirror/vault/{safe_part(self.profile.shortname.lower(), 'short name')}"

    def vault_dir(self, revision: str) -> Path:
        """Where a superseded point release is kept: ``mirror/vault/rocky/9.6``."""
        return _under(self.production_root, f"{self.vault_category}/{safe_part(revision, 'revision')}")

    def production_links(self) -> dict[str, str]:
        """Links in the production category naming the current point release: ``<major>`` and ``latest-<major>``
        point at ``<revision>``."""
        revision = safe_part(self.profile.revision, "revision")
        return {str(self.profile.major): revision, f"latest-{self.profile.major}": revision}

    def staging_links(self, rc: bool) -> dict[str, str]:
        """Links in the staging category: ``latest-<major>`` and ``<revision>`` point at the release dir;
        ``<major>-BETA`` or ``<major>-LookAhead`` for a channel; none for a SIG."""
        p = self.profile
        name = self.staging_name(rc)
        if p.sig:
            return {}
        if p.channel in CHANNEL_LINK_SUFFIX:
            return {f"{p.major}-{CHANNEL_LINK_SUFFIX[p.channel]}": name}
        links = {f"latest-{self.profile.major}": name}
        if name != self.profile.revision:
            links[self.profile.revision] = name
        return links


def download_path(profile: ReleaseProfile) -> str:
    """The release directory as users download it (``pub/rocky/9.7``, ``pub/sig/9/cloud``): production's release
    directory relative to ``<production_root>/mirror``, the directory the download URL serves (no RC suffix, as in
    production). Beta and lookahead are served from staging under their staging names."""
    if profile.sig:
        return f"pub/{SIG_CATEGORY}/{profile.major}/{safe_part(profile.sig, 'SIG name')}"
    name = f"{profile.revision}{CHANNEL_STAGING_SUFFIX.get(profile.channel, '')}"
    return f"pub/{safe_part(profile.shortname.lower(), 'short name')}/{safe_part(name, 'revision')}"


def _under(root: Path, relative: str) -> Path:
    """``root/relative``, refusing a root that is not absolute and any escape from it."""
    root = Path(root)
    if not root.is_absolute() or root == Path("/"):
        raise LayoutError(f"tree root {str(root)!r} must be an absolute directory other than /")
    path = root / relative
    if ".." in Path(relative).parts or not relative.strip("/") or path == root:
        raise LayoutError(f"{relative!r} would not be a directory inside {root}")
    return path
