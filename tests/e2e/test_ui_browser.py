"""The path a release engineer takes, in a real browser (Chromium through Playwright) on the local stack:

admin logs in, unpauses promote_to_production, opens the full_compose trigger form, picks the release and one arch,
triggers and follows the grid to success; the staging event starts the promotion; admin (not an approver) is
refused; ``approver`` opens Browse → Required Actions, reads the change report and approves; production on disk
then holds the release. Each step's screenshot is kept in ``$UI_TEST_SCREENSHOTS`` (default: the test's tmp dir),
whose path the test prints; the best ones are in docs/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from dev import stack
from tests.e2e.browser import Shots, browser, choose, log_in, require_chromium

pytestmark = [pytest.mark.slow, pytest.mark.stack]
RELEASE, ARCH = "el9", "x86_64"


def _api(live, user: str, path: str, attempts: int = 6) -> dict:
    """GET from the REST API; a busy api-server (2 shared cores) may time out: asked again, 6 times at most."""
    state = live.state
    for attempt in range(attempts):
        try:
            token = stack.airflow_token(state.ui, user, state.users[user])
            req = urllib.request.Request(f"{state.ui}{path}", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(req, timeout=60) as resp:
                return json.loads(resp.read())
        except (TimeoutError, urllib.error.URLError) as exc:
            if attempt == attempts - 1 or (isinstance(exc, urllib.error.HTTPError) and exc.code < 500):
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _wait(what: str, check, timeout: float, every: float = 5):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(every)


def _run_state(live, dag_id: str, run_id: str) -> str:
    return _api(live, "admin", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"]


def _latest_run(live, dag_id: str) -> dict | None:
    runs = _api(live, "admin", f"/api/v2/dags/{dag_id}/dagRuns?order_by=-run_after&limit=1")["dag_runs"]
    return runs[0] if runs else None


def _new_run(live, dag_id: str, before: dict | None) -> dict | None:
    run = _latest_run(live, dag_id)
    return run if run and (before is None or run["dag_run_id"] != before["dag_run_id"]) else None


def _ended(live, dag_id: str, run_id: str) -> str | None:
    state = _run_state(live, dag_id, run_id)
    return state if state in ("success", "failed") else None


def _failed_tasks(live, dag_id: str, run_id: str) -> list[str]:
    tis = _api(live, "admin", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances?limit=100")
    return sorted({f"{t['task_id']}[{t['map_index']}]" for t in tis["task_instances"]
                   if t["state"] in ("failed", "upstream_failed")})


def _pending_approval(live) -> dict | None:
    found = _api(live, "admin", "/api/v2/dags/~/dagRuns/~/hitlDetails?response_received=false")
    details = found.get("hitl_details", [])
    return details[0] if details else None


def test_release_engineer_path_in_a_browser(live_stack, tmp_path):
    require_chromium()
    shots = Shots(Path(os.environ.get("UI_TEST_SCREENSHOTS") or tmp_path / "screenshots"))
    print(f"\nscreenshots: {shots.dir}")
    state = live_stack.state
    url, users = state.ui, state.users
    production = Path(state.settings["RELENG_PRODUCTION_ROOT"])

    with browser(tmp_path / "admin-profile") as context:
        page = log_in(context, url, "admin", users["admin"])
        # the DAG list: descriptions, tags; promote_to_production must be unpaused before the staging event
        _unpause(page, url, "promote_to_production")
        page.goto(f"{url}/dags")
        page.get_by_role("link", name="promote_to_production", exact=True).wait_for()
        shots.take(page, "dag-list")

        page.goto(f"{url}/dags/full_compose")
        page.get_by_role("button", name="Trigger").first.click()
        page.get_by_text("Run Parameters").wait_for()
        choose(page, "release", f"{RELEASE} (Rocky Linux 9.7)")
        choose(page, "arches", ARCH)
        page.get_by_text("Trigger Dag - full_compose").click()  # closes the arches menu (Escape closes the dialog)
        shots.take(page, "trigger-form")
        before = _latest_run(live_stack, "full_compose")
        page.get_by_role("dialog").get_by_role("button", name="Trigger").click()
        run = _wait("the full_compose run", lambda: _new_run(live_stack, "full_compose", before), 120, every=2)
        run_id = run["dag_run_id"]
        assert run["conf"]["release"] == RELEASE and run["conf"]["arches"] == [ARCH], run["conf"]

        page.goto(f"{url}/dags/full_compose/runs/{quote(run_id, safe='')}")
        ended = _wait("full_compose to end", lambda: _ended(live_stack, "full_compose", run_id), 1800, every=10)
        assert ended == "success", _failed_tasks(live_stack, "full_compose", run_id)
        page.reload()
        page.get_by_text("Success", exact=False).first.wait_for()
        shots.take(page, "compose-grid")

        # the staging event started the promotion; it waits for an approver
        pending = _wait("the approval request", lambda: _pending_approval(live_stack), 900, every=5)
        promo_run = pending["task_instance"]["dag_run_id"]
        time.sleep(5)  # an answer within ~1 s of parking can race the scheduler (see docs)
        page.goto(f"{url}/required_actions")
        _open_request(page)
        page.get_by_role("button", name="Approve").click()
        refused = page.get_by_text(re.compile(r"not a respondent|Access Denied|Forbidden|403", re.I)).first
        refused.wait_for()
        shots.take(page, "admin-refused")
        assert _pending_approval(live_stack) is not None  # still waiting: admin's answer was refused

    with browser(tmp_path / "approver-profile") as context:
        page = log_in(context, url, "approver", users["approver"])
        page.get_by_role("button", name=re.compile("Browse", re.I)).first.click()
        page.get_by_role("menuitem", name=re.compile("Required Actions", re.I)).click()
        page.wait_for_url(re.compile("required_actions"))
        shots.take(page, "required-actions")
        _open_request(page)
        body = page.get_by_text(re.compile(rf"Promote {RELEASE} ")).first
        body.wait_for()
        assert page.get_by_text(re.compile(r"\d+ added, \d+ updated, \d+ removed")).first.is_visible()
        vetting = page.get_by_text("Vetting", exact=False)
        vetting_shown = vetting.count() > 0
        if "Vetting" in (pending.get("body") or ""):
            assert vetting.first.is_visible()
        print(f"vetting section in the approval body: {vetting_shown}")
        shots.take(page, "approval-request")
        shots.take(page, "approval-request-full", full_page=True)
        page.get_by_role("button", name="Approve").click()
        ended = _wait("the promotion to end", lambda: _ended(live_stack, "promote_to_production", promo_run), 900)
        assert ended == "success", _failed_tasks(live_stack, "promote_to_production", promo_run)
        page.goto(f"{url}/dags/promote_to_production/runs/{quote(promo_run, safe='')}")
        page.get_by_text("Success", exact=False).first.wait_for()
        shots.take(page, "promotion-done")

    released = production / "mirror" / "pub" / "rocky" / "9.7"
    assert (released / "BaseOS" / ARCH / "os" / "repodata" / "repomd.xml").is_file()
    assert (released / "isos" / ARCH / f"Rocky-9.7-{ARCH}-dvd.iso").is_file()
    log = (production / ".releng" / "promotion-log.jsonl").read_text().splitlines()
    entry = json.loads(log[-1])
    assert entry["outcome"] == "promoted" and entry["decided_by"]["id"] == "approver"
    print("screenshots: " + ", ".join(p.name for p in shots.taken))


def _unpause(page, url: str, dag_id: str) -> None:
    """Switch the DAG on with the pause toggle of its page."""
    page.goto(f"{url}/dags/{dag_id}")
    switch = page.get_by_test_id("toggle-pause").first
    switch.wait_for()
    if switch.get_attribute("data-state") != "checked":
        switch.click()
    page.wait_for_function(
        "() => document.querySelector('[data-testid=toggle-pause]').getAttribute('data-state') === 'checked'")


def _open_request(page) -> None:
    """Open the (only) waiting approval request from the Required Actions list."""
    page.get_by_text(re.compile(r"^Promote ")).first.click()
    page.get_by_role("button", name="Approve").wait_for()
