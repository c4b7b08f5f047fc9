"""A promotion with nothing to change against one ``rsync --dry-run`` over the same trees.

    .venv/bin/python -m bench.promotion_noop [--entries 200000] [--runs 5] [--root /tmp/releng-bench-promotion]
    .venv/bin/python -m bench.promotion_noop --scale [--runs 5]      # staging = the scale fixture's release

Staging holds an el9 release directory (``9.7-RC1``) shaped like Rocky's: 10 repositories x 4 arches x
(os, kickstart, debug), packages as empty rpm-named files in ``Packages/<letter>/``, and per tree real
repodata files (primary, filelists, other; gzip) named in a ``repomd.xml`` with their sha256 and size.
Production is made equal to it once by a real promotion (report, the three phases, verification, file
lists), then every measured run finds nothing to change. Measured in one run, interleaved:

(a) the baseline: ``rsync -aH --delete --dry-run staging/ production/`` (what sync-to-prod-dry.sh ran,
    without -v/--progress);
(b) the promotion with nothing to change, in one process, as the tasks run it (minus Airflow's task
    start-up and the human): change report (the itemizing dry run, the record and its digest), the three
    phases, verification of every repomd.xml, the file lists.

The ratio is (b) over (a) on the medians; a breakdown per step follows.

With ``--scale`` staging holds the scale fixture's release instead (dev/scale.py: every repo of el9 on
x86_64 and aarch64, os, kickstart, debug and source trees hard-linked from the fixture, real signed
packages and createrepo_c repodata of a point release's size), under ``.stack/bench-promotion-scale``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.filelist import ARCHES, LETTERS, REPOS, TREES

ROOT = Path(__file__).resolve().parents[1]
SHAPE_VERSION = "1"


def _metadata(repo: Path, names: list[str]) -> None:
    """Real (small) repodata: primary/filelists/other named by their sha256, and repomd.xml naming them."""
    rd = repo / "repodata"
    rd.mkdir()
    datas = []
    pkgs = "".join(f'<package type="rpm"><name>{n.split("-")[0]}</name><arch>noarch</arch>'
                   f'<version epoch="0" ver="1.0" rel="1.el9"/><location href="Packages/{n[0]}/{n}"/></package>\n'
                   for n in names)
    for kind in ("primary", "filelists", "other"):
        blob = gzip.compress(f'<metadata packages="{len(names)}">\n{pkgs}</metadata>\n'.encode(), mtime=0)
        digest = hashlib.sha256(blob).hexdigest()
        (rd / f"{digest}-{kind}.xml.gz").write_bytes(blob)
        datas.append(f'<data type="{kind}"><checksum type="sha256">{digest}</checksum>'
                     f'<location href="repodata/{digest}-{kind}.xml.gz"/><size>{len(blob)}</size></data>')
    (rd / "repomd.xml").write_text('<?xml version="1.0" encoding="UTF-8"?>\n<repomd xmlns="http://linux.duke.edu/'
                                   f'metadata/repo">{"".join(datas)}</repomd>\n')


def make_staging(release_dir: Path, entries: int) -> int:
    """The staging release directory; returns its number of entries."""
    per_dir = max(1, -(-entries // (len(REPOS) * len(ARCHES) * len(TREES) * len(LETTERS))))
    for repo in REPOS:
        for arch in ARCHES:
            for tree in TREES:
                base = release_dir / repo / arch / tree
                names = []
                for letter in LETTERS:
                    d = base / "Packages" / letter
                    d.mkdir(parents=True)
                    for i in range(per_dir):
                        name = f"{letter}pkg{i:05d}-1.0-1.el9.noarch.rpm"
                        open(d / name, "wb").close()
                        names.append(name)
                _metadata(base, names)
    iso = release_dir / "isos" / "x86_64"
    iso.mkdir(parents=True)
    (iso / "Rocky-9.7-x86_64-boot.iso").write_bytes(os.urandom(1 << 20))
    (iso / "Rocky-9-latest-x86_64-boot.iso").symlink_to("Rocky-9.7-x86_64-boot.iso")
    return sum(len(d) + len(f) for _, d, f in os.walk(release_dir))


def make_staging_from_scale(release_dir: Path) -> int:
    """The staging release directory from the scale fixture's trees, in the compose's layout."""
    from dev import scale
    from releng.core.profile import load_profile

    profile = load_profile(ROOT / "config" / "releases" / "el9.yaml")
    arches = ["x86_64", "aarch64"]
    fixture = scale.build(scale.DEFAULT_ROOT, profile, arches=arches, log=lambda m: print(m, file=sys.stderr))
    for repo in profile.repos:
        layout = {f"{arch}/{tree}": (arch, debug) for arch in profile.repo_arches(repo.id, arches)
                  for tree, debug in (("os", False), ("kickstart", False), ("debug/tree", True))}
        layout["source/tree"] = ("src", False)
        for rel, (arch, debug) in layout.items():
            dest = release_dir / repo.id / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            src = fixture.repo_dir(profile.project_id, repo.id, arch, hashed=True, debug=debug)
            subprocess.run(["cp", "-al", str(src), str(dest)], check=True)
    return sum(len(d) + len(f) for _, d, f in os.walk(release_dir))


def environment(root: Path) -> dict[str, str]:
    return {**os.environ, "RELENG_STAGING_ROOT": str(root / "staging"),
            "RELENG_PRODUCTION_ROOT": str(root / "production"),
            "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases")}


PROMOTE = """
import json, sys, time
from releng.core.promotion.change_report import make_report
from releng.core.promotion.promote_phases import promote_phase
from releng.core.promotion.record import load_record, write_record
from releng.core.promotion.target import resolve_target
from releng.core.promotion.update_file_lists import update_file_lists
from releng.core.promotion.verify_production import verify_production
from releng.core.settings import settings
cfg = settings()
steps = {}
start = last = time.perf_counter()
def step(name):
    global last
    now = time.perf_counter()
    steps[name] = now - last
    last = now
