"""Reposync benchmark: the DAG's parallel sync_repos against empanadas' one-at-a-time loop, and a no-op resync.

    .venv/bin/python -m bench.reposync [--packages-per-repo 250] [--latency-ms 30] [--workers N]

A scaled fixture build system (``dev.buildsystem.build(..., extra_packages=N)``; BaseOS, AppStream,
CRB and extras on x86_64 and aarch64, about 2,000 packages in the ``os`` repos; built once and cached
under ``.stack/bench``) is served over HTTP on 127.0.0.1. Measured in one run:

(a) the DAG's way: ``releng.core.compose.sync_repos.sync_repo`` (what each ``sync_repos`` task runs)
    for every (repo, arch), at most as many at once as the ``reposync`` pool in config/pools.json has
    slots, each in a worker process as Airflow runs tasks (each also verifies its tree and checks
    every signature; Airflow's own task start-up is not part of the measurement);
(b) empanadas' way: one plain ``dnf reposync`` after another (same hermetic dnf config and key
    checks, no verification), and, for reference, empanadas' exact order: repos in turn, the arches
    of one repo together;
(c) a no-op resync: the DAG's way again into a second compose with ``previous`` pointing at (a).

A loopback server answers in microseconds, which hides what parallel syncs are for (waiting on a
remote build system). The benchmark's server therefore waits ``--latency-ms`` before answering each
request, to model a remote build system; the table says so. The fixture server itself has no delay.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".stack" / "bench"
REPOS = ("BaseOS", "AppStream", "CRB", "extras")
ARCHES = ("x86_64", "aarch64")


def bench_profile(config_dir: Path) -> Path:
    """el9 cut down to the benchmark's repos and arches (same name, so it loads as ``el9``)."""
    data = yaml.safe_load((ROOT / "config" / "releases" / "el9.yaml").read_text())
    data["arches"] = list(ARCHES)
    data["repos"] = [r for r in data["repos"] if r["id"] in REPOS]
    data["repoclosure"] = {k: v for k, v in data["repoclosure"].items() if k in REPOS}
    config_dir.mkdir(parents=True, exist_ok=True)
    path = config_dir / "el9.yaml"
    text = "# Benchmark profile made by bench/reposync.py from config/releases/el9.yaml\n"
    text += yaml.safe_dump(data, sort_keys=False)
    if not path.is_file() or path.read_text() != text:
        path.write_text(text)
    return path


class Counter:
    """Access log that counts package GETs (the server's ``access_log`` hook)."""

    def __init__(self):
        self.rpm_gets = 0
        self.rpm_paths: list[str] = []  # the package URLs asked for (not the blob redirect targets)
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        if line.startswith("GET ") and ".rpm " in line:
            with self._lock:
                self.rpm_gets += 1
                self.rpm_paths.append(line.split(" ", 2)[1])

    def flush(self) -> None:
        pass


def remote_server(root: Path, latency: float, log: Counter):
    from dev.buildsystem import BuildSystemServer

    class RemoteBuildSystem(BuildSystemServer):
        """The fixture server with a fixed delay before each request (one request per connection: HTTP/1.0)."""

        request_queue_size = 128  # a real server's listen backlog; the default 5 drops connects of parallel clients

        def finish_request(self, request, client_address) -> None:
            time.sleep(latency)
            super().finish_request(request, client_address)

    return RemoteBuildSystem(root, access_log=log).start()


def _warm() -> None:
    """Import what a sync needs before the clock starts (and apply ``--dnf-parallel``)."""
    import releng.core.compose.sync_repos
    import releng.hooks.buildsystem  # noqa: F401
    from releng.core import dnf

    if os.environ.get("BENCH_DNF_PARALLEL"):
        dnf.MAX_PARALLEL_DOWNLOADS = int(os.environ["BENCH_DNF_PARALLEL"])


