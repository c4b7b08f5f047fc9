"""DVD step vs a bare xorriso run on the same tree.

    .venv/bin/python -m bench.dvd_iso [--size-mb 400] [--runs 5] [--dir /var/tmp]

Builds one x86_64 compose: the lorax stand-in's tree and boot.iso, the fixture build system's
BaseOS and AppStream repos, plus ``--size-mb`` of incompressible data in rpm-named files so that
I/O dominates. Then, alternating, it times

* **DVD step**: :func:`releng.core.compose.build_dvd_iso.build_dvd` (variant tree, xorriso, implantisomd5, boot
  check, manifest, one-pass checksum, CHECKSUM files and links), and
* **bare xorriso**'s dialog is the one empanadas runs (same grafts, same SOURCE_DATE_EPOCH, xorriso's
  default flush every 16 MiB, so the ISO is on disk when it exits);
* **empanadas' per-DVD sequence**: what empanadas runs for each DVD, in its order: the flushing
  xorriso dialog above, ``implantisomd5 --supported-iso``, ``xorriso -dev <iso> --find`` (manifest),
  ``xorriso -indev <iso> -report_el_torito as_mkisofs`` (SORRY check), then one SHA-256 pass in
  8 KiB reads per name finalize writes a CHECKSUM for (the ISO, its generic and its latest name:
  3 passes). This is the job the DVD step replaces; the ratio is against this run (target <= 1.0x:
  not slower than the old tool doing the same work),
* **bare xorriso** (flushing dialog alone, shown for reference; the first wave's target was 1.5x
  this, which leaves out the MD5 implant and the checksum both tools must do), and
* **bare xorriso, no flush**: the DVD step's own dialog (``-stdio_sync off``) by xorriso alone; the
  DVD step fsyncs once at its end, this run leaves the ISO in the page cache (shown for reference),

each run in its own worker process so that peak memory (``getrusage`` of the worker and of its
children) belongs to one run, after a ``sync`` so no run pays for an earlier one's writeback.
Prints a markdown table with medians.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from releng.core.compose import build_dvd_iso as iso
from releng.core.compose.prepare_compose import compose_layout
from releng.core.layout import ComposeLayout
from releng.core.profile import load_profile

CHECKOUT = Path(__file__).resolve().parents[1]
STANDIN = CHECKOUT / "include" / "lorax" / "lorax-standin"
TIMESTAMP = "20250101.000000"
ARCH = "x86_64"
FILE_MB = 4


def prepare(root: Path, size_mb: int) -> ComposeLayout:
    from dev import buildsystem

    profile = load_profile(CHECKOUT / "config" / "releases" / "el9.yaml")
    layout = ComposeLayout.new(profile, root, TIMESTAMP)
    tree = layout.lorax_dir(ARCH) / "lorax"
    subprocess.run([sys.executable, str(STANDIN), "--product=Rocky Linux", "--version=9.7", "--release=9.7",
                    f"--buildarch={ARCH}", f"--volid={layout.volid(ARCH, False)}", str(tree)],
                   check=True, capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1735689600"})
    (tree / iso.BOOT_MANIFEST).write_text("".join(f"{p}\n" for p in iso.iso_manifest(tree / iso.BOOT_ISO)))
    fixture = buildsystem.build(CHECKOUT / ".stack" / "test-cache" / "buildsystem", [profile], log=lambda _m: None)
    for repo in ("BaseOS", "AppStream"):
        shutil.copytree(fixture.repo_dir(profile.project_id, repo, ARCH), layout.repo_tree(repo, ARCH))
    files = max(1, size_mb // FILE_MB)
    for i in range(files):
        repo = ("BaseOS", "AppStream")[i % 2]
        with open(layout.repo_tree(repo, ARCH) / "Packages" / f"bulk-payload-{i:04d}-1.0-1.el9.x86_64.rpm", "wb") as f:
            for _ in range(FILE_MB):
                f.write(os.urandom(2**20))
    return layout


def worker(kind: str, top: Path, out: Path) -> dict:
    """One timed run in this process; prints JSON with seconds and peak RSS (KiB) of self and children."""
    profile = load_profile(CHECKOUT / "config" / "releases" / "el9.yaml")
    layout = compose_layout(profile, top, top.parent.parent)
    started = time.perf_counter()
    if kind == "dvd":
        result = iso.build_dvd(layout, ARCH, "dvd", rc=False)
        size = result.size
    else:
        dialog = iso.dialog_path(layout, ARCH, "dvd").read_text().splitlines()
        dialog = [f"-outdev {iso.xorriso_quote(str(out))}" if line.startswith("-outdev ") else line
                  for line in dialog if kind == "bare_same" or not line.startswith("-stdio_sync")]
        dialog_file = out.with_suffix(".dialog")
        dialog_file.write_text("\n".join(dialog) + "\n")
        stamp = int((iso.variant_tree_dir(layout, ARCH, "dvd") / ".treeinfo").stat().st_mtime)
        subprocess.run(iso.xorriso_argv(dialog_file), check=True, capture_output=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": str(stamp)})
        size = out.stat().st_size
        if kind == "empanadas":
            empanadas_after_xorriso(out)
    seconds = time.perf_counter() - started
    return {"kind": kind, "seconds": seconds, "size": size,
            "rss_self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "rss_children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}


def empanadas_after_xorriso(out: Path) -> None:
    """What empanadas does with each DVD after xorriso exits: MD5 implant, manifest, SORRY check, and
    finalize's SHA-256 of the ISO once per CHECKSUM file (real, generic and latest name), 8 KiB reads."""
    subprocess.run(iso.implantisomd5_argv(out), check=True, capture_output=True)
    subprocess.run(["xorriso", "-no_rc", "-dev", str(out), "--find"], check=True, capture_output=True)
    report = subprocess.run(["xorriso", "-no_rc", "-indev", str(out), "-report_el_torito", "as_mkisofs"],
                            check=True, capture_output=True, text=True)
    if "SORRY" in report.stdout + report.stderr:
        raise SystemExit(f"{out}: IMAGE WAS NOT BUILT CORRECTLY")
    for _name in ("real", "generic", "latest"):
        digest = hashlib.sha256()
        with open(out, "rb") as f:
            while chunk := f.read(8192):
                digest.update(chunk)


