"""Mirror file lists against ``find -printf`` on a tree of at least 500,000 entries.

    .venv/bin/python -m bench.filelist [--entries 500000] [--runs 5] [--root /tmp/releng-bench-filelist]

The tree is a production category shaped like Rocky's (``<release>/<Repo>/<arch>/<tree>/Packages/<l>/``
with empty rpm-named files, repodata with a repomd.xml, links), generated once and reused. Measured
in one run, interleaved, each in a fresh process:

(a) the baseline: ``find . -printf '%T@\\t%C@\\t%y\\t%s\\t%m\\t%P\\n'``: the same fields the time list
    needs (both times for max(mtime, ctime), type, size, mode for the readability rules, path),
    written to a file; it is stat-bound and unsorted;
(b) the same ``find`` piped through ``LC_ALL=C sort``, for reference (the lists are sorted by path);
(c) ``releng.core.filelist.publish``: both lists, sorted, the repomd.xml checksums, temp files, the
    comparison with the current lists and the renames (the current lists are removed first, so every
    run writes and renames both).

The ratio is (c) over (a) on the medians; wall time and CPU time (user + system) are both shown, since
other sessions may share the machine. Peak memory: the process's maximum RSS, and Python's peak
allocation (tracemalloc) in a separate run on the full tree and on a tenth of it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPOS = ("BaseOS", "AppStream", "CRB", "HighAvailability", "ResilientStorage", "RT", "NFV", "SAP", "extras",
         "plus")
ARCHES = ("x86_64", "aarch64", "ppc64le", "s390x")
TREES = ("os", "kickstart", "debug/tree")
LETTERS = "abcdefghijklmnopqrstuvwxyz"
SHAPE_VERSION = "1"


def make_tree(root: Path, entries: int, *, releases: tuple[str, ...] = ("9.7",)) -> int:
    """Create (once) a category tree of about ``entries`` entries; returns the real count."""
    marker = root / ".bench-tree.json"
    want = {"entries": entries, "releases": list(releases), "shape": SHAPE_VERSION}
    if marker.is_file() and json.loads(marker.read_text()).get("want") == want:
        return json.loads(marker.read_text())["count"]
    if root.exists():
        subprocess.run(["rm", "-rf", str(root)], check=True)
    trees = len(releases) * len(REPOS) * len(ARCHES) * len(TREES)
    per_dir = max(1, -(-entries // (trees * len(LETTERS))))
    start = time.monotonic()
    for release in releases:
        for repo in REPOS:
            for arch in ARCHES:
                for tree in TREES:
                    base = root / release / repo / arch / tree
                    for letter in LETTERS:
                        d = base / "Packages" / letter
                        d.mkdir(parents=True)
                        for i in range(per_dir):
                            open(d / f"{letter}pkg{i:05d}-1.0-1.el9.{arch}.rpm", "wb").close()
                    (base / "repodata").mkdir()
                    (base / "repodata" / "repomd.xml").write_text(f"<repomd>{release} {repo} {arch}</repomd>\n")
        (root / release / "isos").mkdir()
        (root / release / "isos" / "boot.iso").write_bytes(b"\0" * 4096)
        (root / release / "isos" / "latest.iso").symlink_to("boot.iso")
    (root / "9").symlink_to(releases[-1])
    count = sum(1 for _ in _all_entries(root))
    marker.write_text(json.dumps({"want": want, "count": count}))
    print(f"made {count:,} entries under {root} in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return count


def _all_entries(root: Path):
    for _dirpath, dirnames, filenames in os.walk(root):
        yield from dirnames
        yield from (f for f in filenames if not f.startswith((".bench", "fullfile")))


def _child(argv: list[str], *, stdout=subprocess.DEVNULL, shell_pipe: list[str] | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the children) of one command (or a two-command pipe)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    if shell_pipe:
        first = subprocess.Popen(argv, stdout=subprocess.PIPE)
        second = subprocess.Popen(shell_pipe, stdin=first.stdout, stdout=stdout, env={**os.environ, "LC_ALL": "C"})
        first.stdout.close()
        second.wait()
        first.wait()
    else:
        subprocess.run(argv, stdout=stdout, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


PUBLISH = """
import json, resource, sys, time, tracemalloc
from pathlib import Path
from releng.core import filelist
root, mode = Path(sys.argv[1]), sys.argv[2]
for name in ("fullfilelist", "fullfiletimelist-rocky"):
    (root / name).unlink(missing_ok=True)
