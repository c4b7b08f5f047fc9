"""``mirror_handoff``: tell the mirror system that an approved promotion is complete.

The site configures a command (``RELENG_MIRROR_HANDOFF_COMMAND``: MirrorManager's ``umdl`` run, an ftpsync
``runmirrors`` push trigger, ...) and/or an HTTP endpoint (``RELENG_MIRROR_HANDOFF_URL``, which gets the promoted
release as a JSON POST). The command's words may hold the placeholders of
:data:`releng.core.settings.HANDOFF_PLACEHOLDERS`; the same values are in its environment as
``RELENG_HANDOFF_<NAME>``. Each is tried up to ``attempts`` times. A failure fails the step and leaves
production as the promotion made it: the hand-off only reads the record.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence

from releng.core import notify
from releng.core.log import Logger
from releng.core.promotion import approval
from releng.core.promotion.base import PromotionError
from releng.core.promotion.record import load_record
from releng.core.promotion.target import StateDir
from releng.core.run import ToolError, stream, tool_env
from releng.core.settings import HANDOFF_PLACEHOLDERS

HANDOFF_STEP = "mirror_handoff"


class HandoffError(PromotionError):
    """The hand-off failed after every attempt; production is unchanged by it."""


class NotConfigured(Exception):
    """Neither a hand-off command nor a URL is set."""


def promoted_record(state: StateDir, run_id: str, approvers: Sequence[str], *, dag_id: str,
                    task_id: str) -> tuple[dict, dict[str, dict | None]]:
    """The record this run promoted and each step's result: from the run's approval while the run is open, else
    (the task cleared after record_promotion closed the run) from the run's ``promoted`` audit entry.

    Anything else (no approval, a Reject, a promotion that did not finish) is refused and the refusal logged in
    the audit log, like a phase's.
    """
    try:
        record = approval.approved_record(state, run_id, approvers)
        return record, approval.load_steps(state, run_id, record["digest"])
    except approval.PromotionRefused as exc:
        entry = _promoted_entry(state, run_id)
        if entry is None:
            approval.refuse(state, run_id, dag_id, task_id, exc)
            raise
    record = load_record(state.record_file(run_id), entry["digest"])
    steps = {**{p: v for p, v in (entry.get("phases") or {}).items()}, approval.VERIFY_STEP: entry.get("verification"),
             approval.FILE_LISTS_STEP: entry.get("file_lists")}
    return record, steps


def _promoted_entry(state: StateDir, run_id: str) -> dict | None:
    """The run's ``outcome`` entry in the audit log when it says ``promoted``."""
    if not state.log_file.exists():
        return None
    found = None
    for line in state.log_file.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("run_id") == run_id and entry.get("event") == "outcome":
            found = entry
    return found if found is not None and found.get("outcome") == "promoted" else None


def handoff_values(record: Mapping) -> dict[str, str]:
    """The promoted release's values the placeholders and environment carry."""
    values = {"release": record["release"], "production_dir": record["production_dir"],
              "staging_dir": record["staging_dir"], "category": record["production_category"],
              "run_id": record["run_id"], "digest": record["digest"]}
    assert tuple(values) == HANDOFF_PLACEHOLDERS
    return {k: str(v) for k, v in values.items()}


def handoff_argv(template: Sequence[str], values: Mapping[str, str]) -> list[str]:
    """The command line with its placeholders filled in (each word formatted on its own: no shell)."""
    return [word.format(**values) for word in template]


def require_complete(steps: Mapping[str, dict | None]) -> None:
    """Refuse unless every promotion step of the approved record finished (the hand-off comes after the last)."""
    missing = [step for step, result in steps.items() if result is None]
    if missing:
        raise HandoffError(f"the promotion's {', '.join(missing)} did not finish for the approved report, so "
                           "production is not complete; nothing was handed off. Finish the promotion first")


def mirror_handoff(record: Mapping, steps: Mapping[str, dict | None], *, command: Sequence[str], url: str,
                   attempts: int, retry_delay: float, log: Logger,
                   sleep: Callable[[float], None] = time.sleep) -> dict:
    """Run the configured hand-off for the promoted ``record``; its result for the audit.

    :class:`NotConfigured` when neither ``command`` nor ``url`` is set; :class:`HandoffError` when a step of
    the promotion did not finish or the hand-off failed ``attempts`` times.
    """
    if not command and not url:
        raise NotConfigured("no mirror hand-off is configured (RELENG_MIRROR_HANDOFF_COMMAND and "
                            "RELENG_MIRROR_HANDOFF_URL are empty)")
    require_complete(steps)
    values = handoff_values(record)
    result: dict = {"release": values["release"], "production_dir": values["production_dir"]}
    if command:
        argv = handoff_argv(command, values)
        env = tool_env({f"RELENG_HANDOFF_{k.upper()}": v for k, v in values.items()})
        result["command"] = {"argv": argv, "attempts": _retry(lambda: _run(argv, env, log), "command "
                                                              f"{' '.join(argv)}", attempts, retry_delay, log, sleep)}
    if url:
        payload = {"event": "promoted", **values}
        holder: dict = {}

        def post() -> None:
            holder["status"], holder["body"] = notify.post_json(url, payload, attempts=1, log=log)
            log.info("POST %s: HTTP %s %s", url, holder["status"], holder["body"][:500])

        result["url"] = {"url": url, "attempts": _retry(post, f"POST {url}", attempts, retry_delay, log, sleep),
                         "status": holder.get("status")}
    return result


def _run(argv: list[str], env: Mapping[str, str], log: Logger) -> None:
    log.info("running %s", " ".join(argv))
    with stream(argv, what="mirror hand-off command", env=env) as lines:
        for line in lines:
            log.info("| %s", line)


def _retry(action: Callable[[], None], what: str, attempts: int, retry_delay: float, log: Logger,
           sleep: Callable[[float], None]) -> int:
    """Run ``action`` until it succeeds, up to ``attempts`` times; the number of attempts it took."""
    last = ""
    for attempt in range(1, attempts + 1):
        try:
            action()
            return attempt
        except (ToolError, notify.WebhookError) as exc:
            last = str(exc)
            log.warning("mirror hand-off, %s: attempt %d of %d failed: %s", what, attempt, attempts, last)
        if attempt < attempts:
            sleep(retry_delay)
    raise HandoffError(f"mirror hand-off failed {attempts} time(s): {what}: {last}. Production holds the promoted "
                       "release; fix the mirror system (or RELENG_MIRROR_HANDOFF_*) and clear mirror_handoff to hand "
                       "it off again (the run's audit entry says it was promoted)")