def run_worker(kind: str, top: Path, out: Path) -> dict:
    out.unlink(missing_ok=True)
    os.sync()
    result = subprocess.run([sys.executable, "-m", "bench.dvd_iso", "--worker", kind, "--top", str(top),
                             "--out", str(out)], check=True, capture_output=True, text=True, cwd=CHECKOUT)
    return json.loads(result.stdout.strip().splitlines()[-1])


def table(results: dict[str, list[dict]]) -> str:
    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    rows = ["| step | runs | median s | min s | max s | ratio | MiB/s | peak RSS self | peak RSS children |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = med("empanadas", "seconds")
    for kind, label in (("empanadas", "empanadas' per-DVD sequence (xorriso + implantisomd5 + --find + "
                                      "SORRY check + 3 x sha256)"),
                        ("bare", "bare xorriso, empanadas' dialog (flushes as it writes)"),
                        ("bare_same", "bare xorriso, the DVD step's dialog (no flush, no fsync)"),
                        ("dvd", "DVD step (xorriso + implantisomd5 + boot check + manifest + checksum + fsync)")):
        secs = [r["seconds"] for r in results[kind]]
        size = results[kind][0]["size"]
        rows.append(f"| {label} | {len(secs)} | {med(kind, 'seconds'):.2f} | {min(secs):.2f} | {max(secs):.2f} | "
                    f"{med(kind, 'seconds') / base:.2f}x | {size / 2**20 / med(kind, 'seconds'):.0f} | "
                    f"{max(r['rss_self_kib'] for r in results[kind]) / 1024:.0f} MiB | "
                    f"{max(r['rss_children_kib'] for r in results[kind]) / 1024:.0f} MiB |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dvd_iso", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=400, help="incompressible payload in the repos (MB)")
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each step (median reported)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="scratch directory")
    parser.add_argument("--keep", action="store_true", help="keep the scratch compose")
    parser.add_argument("--worker", choices=("dvd", "empanadas", "bare", "bare_same"), help=argparse.SUPPRESS)
    parser.add_argument("--top", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.top, args.out)))
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="bench-dvd-iso-", dir=args.dir))
    try:
        print(f"preparing a compose with {args.size_mb} MB of payload in {scratch} ...", file=sys.stderr)
        layout = prepare(scratch, args.size_mb)
        bare_out = scratch / "bare.iso"
        run_worker("dvd", layout.top, bare_out)  # warm-up: page cache, and the dialog the bare runs replay
        order = ("empanadas", "dvd", "bare", "bare_same")
        results: dict[str, list[dict]] = {kind: [] for kind in order}
        for i in range(args.runs):
            for kind in order[i % 4:] + order[:i % 4]:
                results[kind].append(run_worker(kind, layout.top, bare_out))
                print(f"run {i + 1} {kind}: {results[kind][-1]['seconds']:.2f} s", file=sys.stderr)
        dvd_size = results["dvd"][0]["size"]
        print(f"\nDVD step vs bare xorriso, x86_64, ISO {dvd_size / 2**20:.0f} MiB "
              f"({args.size_mb} MB incompressible payload), {os.cpu_count()} CPUs\n")
        print(table(results))
        def median(kind: str) -> float:
            return statistics.median(r["seconds"] for r in results[kind])
        ratio = median("dvd") / median("empanadas")
        print(f"\nDVD step / empanadas' per-DVD sequence: {ratio:.2f}x (target <= 1.0x): "
              f"{'met' if ratio <= 1.0 else 'NOT met'}; / bare xorriso: {median('dvd') / median('bare'):.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
