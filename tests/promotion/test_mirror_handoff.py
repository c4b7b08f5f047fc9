"""The mirror hand-off step (core): the promoted release handed to a command and an HTTP endpoint, retries, and
refusals (no approval, an unfinished promotion). The DAG runs are in test_dag.py."""

from __future__ import annotations

import json
import logging

import pytest

from releng.core.promotion import approval, mirror_handoff
from releng.core.promotion.target import StateDir
from tests.notifytargets import webhook  # noqa: F401 (fixture)

RECORD = {"release": "el9", "production_dir": "/p/mirror/pub/rocky/9.7", "staging_dir": "/s/mirror/pub/rocky/9.7-RC1",
          "production_category": "/p/mirror/pub/rocky", "run_id": "manual__1", "digest": "sha256:d"}
DONE = {step: {"files": 1} for step in approval.STEPS}
log = logging.getLogger("test")


def test_command_gets_the_release_as_placeholders_and_environment(tmp_path):
    out = tmp_path / "out"
    cmd = ["sh", "-c", f'echo "{{release}} $RELENG_HANDOFF_PRODUCTION_DIR $RELENG_HANDOFF_DIGEST" > {out}']
    result = mirror_handoff.mirror_handoff(RECORD, DONE, command=cmd, url="", attempts=1, retry_delay=0, log=log)
    assert out.read_text() == "el9 /p/mirror/pub/rocky/9.7 sha256:d\n"
    assert result["command"]["attempts"] == 1 and result["release"] == "el9"


def test_url_gets_the_release_as_json_and_is_retried(webhook):  # noqa: F811
    webhook.fail_next[:] = [502]
    result = mirror_handoff.mirror_handoff(RECORD, DONE, command=(), url=webhook.url, attempts=2, retry_delay=0,
                                           log=log)
    assert result["url"] == {"url": webhook.url, "attempts": 2, "status": 200}
    (body,) = webhook.by_event("promoted")
    assert body["release"] == "el9" and body["production_dir"] == RECORD["production_dir"]
    webhook.fail_next[:] = [500, 500]
    with pytest.raises(mirror_handoff.HandoffError, match=r"failed 2 time\(s\): POST .*HTTP 500.*Production holds"):
        mirror_handoff.mirror_handoff(RECORD, DONE, command=(), url=webhook.url, attempts=2, retry_delay=0, log=log)


def test_nothing_configured_and_an_unfinished_promotion_are_refused():
    with pytest.raises(mirror_handoff.NotConfigured, match="RELENG_MIRROR_HANDOFF_COMMAND and"):
        mirror_handoff.mirror_handoff(RECORD, DONE, command=(), url="", attempts=1, retry_delay=0, log=log)
    with pytest.raises(mirror_handoff.HandoffError, match="update_file_lists did not finish"):
        mirror_handoff.mirror_handoff(RECORD, {**DONE, "update_file_lists": None}, command=["true"], url="",
                                      attempts=1, retry_delay=0, log=log)


def test_without_an_approval_the_hand_off_is_refused_and_audited(tmp_path):
    state = StateDir(tmp_path / ".releng")
    with pytest.raises(approval.PromotionRefused):
        mirror_handoff.promoted_record(state, "manual__1", ["approver"], dag_id="d", task_id="mirror_handoff")
    (entry,) = [json.loads(line) for line in state.log_file.read_text().splitlines()]
    assert entry["event"] == "refused" and entry["task_id"] == "mirror_handoff"
