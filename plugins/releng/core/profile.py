"""Release profiles: load a ``config/releases/<name>.yaml`` and validate all of it.

A profile holds the facts of one release (revision, arches, repos, ISO and
cloud image maps). :func:`load_profile` either returns a complete, typed
:class:`ReleaseProfile` or raises :class:`ProfileError` listing every problem
with file, key and reason, so a release engineer fixes them in one pass.
"""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from releng.core.arches import MULTILIB_ARCHES, PRIMARY_ARCHES

# The checksum files, images.json and .treeinfo are written with SHA-256; other types are refused, not half-done.
CHECKSUM_TYPES = ("sha256",)
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_REVISION_RE = re.compile(r"^\d+\.\d+$")
_RCLVL_RE = re.compile(r"^[A-Z]+[0-9]+$")
_DISTTAG_RE = re.compile(r"^[a-z]+[0-9]+$")
_PROFILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_KEY_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_SIG_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")

# What a release is published as: stable releases are promoted to production; beta and lookahead live only in
# staging (their own compose root, staging directory and link) and are never promoted.
STABLE, BETA, LOOKAHEAD = "stable", "beta", "lookahead"
CHANNELS = (STABLE, BETA, LOOKAHEAD)
# An RPM package or comps group name as dnf takes it (no globs, no options, no spaces).
_PACKAGE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a profile."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.reason}" if self.key else f"{self.file}: {self.reason}"


class ProfileError(ValueError):
    """A profile could not be loaded; ``problems`` lists everything found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Repo:
    """A build-system repo: ``id`` in the build system, ``dir`` on disk."""

    id: str
    dir: str
    multilib: bool = False
    comps: bool = False
    modules: bool = False


@dataclass(frozen=True)
class IsoImage:
    """An ``iso.images`` entry: an ISO (``disc``) or a tree derived from the lorax output."""

    name: str
    disc: bool
    variant: str
    repos: tuple[str, ...]
    isoskip: bool = False
    reposcan: bool = True
    failable: bool = False


@dataclass(frozen=True)
class LoraxSettings:
    variant: str
    repos: tuple[str, ...]
    squashfs_only: bool
    rootfs_size: int
    removes: tuple[str, ...]
    required_pkgs: tuple[str, ...]


@dataclass(frozen=True)
class CloudImage:
    type: str
    format: str
    variants: tuple[str, ...]
    arches: tuple[str, ...]
    primary_variant: str | None = None
    failable: bool = True


@dataclass(frozen=True)
class ExtraFiles:
    git_repo: str
    branch: str
    files: tuple[str, ...]


@dataclass(frozen=True)
class InstallCheck:
    """What the promotion's install smoke test installs from staging: comps groups and packages from repos."""

    repos: tuple[str, ...]
    groups: tuple[str, ...] = ("core",)
    packages: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReleaseProfile:
    """A validated release profile."""

    path: Path
    name: str
    fullname: str
    distname: str
    shortname: str
    revision: str
    rclvl: str
    major: int
    minor: int
    profile: str
    disttag: str
    bugurl: str
    checksum: str
    arches: tuple[str, ...]
    project_id: str
    gpg_keys: tuple[str, ...]
    repos: tuple[Repo, ...]
    repoclosure: Mapping[str, tuple[str, ...]]
    iso_images: Mapping[str, IsoImage]
    lorax: LoraxSettings | None
    cloud_images: Mapping[str, CloudImage] = field(default_factory=dict)
    extra_files: ExtraFiles | None = None
    channel: str = STABLE
    sig: str | None = None
    install_check: InstallCheck | None = None

    @property
    def promotable(self) -> bool:
        """Only the stable channel reaches production; beta and lookahead stay in staging by design."""
        return self.channel == STABLE

    def lorax_settings(self) -> LoraxSettings:
        """``iso.lorax``; a SIG profile has none (it builds no installer and no ISO)."""
        if self.lorax is None:
            raise ProfileError([Problem(str(self.path), "iso.lorax", f"{self.name} is a SIG profile (sig: {self.sig}): "
                                        "it has no installer or ISOs to build")])
        return self.lorax

    def repo(self, repo_id: str) -> Repo:
        """The repo with this build-system id; KeyError names the known ids."""
        for repo in self.repos:
            if repo.id == repo_id:
                return repo
        raise KeyError(f"profile {self.name} has no repo {repo_id!r}; repos: {', '.join(self.repo_ids)}")

    @property
    def repo_ids(self) -> tuple[str, ...]:
        return tuple(r.id for r in self.repos)

    def repo_arches(self, repo_id: str, arches: Iterable[str] | None = None) -> tuple[str, ...]:
        """Arches to sync for a repo: the chosen arches plus multilib companions when the repo is multilib."""
        chosen = tuple(arches) if arches is not None else self.arches
        out = list(chosen)
        if self.repo(repo_id).multilib:
            for arch in chosen:
                out.extend(a for a in MULTILIB_ARCHES.get(arch, ()) if a not in out)
        return tuple(out)


