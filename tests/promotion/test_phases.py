"""The promotion phases on real trees: convergence, hard links, the approved list only, the lock,
kill -9 at several points, a watcher that never sees a repomd.xml naming a missing file, and the
old scripts' hazards refused before any rsync."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from releng.core import rsync
from releng.core.promotion.base import PromotionError
from releng.core.promotion.change_report import make_report
from releng.core.promotion.promote_phases import promote_phase
from releng.core.promotion.record import write_record
from releng.core.promotion.target import resolve_target
from releng.core.settings import settings
from tests.promotion.conftest import build_rpm, fixture_signer, sign_repomd, tree_digest, update_repo

PHASES = ("payload", "metadata", "deletions")


def report(run_id: str, **kw) -> dict:
    target = resolve_target("el9", True, settings())
    record = make_report(target, run_id=run_id, dry_run=kw.get("dry_run", False),
                                   allow_large_delete=kw.get("allow", False), max_delete=kw.get("max_delete", 0.1))
    write_record(target, record)
    return record


def promote(record: dict, **kw) -> dict:
    return {p: promote_phase(record, p, **kw) for p in PHASES}


def converged(trees) -> bool:
    return tree_digest(trees.staging) == tree_digest(trees.production)


def test_promotion_converges_with_hard_links_links_and_times(staged):
    record = report("r1")
    done = promote(record)
    assert done["payload"]["files"] > 0 and done["metadata"]["files"] > 0 and done["deletions"]["files"] == 0
    assert converged(staged)
    ks = staged.production / "BaseOS" / "x86_64" / "kickstart" / "Packages"
    os_pkgs = staged.production / "BaseOS" / "x86_64" / "os" / "Packages"
    for rpm in ks.rglob("*.rpm"):
        assert rpm.stat().st_ino == (os_pkgs / rpm.relative_to(ks)).stat().st_ino  # -H kept the hard links
    assert os.readlink(staged.production / "isos" / "x86_64" / "Rocky-9-latest-x86_64-boot.iso") == \
        "Rocky-9.7-RC1-x86_64-boot.iso"
    again = report("r2")
    assert again["items"] == []  # a second dry run finds nothing: production equals staging for rsync too


def test_only_the_approved_changes_are_applied(staged):
    promote(report("r1"))
    (staged.staging / "isos" / "x86_64" / "approved.txt").write_text("approved\n")
    record = report("r2")
    (staged.staging / "isos" / "x86_64" / "late.txt").write_text("staged after the approval\n")
    promote(record)
    assert (staged.production / "isos" / "x86_64" / "approved.txt").exists()
    assert not (staged.production / "isos" / "x86_64" / "late.txt").exists()


def test_staging_that_changed_since_the_report_is_refused(staged):
    record = report("r1")
    rpm = next((staged.staging / "AppStream" / "x86_64" / "os" / "Packages").rglob("*.rpm"))
    rpm.write_bytes(rpm.read_bytes() + b"tampered")
    with pytest.raises(PromotionError, match=r"staging changed since the approved report \(1 paths, "
                                                       r"e.g. AppStream/x86_64/os/Packages/.*nothing was copied"):
        promote_phase(record, "payload")
    assert not staged.production.exists()


def test_dry_run_records_cannot_be_promoted(staged):
    with pytest.raises(PromotionError, match="dry run; nothing may be promoted"):
        promote_phase(report("r1", dry_run=True), "payload")
    assert not staged.production.exists()


def test_deletions_are_bounded_exact_and_idempotent(staged):
    promote(report("r1"))
    for victim in (staged.staging / "AppStream").iterdir():
        subprocess.run(["rm", "-rf", str(victim)], check=True)
    record = report("r2")
    assert record["delete_bound"]["exceeded"] and not record["allow_large_delete"]
    promote_phase(record, "payload")
    promote_phase(record, "metadata")
    with pytest.raises(PromotionError, match="above RELENG_PROMOTION_MAX_DELETE=10%"):
        promote_phase(record, "deletions")  # re-checked in the phase, not only in the report
    assert (staged.production / "AppStream" / "x86_64" / "os" / "repodata" / "repomd.xml").exists()

    record = report("r3", allow=True)
    (staged.staging / "AppStream" / "x86_64").mkdir(parents=True)
    (staged.staging / "AppStream" / "x86_64" / "os").mkdir()  # staging has this one again: it is kept
    done = promote(record)
    assert done["deletions"]["kept"] == 2  # AppStream/x86_64 and its os/
    assert (staged.production / "AppStream" / "x86_64" / "os").is_dir()
    assert not (staged.production / "AppStream" / "aarch64").exists()
    rerun = promote_phase(record, "deletions")
    assert rerun["files"] == 0 and rerun["already_gone"] > 0
    subprocess.run(["rm", "-rf", str(staged.staging / "AppStream")], check=True)
    promote(report("r4"))
    assert converged(staged)


def test_a_held_lock_blocks_writers_until_its_holder_dies(staged):
    record = report("r1")
    state = staged.production_root / ".releng"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import fcntl, os, sys, time
        fd = os.open({str(state / "promotion.lock")!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b'{{"holder": "manual sync-to-prod", "pid": %d}}' % os.getpid())
        print("locked", flush=True)
        time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(PromotionError, match=r"locked .* by manual sync-to-prod .*waited 1 s"):
            promote_phase(record, "payload", lock_wait=1)
        assert not staged.production.exists()
        holder.send_signal(signal.SIGKILL)  # a crashed holder: the kernel drops its flock
        holder.wait()
        promote_phase(record, "payload", lock_wait=5)
        assert staged.production.exists()
    finally:
        holder.kill()
        holder.wait()


# --- kill -9 ---------------------------------------------------------------------------------------


PHASE_SCRIPT = """
import json, sys
from releng.core.promotion.promote_phases import promote_phase
record = json.loads(open(sys.argv[1]).read())
for phase in sys.argv[3:]:
    print("start", phase, flush=True)
    promote_phase(record, phase, bwlimit_kbps=int(sys.argv[2]) or None)
    print("done", phase, flush=True)
