"""Airflow's own overhead in a full compose on the local stack: gaps before mapped tasks, and XCom sizes.

    .venv/bin/python -m bench.airflow_overhead [--arches x86_64,aarch64,ppc64le,s390x] [--keep]

Starts a local stack of its own (``dev.stack.start`` in ``.stack/bench-airflow``, free ports), runs
``full_compose`` for el9 through the REST API, and reads every task instance of the run back through
the REST API (``start_date``, ``end_date``, ``pool``) with the DAG's task graph (``downstream_task_ids``).
For each instance of a mapped task it reports the gap between the moment it could run and its start:

* ``upstream gap``: its start minus the latest end of the task instances it waits for (its direct
  upstream tasks; every map index of a mapped upstream);
* ``ready gap``: the same, but counted from when a slot was free: the start minus the latest of the
  upstream end, the moment its pool had a free slot and the moment the executor had one
  (``[core] parallelism``), both replayed from the run's own start/end dates. A pool of 4 reposync
  slots makes the 100th sync wait for 96 others; that wait is the pool's, not Airflow's overhead.

The largest XComs are read from the stack's metadata database (SQLite) with their sizes in bytes,
against the 64 KB target (PostgreSQL's JSONB takes up to 255 MB, MySQL's JSON column 1 GB: the limit
that matters first is every reader loading the row). The stack is stopped at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACK_DIR = ROOT / ".stack" / "bench-airflow"


def _ts(value: str | None) -> float | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def slot_free_times(tis: list[dict], slots: int) -> dict[tuple[str, int], float]:
    """For instances sharing ``slots`` slots: when a slot was free for each (replayed from start/end dates)."""
    ordered = sorted((t for t in tis if t["start"] is not None), key=lambda t: t["start"])
    free: dict[tuple[str, int], float] = {}
    for i, ti in enumerate(ordered):
        if i < slots:
            free[ti["key"]] = 0.0
            continue
        ends = sorted(t["end"] or ti["start"] for t in ordered[:i])
        free[ti["key"]] = ends[i - slots]
    return free


def gaps(tis: list[dict], tasks: list[dict], pools: dict[str, int], parallelism: int) -> dict[str, dict]:
    """Per mapped task: the upstream gaps and ready gaps of its instances (seconds)."""
    upstream: dict[str, set[str]] = {t["task_id"]: set() for t in tasks}
    for t in tasks:
        for down in t.get("downstream_task_ids", []):
            upstream.setdefault(down, set()).add(t["task_id"])
    by_task: dict[str, list[dict]] = {}
    for ti in tis:
        by_task.setdefault(ti["task_id"], []).append(ti)
    executor_free = slot_free_times([t for t in tis if t["operator"] not in ("EmptyOperator",)], parallelism)
    pool_free: dict[tuple[str, int], float] = {}
    for pool, slots in pools.items():
        pool_free.update(slot_free_times([t for t in tis if t["pool"] == pool], slots))
    out: dict[str, dict] = {}
    for task_id, instances in by_task.items():
        if not any(ti["map_index"] >= 0 for ti in instances):
            continue
        ups = [u for up in upstream.get(task_id, ()) for u in by_task.get(up, []) if u["end"] is not None]
        if not ups:
            continue
        upstream_end = max(u["end"] for u in ups)
        raw, ready = [], []
        for ti in instances:
            if ti["start"] is None or ti["state"] in ("skipped", "upstream_failed", "removed"):
                continue
            raw.append(ti["start"] - upstream_end)
            since = max(upstream_end, pool_free.get(ti["key"], 0.0), executor_free.get(ti["key"], 0.0))
            ready.append(ti["start"] - since)
        if raw:
            out[task_id] = {"instances": len(raw), "upstream_gap": raw, "ready_gap": ready,
                            "pool": instances[0]["pool"]}
    return out


def largest_xcoms(db: Path, run_id: str, top: int = 8) -> list[tuple[str, int, str, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT x.task_id, x.map_index, x.key, length(CAST(x.value AS BLOB)) FROM xcom x "
            "JOIN dag_run r ON r.id = x.dag_run_id WHERE r.run_id = ? ORDER BY 4 DESC LIMIT ?", (run_id, top))
        return [(str(a), int(b), str(c), int(d or 0)) for a, b, c, d in rows]


def patient(call, tries: int = 10):
    """An API call retried on timeouts: on a busy machine the api-server sometimes answers after 30 s."""
    for attempt in range(tries):
        try:
            return call()
        except (TimeoutError, OSError):
            if attempt == tries - 1:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def trigger(dev_stack, url: str, token: str, conf: dict, log) -> str:
    import urllib.error

    deadline = time.monotonic() + 300
    while True:  # the dag-processor parses the DAG files some seconds after start
        try:
            patient(lambda: dev_stack.api(url, token, "PATCH", "/api/v2/dags/full_compose", {"is_paused": False}))
            break
        except urllib.error.HTTPError as err:
            if err.code != 404 or time.monotonic() > deadline:
                raise
            time.sleep(3)
    run = patient(lambda: dev_stack.api(url, token, "POST", "/api/v2/dags/full_compose/dagRuns",
                                         {"logical_date": None, "conf": conf}))
    log(f"full_compose: triggered {run['dag_run_id']} with {json.dumps(conf)}")
    return run["dag_run_id"]


def follow(dev_stack, url: str, token: str, run_id: str, timeout: float, log) -> str:
    from urllib.parse import quote

    started, last = time.monotonic(), ""
    while time.monotonic() - started < timeout:
        time.sleep(10)
        try:
            state = dev_stack.api(url, token, "GET", f"/api/v2/dags/full_compose/dagRuns/{quote(run_id, safe='')}")
        except (TimeoutError, OSError) as exc:
            log(f"  api-server slow ({exc}); asking again")
            continue
        line = f"{state['state']}"
        if line != last:
            log(f"  {time.monotonic() - started:5.0f} s {line}")
            last = line
        if state["state"] in ("success", "failed"):
            return state["state"]
    raise RuntimeError(f"full_compose run {run_id} did not finish in {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.airflow_overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--release", default="el9")
    parser.add_argument("--arches", default="x86_64,aarch64")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    args = parser.parse_args(argv)
    from dev import stack as dev_stack

    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    ports = {name: dev_stack.free_port() for name in ("buildsystem_port", "s3_port", "airflow_port")}
    st = dev_stack.start(STACK_DIR, **ports, log=log)
    load_before = os.getloadavg()
    started = time.monotonic()
    try:
        url = st.ui
        token = dev_stack.airflow_token(url, "admin", st.users["admin"])
        run_id = trigger(dev_stack, url, token, {"release": args.release, "arches": args.arches.split(",")}, log)
        state = follow(dev_stack, url, token, run_id, args.timeout, log)
        wall = time.monotonic() - started
        raw = patient(lambda: dev_stack.task_instances(url, token, "full_compose", run_id))
        tasks = patient(lambda: dev_stack.api(url, token, "GET", "/api/v2/dags/full_compose/tasks"))["tasks"]
        db = STACK_DIR / "airflow" / "airflow.db"
        xcoms = largest_xcoms(db, run_id)
    finally:
        if not args.keep:
            st.stop()
    tis = [{"task_id": t["task_id"], "map_index": t["map_index"], "state": t["state"], "pool": t["pool"],
            "operator": t.get("operator"), "start": _ts(t["start_date"]), "end": _ts(t["end_date"]),
            "key": (t["task_id"], t["map_index"])} for t in raw]
    pools = {name: cfg["slots"] for name, cfg in json.loads((ROOT / "config" / "pools.json").read_text()).items()}
    result = gaps(tis, tasks, pools, parallelism=4)
    mapped = sum(r["instances"] for r in result.values())
    print(f"\n### Airflow overhead: full_compose {args.release} ({args.arches}), {state} in {wall:.0f} s, "
          f"{len(raw)} task instances ({mapped} mapped); load {load_before[0]:.1f} at the start, "
          f"{os.getloadavg()[0]:.1f} at the end\n")
    print("| mapped task | pool | instances | upstream gap median s | max s | ready gap median s | p90 s | max s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    all_ready = []
    for task_id, r in sorted(result.items()):
        ready = sorted(r["ready_gap"])
        all_ready += ready
        print(f"| {task_id} | {r['pool']} | {r['instances']} | {statistics.median(r['upstream_gap']):.1f} | "
              f"{max(r['upstream_gap']):.1f} | {statistics.median(ready):.1f} | "
              f"{ready[int(0.9 * (len(ready) - 1))]:.1f} | {max(ready):.1f} |")
    median_ready = statistics.median(all_ready) if all_ready else float("nan")
    print(f"\nAll mapped instances: ready gap median {median_ready:.2f} s (target ≤ 2 s: "
          f"{'met' if median_ready <= 2 else 'MISSED'})\n")
    print("| largest XComs of the run | map index | key | bytes |")
    print("|---|---:|---|---:|")
    for task_id, map_index, key, size in xcoms:
        print(f"| {task_id} | {map_index} | {key} | {size:,} |")
    biggest = xcoms[0][3] if xcoms else 0
    print(f"\nLargest XCom {biggest:,} bytes (target ≤ 65,536: {'met' if biggest <= 65536 else 'MISSED'})")
    return 0 if state == "success" and median_ready <= 2 and biggest <= 65536 else 1


if __name__ == "__main__":
    sys.exit(main())