# --- YAML loading ---------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (PyYAML silently keeps the last one)."""


# libyaml's parser (PyYAML's C extension) with the same Python constructor and resolver: about ten times faster than
# the pure-Python scanner, which was most of a DAG file's parse time (each DAG file reads every profile). Its error
# messages are worded differently, so a profile it refuses is parsed again by _StrictLoader for the message.
_FastLoader: Any = None
if yaml.__with_libyaml__:
    class _FastStrictLoader(yaml.CSafeLoader):
        """CSafeLoader that refuses duplicate mapping keys."""

    _FastLoader = _FastStrictLoader


def _construct_mapping(loader: Any, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
if _FastLoader is not None:
    _FastLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError([Problem(str(path), "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError([Problem(str(path), "", f"cannot read: {exc}")]) from None


def _parse_yaml(path: Path, text: str) -> Any:
    if _FastLoader is not None:
        try:
            return yaml.load(text, Loader=_FastLoader)
        except yaml.YAMLError:
            pass  # the pure-Python loader below words the problem (and names the line) as it always has
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = getattr(exc, "problem", None) or str(exc)
        raise ProfileError([Problem(str(path), "", f"invalid YAML{where}: {detail}")]) from None


# --- validation -----------------------------------------------------------------------------

_MISSING = object()


def _type_name(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), type(value).__name__
    )


class _Checker:
    """Walks the parsed YAML, converting values and collecting problems instead of stopping."""

    def __init__(self, file: str):
        self.file = file
        self.problems: list[Problem] = []

    def problem(self, key: str, reason: str) -> None:
        self.problems.append(Problem(self.file, key, reason))

    def mapping(self, data: Any, key: str, known: Iterable[str] | None = None) -> dict:
        if not isinstance(data, dict):
            self.problem(key, f"must be a mapping, got {_type_name(data)}")
            return {}
        if known is not None:
            allowed = set(known)
            for k in data:
                if k not in allowed:
                    self.problem(_join(key, str(k)), f"unknown key; known keys: {', '.join(sorted(allowed))}")
        return data

    def get(self, data: dict, parent: str, name: str, kind: type, default: Any = _MISSING) -> Any:
        key = _join(parent, name)
        if name not in data or data[name] is None:
            if default is _MISSING:
                self.problem(key, f"missing required key ({kind.__name__ if kind is not list else 'list'})")
                return None
            return default
        value = data[name]
        # bool is an int subclass in Python; a YAML `true` is never a valid integer here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"must be {_type_name(kind())}, got {_type_name(value)} {value!r}")
            return None if default is _MISSING else default
        return value

    def text(self, data: dict, parent: str, name: str, pattern: re.Pattern | None = None,
             hint: str = "", default: Any = _MISSING) -> Any:
        value = self.get(data, parent, name, str, default)
        if isinstance(value, str):
            if not value.strip():
                self.problem(_join(parent, name), "must not be empty")
                return None
            if pattern and not pattern.match(value):
                self.problem(_join(parent, name), f"{value!r} is not valid{': ' + hint if hint else ''}")
                return None
        return value

    def str_list(self, data: dict, parent: str, name: str, item_check: Callable[[str, str], bool] | None = None,
                 default: Any = _MISSING, non_empty: bool = True) -> tuple[str, ...] | None:
        value = self.get(data, parent, name, list, default)
        if value is None:
            return None
        key = _join(parent, name)
        if non_empty and not value:
            self.problem(key, "must not be empty")
        out: list[str] = []
        for i, item in enumerate(value):
            ikey = f"{key}[{i}]"
            if not isinstance(item, str) or not item.strip():
                self.problem(ikey, f"must be a non-empty string, got {_type_name(item)} {item!r}")
            elif item in out:
                self.problem(ikey, f"{item!r} is listed twice")
            elif item_check is None or item_check(ikey, item):
                out.append(item)
        return tuple(out)


def _join(parent: str, name: str) -> str:
    return f"{parent}.{name}" if parent else name


_TOP_KEYS = (
    "name", "fullname", "distname", "shortname", "revision", "rclvl", "major", "minor", "profile",
    "disttag", "bugurl", "checksum", "arches", "build_system", "gpg_keys", "repos", "repoclosure",
    "iso", "cloud_images", "extra_files", "channel", "sig", "install_check",
)


def load_profile(path: str | Path) -> ReleaseProfile:
    """Load and fully validate a release profile; raises ProfileError listing every problem."""
    path = Path(path)
    loaded = _load_text(path, _read_text(path))
    if isinstance(loaded, tuple):
        raise ProfileError(list(loaded))
    return loaded


# A DAG parse asks for every profile several times (each DAG file's trigger form, the default release, the scheduled
# releases). The file is read every time and what its text made is kept: an edited profile is validated again, an
# unchanged one is not (the result depends on nothing but the path and the text).
@functools.lru_cache(maxsize=64)
def _load_text(path: Path, text: str) -> ReleaseProfile | tuple[Problem, ...]:
    try:
        return _validate(path, _parse_yaml(path, text))
    except ProfileError as exc:
        return tuple(exc.problems)


def _validate(path: Path, data: Any) -> ReleaseProfile:
    c = _Checker(str(path))
    top = c.mapping(data, "", _TOP_KEYS)
    if not top:
        if isinstance(data, dict) or data is None:
            c.problem("", "the profile is empty")
        raise ProfileError(c.problems)

    name = c.text(top, "", "name", _NAME_RE, "use lower-case letters, digits, '.', '_' or '-'")
    if name and name != path.stem:
        c.problem("name", f"{name!r} does not match the file name {path.name!r}; name the file {name}.yaml")
    distname = c.text(top, "", "distname")
    shortname = c.text(top, "", "shortname", _REPO_ID_RE, "a single word such as Rocky")
    revision = c.text(top, "", "revision", _REVISION_RE, "write MAJOR.MINOR in quotes, e.g. \"9.7\"")
    major = c.get(top, "", "major", int)
    minor = c.get(top, "", "minor", int)
    if isinstance(major, int) and major < 1:
        c.problem("major", f"must be at least 1, got {major}")
    if isinstance(minor, int) and minor < 0:
        c.problem("minor", f"must not be negative, got {minor}")
    if revision and isinstance(major, int) and isinstance(minor, int) and revision != f"{major}.{minor}":
        c.problem("revision", f"{revision!r} does not match major.minor {major}.{minor}")
    fullname = c.text(top, "", "fullname")
    if fullname and distname and revision and fullname != f"{distname} {revision}":
        c.problem("fullname", f"{fullname!r} does not match distname and revision {distname + ' ' + revision!r}")
    rclvl = c.text(top, "", "rclvl", _RCLVL_RE, "an upper-case label and a number, e.g. RC1, BETA1, LH1")
    profile = c.text(top, "", "profile", _PROFILE_RE, "the latest-link suffix, e.g. \"9\" or \"9-beta\"")
    disttag = c.text(top, "", "disttag", _DISTTAG_RE, "e.g. el9")
    if disttag and isinstance(major, int) and disttag.startswith("el") and disttag != f"el{major}":
        c.problem("disttag", f"{disttag!r} does not match major {major}; expected el{major}")
    bugurl = c.text(top, "", "bugurl", re.compile(r"^https?://"), "an http(s) URL")
    checksum = c.text(top, "", "checksum")
    if checksum and checksum not in CHECKSUM_TYPES:
        c.problem("checksum", f"{checksum!r} is not supported; use one of {', '.join(CHECKSUM_TYPES)}")

    def known_arch(key: str, arch: str) -> bool:
        if arch not in PRIMARY_ARCHES:
            c.problem(key, f"unknown arch {arch!r}; known arches: {', '.join(PRIMARY_ARCHES)}")
            return False
        return True

    arches = c.str_list(top, "", "arches", known_arch) or ()

    build = c.mapping(c.get(top, "", "build_system", dict, {}), "build_system", ("project_id",))
    project_id = c.text(build, "build_system", "project_id") if "build_system" in top else None
    if "build_system" not in top:
        c.problem("build_system", "missing required key (mapping with project_id)")
    if project_id:
        try:
            uuid.UUID(project_id)
        except ValueError:
            c.problem("build_system.project_id", f"{project_id!r} is not a UUID (the build system's project id)")
            project_id = None

    def key_file(key: str, name: str) -> bool:
        if not _KEY_FILE_RE.match(name):
            c.problem(key, f"{name!r} must be a key file name (looked up in RELENG_GPG_KEY_DIR), not a path or URL")
            return False
        return True

    gpg_keys = c.str_list(top, "", "gpg_keys", key_file) or ()

    repos = _check_repos(c, top, arches)
    by_id = {r.id: r for r in repos}
    renamed = {r.dir: r.id for r in repos if r.dir != r.id}

    def repo_ref(key: str, repo_id: str) -> bool:
        if repo_id in by_id:
            return True
        hint = ""
        if repo_id in renamed:
            hint = f"; {repo_id!r} is the directory name of repo {renamed[repo_id]!r}, use the repo id"
        c.problem(key, f"{repo_id!r} is not a repo in `repos` ({', '.join(by_id) or 'none'}){hint}")
        return False

    repoclosure: dict[str, tuple[str, ...]] = {}
    closure = c.mapping(c.get(top, "", "repoclosure", dict), "repoclosure") if "repoclosure" in top else {}
    if "repoclosure" not in top:
        c.problem("repoclosure", "missing required key (mapping of repo id to the repos that may satisfy it)")
    for repo_id in closure:
        key = f"repoclosure.{repo_id}"
        ok = repo_ref(key, str(repo_id))
        dep_list = c.str_list(closure, "repoclosure", str(repo_id), repo_ref, non_empty=False)
        if dep_list and repo_id in dep_list:
            c.problem(key, f"lists itself; {repo_id} is always part of its own closure")
        if ok and dep_list is not None:
            repoclosure[str(repo_id)] = dep_list

    channel = c.text(top, "", "channel", default=STABLE)
    if channel and channel not in CHANNELS:
        c.problem("channel", f"unknown channel {channel!r}; use one of {', '.join(CHANNELS)} (absent means stable)")
    sig = c.text(top, "", "sig", _SIG_RE, "the SIG's short name: lower-case letters, digits and '-', e.g. cloud",
                 default=None)
    if sig:
        if channel and channel != STABLE:
            c.problem("channel", f"a SIG profile is published under mirror/pub/sig and has no {channel} channel; "
                                 "remove channel")
        for key in ("iso", "cloud_images"):
            if key in top:
                c.problem(key, f"a SIG profile (sig: {sig}) builds no ISOs or images; remove {key}")
        iso_images: dict[str, IsoImage] = {}
        lorax: LoraxSettings | None = None
        cloud_images: dict[str, CloudImage] = {}
    else:
        iso_images, lorax = _check_iso(c, top, repo_ref)
        cloud_images = _check_cloud(c, top, arches)
    extra_files = _check_extra_files(c, top)
    install_check = _check_install(c, top, repo_ref, lorax)

    if c.problems:
        raise ProfileError(c.problems)
    assert project_id is not None and (lorax is not None or sig)  # problems above when missing
    return ReleaseProfile(
        path=path, name=name, fullname=fullname, distname=distname, shortname=shortname, revision=revision,
        rclvl=rclvl, major=major, minor=minor, profile=profile, disttag=disttag, bugurl=bugurl,
        checksum=checksum, arches=arches, project_id=project_id, gpg_keys=gpg_keys, repos=repos,
        repoclosure=repoclosure, iso_images=iso_images, lorax=lorax, cloud_images=cloud_images,
        extra_files=extra_files, channel=channel or STABLE, sig=sig, install_check=install_check,
    )


def _check_repos(c: _Checker, top: dict, arches: tuple[str, ...]) -> tuple[Repo, ...]:
    raw = c.get(top, "", "repos", list)
    if raw is None:
        return ()
    if not raw:
        c.problem("repos", "must not be empty")
    repos: list[Repo] = []
    ids: set[str] = set()
    dirs: set[str] = set()
    for i, item in enumerate(raw):
        key = f"repos[{i}]"
        entry = c.mapping(item, key, ("id", "dir", "multilib", "comps", "modules"))
        if not entry:
            continue
        repo_id = c.text(entry, key, "id", _REPO_ID_RE, "letters, digits, '.', '_' or '-'")
        repo_dir = c.text(entry, key, "dir", _REPO_ID_RE, "letters, digits, '.', '_' or '-'", default=repo_id)
        multilib = c.get(entry, key, "multilib", bool, False)
        if multilib and not any(a in MULTILIB_ARCHES for a in arches):
            c.problem(f"{key}.multilib", f"needs one of {', '.join(MULTILIB_ARCHES)} in `arches`")
        if repo_id in ids:
            c.problem(f"{key}.id", f"repo {repo_id!r} is listed twice")
            continue
        if repo_dir in dirs:
            c.problem(f"{key}.dir", f"directory {repo_dir!r} is already used by another repo")
            continue
        if repo_id and repo_dir:
            ids.add(repo_id)
            dirs.add(repo_dir)
            repos.append(Repo(repo_id, repo_dir, multilib, c.get(entry, key, "comps", bool, False),
                              c.get(entry, key, "modules", bool, False)))
    return tuple(repos)


def _check_iso(c: _Checker, top: dict, repo_ref: Callable[[str, str], bool]) -> tuple[dict, LoraxSettings | None]:
    if "iso" not in top:
        c.problem("iso", "missing required key (mapping with images and lorax)")
        return {}, None
    iso = c.mapping(top["iso"], "iso", ("images", "lorax"))
    images: dict[str, IsoImage] = {}
    raw_images = c.mapping(c.get(iso, "iso", "images", dict, {}), "iso.images")
    for name, spec in raw_images.items():
        key = f"iso.images.{name}"
        entry = c.mapping(spec, key, ("disc", "isoskip", "reposcan", "variant", "repos", "failable"))
        if not entry:
            continue
        disc = c.get(entry, key, "disc", bool)
        variant = c.text(entry, key, "variant")
        repos = c.str_list(entry, key, "repos", repo_ref)
        if disc is not None and variant and repos is not None:
            images[str(name)] = IsoImage(
                name=str(name), disc=disc, variant=variant, repos=repos,
                isoskip=c.get(entry, key, "isoskip", bool, False),
                reposcan=c.get(entry, key, "reposcan", bool, True),
                failable=c.get(entry, key, "failable", bool, False),
            )
    if "images" in iso and not raw_images:
        c.problem("iso.images", "must name at least one image")
    lorax = None
    if "lorax" not in iso:
        c.problem("iso.lorax", "missing required key (lorax run settings)")
    else:
        key = "iso.lorax"
        entry = c.mapping(iso["lorax"], key,
                          ("variant", "repos", "squashfs_only", "rootfs_size", "removes", "required_pkgs"))
        variant = c.text(entry, key, "variant")
        repos = c.str_list(entry, key, "repos", repo_ref)
        rootfs_size = c.get(entry, key, "rootfs_size", int, 4)
        if isinstance(rootfs_size, int) and rootfs_size < 1:
            c.problem(f"{key}.rootfs_size", f"must be at least 1 (GiB), got {rootfs_size}")
        removes = c.str_list(entry, key, "removes", default=[], non_empty=False)
        required = c.str_list(entry, key, "required_pkgs", default=[], non_empty=False)
        squashfs_only = c.get(entry, key, "squashfs_only", bool, False)
        if variant and repos is not None:
            lorax = LoraxSettings(variant, repos, squashfs_only, rootfs_size, removes or (), required or ())
    return images, lorax


def _check_cloud(c: _Checker, top: dict, arches: tuple[str, ...]) -> dict[str, CloudImage]:
    images: dict[str, CloudImage] = {}
    raw = c.mapping(c.get(top, "", "cloud_images", dict, {}), "cloud_images")
    for image_type, spec in raw.items():
        key = f"cloud_images.{image_type}"
        entry = c.mapping(spec, key, ("format", "variants", "primary_variant", "arches", "failable"))
        if not entry:
            continue
        fmt = c.text(entry, key, "format", re.compile(r"^[a-z0-9][a-z0-9.]*$"), "a file extension such as qcow2")
        variants = c.str_list(entry, key, "variants", default=[], non_empty=False) or ()
        primary = c.text(entry, key, "primary_variant", default=None)
        if primary and primary not in variants:
            known = ", ".join(variants) or "none"
            c.problem(f"{key}.primary_variant", f"{primary!r} is not one of the variants ({known})")

        def profile_arch(ikey: str, arch: str) -> bool:
            if arch not in arches:
                c.problem(ikey, f"{arch!r} is not one of the profile's arches ({', '.join(arches)})")
                return False
            return True

        image_arches = c.str_list(entry, key, "arches", profile_arch, default=list(arches))
        if fmt:
            images[str(image_type)] = CloudImage(
                type=str(image_type), format=fmt, variants=variants, arches=image_arches or (),
                primary_variant=primary, failable=c.get(entry, key, "failable", bool, True),
            )
    return images


def _check_extra_files(c: _Checker, top: dict) -> ExtraFiles | None:
    if "extra_files" not in top:
        return None
    key = "extra_files"
    entry = c.mapping(top[key], key, ("git_repo", "branch", "files"))
    git_repo = c.text(entry, key, "git_repo", re.compile(r"^(https?://|file://|/)"), "an http(s) or file URL")
    branch = c.text(entry, key, "branch", _BRANCH_RE, "a git branch name")

    def relative(ikey: str, rel: str) -> bool:
        if rel.startswith("/") or ".." in Path(rel).parts:
            c.problem(ikey, f"{rel!r} must be a path inside the repository (no leading '/' or '..')")
            return False
        return True

    files = c.str_list(entry, key, "files", relative)
    if git_repo and branch and files is not None:
        return ExtraFiles(git_repo, branch, files)
    return None


def _check_install(c: _Checker, top: dict, repo_ref: Callable[[str, str], bool],
                   lorax: LoraxSettings | None) -> InstallCheck | None:
    """``install_check``: repos (default: the lorax repos, what the installer installs from), groups (default:
    core), packages (default: none); at least one group or package."""
    if "install_check" not in top:
        return InstallCheck(lorax.repos) if lorax is not None else None
    key = "install_check"
    entry = c.mapping(top[key], key, ("repos", "groups", "packages"))

    def name(ikey: str, value: str) -> bool:
        if not _PACKAGE_RE.match(value):
            c.problem(ikey, f"{value!r} is not a package or group name (letters, digits, '.', '_', '+', '-'; no "
                            "globs or spaces)")
            return False
        return True

    repos = c.str_list(entry, key, "repos", repo_ref, default=None)
    groups = c.str_list(entry, key, "groups", name, default=["core"], non_empty=False)
    packages = c.str_list(entry, key, "packages", name, default=[], non_empty=False)
    if groups == () and packages == ():
        c.problem(key, "names no group and no package; list at least one under groups or packages")
    if repos is None:
        repos = lorax.repos if lorax is not None else None
    if repos is None or groups is None or packages is None:
        return None
    return InstallCheck(repos, groups, packages)


# --- lookup ---------------------------------------------------------------------------------


def profile_paths(config_dir: str | Path) -> list[Path]:
    """The profile files in a config directory, sorted by name."""
    return sorted(Path(config_dir).glob("*.yaml"))


def profile_names(config_dir: str | Path) -> list[str]:
    return [p.stem for p in profile_paths(config_dir)]


class ConfigDirError(ValueError):
    """RELENG_CONFIG_DIR cannot be used: it is missing, not a directory, or holds no valid profile."""


@dataclass(frozen=True)
class ReleaseChoice:
    """What a trigger form may offer: every profile name, those that validate, and the others' problems."""

    config_dir: Path
    all_names: tuple[str, ...]
    names: tuple[str, ...]
    problems: dict[str, tuple[Problem, ...]]
    profiles: dict[str, ReleaseProfile] = field(default_factory=dict)  # the valid ones, by name

    @property
    def broken(self) -> tuple[str, ...]:
        return tuple(self.problems)


def release_choice(config_dir: str | Path) -> ReleaseChoice:
    """Load every profile in ``config_dir``; raises ConfigDirError when none can be offered."""
    config_dir = Path(config_dir)
    hint = "set RELENG_CONFIG_DIR to the directory of the release profiles (*.yaml)"
    if not config_dir.exists():
        raise ConfigDirError(f"RELENG_CONFIG_DIR='{config_dir}' does not exist; {hint}")
    if not config_dir.is_dir():
        raise ConfigDirError(f"RELENG_CONFIG_DIR='{config_dir}' is not a directory; {hint}")
    paths = profile_paths(config_dir)
    if not paths:
        raise ConfigDirError(f"RELENG_CONFIG_DIR='{config_dir}' holds no release profiles (*.yaml); {hint}")
    names, problems, profiles = [], {}, {}
    for path in paths:
        try:
            profiles[path.stem] = load_profile(path)
        except ProfileError as exc:
            problems[path.stem] = tuple(exc.problems)
        else:
            names.append(path.stem)
    if not names:
        listed = "\n".join(str(p) for found in problems.values() for p in found)
        raise ConfigDirError(f"no release profile in RELENG_CONFIG_DIR='{config_dir}' is valid; fix them "
                             f"(python -m releng validate):\n{listed}")
    return ReleaseChoice(config_dir, tuple(p.stem for p in paths), tuple(names), problems, profiles)


def find_profile(name: str, config_dir: str | Path) -> ReleaseProfile:
    """Load the profile called ``name`` from ``config_dir``; the error names the available ones."""
    if not _NAME_RE.match(name):
        raise ProfileError([Problem(str(config_dir), "", f"{name!r} is not a profile name")])
    path = Path(config_dir) / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(profile_names(config_dir)) or "none"
        raise ProfileError([Problem(str(path), "", f"no release profile {name!r}; available: {available}")])
    return load_profile(path)