def _one_task(release: str, repo: str, arch: str, work: Path, previous: Path | None) -> dict:
    """What one sync_repos task does, without Airflow: the core step with the build-system hook."""
    from releng.core.compose.sync_repos import sync_repo
    from releng.core.profile import find_profile
    from releng.core.settings import settings
    from releng.hooks.buildsystem import BuildSystemHook

    site = settings()
    tree = Path(repo) / arch / "os"
    result = sync_repo(find_profile(release, site.config_dir), repo, arch, "os", dest=work / "compose" / tree,
                       work_dir=work / "work", key_dir=site.gpg_key_dir, source=BuildSystemHook(site.peridot_url),
                       previous=previous / "compose" / tree if previous else None, progress_interval=60,
                       log=lambda _line: None)
    return result.to_xcom()


def dag_way(pool: ProcessPoolExecutor, profile, work: Path, previous: Path | None = None) -> tuple[float, list[dict]]:
    """sync_repo for every (repo, arch), as many at once as the pool has workers (the reposync pool).

    Worker processes, like Airflow's one process per task; started and warmed before the clock starts.
    """
    start = time.perf_counter()
    jobs = [pool.submit(_one_task, profile.name, r, a, work, previous) for r in REPOS for a in ARCHES]
    results = [job.result() for job in jobs]
    return time.perf_counter() - start, results


def plain_reposync(profile, site, repo: str, arch: str, dest: Path, work: Path) -> None:
    """One empanadas-style ``dnf reposync`` (hermetic config, keys in a private rpmdb), nothing else."""
    from releng.core import dnf

    ws = dnf.DnfWorkspace(work / f"{repo}-{arch}")
    ws.root.mkdir(parents=True)
    keys = [site.gpg_key_dir / k for k in profile.gpg_keys]
    url = dnf.yumrepofs_url(site.peridot_url, profile.project_id, repo, arch, "os")
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo(repo, url)], keys))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        for argv in (dnf.rpm_initdb_argv(ws), *(dnf.rpm_import_argv(ws, k) for k in keys),
                     dnf.reposync_argv(ws, repo, dest, major=profile.major, disttag=profile.disttag)):
            subprocess.run(argv, check=True, capture_output=True, env=env)
    finally:
        dnf.stop_gpg_agents(ws)  # the gpg-agent dnf's key import started, as sync_repo stops its own


def empanadas_way(profile, site, work: Path, arches_together: bool) -> float:
    start = time.perf_counter()
    for repo in REPOS:
        jobs = [(repo, a, work / "compose" / repo / a / "os", work / "dnf") for a in ARCHES]
        if arches_together:
            with ThreadPoolExecutor(len(jobs)) as pool:
                list(pool.map(lambda j: plain_reposync(profile, site, *j), jobs))
        else:
            for job in jobs:
                plain_reposync(profile, site, *job)
    return time.perf_counter() - start


def parallel_fetch(base_url: str, paths: list[str], dest: Path, connections: int) -> float:
    """The download limit: the same package URLs with ``curl --parallel`` (redirects followed), nothing else."""
    dest.mkdir(parents=True)
    config = dest / "urls.curl"
    config.write_text("".join(f'url = "{base_url}{p}"\noutput = "{dest}/{i}.rpm"\n' for i, p in enumerate(paths)))
    start = time.perf_counter()
    subprocess.run(["curl", "--silent", "--no-progress-meter", "--show-error", "--fail", "--location", "--parallel",
                    "--parallel-max",
                    str(connections), "--config", str(config)], check=True)
    return time.perf_counter() - start


