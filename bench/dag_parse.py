"""DAG folder parse benchmark: a fresh process fills a DagBag from dags/, several runs, median.

    .venv/bin/python -m bench.dag_parse [--runs 7] [--baseline REF]

Each run is a new ``python`` process (nothing cached in ``sys.modules``, as a dag-processor's parse
process): it imports Airflow's DagBag first (not counted: every parse process has Airflow loaded),
then times ``DagBag(dag_folder=dags/)`` (every DAG file imported, the ``releng`` package, the
providers the files import, the profile list read) and reports which heavy modules got imported.
Runs are made with ``RELENG_LORAX_BACKEND=local`` (the local stack's) and ``kubernetes`` (production's
default), and with ``--baseline REF`` also on the checkout of that git ref (its dags/ and plugins/,
extracted with ``git archive``), all alternating, so load on a shared machine affects every row alike.

Target: the whole folder in < 0.5 s (median of the runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("kubernetes", "airflow.providers.cncf.kubernetes", "boto3", "botocore", "airflow.providers.amazon")

_CHILD = r"""
import json, resource, sys, time
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
t0 = time.perf_counter(); c0 = time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
heavy = sorted(m for m in set(sys.modules) - before if m in ("kubernetes", "boto3", "botocore", "aiosmtplib")
               or m.startswith(("airflow.providers.cncf.kubernetes.operators", "airflow.providers.amazon.aws.hooks")))
print(json.dumps({"wall": wall, "cpu": cpu, "dags": sorted(bag.dag_ids), "errors": {k: str(v)[:300] for k, v in
                  bag.import_errors.items()}, "heavy": heavy, "new_modules": len(set(sys.modules) - before),
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def parse_once(backend: str, home: Path, tree: Path = ROOT) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELENG_")}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(tree / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(tree / "plugins"), "PYTHONPATH": str(tree / "plugins"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"), "RELENG_LORAX_BACKEND": backend})
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tree / "dags")], env=env, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dag_parse", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", help="git ref whose dags/ and plugins/ are parsed too, for comparison")
    args = parser.parse_args(argv)
    rows = {"local": ("local", ROOT), "kubernetes": ("kubernetes", ROOT)}
    results: dict[str, list[dict]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory(prefix="bench-dag-parse-") as tmp:
        if args.baseline:
            base = Path(tmp) / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline, "dags", "plugins"],
                                     capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            for backend in ("local", "kubernetes"):
                rows[f"{backend} at {args.baseline}"] = (backend, base)
                results[f"{backend} at {args.baseline}"] = []
        for _ in range(args.runs):
            for name, (backend, tree) in rows.items():
                results[name].append(parse_once(backend, Path(tmp), tree))
    load = os.getloadavg()
    print(f"\n### DAG folder parse: {args.runs} fresh processes per backend, alternating; load {load[0]:.1f}\n")
    print("| tree, RELENG_LORAX_BACKEND | DAGs | median s | min s | max s | median CPU s | peak RSS "
          "| heavy modules imported |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for backend, runs in results.items():
        walls = [r["wall"] for r in runs]
        errors = runs[0]["errors"]
        if errors:
            print(f"import errors ({backend}): {errors}", file=sys.stderr)
            ok = False
        median = statistics.median(walls)
        if rows[backend][1] == ROOT:
            ok = ok and median < 0.5
        print(f"| {backend} | {len(runs[0]['dags'])} | {median:.3f} | {min(walls):.3f} | {max(walls):.3f} | "
              f"{statistics.median(r['cpu'] for r in runs):.3f} | {max(r['maxrss_mib'] for r in runs):.0f} MiB | "
              f"{', '.join(runs[0]['heavy']) or 'none'} |")
    print(f"\nTarget: < 0.5 s — {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
