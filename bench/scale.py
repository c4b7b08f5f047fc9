"""Benchmarks at the size of a real point release, on the scale fixture (dev/scale.py).

    .venv/bin/python -m bench.scale [--arches x86_64,aarch64] [--runs 3] [--only noop,links,createrepo]

The scale fixture (built once, cached in ``.stack/scale``) is served over HTTP on 127.0.0.1 (no added
delay) by the fixture build system's server. Measured in one run, subject and baseline alternating so
that load from other work on the machine falls on both:

noop        A no-op resync of the whole release (every repo, arch and kind: os, debug, source) into a
            new compose whose previous compose holds the same trees (what a full sync produced:
            the upstream files hard-linked) — ``sync_repo`` per tree, 4 at once (the reposync pool) —
            against reading the release's repodata once: every tree's ``repomd.xml`` and every file it
            names fetched over HTTP and decompressed, 4 trees at once.
links       The package pass of that resync on its own, per step: hard-linking every package of the
            release from the previous compose (``link_unchanged``) against ``cp -al`` of the same
            Packages directories; the signature check (``check_signatures``: ``rpm --checksig`` with
            the profile's key) and the verification against the repodata (``verify_repo``, checksums
            read) against ``sha256sum`` of the same files.
createrepo  ``createrepo_c --update`` (the argv of update_repodata) of the largest repo (AppStream
            x86_64) after one new build was added, against a full ``createrepo_c`` of the same
            directory with the same options.

Peak memory: this process's and its children's peak RSS (``getrusage``) after each part.
"""

from __future__ import annotations

import argparse
import gzip
import io
import lzma
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / ".stack" / "bench-scale"
WORKERS = 4  # the reposync pool's slots


def peak_rss() -> str:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return f"{own:.0f} MiB self, {children:.0f} MiB children"


def trees(profile, arches: list[str]) -> list[tuple[str, str, str]]:
    out = []
    for repo in profile.repos:
        for arch in profile.repo_arches(repo.id, arches):
            out += [(repo.id, arch, "os"), (repo.id, arch, "debug")]
        out.append((repo.id, "src", "source"))
    return out


def upstream_dir(fixture, profile, repo: str, arch: str, kind: str) -> Path:
    return fixture.repo_dir(profile.project_id, repo, arch, hashed=True, debug=kind == "debug")


def compose_tree(compose: Path, repo: str, arch: str, kind: str) -> Path:
    return compose / repo / ("source" if kind == "source" else arch) / kind


def make_previous(fixture, profile, tree_list, previous: Path) -> int:
    """The previous compose: each upstream tree hard-linked (packages, repodata with its signature)."""
    files = 0
    for repo, arch, kind in tree_list:
        src = upstream_dir(fixture, profile, repo, arch, kind)
        dest = compose_tree(previous, repo, arch, kind)
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
        files += sum(1 for _ in (dest / "Packages").rglob("*.rpm"))
    return files


# --- no-op resync ---------------------------------------------------------------------------------


def _one_sync(release: str, repo: str, arch: str, kind: str, dest: str, work: str, previous: str) -> dict:
    from releng.core.compose.sync_repos import sync_repo
    from releng.core.profile import find_profile
    from releng.core.settings import settings
    from releng.hooks.buildsystem import BuildSystemHook

    site = settings()
    result = sync_repo(find_profile(release, site.config_dir), repo, arch, kind, dest=Path(dest),
                       work_dir=Path(work), key_dir=site.gpg_key_dir, source=BuildSystemHook(site.peridot_url),
                       hashed=True, previous=Path(previous), progress_interval=600, log=lambda _line: None)
    return result.to_xcom()


def _warm() -> None:
    import releng.core.compose.sync_repos
    import releng.hooks.buildsystem  # noqa: F401


def noop_resync(pool, profile, tree_list, previous: Path, compose: Path) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    work = compose.parent / f"{compose.name}-work"
    jobs = [pool.submit(_one_sync, profile.name, r, a, k, str(compose_tree(compose, r, a, k)),
                        str(work / f"{r}-{a}-{k}"),
                        str(compose_tree(previous, r, a, k))) for r, a, k in tree_list]
    results = [j.result() for j in jobs]
    return time.perf_counter() - start, results


def _read_url(url: str, parse: bool = False) -> int:
    with urllib.request.urlopen(url, timeout=60) as answer:
        data = answer.read()
    if url.endswith(".gz"):
        data = gzip.decompress(data)
    elif url.endswith(".xz"):
        data = lzma.decompress(data)
    elif url.endswith(".zst"):
        import zstandard

        data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    if parse:  # primary: every package element read, as any client of the repo must
        from lxml import etree

        for _, elem in etree.iterparse(io.BytesIO(data), events=("end",),
                                       tag="{http://linux.duke.edu/metadata/common}package"):
            elem.clear()
    return len(data)