target = resolve_target("el9", True, cfg)
record = make_report(target, run_id=sys.argv[1], dry_run=False, allow_large_delete=False,
                     max_delete=cfg.promotion_max_delete)
load_record(write_record(target, record), record["digest"])
step("change report (itemizing dry run, record, digest)")
for phase in ("payload", "metadata", "deletions"):
    promote_phase(record, phase)
step("promote_payload + promote_metadata + promote_deletions")
verified = verify_production(target, cfg)
step("verify_production")
lists = update_file_lists(target)
step("update_file_lists")
print(json.dumps({"seconds": time.perf_counter() - start, "steps": steps, "changes": len(record["items"]),
                  "repos": verified["repos"], "lists": lists}))
"""


def promote(root: Path, run_id: str) -> tuple[float, float, dict]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROMOTE, run_id], env=environment(root), check=True,
                         capture_output=True, text=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), json.loads(out)


def dry_run(staging: Path, production: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(["rsync", "-aH", "--delete", "--dry-run", f"{staging}/", f"{production}/"],
                   stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def prepare(root: Path, entries: int, from_scale: bool = False) -> int:
    staging = root / "staging" / "mirror" / "pub" / "rocky" / "9.7-RC1"
    marker = root / "bench.json"
    want = {"entries": "scale" if from_scale else entries, "shape": SHAPE_VERSION}
    if marker.is_file() and json.loads(marker.read_text())["want"] == want:
        return json.loads(marker.read_text())["count"]
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    start = time.monotonic()
    count = make_staging_from_scale(staging) if from_scale else make_staging(staging, entries)
    (root / "production").mkdir(parents=True)
    wall, _, first = promote(root, "bench-first-promotion")
    assert first["changes"] == count + 1, first  # every entry and the release directory itself
    print(f"made {count:,} staging entries and promoted them in {time.monotonic() - start:.0f} s "
          f"(the promotion itself {wall:.0f} s)", file=sys.stderr)
    marker.write_text(json.dumps({"want": want, "count": count}))
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, help="default: /tmp/releng-bench-promotion, "
                        "with --scale .stack/bench-promotion-scale")
    parser.add_argument("--scale", action="store_true", help="staging holds the scale fixture's release")
    args = parser.parse_args(argv)
    args.root = args.root or (ROOT / ".stack" / "bench-promotion-scale" if args.scale
                              else Path("/tmp/releng-bench-promotion"))
    count = prepare(args.root, args.entries, args.scale)
    staging = args.root / "staging" / "mirror" / "pub" / "rocky" / "9.7-RC1"
    production = args.root / "production" / "mirror" / "pub" / "rocky" / "9.7"
    dry_run(staging, production)  # warm caches
    base, ours, inproc, steps = [], [], [], []
    for n in range(args.runs):
        base.append(dry_run(staging, production))
        wall, cpu, info = promote(args.root, f"bench-noop-{n}")
        assert info["changes"] == 0 and info["lists"]["skipped"], info
        ours.append((wall, cpu))
        inproc.append((info["seconds"], cpu))
        steps.append(info["steps"])
    med = statistics.median(w for w, _ in base)
    med_cpu = statistics.median(c for _, c in base)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\nPromotion with nothing to change, {count:,} entries per tree ({info['repos']} repositories; "
          f"load {os.getloadavg()[0]:.1f}; peak RSS of the children {rss:.0f} MiB), "
          f"{args.runs} runs each, interleaved\n")
    print("| command | median s | min s | max s | ratio (median) | CPU s (median) | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, rows in (("rsync -aH --delete --dry-run staging/ production/", base),
                        ("no-op promotion, whole process (Python start included)", ours),
                        ("no-op promotion (report, 3 phases, verify, file lists)", inproc)):
        walls, cpus = [w for w, _ in rows], [c for _, c in rows]
        print(f"| {label} | {statistics.median(walls):.2f} | {min(walls):.2f} | {max(walls):.2f} "
              f"| {statistics.median(walls) / med:.2f}x | {statistics.median(cpus):.2f} "
              f"| {statistics.median(cpus) / med_cpu:.2f}x |")
    print("\n| step | median s |")
    print("|---|---:|")
    for name in steps[0]:
        print(f"| {name} | {statistics.median(s[name] for s in steps):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
