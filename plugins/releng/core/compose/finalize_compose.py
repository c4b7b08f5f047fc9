"""finalize_compose: the compose's STATUS from its tasks' end states, and the ``latest-<Short>-<profile>``
link, which only moves for a finished compose, atomically."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from releng.core.compose.prepare_compose import ComposePlan
from releng.core.fs import swap_symlink
from releng.core.layout import ComposeLayout, LayoutError
from releng.core.profile import ReleaseProfile


def move_latest_link(layout: ComposeLayout) -> None:
    """Point ``latest-<Short>-<profile>`` at this compose: a new link renamed over the old one (atomic)."""
    link = layout.latest_link
    if link.exists() and not link.is_symlink():
        raise LayoutError(f"{link} exists and is not a symlink; move it away so the latest link can be managed")
    swap_symlink(layout.top.name, link)  # relative: the tree stays valid when mounted elsewhere


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