def limit_main(args, profile, fixture, pool, work: Path) -> int:
    """(a) the DAG's sync against (d) the same package URLs fetched with N parallel connections, alternating."""
    counter = Counter()
    server = remote_server(fixture.root, args.latency_ms / 1000, counter)
    os.environ["RELENG_PERIDOT_URL"] = f"{server.url}/v1/projects"
    from releng.core.settings import settings

    settings.cache_clear()
    dag_times, limit_times, packages = [], [], 0
    try:
        list(pool.map(time.sleep, [0.5] * args.workers))
        for round_no in range(args.rounds):
            before = len(counter.rpm_paths)
            secs, results = dag_way(pool, profile, work / f"a{round_no}")
            dag_times.append(secs)
            paths = list(dict.fromkeys(counter.rpm_paths[before:]))  # the log names a redirected path twice
            packages = sum(r["downloaded"] for r in results)
            limit_times.append(parallel_fetch(server.url, paths, work / f"d{round_no}", args.connections))
            print(f"round {round_no + 1}: DAG sync {secs:.2f} s ({packages} packages), "
                  f"curl --parallel {args.connections}: {limit_times[-1]:.2f} s ({len(paths)} URLs)", file=sys.stderr)
            shutil.rmtree(work / f"a{round_no}", ignore_errors=True)
            shutil.rmtree(work / f"d{round_no}", ignore_errors=True)
    finally:
        server.shutdown()
        server.server_close()
    import statistics

    dag, limit = statistics.median(dag_times), statistics.median(limit_times)
    ratio = dag / limit
    print(f"\n### Reposync against the download limit: {packages} packages, {args.latency_ms:g} ms per answer, "
          f"{args.rounds} alternating rounds, load {os.getloadavg()[0]:.1f}\n")
    print("| run | median s | min s | max s |")
    print("|---|---:|---:|---:|")
    print(f"| (d) the same package URLs, `curl --parallel --parallel-max {args.connections}` | {limit:.2f} | "
          f"{min(limit_times):.2f} | {max(limit_times):.2f} |")
    print(f"| (a) the DAG's sync_repos, {args.workers} at once (pool), dnf max_parallel_downloads "
          f"{_dnf_parallel()} each, signatures and verification included | {dag:.2f} | {min(dag_times):.2f} | "
          f"{max(dag_times):.2f} |")
    print(f"\n(a) / (d) = **{ratio:.2f}x** (target ≤ 1.5x: {'met' if ratio <= 1.5 else 'MISSED'})")
    return 0 if ratio <= 1.5 else 1


