"""releng.core.staging.lease: one holder at a time, re-entrant for its run, taken over from an ended run."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from releng.core.staging import lease

PROMOTION = lease.Holder("promote_to_production", "manual__1", "promotion")
UPDATES = lease.Holder("general_updates", "scheduled__2", "updates")


def running(_holder: lease.Holder) -> bool:
    return True


def ended(_holder: lease.Holder) -> bool:
    return False


def test_one_run_holds_it_and_its_tasks_share_it(tmp_path):
    first = lease.try_acquire(tmp_path, PROMOTION, running)
    assert first.acquired and first.holder.key == PROMOTION.key and first.holder.since and first.holder.host
    again = lease.try_acquire(tmp_path, lease.Holder(PROMOTION.dag_id, PROMOTION.run_id, "another task"), running)
    assert again.acquired and again.holder == first.holder
    blocked = lease.try_acquire(tmp_path, UPDATES, running)
    assert not blocked.acquired and blocked.holder == first.holder
    assert "promote_to_production run manual__1 (promotion), since" in blocked.holder.describe()
    # the lease lives beside staging, outside the mirrored tree
    assert json.loads((tmp_path / ".releng" / "staging-lease.json").read_text())["run_id"] == "manual__1"


def test_only_the_holder_releases_it(tmp_path):
    lease.try_acquire(tmp_path, PROMOTION, running)
    assert lease.release(tmp_path, UPDATES.dag_id, UPDATES.run_id).key == PROMOTION.key
    assert lease.current_holder(tmp_path).key == PROMOTION.key
    assert lease.release(tmp_path, PROMOTION.dag_id, PROMOTION.run_id) is None
    assert lease.current_holder(tmp_path) is None
    assert lease.try_acquire(tmp_path, UPDATES, running).acquired


def test_a_lease_left_by_an_ended_run_is_taken_over(tmp_path):
    lease.try_acquire(tmp_path, PROMOTION, running)
    asked = []
    attempt = lease.try_acquire(tmp_path, UPDATES, lambda h: asked.append(h.key) or False)
    assert attempt.acquired and attempt.took_over.key == PROMOTION.key and asked == [PROMOTION.key]
    assert lease.current_holder(tmp_path).key == UPDATES.key


def test_require_names_the_holder_and_what_to_do(tmp_path):
    with pytest.raises(lease.LeaseError, match=r"update_repodata needs the staging lease for general_updates run "
                                               r"scheduled__2, but it is held by nobody.*Clear this run's lease task"):
        lease.require(tmp_path, UPDATES.dag_id, UPDATES.run_id, "update_repodata")
    lease.try_acquire(tmp_path, PROMOTION, running)
    with pytest.raises(lease.LeaseError, match=r"held by promote_to_production run manual__1 \(promotion\)"):
        lease.require(tmp_path, UPDATES.dag_id, UPDATES.run_id, "update_repodata")
    assert lease.require(tmp_path, PROMOTION.dag_id, PROMOTION.run_id, "promote_payload").key == PROMOTION.key


def test_a_corrupt_lease_file_is_named(tmp_path):
    (tmp_path / ".releng").mkdir()
    (tmp_path / ".releng" / "staging-lease.json").write_text("{not json")
    with pytest.raises(lease.LeaseError, match=r"staging-lease.json is not a staging lease.*delete the file"):
        lease.try_acquire(tmp_path, UPDATES, running)


def _contend(root: str, index: int, start, results) -> None:
    start.wait()
    attempt = lease.try_acquire(Path(root), lease.Holder("general_updates", f"run{index}"), running)
    results.put((index, attempt.acquired))


def test_processes_racing_for_it_get_one_holder(tmp_path):
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_contend, args=(str(tmp_path), i, start, results)) for i in range(8)]
    for p in procs:
        p.start()
    start.set()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    winners = [i for i, acquired in outcomes if acquired]
    assert len(winners) == 1
    assert lease.current_holder(tmp_path).run_id == f"run{winners[0]}"
