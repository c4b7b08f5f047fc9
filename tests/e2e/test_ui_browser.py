"""The release engineer's path through the Airflow UI, in a real browser (Debian's Chromium through Playwright), on
the session's local stack (tests/livestack.py):

1. ``admin`` signs in, unpauses promote_to_production (staging events that come while it is paused are dropped),
   opens the full_compose trigger form, picks el9 and one arch (x86_64; Extra ISOs none, Full run off: the
   smallest compose the form allows, os trees only), triggers, and follows the run's grid to Success;
2. the compose's staging event starts promote_to_production, whose vetting checks staging before anyone is asked;
3. ``admin``, who is not in RELENG_APPROVERS, opens Browse → Required Actions and presses Approve: Airflow 3.3.2
   offers the button and refuses the answer (HTTP 403, an *Access Denied* notification); the request still waits;
4. ``approver`` signs in, opens Browse → Required Actions, reads the change report and the vetting table in the
   request's body and approves; the promotion runs to Success;
5. production then holds the staged release, signed, and the audit log names ``approver`` and the report's digest.

The REST API is used only to wait and to check; every step above is done in the browser. Each step's screenshot
is saved in ``$UI_TEST_SCREENSHOTS`` (default: ``screenshots`` in the test's tmp dir), printed at the start; the
best ones are in docs/screenshots/ (README.md, docs/UI.md).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from releng.core.layout import ReleaseTrees
from tests.e2e.browser import (
    Api,
    Shots,
    chromium,
    log_in,
    new_context,
    open_required_actions,
    require_chromium,
    review_drawer,
    run_state_badge,
    scroll_to_top,
    settled,
    table_rows,
    table_with_header,
    toast,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.stack]

ARCH = "x86_64"
PROMOTION = "promote_to_production"
# Bounds for a loaded 2-core machine; the compose and the promotion take about a minute each on a quiet one.
COMPOSE_TIMEOUT = 1500
REQUEST_TIMEOUT = 900
PROMOTION_TIMEOUT = 900


def test_release_engineer_path_in_a_browser(live_stack, el9, tmp_path, capsys):
    require_chromium()
    from playwright.sync_api import expect

    shots = Shots(Path(os.environ.get("UI_TEST_SCREENSHOTS") or tmp_path / "screenshots"))
    with capsys.disabled():
        print(f"\n[browser] screenshots of each step: {shots.dir}", flush=True)
    state = live_stack.state
    api = Api(state)
    url, users = state.ui, state.users
    trees = ReleaseTrees(el9, Path(state.settings["RELENG_STAGING_ROOT"]),
                         Path(state.settings["RELENG_PRODUCTION_ROOT"]))
    staged, production = trees.staging_dir(rc=False), trees.production_dir()
    assert not production.exists(), (
        f"{production} exists already: this stack promoted {el9.name} before, so staging would equal production "
        "and nobody would be asked; run the test on a stack whose production does not hold it (a new one)")
    compose_runs, promotion_runs = api.run_ids("full_compose"), api.run_ids(PROMOTION)

    with chromium(tmp_path / "browser-home") as browser:
        admin = new_context(browser, shots)
        with shots.step("admin signs in"):
            page = log_in(admin, url, "admin", users["admin"])

        with shots.step("admin unpauses promote_to_production"):
            page.goto(f"{url}/dags/{PROMOTION}")
            switch = page.get_by_test_id("toggle-pause")  # the switch beside the DAG's name
            if not switch.get_by_role("checkbox").is_checked():
                switch.click()
            expect(switch.get_by_role("checkbox")).to_be_checked()
            assert wait_for(lambda: not api.get(f"/api/v2/dags/{PROMOTION}")["is_paused"], 60, every=2), \
                f"{PROMOTION} is still paused after its switch was turned on"

        with shots.step("admin fills the full_compose trigger form"):
            page.goto(f"{url}/dags/full_compose")
            page.get_by_test_id("trigger-dag-button").click()
            form = page.get_by_role("dialog")
            form.get_by_role("heading", name="Trigger Dag - full_compose").wait_for()
            form.get_by_role("combobox", name="Release", exact=True).click()
            page.get_by_role("option", name=f"{el9.name} ({el9.fullname})", exact=True).click()
            field = {name: form.get_by_role("group").filter(has=page.get_by_text(name, exact=True))
                     for name in ("Architectures", "Extra ISOs")}
            field["Architectures"].get_by_role("combobox").click()
            page.get_by_role("option", name=ARCH, exact=True).click()
            form.get_by_role("heading", name="Trigger Dag - full_compose").click()  # closes the list (Escape
            # would close the dialog)
            shots.take(page, "trigger-form")
            # Extra ISOs none and Full run off: os trees only, the smallest compose the form allows
            for chip in field["Extra ISOs"].get_by_label(re.compile("^Remove ")).all():
                chip.click()
            full_run = form.get_by_role("checkbox", name="Full run")
            full_run.focus()  # the switch's input is hidden behind its label: toggled with the keyboard
            full_run.press("Space")
            assert not full_run.is_checked(), "the Full run switch is still on"
            form.get_by_role("button", name="Trigger", exact=True).scroll_into_view_if_needed()
            shots.take(page, "trigger-form-bottom")

        with shots.step("admin triggers full_compose"):
            form.get_by_role("button", name="Trigger", exact=True).click()
            page.wait_for_url(re.compile(r"/dags/full_compose/runs/[^/]+$"))
            new = api.run_ids("full_compose") - compose_runs
            assert len(new) == 1, f"expected one new full_compose run, found {sorted(new)}"
            compose_run = new.pop()
            conf = api.run("full_compose", compose_run)["conf"]
            assert (conf["release"], conf["arches"], conf["full_run"], conf["extra_isos"]) == (
                el9.name, [ARCH], False, None), conf

        with shots.step("the full_compose grid shows Success"):
            ended = wait_for(lambda: _ended(api, "full_compose", compose_run), COMPOSE_TIMEOUT, every=10)
            assert ended, f"full_compose {compose_run} did not end in {COMPOSE_TIMEOUT} s"
            page.reload()
            assert ended == "success", (f"full_compose {compose_run} {ended}: "
                                        f"{api.failed_tasks('full_compose', compose_run)}")
            run_state_badge(page).filter(has_text="Success").wait_for()
            shots.take(page, "compose-grid")

        with shots.step("the staging event starts the promotion, vetted before the approval"):
            promo_run = _new_run(api, promotion_runs)
            request = wait_for(lambda: _request_or_failure(api, promo_run), REQUEST_TIMEOUT, every=5)
            assert request, f"{PROMOTION} {promo_run} asked no approval in {REQUEST_TIMEOUT} s"
            tasks = api.task_states(PROMOTION, promo_run)
            vetting = {t: tasks[t] for t in ("change_report", "plan_vetting", "vet_staging", "vetting_verdict")}
            assert all(s and set(s) == {"success"} for s in vetting.values()), vetting

        with shots.step("admin, not an approver, is refused"):
            open_required_actions(page)
            drawer = review_drawer(page, promo_run)
            drawer.get_by_role("button", name="Approve").click()
            settled(toast(page, re.compile("^Access Denied")))
            drawer.get_by_text(re.compile(r"^Only\s+approver\s+may answer")).scroll_into_view_if_needed()
            shots.take(page, "admin-refused")
            assert _still_waiting(api, promo_run), "admin's Approve was taken: the request is answered"
            admin.close()

        approver = new_context(browser, shots)
        with shots.step("approver signs in and opens Browse → Required Actions"):
            page = log_in(approver, url, "approver", users["approver"])
            open_required_actions(page)
            row = page.get_by_role("row").filter(has_text=promo_run)
            row.get_by_text("Approval Required").wait_for()
            shots.take(page, "required-actions")

        with shots.step("approver reads the change report"):
            drawer = review_drawer(page, promo_run)
            summary = drawer.get_by_text(re.compile(r"^\d+ added, \d+ updated, \d+ removed packages$"))
            added, updated, removed = map(int, re.findall(r"\d+", summary.inner_text()))
            assert (added, updated, removed) == (request["summary"]["added"], 0, 0) and added > 0, \
                (summary.inner_text(), request["summary"])
            drawer.get_by_text(re.compile(r"^Only\s+approver\s+may answer")).wait_for()
            digest = drawer.get_by_text(re.compile(r"^sha256:[0-9a-f]{64}$")).inner_text()
            report = table_with_header(drawer, "repository")
            trees_shown = {tuple(r[:3]) for r in table_rows(report)}
            assert ("BaseOS", ARCH, "os") in trees_shown, trees_shown
            shots.take(page, "approval-request")

        with shots.step("approver reads the vetting table"):
            scroll_to_top(drawer.get_by_role("heading", name="Vetting"))
            table = table_with_header(drawer, "check")
            checks = table_rows(table)
            assert [c[:3] for c in checks] == request["vetting"], (checks, request["vetting"])  # what the body says
            assert {c[0] for c in checks} >= {"repodata", "repoclosure", "install"}, checks
            assert {c[2] for c in checks} <= {"passed", "skipped"}, checks
            drawer.get_by_text(re.compile(r"^All \d+ checks passed")).wait_for()  # the verdict above the table
            shots.take(page, "approval-vetting")

        with shots.step("approver approves"):
            drawer.get_by_role("button", name="Approve").click()
            drawer.wait_for(state="hidden")
            settled(toast(page, "approve_promotion response successful"))
            page.get_by_role("row").filter(has_text=promo_run).get_by_text("Approval Received").wait_for()
            shots.take(page, "approved")

        with shots.step("the promotion's grid shows Success"):
            ended = wait_for(lambda: _ended(api, PROMOTION, promo_run), PROMOTION_TIMEOUT, every=5)
            assert ended == "success", f"{PROMOTION} {promo_run} {ended}: {api.failed_tasks(PROMOTION, promo_run)}"
            page.goto(f"{url}/dags/{PROMOTION}/runs/{quote(promo_run, safe='')}")
            run_state_badge(page).filter(has_text="Success").wait_for()
            shots.take(page, "promotion-grid")
        approver.close()

    # production holds what was staged and approved, signed, and the audit log says who decided on which report
    for repo in ("BaseOS", "AppStream"):
        repodata = production / repo / ARCH / "os" / "repodata"
        assert (repodata / "repomd.xml").read_bytes() == (staged / repo / ARCH / "os" / "repodata" /
                                                          "repomd.xml").read_bytes()
        assert (repodata / "repomd.xml.asc").is_file()
    log = Path(state.settings["RELENG_PRODUCTION_ROOT"]) / ".releng" / "promotion-log.jsonl"
    outcome = [e for e in map(json.loads, log.read_text().splitlines())
               if e.get("run_id") == promo_run and e.get("event") == "outcome"]
    assert len(outcome) == 1, outcome
    assert (outcome[0]["outcome"], outcome[0]["decided_by"]["id"], outcome[0]["digest"]) == (
        "promoted", "approver", digest), outcome[0]
    print(f"[browser] screenshots: {shots.dir}: " + ", ".join(p.name for p in shots.taken))


def _ended(api: Api, dag_id: str, run_id: str) -> str | None:
    found = api.run(dag_id, run_id)["state"]
    return found if found in ("success", "failed") else None


def _new_run(api: Api, before: set[str]) -> str:
    """The promote_to_production run the compose's staging event started."""
    new = wait_for(lambda: api.run_ids(PROMOTION) - before, 300, every=5)
    assert new, (f"no {PROMOTION} run started within 300 s of the staged compose: the staging asset event "
                 "starts it only while it is unpaused")
    assert len(new) == 1, f"expected one new {PROMOTION} run, found {sorted(new)}"
    return new.pop()


def _request_or_failure(api: Api, run_id: str) -> dict | None:
    """The run's waiting approval request, with what the body's tables say; fails when the run ended first."""
    request = api.pending_request(PROMOTION, run_id)
    if request is None:
        ended = _ended(api, PROMOTION, run_id)
        assert ended is None, (f"{PROMOTION} {run_id} {ended} before asking anyone: "
                               f"{api.failed_tasks(PROMOTION, run_id)}")
        return None
    body = request["body"]
    counts = re.search(r"\*\*(\d+) added, (\d+) updated, (\d+) removed packages\*\*", body)
    assert counts, body[:500]
    assert "### Vetting" in body, f"the approval body has no Vetting section: {body[-500:]}"
    rows = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])][:3]
            for line in body.split("### Vetting", 1)[1].splitlines()
            if line.startswith("| ") and not line.startswith("| check ")]
    return {**request, "summary": {"added": int(counts.group(1))}, "vetting": rows}


def _still_waiting(api: Api, run_id: str) -> bool:
    return api.pending_request(PROMOTION, run_id) is not None
