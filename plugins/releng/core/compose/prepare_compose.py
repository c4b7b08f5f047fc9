"""prepare_compose: validated run parameters, the work items per (repo, arch, kind), and the compose
directory a run claims with its COMPOSE_ID and STATUS=STARTED.

The plan is plain data; the DAG maps its lists onto operators. Each run claims its own
``<Short>-<X.Y>-<YYYYMMDD.HHMMSS>.<n>`` directory with mkdir (Pungi's respin counter) and records
its run id in it, so a retry or rerun of the run finds it again and no other run ever takes it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from releng.core.compose.status import write_status
from releng.core.fs import atomic_write
from releng.core.layout import COMPOSE_ID_RE, ComposeLayout, LayoutError, compose_id, compose_major_dir
from releng.core.profile import ReleaseProfile


class ComposeParamsError(ValueError):
    """The trigger parameters do not make a valid compose; nothing was started."""

    def __init__(self, release: str, problems: list[str]):
        self.release = release
        self.problems = problems
        super().__init__(f"the parameters do not make a valid {release} compose:\n- " + "\n- ".join(problems))


@dataclass(frozen=True)
class ComposeParams:
    """Validated run parameters of ``full_compose``; ``full_run=False`` is a quick os-trees-only compose."""

    arches: tuple[str, ...]
    rc: bool
    hashed: bool
    repoclosure: bool
    images: tuple[str, ...]
    full_run: bool

    def to_xcom(self) -> dict:
        return {"arches": list(self.arches), "rc": self.rc, "hashed": self.hashed, "repoclosure": self.repoclosure,
                "images": list(self.images), "full_run": self.full_run}

    @classmethod
    def from_xcom(cls, data: Mapping) -> ComposeParams:
        return cls(tuple(data["arches"]), bool(data["rc"]), bool(data["hashed"]), bool(data["repoclosure"]),
                   tuple(data["images"]), bool(data["full_run"]))


def validate_params(profile: ReleaseProfile, raw: Mapping) -> ComposeParams:
    """Cross-check the trigger form against the chosen release; every problem in one message."""
    problems: list[str] = []
    arches = list(raw.get("arches") or profile.arches)
    unknown = [a for a in arches if a not in profile.arches]
    if unknown:
        problems.append(f"arches {', '.join(unknown)} are not arches of {profile.name} "
                        f"(it ships {', '.join(profile.arches)})")
    if len(set(arches)) != len(arches):
        problems.append("arches lists an arch twice")
    buildable = [n for n, img in profile.iso_images.items() if img.disc and not img.isoskip]
    # Not given: every buildable image. Given empty (the trigger form sends null for an empty choice): none.
    requested = list(buildable if "extra_isos" not in raw else raw["extra_isos"] or [])
    # a SIG builds repos only: the form's extra ISOs do not apply (its lorax, DVD and image lists stay empty)
    images = [] if profile.sig else requested
    for name in images:
        image = profile.iso_images.get(name)
        if image is None:
            known = ", ".join(profile.iso_images)
            problems.append(f"extra ISO {name!r} is not in {profile.name}'s iso.images ({known})")
        elif not image.disc:
            problems.append(f"extra ISO {name!r} is a tree, not a disc image; choose one of {', '.join(buildable)}")
        elif image.isoskip:
            problems.append(f"extra ISO {name!r} is marked isoskip in {profile.name}; remove it or change the profile")
    full_run = bool(raw.get("full_run", True))
    repoclosure = bool(raw.get("repoclosure", True))
    if raw.get("rc") and profile.sig:
        problems.append(f"{profile.name} is a SIG compose (sig: {profile.sig}); a SIG has no release candidates: "
                        "clear rc")
    if raw.get("rc") and not full_run:
        problems.append("a release candidate must be a full run (debug, source and kickstart trees, cloud images); "
                        "set full_run or clear rc")
    if raw.get("rc") and not repoclosure:
        problems.append("a release candidate must pass repoclosure; enable repoclosure or clear rc")
    if problems:
        raise ComposeParamsError(profile.name, problems)
    return ComposeParams(tuple(arches), bool(raw.get("rc", False)), bool(raw.get("hashed", True)), repoclosure,
                         tuple(images), full_run)


@dataclass(frozen=True)
class ComposePlan:
    """The work items of one compose; each list feeds one mapped task."""

    reposync: list[dict]
    repoclosure: list[dict]
    lorax: list[dict]
    dvd: list[dict]
    cloud: list[dict]


def plan_compose(profile: ReleaseProfile, params: ComposeParams) -> ComposePlan:
    reposync = []
    for repo in profile.repos:
        for arch in profile.repo_arches(repo.id, params.arches):
            reposync.append({"repo": repo.id, "arch": arch, "kind": "os", "primary": arch in params.arches})
            if params.full_run:
                reposync.append({"repo": repo.id, "arch": arch, "kind": "debug"})
        if params.full_run:
            reposync.append({"repo": repo.id, "arch": "src", "kind": "source"})
    closure = ([{"repo": r, "arch": a} for r in profile.repoclosure for a in params.arches]
               if params.repoclosure else [])
    lorax = [{"arch": a} for a in params.arches] if params.images else []
    dvd = [{"arch": a, "image": i} for a in params.arches for i in params.images]
    cloud = [{"arch": a, "image_type": t} for t, img in profile.cloud_images.items() for a in params.arches
             if a in img.arches] if params.full_run else []
    return ComposePlan(reposync, closure, lorax, dvd, cloud)


OWNER_FILE = "RUN_ID"


def compose_owner(top: Path) -> str | None:
    """The run id recorded in a compose directory (None when it has none)."""
    try:
        return (top / OWNER_FILE).read_text().strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def claim_compose(profile: ReleaseProfile, compose_root: Path, timestamp: str, run_id: str) -> ComposeLayout:
    """The compose directory of run ``run_id``: the one it already owns, else the first free ``<id>.<n>``.

    A free directory is claimed by creating it (mkdir is atomic: of two runs only one gets it), then
    the run id is written into it. Another run's directory, finished or not, is never returned.
    """
    if not run_id or "\n" in run_id:
        raise ValueError(f"run id {run_id!r} cannot own a compose")
    base = compose_id(profile, timestamp)
    major_dir = compose_major_dir(profile, compose_root)
    major_dir.mkdir(parents=True, exist_ok=True)
    for top in sorted(major_dir.glob(f"{base}.*")):
        if top.name[len(base) + 1:].isdigit() and not top.is_symlink() and compose_owner(top) == run_id:
            return ComposeLayout(profile, Path(compose_root), top.name)
    respin = 0
    while True:
        layout = ComposeLayout.new(profile, compose_root, timestamp, respin)
        try:
            layout.top.mkdir()
        except FileExistsError:
            respin += 1
            continue
        atomic_write(layout.top / OWNER_FILE, run_id + "\n")
        return layout


def start_compose(layout: ComposeLayout) -> Path | None:
    """Create the compose dirs, COMPOSE_ID and STATUS=STARTED; return the previous compose (latest link)."""
    previous = previous_compose(layout)
    for path in (layout.compose, layout.metadata, layout.work, layout.logs):
        path.mkdir(parents=True, exist_ok=True)
    atomic_write(layout.metadata / "COMPOSE_ID", layout.compose_id)
    atomic_write(layout.top / "COMPOSE_ID", layout.compose_id)
    # a cleared and rerun compose is being rewritten: whatever it reached before no longer holds
    write_status(layout, "STARTED")
    return previous


def previous_compose(layout: ComposeLayout) -> Path | None:
    link = layout.latest_link
    if link.is_symlink():
        target = link.resolve()
        return target if target.is_dir() and target != layout.top else None
    if link.exists():
        raise LayoutError(f"{link} exists and is not a symlink; move it away so the latest link can be managed")
    return None


def compose_layout(profile: ReleaseProfile, compose: str | os.PathLike, compose_root: Path) -> ComposeLayout:
    """The layout of a compose given by id (``Rocky-9.7-20251123.143015.0``) or by its top directory."""
    ref = str(compose).rstrip("/")
    if COMPOSE_ID_RE.match(ref):
        return ComposeLayout(profile, Path(compose_root), ref)
    top = Path(ref)
    if not top.is_absolute() or not COMPOSE_ID_RE.match(top.name):
        raise LayoutError(f"compose {ref!r} is neither a compose id (<Short>-<X.Y>-<YYYYMMDD.HHMMSS>[.<n>]) nor "
                          f"the absolute path of a compose directory")
    expected = compose_major_dir(profile, top.parent.parent).name
    if top.parent.name != expected:
        raise LayoutError(f"compose directory {top} is not under a {expected}/ directory; "
                          f"it does not belong to {profile.name}")
    return ComposeLayout(profile, top.parent.parent, top.name)


@dataclass(frozen=True)
class ComposeSummary:
    """What prepare_compose hands every later task: the claimed compose, its parameters, the previous compose."""

    release: str
    compose_id: str
    compose_root: Path
    top: Path
    params: ComposeParams
    previous: Path | None = None

    def layout(self, profile: ReleaseProfile) -> ComposeLayout:
        return ComposeLayout(profile, self.compose_root, self.compose_id)

    def to_xcom(self) -> dict:
        return {"release": self.release, "compose_id": self.compose_id, "compose_root": str(self.compose_root),
                "top": str(self.top), "compose_dir": str(self.top / "compose"),
                "previous": str(self.previous) if self.previous else None, **self.params.to_xcom()}

    @classmethod
    def from_xcom(cls, data: Mapping) -> ComposeSummary:
        previous = data.get("previous")
        return cls(data["release"], data["compose_id"], Path(data["compose_root"]), Path(data["top"]),
                   ComposeParams.from_xcom(data), Path(previous) if previous else None)


def prepare_compose(profile: ReleaseProfile, raw: Mapping, compose_root: Path, timestamp: str,
                    run_id: str) -> tuple[ComposeSummary, ComposePlan]:
    """Validate the trigger form, claim the run's compose directory, mark it STARTED and plan the work."""
    params = validate_params(profile, raw)
    layout = claim_compose(profile, compose_root, timestamp, run_id)
    previous = start_compose(layout)
    summary = ComposeSummary(profile.name, layout.compose_id, Path(layout.compose_root), layout.top, params, previous)
    return summary, plan_compose(profile, params)