if mode == "memory":
    tracemalloc.start()
start = time.perf_counter()
result = filelist.publish(root, "rocky")
seconds = time.perf_counter() - start
peak = tracemalloc.get_traced_memory()[1] if mode == "memory" else 0
print(json.dumps({"seconds": seconds, "entries": result.stats.entries, "changed": result.changed,
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "traced_peak": peak}))
"""


def publish_run(root: Path, mode: str = "time") -> tuple[float, float, dict]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PUBLISH, str(root), mode], check=True, capture_output=True,
                         text=True).stdout
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), json.loads(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=500_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=Path("/tmp/releng-bench-filelist"))
    args = parser.parse_args(argv)
    root = args.root / "mirror" / "pub" / "rocky"
    count = make_tree(root, args.entries)
    out = args.root / "find.out"
    find = ["find", str(root), "-mindepth", "1", "-printf", "%T@\t%C@\t%y\t%s\t%m\t%P\n"]
    rows: dict[str, list[tuple[float, float]]] = {"find": [], "find | sort": [], "publish": [],
                                                   "publish (in process)": []}
    listed = 0
    publish_run(root)  # warm the page cache and the dentry cache for everyone
    for _ in range(args.runs):
        with open(out, "wb") as f:
            rows["find"].append(_child(find, stdout=f))
        with open(out, "wb") as f:
            rows["find | sort"].append(_child(find, stdout=f, shell_pipe=["sort"]))
        wall, cpu, info = publish_run(root)
        rows["publish"].append((wall, cpu))
        rows["publish (in process)"].append((info["seconds"], cpu))
        listed = info["entries"]
    out.unlink(missing_ok=True)
    base_wall = statistics.median(w for w, _ in rows["find"])
    base_cpu = statistics.median(c for _, c in rows["find"])
    print(f"\nFile lists on {count:,} entries ({listed:,} listed), {args.runs} runs each, interleaved\n")
    print("| command | median s | min s | max s | ratio (median) | CPU s (median) | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = {"find": "find -printf (same fields, unsorted) > file",
              "find | sort": "find -printf \\| LC_ALL=C sort > file",
              "publish": "filelist.publish, whole process (Python start included)",
              "publish (in process)": "filelist.publish (both lists, sorted, compared, renamed)"}
    for key, samples in rows.items():
        walls = [w for w, _ in samples]
        cpus = [c for _, c in samples]
        med = statistics.median(walls)
        print(f"| {labels[key]} | {med:.2f} | {min(walls):.2f} | {max(walls):.2f} | {med / base_wall:.2f}x "
              f"| {statistics.median(cpus):.2f} | {statistics.median(cpus) / base_cpu:.2f}x |")
    small = args.root.parent / f"{args.root.name}-tenth" / "mirror" / "pub" / "rocky"
    make_tree(small, args.entries // 10)
    mem_full = publish_run(root, "memory")[2]
    mem_small = publish_run(small, "memory")[2]
    print("\n| tree | entries | peak RSS (process) | peak Python allocations (tracemalloc) |")
    print("|---|---:|---:|---:|")
    for label, info in (("full", mem_full), ("a tenth", mem_small)):
        print(f"| {label} | {info['entries']:,} | {info['maxrss_kib'] / 1024:.1f} MiB "
              f"| {info['traced_peak'] / 1048576:.2f} MiB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
