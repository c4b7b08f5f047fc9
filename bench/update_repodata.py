"""update_repodata benchmark: staging trees regenerated in parallel (the `repodata` pool) against one at a time
(the single-slot `rsync` pool update_repodata used before), in one run on the same trees.

    .venv/bin/python -m bench.update_repodata [--packages-per-repo 250] [--slots N]

The scaled fixture of bench/reposync.py (BaseOS, AppStream, CRB and extras on x86_64 and aarch64, built once and
cached under ``.stack/bench``) gives 16 staging trees (os and debug per repo and arch). Each staging tree holds
every package of the build system's repo, as after ``sync_to_staging``, but its repodata lists only nine in ten
of them, as before the run: so every tree really changes. For each tree
``releng.core.updates.update_repodata.update_repodata`` runs (what one ``update_repodata`` task runs:
``createrepo_c --update`` into a scratch directory, groups and modules kept, ``repomd.xml`` signed with a
throwaway key and the signature checked, the swap), each in a fresh Python process as Airflow's task runner
starts one per task (Airflow's own imports and DAG parsing, a few seconds more per task, are not included):

(a) one at a time (1 worker: the `rsync` pool's one slot);
(b) ``--slots`` at once (default: the `repodata` pool's slots in config/pools.json, RELENG_REPODATA_POOL_SLOTS).

The trees are restored from one prepared copy before each run. Each worker's createrepo_c uses as many threads
as the operator gives it (min(4, CPUs)).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from bench.reposync import ARCHES, BENCH, REPOS, ROOT, bench_profile

KINDS = ("os", "debug")


def _one_task(profile_path: str, repo: str, arch: str, kind: str, tree: str, synced: str, scratch: str,
              key: str, gnupghome: str) -> dict:
    """What one update_repodata task does, without Airflow."""
    from releng.core.profile import load_profile
    from releng.core.updates.update_repodata import update_repodata

    start = time.perf_counter()
    result = update_repodata(load_profile(profile_path), repo, arch, kind, tree=Path(tree), synced=Path(synced),
                             scratch=Path(scratch), signing_key=key, gnupghome=Path(gnupghome),
                             workers=min(4, os.cpu_count() or 1))
    return {"tree": tree, "changed": result.changed, "packages": result.packages, "added": result.added,
            "seconds": time.perf_counter() - start}


def prepare_staging(fixture, profile, template: Path) -> list[tuple[str, str, str, Path, Path]]:
    """Staging trees with every package but metadata listing nine in ten of them; returns the jobs."""
    jobs = []
    for repo in REPOS:
        for arch in ARCHES:
            for kind in KINDS:
                synced = fixture.repo_dir(profile.project_id, repo, arch, hashed=True, debug=kind == "debug")
                tree = template / repo / arch / kind
                shutil.copytree(synced, tree, ignore=shutil.ignore_patterns("repodata"))
                rpms = sorted(str(p.relative_to(tree)) for p in tree.rglob("*.rpm"))
                listed = tree.parent / f"{kind}.pkglist"
                listed.write_text("".join(f"{r}\n" for i, r in enumerate(rpms) if i % 10))
                subprocess.run(["createrepo_c", "--quiet", "--general-compress-type", "xz", "--pkglist", str(listed),
                                str(tree)], check=True)
                listed.unlink()
                jobs.append((repo, arch, kind, tree, synced))
    return jobs


def signing_key(home: Path) -> str:
    from releng.core.gpg import agent_session

    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    with agent_session(home):
        subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", "Bench <bench@releng.invalid>", "ed25519",
                        "sign", "never"], check=True, capture_output=True)
        out = subprocess.run([*gpg, "--with-colons", "--list-secret-keys"], check=True, capture_output=True,
                             text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))


def run(workers: int, profile_path: Path, jobs, template: Path, work: Path, key: str, home: Path) -> tuple[float, list]:
    staging = work / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(template, staging, copy_function=os.link)  # packages as hard links, repodata files too
    for repodata in staging.rglob("repodata"):  # the swap replaces files: give each run its own metadata copy
        tmp = repodata.with_name("repodata.copy")
        shutil.copytree(repodata, tmp)
        shutil.rmtree(repodata)
        tmp.rename(repodata)
    shutil.rmtree(work / "scratch", ignore_errors=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), max_tasks_per_child=1) as pool:
        start = time.perf_counter()
        futures = [pool.submit(_one_task, str(profile_path), repo, arch, kind, str(staging / repo / arch / kind),
                               str(synced), str(work / "scratch" / f"{repo}-{arch}-{kind}"), key, str(home))
                   for repo, arch, kind, _tree, synced in jobs]
        results = [f.result() for f in futures]
        return time.perf_counter() - start, results


def main(argv: list[str] | None = None) -> int:
    pools = json.loads((ROOT / "config" / "pools.json").read_text())
    parser = argparse.ArgumentParser(prog="python -m bench.update_repodata", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packages-per-repo", type=int, default=250, help="bulk packages added to every repo")
    parser.add_argument("--slots", type=int, default=pools["repodata"]["slots"],
                        help="trees regenerated at once (default: the repodata pool's slots)")
    args = parser.parse_args(argv)

    os.environ.setdefault("AIRFLOW_HOME", str(BENCH / "airflow-home"))
    from dev import buildsystem
    from releng.core.gpg import agent_session
    from releng.core.profile import load_profile

    profile_path = bench_profile(BENCH / "config")
    profile = load_profile(profile_path)
    fixture = buildsystem.build(BENCH / f"buildsystem-{args.packages_per_repo}", [profile],
                                extra_packages=args.packages_per_repo, log=lambda m: print(m, file=sys.stderr))
    work = Path(tempfile.mkdtemp(prefix="bench-repodata-", dir=BENCH))
    home = work / "gnupg"
    try:
        key = signing_key(home)
        jobs = prepare_staging(fixture, profile, work / "template")
        packages = sum(len(list(tree.rglob("*.rpm"))) for *_, tree, _s in jobs)
        with agent_session(home):  # one agent for the runs' signatures, stopped at the end
            print("(a) one at a time ...", file=sys.stderr)
            sequential, seq_results = run(1, profile_path, jobs, work / "template", work, key, home)
            print(f"(b) {args.slots} at once ...", file=sys.stderr)
            parallel, par_results = run(args.slots, profile_path, jobs, work / "template", work, key, home)
        for results in (seq_results, par_results):
            assert all(r["changed"] and r["added"] for r in results), "every tree must really change"
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ratio = parallel / sequential
    print(f"\n### update_repodata benchmark: {len(jobs)} staging trees, {packages} packages, "
          f"{sum(r['added'] for r in par_results)} new in staging's metadata, repomd.xml signed")
    print(f"{os.cpu_count()} CPUs; createrepo_c threads per tree: {min(4, os.cpu_count() or 1)}; "
          f"peak RSS of a worker process or tool: {peak:.0f} MiB\n")
    print("| run | wall s | slowest tree s |")
    print("|---|---:|---:|")
    print(f"| (a) one at a time (the old 1-slot rsync pool) | {sequential:.2f} | "
          f"{max(r['seconds'] for r in seq_results):.2f} |")
    print(f"| (b) {args.slots} at once (the repodata pool) | {parallel:.2f} | "
          f"{max(r['seconds'] for r in par_results):.2f} |")
    print(f"\n| ratio | measured |\n|---|---:|\n| parallel (b) / one at a time (a) | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