"""


def run_phases(record: dict, phases: list[str], *, bwlimit: int = 0, kill_when=None, timeout: float = 60):
    """Run phases in a child process (its own process group, like a task); SIGKILL the group when asked."""
    path = Path(record["state_dir"]) / "promotions" / f"{record['run_id']}.json"
    path.write_text(json.dumps(record))
    # The child gets a TMPDIR of its own, which must stay empty even when the child is killed mid-phase: the
    # phases keep their work files under production's state dir, where the next phase removes them.
    child_tmp = tempfile.mkdtemp(prefix="phase-child-")
    proc = subprocess.Popen([sys.executable, "-c", PHASE_SCRIPT, str(path), str(bwlimit), *phases],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "TMPDIR": child_tmp})
    deadline = time.monotonic() + timeout
    killed = False
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_when is not None and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            time.sleep(0.02)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        left_in_tmp = os.listdir(child_tmp)
        shutil.rmtree(child_tmp, ignore_errors=True)
    assert left_in_tmp == [], f"the phase left {left_in_tmp} in $TMPDIR"
    out, err = proc.communicate()
    return killed, proc.returncode, out, err


def _big_iso(trees, size: int = 3 << 20) -> Path:
    iso = trees.staging / "isos" / "x86_64" / "Rocky-9.7-RC1-x86_64-dvd.iso"
    iso.write_bytes(os.urandom(size))
    return iso


def _temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.is_file() and not p.name.startswith(".treeinfo")]


def test_kill_during_payload_then_rerun_converges(staged):
    _big_iso(staged)
    record = report("r1")
    iso_dir = staged.production / "isos" / "x86_64"
    killed, code, _, err = run_phases(record, ["payload"], bwlimit=1000,
                                      kill_when=lambda: iso_dir.is_dir() and _temp_files(iso_dir))
    assert killed and code == -signal.SIGKILL, err
    leftovers = _temp_files(iso_dir)
    assert leftovers  # rsync's half-written temp file of the ISO
    assert not (staged.production / "AppStream" / "x86_64" / "os" / "repodata").exists()  # no metadata yet
    work = Path(record["state_dir"]) / "phase-work"
    assert work.is_dir()  # the killed phase's rsync file lists, under production's state dir (not in $TMPDIR)

    # the task's retry: the same approved record; it also removes the killed rsync's temp file
    killed, code, _, err = run_phases(record, ["payload"])
    assert not killed and code == 0, err
    assert not any(p.exists() for p in leftovers)
    assert not work.exists()  # the retry removed the killed phase's work files and its own
    iso = "isos/x86_64/Rocky-9.7-RC1-x86_64-dvd.iso"
    assert (staged.production / iso).read_bytes() == (staged.staging / iso).read_bytes()
    assert iso_dir.stat().st_mtime_ns == (staged.staging / "isos" / "x86_64").stat().st_mtime_ns
    killed, code, _, err = run_phases(record, ["metadata", "deletions"])
    assert not killed and code == 0, err
    assert converged(staged)
    assert report("r2")["items"] == []


def _slow_metadata(trees, fixture, tmp_path) -> None:
    """A new package and a large extra metadata file in AppStream x86_64 (repomd.xml re-signed)."""
    home, fpr = fixture_signer(fixture, tmp_path)
    repo = trees.staging / "AppStream" / "x86_64" / "os"
    update_repo(repo, [build_rpm(tmp_path, "foo-data", "1.1", gnupghome=home, fpr=fpr)], gnupghome=home, fpr=fpr)
    blob = tmp_path / "updateinfo.xml"
    blob.write_text("<updates>" + os.urandom(1 << 20).hex() + "</updates>")
    subprocess.run(["modifyrepo_c", "--mdtype=updateinfo", "--compress-type=xz", str(blob),
                    str(repo / "repodata")], check=True, capture_output=True)
    sign_repomd(repo, home, fpr)


def test_kill_during_metadata_then_rerun_converges(staged, fixture_buildsystem, tmp_path):
    promote(report("r1"))
    _slow_metadata(staged, fixture_buildsystem, tmp_path)
    record = report("r2")
    repodata = staged.production / "AppStream" / "x86_64" / "os" / "repodata"
    old_repomd = (repodata / "repomd.xml").read_bytes()
    killed, code, out, err = run_phases(record, ["payload", "metadata"], bwlimit=300,
                                        kill_when=lambda: (repodata / ".~tmp~").is_dir())
    assert killed and "done payload" in out, (out, err)
    assert (repodata / "repomd.xml").read_bytes() == old_repomd  # --delay-updates: nothing switched yet
    assert repomd_problems(repodata.parent) == []

    killed, code, out, err = run_phases(record, ["metadata", "deletions"])
    assert code == 0, err
    assert repomd_problems(repodata.parent) == []
    assert converged(staged)


def test_stop_between_phases_then_rerun_or_a_new_promotion_converges(staged, fixture_buildsystem, tmp_path):
    promote(report("r1"))
    _slow_metadata(staged, fixture_buildsystem, tmp_path)
    record = report("r2")
    repo = staged.production / "AppStream" / "x86_64" / "os"
    killed, code, out, err = run_phases(record, ["payload"])  # the worker died right after payload
    assert code == 0 and "done payload" in out, err
    assert (repo / "Packages" / "f" / "foo-data-1.1-1.el9.noarch.rpm").exists()
    assert repomd_problems(repo) == []  # new packages, old metadata: still a consistent repository
    killed, code, out, err = run_phases(record, ["metadata"], bwlimit=300,
                                        kill_when=lambda: (repo / "repodata" / ".~tmp~").is_dir())
    assert killed and repomd_problems(repo) == [], err
    # no retry of the old run: a new report and approval pick up what is left, including the killed
    # rsync's delayed files in repodata/.~tmp~ (in a tree this small they exceed the default 10% bound)
    cleanup = report("r3", max_delete=0.5)
    assert any(".~tmp~" in i["path"] for i in cleanup["items"] if i["phase"] == "deletions")
    promote(cleanup)
    assert converged(staged)


# --- a mirror's view during a promotion --------------------------------------------------------------

REPO_NS = "{http://linux.duke.edu/metadata/repo}"


def repomd_problems(repo: Path) -> list[str]:
    """Files named by repo/repodata/repomd.xml that are missing (what a client would get a 404 for)."""
    try:
        data = (repo / "repodata" / "repomd.xml").read_bytes()
    except FileNotFoundError:
        return []
    hrefs = [loc.get("href") for loc in ET.fromstring(data).iter(f"{REPO_NS}location")]
    missing = [h for h in hrefs if not (repo / h).exists()]
    # only a consistent sample counts: repomd.xml must not have been replaced while we looked
    if missing and (repo / "repodata" / "repomd.xml").read_bytes() == data:
        return [f"{repo}/repodata/repomd.xml names missing {m}" for m in missing]
    return []


def test_a_watcher_never_sees_repomd_naming_a_missing_file(staged, fixture_buildsystem, tmp_path):
    promote(report("r1"))
    _slow_metadata(staged, fixture_buildsystem, tmp_path)
    record = report("r2")
    repos = [staged.production / r["path"] for r in record["repos"]]
    seen, problems, stop = set(), [], threading.Event()

    def watch():
        while not stop.is_set():
            for repo in repos:
                problems.extend(repomd_problems(repo))
                try:
                    seen.add((repo / "repodata" / "repomd.xml").read_bytes())
                except FileNotFoundError:
                    pass

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        promote(record, bwlimit_kbps=800)
    finally:
        stop.set()
        watcher.join()
    assert problems == []
    assert len(seen) >= 2  # it watched the old repomd.xml and the new one
    assert converged(staged)


# --- the old scripts' hazards ------------------------------------------------------------------------


@pytest.fixture
def no_rsync(monkeypatch):
    calls = []
    monkeypatch.setattr(rsync, "run", lambda argv, **kw: calls.append(argv))
    return calls


class _Ti:
    def xcom_pull(self, **_kw):
        return None


def _run_report_operator(params: dict, events: list[dict] | None = None):
    from types import SimpleNamespace

    from releng.assets import STAGING_ASSET
    from releng.operators.promotion import PromotionReportOperator

    op = PromotionReportOperator(task_id="change_report")
    evs = [SimpleNamespace(extra=e, timestamp=i) for i, e in enumerate(events or [])]
    context = {"params": {"rc": False, "dry_run": False, "allow_large_delete": False, **params},
               "run_id": "manual__hazard", "ti": _Ti(), "dag": SimpleNamespace(dag_id="promote_to_production"),
               "triggering_asset_events": {STAGING_ASSET: evs} if events else {}}
    return op.execute(context)


@pytest.mark.parametrize("params,events,message", [
    ({"release": "lookahead"}, None, "unknown release 'lookahead'; known releases: el10, el8, el9"),
    ({"release": ""}, None, "no release chosen"),
    ({"release": None}, None, "no release chosen"),
    ({"release": "../el9"}, None, "unknown release '../el9'"),
    ({"release": None}, [{"release": "lh", "rc": False}], "unknown release 'lh'"),
    ({"release": None}, [{"release": "", "rc": True}], "unknown release ''"),
    ({"release": "el9", "rc": False}, None, "staging directory .*/9.7 does not exist.*or promote with rc=true"),
])
def test_hazards_are_refused_before_any_rsync(staged, no_rsync, params, events, message):
    from airflow.sdk.exceptions import AirflowFailException

    before = tree_digest(staged.production_root, strict=True)
    with pytest.raises(AirflowFailException, match=message):
        _run_report_operator(params, events)
    assert no_rsync == []
    assert tree_digest(staged.production_root, strict=True) == before


@pytest.mark.parametrize("variable,value,message", [
    ("RELENG_STAGING_ROOT", "/", "RELENG_STAGING_ROOT='/' is the root directory"),
    ("RELENG_PRODUCTION_ROOT", "/", "RELENG_PRODUCTION_ROOT='/' is the root directory"),
    ("RELENG_STAGING_ROOT", "relative/staging", "RELENG_STAGING_ROOT='relative/staging' is a relative path"),
])
def test_unsafe_roots_are_refused_before_any_rsync(staged, no_rsync, monkeypatch, variable, value, message):
    from releng.core.settings import SettingsError

    monkeypatch.setenv(variable, value)
    settings.cache_clear()
    with pytest.raises(SettingsError, match=message):  # the settings refuse them when read
        _run_report_operator({"release": "el9", "rc": True})
    assert no_rsync == []


def test_overlapping_or_escaping_trees_are_refused(staged, no_rsync, monkeypatch, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    from releng.core.settings import SettingsError

    monkeypatch.setenv("RELENG_PRODUCTION_ROOT", str(staged.staging_root))
    settings.cache_clear()
    with pytest.raises(SettingsError, match="are the same directory"):  # refused when the settings are read
        _run_report_operator({"release": "el9", "rc": False})  # staging 9.7 would be promoted onto itself
    monkeypatch.setenv("RELENG_PRODUCTION_ROOT", str(staged.production_root))
    settings.cache_clear()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (staged.staging.parent / "9.7").symlink_to(elsewhere)
    with pytest.raises(AirflowFailException, match="outside the staging category"):
        _run_report_operator({"release": "el9", "rc": False})
    assert no_rsync == []


def test_removing_a_repository_never_leaves_repomd_naming_missing_files(staged, monkeypatch):
    promote(report("r1"))
    subprocess.run(["rm", "-rf", str(staged.staging / "AppStream" / "aarch64")], check=True)
    record = report("r2", allow=True)
    repos = [staged.production / "AppStream" / "aarch64" / t for t in ("os", "debug/tree")]
    seen: list[str] = []
    real_unlink = os.unlink

    def checked_unlink(path, *args, **kwargs):  # look at the repositories before every single deletion
        for repo in repos:
            seen.extend(repomd_problems(repo))
        return real_unlink(path, *args, **kwargs)

    promote_phase(record, "payload")
    promote_phase(record, "metadata")
    monkeypatch.setattr(os, "unlink", checked_unlink)
    done = promote_phase(record, "deletions")
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert done["files"] > 10 and seen == []
    assert converged(staged)