def _read_tree(url: str, parse: bool) -> int:
    import xml.etree.ElementTree as ET

    with urllib.request.urlopen(f"{url}/repodata/repomd.xml", timeout=60) as answer:
        repomd = answer.read()
    ns = {"r": "http://linux.duke.edu/metadata/repo"}
    total = len(repomd)
    for data in ET.fromstring(repomd).findall("r:data", ns):
        href = data.find("r:location", ns).get("href")  # type: ignore[union-attr]
        total += _read_url(f"{url}/{href}", parse=parse and data.get("type") == "primary")
    return total


def read_repodata(urls: list[str], parse: bool = False) -> tuple[float, int]:
    """Every tree's repomd.xml and the files it names, fetched and decompressed (``parse``: primary parsed too)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(WORKERS) as pool:
        total = sum(pool.map(lambda u: _read_tree(u, parse), urls))
    return time.perf_counter() - start, total


# --- the package pass ---------------------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def link_pass(previous: Path, dest: Path, tree_list) -> int:
    from releng.core.repo.primary import package_index
    from releng.core.repo.trees import link_unchanged

    linked = 0
    for r, a, k in tree_list:
        prev = compose_tree(previous, r, a, k)
        index = package_index(prev)
        linked += len(link_unchanged(compose_tree(dest, r, a, k), prev, index.values(), previous_index=index))
    return linked


def cp_al(previous: Path, dest: Path, tree_list) -> None:
    for r, a, k in tree_list:
        target = compose_tree(dest, r, a, k)
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-al", str(compose_tree(previous, r, a, k) / "Packages"), str(target)], check=True)


def rpm_root(key_dir: Path, profile, work: Path) -> Path:
    root = work / "rpmroot"
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    for key in profile.gpg_keys[:1]:
        subprocess.run(["rpm", "--root", str(root), "--import", str(key_dir / key)], check=True)
    return root


def signatures_pass(root: Path, compose: Path, tree_list) -> int:
    from releng.core.repo.signatures import check_signatures

    files = [p for r, a, k in tree_list for p in sorted((compose_tree(compose, r, a, k) / "Packages").rglob("*.rpm"))]
    check_signatures(root, files)
    return len(files)


def verify_pass(compose: Path, tree_list) -> int:
    from releng.core.repo.verify import verify_repo

    count = 0
    for r, a, k in tree_list:
        report = verify_repo(compose_tree(compose, r, a, k))
        if not report.ok:
            raise SystemExit(f"verification failed for {r}/{a}/{k}: {report}")
        count += 1
    return count


def sha256_all(compose: Path, tree_list) -> None:
    files = [str(p) for r, a, k in tree_list for p in (compose_tree(compose, r, a, k) / "Packages").rglob("*.rpm")]
    for start in range(0, len(files), 2000):
        subprocess.run(["sha256sum", *files[start:start + 2000]], check=True, stdout=subprocess.DEVNULL)


# --- createrepo_c --update ----------------------------------------------------------------------------


def new_build(repo: Path) -> Path:
    """One new build of a package of ``repo``, written and signed like the fixture's."""
    from dev import scale
    from dev.rpmfile import RpmFile, RpmSpec, SigningKey, build_rpm
    from releng.core.gpg import agent_session

    home = scale.DEFAULT_ROOT / "gnupg"
    with agent_session(home):  # exporting a secret key starts an agent; stopped here
        secret = subprocess.run(["gpg", "--batch", "--export-secret-keys"], capture_output=True, check=True,
                                env={**os.environ, "GNUPGHOME": str(home)}).stdout
    spec = RpmSpec("scale-new-build", "1.0", "1.el9", "x86_64", "A new build", "One new build for the benchmark.",
                   [RpmFile(f"/usr/share/scale-new-build/file{i}", b"new\n") for i in range(50)],
                   buildtime=scale.BUILDTIME + 86400)
    dest = repo / "Packages" / "s" / spec.filename
    dest.write_bytes(build_rpm(spec, SigningKey(secret)))
    return dest