def _dnf_parallel() -> int:
    from releng.core import dnf

    return int(os.environ.get("BENCH_DNF_PARALLEL") or dnf.MAX_PARALLEL_DOWNLOADS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reposync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages-per-repo", type=int, default=250, help="bulk packages added to every repo")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="delay before each answer (0: loopback)")
    pools = json.loads((ROOT / "config" / "pools.json").read_text())
    parser.add_argument("--workers", type=int, default=pools["reposync"]["slots"],
                        help="parallel syncs (default: the reposync pool's slots)")
    parser.add_argument("--limit", action="store_true",
                        help="only (a) against the download limit (d): curl --parallel on the same URLs")
    parser.add_argument("--connections", type=int, default=32, help="parallel connections of (d)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of (a) and (d) with --limit")
    parser.add_argument("--dnf-parallel", type=int, help="dnf's max_parallel_downloads for (a) (default: the code's)")
    args = parser.parse_args(argv)

    os.environ.setdefault("AIRFLOW_HOME", str(BENCH / "airflow-home"))
    from dev import buildsystem
    from releng.core.profile import load_profile

    profile = load_profile(bench_profile(BENCH / "config"))
    t0 = time.perf_counter()
    fixture = buildsystem.build(BENCH / f"buildsystem-{args.packages_per_repo}", [profile],
                                extra_packages=args.packages_per_repo, log=lambda m: print(m, file=sys.stderr))
    print(f"fixture ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    if args.dnf_parallel:
        os.environ["BENCH_DNF_PARALLEL"] = str(args.dnf_parallel)
    if args.limit:
        os.environ.update({"RELENG_CONFIG_DIR": str(BENCH / "config"), "RELENG_GPG_KEY_DIR": str(fixture.key_dir)})
        work = Path(tempfile.mkdtemp(prefix="bench-reposync-limit-", dir=BENCH))
        pool = ProcessPoolExecutor(args.workers, initializer=_warm)
        try:
            return limit_main(args, profile, fixture, pool, work)
        finally:
            pool.shutdown()
            shutil.rmtree(work, ignore_errors=True)
    counter = Counter()
    server = remote_server(fixture.root, args.latency_ms / 1000, counter)
    os.environ.update({"RELENG_CONFIG_DIR": str(BENCH / "config"), "RELENG_GPG_KEY_DIR": str(fixture.key_dir),
                       "RELENG_PERIDOT_URL": f"{server.url}/v1/projects"})
    from releng.core.settings import settings

    settings.cache_clear()
    site = settings()
    work = Path(tempfile.mkdtemp(prefix="bench-reposync-", dir=BENCH))
    pool = ProcessPoolExecutor(args.workers, initializer=_warm)
    try:
        list(pool.map(time.sleep, [0.5] * args.workers))  # every worker started and warm
        print("(a) parallel sync_repos ...", file=sys.stderr)
        parallel, full = dag_way(pool, profile, work / "a")
        full_gets = counter.rpm_gets
        print("(b) sequential dnf reposync ...", file=sys.stderr)
        sequential = empanadas_way(profile, site, work / "b", arches_together=False)
        print("(b') empanadas order ...", file=sys.stderr)
        empanadas = empanadas_way(profile, site, work / "b2", arches_together=True)
        print("(c) no-op resync ...", file=sys.stderr)
        before = counter.rpm_gets
        noop, again = dag_way(pool, profile, work / "c", previous=work / "a")
        noop_gets = counter.rpm_gets - before
    finally:
        pool.shutdown()
        server.shutdown()
        server.server_close()
        shutil.rmtree(work, ignore_errors=True)

    packages = sum(r["packages"] for r in full)
    size = sum(r["bytes"] for r in full)
    rows = [
        ("(a) DAG: sync_repos per (repo, arch), parallel", parallel, sum(r["downloaded"] for r in full), 0, full_gets),
        ("(b) empanadas: one dnf reposync at a time", sequential, packages, 0, None),
        ("(b') empanadas order: repos in turn, arches together", empanadas, packages, 0, None),
        ("(c) no-op resync (previous = (a)), parallel", noop, sum(r["downloaded"] for r in again),
         sum(r["linked"] for r in again), noop_gets),
    ]
    print(f"\n### Reposync benchmark: {packages} packages ({size / 1e6:.1f} MB) in {len(full)} repos "
          f"({', '.join(REPOS)} × {', '.join(ARCHES)}), {os.cpu_count()} cores\n")
    print(f"Fixture server on 127.0.0.1 with {args.latency_ms:g} ms added before every answer (models a remote "
          f"build system; the fixture itself has no delay). Parallel = {args.workers} worker processes at once "
          "(the reposync pool's slots).\n")
    print("| run | wall s | downloaded | hard-linked | package GETs |")
    print("|---|---:|---:|---:|---:|")
    for name, secs, down, linked, gets in rows:
        print(f"| {name} | {secs:.2f} | {down} | {linked} | {'' if gets is None else gets} |")
    ratio_par, ratio_noop = parallel / sequential, noop / parallel
    print()
    print("| ratio | measured | target | |")
    print("|---|---:|---:|---|")
    print(f"| parallel (a) / sequential (b) | {ratio_par:.2f} | ≤ 0.60 | {'met' if ratio_par <= 0.6 else 'MISSED'} |")
    print(f"| no-op (c) / full (a) | {ratio_noop:.3f} | ≤ 0.10 | {'met' if ratio_noop <= 0.1 else 'MISSED'} |")
    print(f"| parallel (a) / empanadas order (b') | {parallel / empanadas:.2f} | | |")
    return 0 if ratio_par <= 0.6 and ratio_noop <= 0.1 else 1


if __name__ == "__main__":
    sys.exit(main())
