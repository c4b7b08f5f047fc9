"""DAG folder parse benchmark: a fresh process fills a DagBag from dags/, several runs, median.

    .venv/bin/python -m bench.dag_parse [--runs 7] [--baseline REF]

Each run is a new ``python`` process (nothing cached in ``sys.modules``): it imports Airflow's DagBag first
(not counted: every parse process has Airflow loaded), then times ``DagBag(dag_folder=dags/)`` (every DAG
file imported, the ``releng`` package, the providers the files import, the profile list read) and reports
which heavy modules got imported. That is the target's measure.

Airflow's dag-processor works differently, and each run measures that too ("per file"): its manager has
Airflow imported (and the airflow modules each DAG file names, ``parsing_pre_import_modules``), calls
``gc.freeze()``, and forks one process per DAG file, which parses that file alone and serializes its DAGs
(``airflow.dag_processing.processor._parse_file``, private in Airflow 3.3). The run does the same: one parent,
``gc.freeze()``, one fork per file calling ``_parse_file``; it reports the sum over the files and the slowest.
Each file's process imports the releng modules and reads the profiles again, and serialization compares
every operator's params (Airflow validates each Param's JSON schema each time), so the sum is larger than
the folder's time.

Bytecode is cached in the benchmark's temporary directory (``PYTHONPYCACHEPREFIX``; ``PYTHONDONTWRITEBYTECODE``
is dropped) and each row is parsed once before the timed runs, as a running dag-processor finds its
``.pyc`` files; without that, an environment with ``PYTHONDONTWRITEBYTECODE=1`` recompiled every releng
module in every run.

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
HEAVY = ("kubernetes", "boto3", "botocore", "aiosmtplib", "lxml", "productmd")

_CHILD = r"""
import json, resource, sys, time
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
t0 = time.perf_counter(); c0 = time.process_time()
bag = DagBag(dag_folder=sys.argv[1])
wall, cpu = time.perf_counter() - t0, time.process_time() - c0
heavy = sorted(m for m in set(sys.modules) - before if m in json.loads(sys.argv[2])
               or m.startswith(("airflow.providers.cncf.kubernetes.operators", "airflow.providers.amazon.aws.hooks")))
print(json.dumps({"wall": wall, "cpu": cpu, "dags": sorted(bag.dag_ids), "errors": {k: str(v)[:300] for k, v in
                  bag.import_errors.items()}, "heavy": heavy, "new_modules": len(set(sys.modules) - before),
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

# The dag-processor's way: Airflow loaded and frozen in the parent, one forked process per file running
# _parse_file (parse + serialization), its result sent back through a pipe.
_PROCESSOR_CHILD = r"""
import gc, json, os, sys, time
from pathlib import Path
import structlog
from airflow.dag_processing.processor import DagFileParseRequest, _parse_file, _pre_import_airflow_modules
folder = Path(sys.argv[1])
files = sorted(folder.glob("*.py"))
log = structlog.get_logger()
for f in files:
    _pre_import_airflow_modules(str(f), log)
gc.freeze()
out = {}
for f in files:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.environ["_AIRFLOW_PROCESS_CONTEXT"] = "client"
        try:
            t0 = time.perf_counter(); c0 = time.process_time()
            res = _parse_file(DagFileParseRequest(file=str(f), bundle_path=folder, bundle_name="dags-folder"), log)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            found = {"wall": wall, "cpu": cpu, "dags": len(res.serialized_dags),
                     "errors": {k: str(v)[:300] for k, v in res.import_errors.items()}}
        except BaseException as exc:
            found = {"wall": 0.0, "cpu": 0.0, "dags": 0, "errors": {f.name: f"{type(exc).__name__}: {exc}"[:300]}}
        os.write(w, json.dumps(found).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    out[f.name] = json.loads(data)
print(json.dumps(out))
"""


def _env(backend: str, home: Path, tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELENG_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(tree / "dags"),
                "AIRFLOW__CORE__PLUGINS_FOLDER": str(tree / "plugins"), "PYTHONPATH": str(tree / "plugins"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
                "PYTHONPYCACHEPREFIX": str(home / "pycache"),
                "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"), "RELENG_LORAX_BACKEND": backend})
    return env


def _last_json(args: list[str], env: dict[str, str]) -> dict:
    out = subprocess.run([sys.executable, "-c", *args], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_once(backend: str, home: Path, tree: Path = ROOT) -> dict:
    """One fresh process filling a DagBag from the folder, then the dag-processor's per-file parse."""
    env = _env(backend, home, tree)
    result = _last_json([_CHILD, str(tree / "dags"), json.dumps(HEAVY)], env)
    result["per_file"] = _last_json([_PROCESSOR_CHILD, str(tree / "dags")], env)
    return result


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
        for backend, tree in rows.values():  # not counted: fills the bytecode cache
            parse_once(backend, Path(tmp), tree)
        for _ in range(args.runs):
            for name, (backend, tree) in rows.items():
                results[name].append(parse_once(backend, Path(tmp), tree))
    load = os.getloadavg()
    print(f"\n### DAG folder parse: {args.runs} fresh processes per backend, alternating; load {load[0]:.1f}\n")
    print("| tree, RELENG_LORAX_BACKEND | DAGs | median s | min s | max s | median CPU s | peak RSS "
          "| per file (dag-processor): sum, median s | slowest file, median s | heavy modules imported |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    ok = True
    for backend, runs in results.items():
        walls = [r["wall"] for r in runs]
        errors = runs[0]["errors"] or {name: f["errors"] for name, f in runs[0]["per_file"].items() if f["errors"]}
        if errors:
            print(f"import errors ({backend}): {errors}", file=sys.stderr)
            ok = False
        median = statistics.median(walls)
        if rows[backend][1] == ROOT:
            ok = ok and median < 0.5
        per_file = [sum(f["wall"] for f in r["per_file"].values()) for r in runs]
        slowest = [max(r["per_file"].items(), key=lambda item: item[1]["wall"]) for r in runs]
        slowest_name = statistics.mode(name for name, _ in slowest)
        print(f"| {backend} | {len(runs[0]['dags'])} | {median:.3f} | {min(walls):.3f} | {max(walls):.3f} | "
              f"{statistics.median(r['cpu'] for r in runs):.3f} | {max(r['maxrss_mib'] for r in runs):.0f} MiB | "
              f"{statistics.median(per_file):.3f} | {statistics.median(f['wall'] for _, f in slowest):.3f} "
              f"({slowest_name}) | {', '.join(runs[0]['heavy']) or 'none'} |")
    print(f"\nTarget: < 0.5 s — {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