def createrepo_runs(upstream: Path, work: Path, runs: int) -> tuple[list[float], list[float], int]:
    from releng.core.updates.update_repodata import createrepo_update_argv

    tree = work / "AppStream-x86_64"
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(upstream), str(tree)], check=True)
    new_build(tree)
    comps = next((tree / "repodata").glob("*-comps.xml"))
    groupfile = work / "comps.xml"
    shutil.copy(comps, groupfile)
    update, full = [], []
    packages = sum(1 for _ in (tree / "Packages").rglob("*.rpm"))
    for i in range(runs):
        for kind in ("full", "update"):
            out = work / f"out-{kind}-{i}"
            out.mkdir()
            argv = createrepo_update_argv(tree, out, groupfile=groupfile, compression="gz")
            if kind == "update":
                argv = [*argv[:-1], "--update-md-path", str(tree), argv[-1]]
            else:
                argv = [a for a in argv if a != "--update"]
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            (update if kind == "update" else full).append(time.perf_counter() - start)
            shutil.rmtree(out)
    return update, full, packages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arches", default="x86_64,aarch64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", default="noop,links,createrepo")
    args = parser.parse_args(argv)
    parts = set(args.only.split(","))
    arches = args.arches.split(",")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731

    os.environ.setdefault("AIRFLOW_HOME", str(BENCH / "airflow-home"))
    from dev import scale
    from dev.buildsystem import BuildSystemServer
    from releng.core.profile import load_profile

    profile = load_profile(ROOT / "config" / "releases" / "el9.yaml")
    fixture = scale.build(scale.DEFAULT_ROOT, profile, arches=arches, log=log)
    server = BuildSystemServer(fixture.root).start()
    os.environ.update({"RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"),
                       "RELENG_GPG_KEY_DIR": str(fixture.key_dir), "RELENG_PERIDOT_URL": f"{server.url}/v1/projects"})
    from releng.core.settings import settings

    settings.cache_clear()
    tree_list = trees(profile, arches)
    BENCH.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=BENCH))
    report: list[str] = []
    ok = True
    try:
        previous = work / "previous"
        packages = make_previous(fixture, profile, tree_list, previous)
        meta = sum(f.stat().st_size for r, a, k in tree_list
                   for f in (compose_tree(previous, r, a, k) / "repodata").iterdir())
        log(f"previous compose: {len(tree_list)} trees, {packages} packages, {meta / 1e6:.0f} MB of repodata files")
        load = os.getloadavg()[0]
        if "noop" in parts:
            urls = [f"{server.url}/v1/projects/{profile.project_id}/repo/hashed-{r}/"
                    f"{'src' if k == 'source' else f'{a}-debug' if k == 'debug' else a}" for r, a, k in tree_list]
            noop_t, read_t, parse_t = [], [], []
            read_bytes = 0
            with ProcessPoolExecutor(WORKERS, initializer=_warm) as pool:
                list(pool.map(time.sleep, [0.3] * WORKERS))
                # Not timed: the previous compose's own sync verified its packages (checksums, signatures),
                # which a sync records on their inodes; a sync into a scratch compose does the same here.
                secs, _ = noop_resync(pool, profile, tree_list, previous, work / "prime")
                log(f"previous compose verified as its sync would have: {secs:.1f} s")
                shutil.rmtree(work / "prime")
                shutil.rmtree(work / "prime-work", ignore_errors=True)
                for i in range(args.runs):
                    secs, read_bytes = read_repodata(urls)
                    read_t.append(secs)
                    parse_t.append(read_repodata(urls, parse=True)[0])
                    secs, results = noop_resync(pool, profile, tree_list, previous, work / f"noop-{i}")
                    noop_t.append(secs)
                    linked = sum(r["linked"] for r in results)
                    down = sum(r["downloaded"] for r in results)
                    log(f"round {i + 1}: read repodata {read_t[-1]:.1f} s (with primary parsed {parse_t[-1]:.1f} s), "
                        f"no-op resync {secs:.1f} s "
                        f"({linked} linked, {down} downloaded)")
                    if down:
                        raise SystemExit(f"the no-op resync downloaded {down} packages")
                    shutil.rmtree(work / f"noop-{i}")
                    shutil.rmtree(work / f"noop-{i}-work", ignore_errors=True)
            ratio = statistics.median(noop_t) / statistics.median(parse_t)
            ok = ok and ratio <= 2
            report += [f"\n### No-op resync of the whole release ({len(tree_list)} trees, {packages:,} packages, "
                       f"{read_bytes / 1e6:,.0f} MB of repodata uncompressed; load {load:.1f})\n",
                       "| run | median s | min s | max s |", "|---|---:|---:|---:|",
                       f"| read the release's repodata once: fetch + decompress every file, {WORKERS} trees at once | "
                       f"{statistics.median(read_t):.1f} | {min(read_t):.1f} | {max(read_t):.1f} |",
                       f"| the same, and every primary parsed (lxml, what any client of the repo does) | "
                       f"{statistics.median(parse_t):.1f} | {min(parse_t):.1f} | {max(parse_t):.1f} |",
                       f"| no-op resync: sync_repo per tree, {WORKERS} at once | {statistics.median(noop_t):.1f} | "
                       f"{min(noop_t):.1f} | {max(noop_t):.1f} |",
                       f"\nno-op / read with primary parsed = **{ratio:.2f}x** (target ≤ 2x: "
                       f"{'met' if ratio <= 2 else 'MISSED'}); no-op / fetch + decompress only = "
                       f"{statistics.median(noop_t) / statistics.median(read_t):.2f}x; "
                       f"peak RSS {peak_rss()}"]
            print("\n".join(report[-8:]), flush=True)
        if "links" in parts:
            root = rpm_root(fixture.key_dir, profile, work)
            rows = []
            for i in range(args.runs):
                base, _ = timed(lambda i=i: cp_al(previous, work / f"cp-{i}", tree_list))
                ours, linked = timed(lambda i=i: link_pass(previous, work / f"ln-{i}", tree_list))
                sig, count = timed(lambda i=i: signatures_pass(root, work / f"ln-{i}", tree_list))
                sha, _ = timed(lambda i=i: sha256_all(work / f"cp-{i}", tree_list))
                for r, a, k in tree_list:
                    src = compose_tree(previous, r, a, k) / "repodata"
                    dst = compose_tree(work / f"ln-{i}", r, a, k) / "repodata"
                    shutil.copytree(src, dst, dirs_exist_ok=True)
                ver, _ = timed(lambda i=i: verify_pass(work / f"ln-{i}", tree_list))
                rows.append((base, ours, sig, sha, ver, linked, count))
                log(f"round {i + 1}: cp -al {base:.1f} s, link_unchanged {ours:.1f} s, checksig {sig:.1f} s, "
                    f"sha256sum {sha:.1f} s, verify_repo {ver:.1f} s")
                shutil.rmtree(work / f"cp-{i}")
                shutil.rmtree(work / f"ln-{i}")
            med = [statistics.median(r[j] for r in rows) for j in range(5)]
            report += [f"\n### Package pass of the resync ({rows[0][5]:,} packages linked, {rows[0][6]:,} signatures; "
                       f"load {os.getloadavg()[0]:.1f})\n",
                       "| step | median s | baseline | baseline s | ratio |", "|---|---:|---|---:|---:|",
                       f"| hard links: link_unchanged from the previous compose | {med[1]:.1f} | `cp -al` of the "
                       f"Packages dirs | {med[0]:.1f} | {med[1] / med[0]:.2f}x |",
                       f"| signatures: rpm --checksig with the profile's key | {med[2]:.1f} | `sha256sum` of the "
                       f"packages | {med[3]:.1f} | {med[2] / med[3]:.2f}x |",
                       f"| verification: verify_repo (sizes, checksums) | {med[4]:.1f} | `sha256sum` of the "
                       f"packages | {med[3]:.1f} | {med[4] / med[3]:.2f}x |",
                       f"\npeak RSS {peak_rss()}"]
            print("\n".join(report[-7:]), flush=True)
        if "createrepo" in parts:
            upstream = upstream_dir(fixture, profile, "AppStream", "x86_64", "os")
            update, full, count = createrepo_runs(upstream, work / "createrepo", args.runs)
            ratio = statistics.median(update) / statistics.median(full)
            ok = ok and ratio <= 0.3
            report += [f"\n### createrepo_c --update of AppStream x86_64 after one new build ({count:,} packages; "
                       f"load {os.getloadavg()[0]:.1f})\n",
                       "| run | median s | min s | max s |", "|---|---:|---:|---:|",
                       f"| full createrepo_c (same options) | {statistics.median(full):.2f} | {min(full):.2f} | "
                       f"{max(full):.2f} |",
                       f"| createrepo_c --update (update_repodata's argv) | {statistics.median(update):.2f} | "
                       f"{min(update):.2f} | {max(update):.2f} |",
                       f"\n--update / full = **{ratio:.2f}x** (target ≤ 0.3x: {'met' if ratio <= 0.3 else 'MISSED'}); "
                       f"peak RSS {peak_rss()}"]
            print("\n".join(report[-7:]), flush=True)
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(work, ignore_errors=True)
    print("\n".join(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
