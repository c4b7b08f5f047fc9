"""A compose's plan and state: validated run parameters, the work items per (repo, arch, kind),
the compose directory a run claims, STATUS, COMPOSE_ID and the ``latest-<Short>-<profile>`` link.

The plan is plain data; the DAG maps its lists onto operators. Each run claims its own
``<Short>-<X.Y>-<YYYYMMDD.HHMMSS>.<n>`` directory with mkdir (Pungi's respin counter) and records
its run id in it, so a retry or rerun of the run finds it again and no other run ever takes it.
STATUS moves STARTED -> FINISHED | FINISHED_INCOMPLETE | DOOMED (Pungi's words), back to STARTED
when a task rewrites a finished compose, and the latest link only moves for a finished compose,
atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from releng.core.layout import STATUSES, ComposeLayout, LayoutError, compose_id
from releng.core.profile import ReleaseProfile


class ComposeParamsError(ValueError):
    """The trigger parameters do not make a valid compose; nothing was started."""

    def __init__(self, release: str, problems: list[str]):
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
    requested = raw.get("extra_isos")
    images = list(buildable if requested is None else requested)
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


# --- state ---------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        os.fchmod(f.fileno(), 0o644)  # published (metadata/COMPOSE_ID): world-readable whatever the umask
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


OWNER_FILE = "RUN_ID"
FINISHED_STATUSES = frozenset({"FINISHED", "FINISHED_INCOMPLETE"})


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
    major_dir = Path(compose_root) / str(profile.major)
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
        _atomic_write(layout.top / OWNER_FILE, run_id + "\n")
        return layout


def start_compose(layout: ComposeLayout) -> Path | None:
    """Create the compose dirs, COMPOSE_ID and STATUS=STARTED; return the previous compose (latest link)."""
    previous = previous_compose(layout)
    for path in (layout.compose, layout.metadata, layout.work, layout.logs):
        path.mkdir(parents=True, exist_ok=True)
    _atomic_write(layout.metadata / "COMPOSE_ID", layout.compose_id)
    _atomic_write(layout.top / "COMPOSE_ID", layout.compose_id)
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


def write_status(layout: ComposeLayout, status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown compose status {status!r}; one of {', '.join(STATUSES)}")
    _atomic_write(layout.status_file, status + "\n")


def read_status(layout: ComposeLayout) -> str | None:
    try:
        return layout.status_file.read_text().strip() or None
    except FileNotFoundError:
        return None


def reopen(layout: ComposeLayout) -> str | None:
    """Before rewriting a finished compose: STATUS back to STARTED. Returns the status it had when it changed.

    A STARTED or DOOMED compose is left as it is; finalizing decides the status again.
    """
    status = read_status(layout)
    if status in FINISHED_STATUSES:
        write_status(layout, "STARTED")
        return status
    return None


def move_latest_link(layout: ComposeLayout) -> None:
    """Point ``latest-<Short>-<profile>`` at this compose: a new link renamed over the old one (atomic)."""
    link = layout.latest_link
    if link.exists() and not link.is_symlink():
        raise LayoutError(f"{link} exists and is not a symlink; move it away so the latest link can be managed")
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(layout.top.name)  # relative: the tree stays valid when mounted elsewhere
    os.replace(tmp, link)


@dataclass(frozen=True)
class Outcome:
    status: str
    failed_required: tuple[str, ...]
    failed_optional: tuple[str, ...]


FAILED_STATES = frozenset({"failed", "upstream_failed"})
# Airflow's finished states; anything else (running, queued, scheduled, deferred, up_for_retry,
# up_for_reschedule, restarting, no state yet) is a task that may still write into the compose.
ENDED_STATES = frozenset({"success", "skipped", "removed", *FAILED_STATES})


class ComposeNotEnded(RuntimeError):
    """Some watched task has not ended; the compose cannot be finalized yet."""

    def __init__(self, unfinished: list[tuple[str, str | None]]):
        self.unfinished = unfinished
        listed = ", ".join(f"{key} ({state or 'not started'})" for key, state in unfinished[:20])
        more = f" and {len(unfinished) - 20} more" if len(unfinished) > 20 else ""
        super().__init__(f"refusing to finalize: {len(unfinished)} work tasks have not ended: {listed}{more}; "
                         f"the compose stays STARTED. Let them end, then clear finalize_compose")


def _task_of(key: str, task_ids: Iterable[str]) -> str:
    """The task id of a state key: ``sync_repos`` or, for a mapped instance, ``sync_repos_12``."""
    for task_id in sorted(task_ids, key=len, reverse=True):
        if key == task_id or (key.startswith(task_id + "_") and key[len(task_id) + 1:].isdigit()):
            return task_id
    return key


def missing_tasks(states: Mapping[str, str | None], task_ids: Iterable[str]) -> list[str]:
    """The task ids among ``task_ids`` that have no instance at all in ``states``."""
    task_ids = list(task_ids)
    present = {_task_of(key, task_ids) for key in states}
    return [t for t in task_ids if t not in present]


def failable_keys(profile: ReleaseProfile, plan: ComposePlan, tasks: Mapping[str, str]) -> set[str]:
    """State keys (``task_<map_index>``) of the deliverables the profile marks failable.

    ``tasks`` maps a mapped task id to the plan list it runs over (``{"pull_cloud_images": "cloud"}``);
    the map index is the item's position in that list.
    """
    keys = set()
    for task_id, kind in tasks.items():
        for index, item in enumerate(getattr(plan, kind)):
            spec = profile.cloud_images[item["image_type"]] if kind == "cloud" else profile.iso_images[item["image"]]
            if spec.failable:
                keys.add(f"{task_id}_{index}")
    return keys


def compose_outcome(states: Mapping[str, str | None], failable: Iterable[str], task_ids: Iterable[str]) -> Outcome:
    """STATUS from the run's task states, as Airflow reports them (``task`` or ``task_<map_index>``):
    a failed required task dooms the compose; a failed failable deliverable makes it FINISHED_INCOMPLETE.
    ``failable`` holds task ids (every instance may fail) or single state keys. ComposeNotEnded when any
    task has not ended (a sync waiting to retry may still succeed), whatever else failed.
    """
    states = {key: getattr(state, "value", state) for key, state in states.items()}  # enum members: their values
    optional = set(failable)
    task_ids = list(task_ids)
    unfinished = sorted(((k, state) for k, state in states.items() if state not in ENDED_STATES),
                        key=lambda item: item[0])
    if unfinished:
        raise ComposeNotEnded(unfinished)
    failed = sorted(k for k, state in states.items() if state in FAILED_STATES)

    def is_optional(key: str) -> bool:
        return key in optional or _task_of(key, task_ids) in optional

    failed_optional = tuple(k for k in failed if is_optional(k))
    failed_required = tuple(k for k in failed if not is_optional(k))
    if failed_required:
        return Outcome("DOOMED", failed_required, failed_optional)
    return Outcome("FINISHED_INCOMPLETE" if failed_optional else "FINISHED", (), failed_optional)
