"""RepoSyncOperator: one (repo, arch, kind) from the build system into a compose tree, verified.

Each sync has a private dnf config, cache and rpm database under ``work_dir``; the profile's keys
(from RELENG_GPG_KEY_DIR) are imported into that database and are the only keys trusted. Steps:

1. **Unchanged upstream.** When the build system's ``repomd.xml`` is byte-identical to the
   reference tree's (``previous`` if given, else ``dest`` itself) and the reference's
   ``repomd.xml.asc`` verifies with the profile's keys (gpgv), the tree is the reference: packages
   are hard-linked from ``previous`` and its repodata copied. No dnf run, one request. If the
   result does not verify (an interrupted earlier sync, say), step 2 runs instead.
2. **dnf reposync** (``releng.core.dnf``: ``--download-metadata --remote-time``, ``repo_gpgcheck``).
   With ``previous``, or when ``dest`` holds files sharing their inode with another tree, a first
   ``dnf reposync --urls`` fetches and checks the metadata into the private cache; packages whose
   href and checksum are the same in the previous compose's repodata are hard-linked into ``dest``;
   other shared files are removed (librepo rewrites a mismatching file in place, which through a
   hard link would change the other tree); then ``dnf reposync --cacheonly`` syncs against exactly
   that metadata, finds the linked packages valid and downloads the rest. Packages the new repodata
   does not list are never linked, so nothing needs removing afterwards.
3. **Signatures**: ``rpm --root <private rpmdb> --checksig`` on every package, linked ones
   included. It replaces dnf's ``--gpgcheck``, which checks the same keys about 40 times slower
   (a Python loop) and may import keys named in the repo file on its own; unsigned packages fail.
   A signature problem fails the task for good (retrying cannot fix keys).
4. **Verification** against the tree's repodata (:func:`releng.core.repodata.verify_tree`): every
   package present with its size and checksum, every metadata file with its checksum. With
   ``delete``, files in ``Packages/`` that the repodata does not list are removed.

A rerun converges: dnf skips files that match and re-downloads the rest, and verification gates
the result. The sync writes into ``dest`` directly (not a temp dir) so that a retry keeps what the
failed attempt downloaded; nothing downstream reads ``dest`` before this task succeeds.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from releng.core import dnf
from releng.core.layout import LayoutError, safe_part
from releng.core.modes import make_public_tree
from releng.core.profile import ReleaseProfile
from releng.core.repodata import (
    REPOMD,
    RepodataError,
    SignatureToolError,
    TreeReport,
    break_shared_links,
    check_signatures,
    copy_repodata,
    dearmor,
    failed_downloads,
    gpg_failures,
    gpgv_argv,
    iter_packages,
    link_unchanged,
    package_download,
    package_index,
    samefile_count,
    stale_metadata,
    tree_path,
    verify_tree,
)
from releng.core.settings import Settings
from releng.operators.common import load_release, site_settings

OUTPUT_TAIL = 25


# --- helpers shared with the repoclosure operator ---------------------------------------------


def checked_part(value: str, what: str) -> str:
    try:
        return safe_part(value, what)
    except LayoutError as exc:
        raise AirflowFailException(str(exc)) from None


def fresh_workspace(path: Path) -> dnf.DnfWorkspace:
    """An empty private dnf workspace (a retry never sees the previous attempt's cache or rpmdb)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return dnf.DnfWorkspace(path)


def dnf_env() -> dict[str, str]:
    """dnf's environment: English messages (they are parsed) and no Python path from this process's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_dnf(argv: Sequence[str], log_path: Path, *, on_line: Callable[[str], None] | None = None,
            on_start: Callable[[subprocess.Popen], None] | None = None) -> tuple[int, list[str]]:
    """Run dnf, appending its output (stdout and stderr) to ``log_path``; return the exit code and the last lines."""
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(argv)}\n")
        log.flush()
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=dnf_env())
        if on_start:
            on_start(proc)
        with proc:
            for line in proc.stdout:
                log.write(line)
                text = line.strip()
                if text:
                    tail.append(text)
                    if on_line:
                        on_line(text)
            rc = proc.wait()
    return rc, list(tail)


def human_bytes(n: float) -> str:
    unit = "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            break
        n /= 1024
    return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"


class _Progress:
    """Samples ``Packages/`` every ``interval`` seconds while dnf runs and logs packages, bytes and rate."""

    def __init__(self, packages_dir: Path, label: str, log, interval: float, total: int | None = None):
        self.packages_dir, self.label, self.log, self.interval, self.total = packages_dir, label, log, interval, total
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"progress {label}")
        self._last = (time.monotonic(), 0)

    def sample(self) -> tuple[int, int]:
        count = size = 0
        for dirpath, _dirs, files in os.walk(self.packages_dir):
            for name in files:
                try:
                    size += os.stat(os.path.join(dirpath, name)).st_size
                except FileNotFoundError:
                    continue
                count += 1
        return count, size

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            count, size = self.sample()
            now = time.monotonic()
            rate = (size - self._last[1]) / max(now - self._last[0], 1e-6)
            self._last = (now, size)
            of = f"/{self.total}" if self.total is not None else ""
            self.log.info("%s: %d%s packages, %s, %s/s", self.label, count, of, human_bytes(size), human_bytes(rate))

    def __enter__(self) -> _Progress:
        self._last = (time.monotonic(), self.sample()[1])
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


# --- the operator -----------------------------------------------------------------------------

CHECKSIG_BATCH = 500
REPOMD_TIMEOUT = 60


@dataclass(frozen=True)
class _Job:
    """One validated sync: what the steps share."""

    profile: ReleaseProfile
    site: Settings
    keys: tuple[Path, ...]
    url: str
    repoid: str
    label: str
    dest: Path
    previous: Path | None
    ws: dnf.DnfWorkspace
    log_path: Path


class RepoSyncOperator(BaseOperator):
    """Sync one (release, repo, arch, kind) from the build system with dnf reposync; verify it; link the unchanged.

    :param release: release profile name (``el9``), loaded from RELENG_CONFIG_DIR.
    :param repo: build-system repo id (``BaseOS``, ``all``).
    :param arch: architecture (``x86_64``); for ``kind="source"`` it only names the task's work files.
    :param kind: ``os``, ``debug`` or ``source``.
    :param dest: the tree to fill, e.g. ``ComposeLayout.repo_tree(repo, arch, kind)``.
    :param work_dir: where the private dnf workspace and the dnf log go.
    :param hashed: sync the build system's ``hashed-<repo>`` variant (Packages/<first letter>/).
    :param delete: remove files in ``dest`` that upstream no longer lists.
    :param previous: the same tree in the previous compose; unchanged packages are hard-linked from it.
    :param progress_interval: seconds between progress lines while dnf runs.
    """

    template_fields = ("release", "repo", "arch", "kind", "dest", "work_dir", "previous")
    ui_color = "#e8f0fe"

    def __init__(self, *, release: str, repo: str, arch: str, kind: str = "os", dest: str | Path,
                 work_dir: str | Path, hashed: bool = False, delete: bool = False,
                 previous: str | Path | None = None, progress_interval: float = 5.0, **kwargs):
        super().__init__(**kwargs)
        self.release = release
        self.repo = repo
        self.arch = arch
        self.kind = kind
        self.dest = str(dest)
        self.work_dir = str(work_dir)
        self.hashed = hashed
        self.delete = delete
        self.previous = str(previous) if previous else None
        self.progress_interval = progress_interval
        self._proc: subprocess.Popen | None = None

    def on_kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()

    def _set_proc(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def execute(self, context: Context) -> dict:
        started = time.monotonic()
        job = self._prepare()
        self.log.info("%s: syncing %s into %s%s", job.label, job.url, job.dest,
                      f" (linking from {job.previous})" if job.previous else "")
        downloads: list[int] = []
        report, linked_hrefs = self._reuse_reference(job) if self._upstream_unchanged(job) else (None, [])
        if report is None:
            downloads, linked_hrefs = self._reposync(job)
            report = verify_tree(job.dest)
        if not report.ok:
            raise AirflowException(
                f"{job.dest} does not match its repodata after syncing {job.url}:\n"
                + "\n".join(report.problems()) + f"\n{report.summary()}. "
                "Retry the task; dnf re-downloads what does not match."
            )
        self._check_signatures(job)
        for stale in stale_metadata(job.dest):
            stale.unlink()
        if report.extra and self.delete:
            for rel in report.extra:
                (job.dest / rel).unlink()
            self.log.info("%s: removed %d files upstream no longer lists", job.label, len(report.extra))
        elif report.extra:
            self.log.info("%s: kept %d files upstream no longer lists (delete is off), e.g. %s", job.label,
                          len(report.extra), ", ".join(report.extra[:3]))
        fixed = make_public_tree(job.dest)  # dnf writes by the umask; the tree is published
        if fixed:
            self.log.info("%s: made %d files and directories world-readable", job.label, fixed)

        linked = samefile_count(job.dest, job.previous, linked_hrefs) if job.previous else 0
        seconds = round(time.monotonic() - started, 3)
        self.log.info(
            "%s: done, %d packages (%s) in %s: %d downloaded (about %s, %s/s), %d hard-linked from the previous "
            "compose; verified and signature-checked; %.1fs in all", job.label, report.packages,
            human_bytes(report.bytes), job.dest, len(downloads), human_bytes(sum(downloads)),
            human_bytes(sum(downloads) / max(seconds, 1e-6)), linked, seconds,
        )
        shutil.rmtree(job.ws.root, ignore_errors=True)
        return {"repo": self.repo, "arch": self.arch, "kind": self.kind, "dest": str(job.dest),
                "packages": report.packages, "downloaded": len(downloads), "linked": linked, "bytes": report.bytes,
                "seconds": seconds}

    # --- steps -----------------------------------------------------------------------------------

    def _prepare(self) -> _Job:
        """Validate the parameters, find the keys, make the private workspace and rpm database."""
        profile = load_release(self.release)
        repo, kind = self.repo, self.kind
        if kind not in dnf.REPO_KINDS:
            raise AirflowFailException(f"kind {kind!r} is not one of {', '.join(dnf.REPO_KINDS)}")
        try:
            profile.repo(repo)
        except KeyError as exc:
            raise AirflowFailException(exc.args[0]) from None
        arch = checked_part(self.arch, "arch")
        if kind != "source" and arch not in profile.repo_arches(repo):
            raise AirflowFailException(f"{repo} in {profile.name} has no arch {arch!r}; "
                                       f"it has {', '.join(profile.repo_arches(repo))}")
        site = site_settings()
        keys = tuple(site.gpg_key_dir / name for name in profile.gpg_keys)
        missing = [str(k) for k in keys if not k.is_file()]
        if missing:
            raise AirflowFailException(
                f"GPG key file(s) {', '.join(missing)} not found: RELENG_GPG_KEY_DIR={site.gpg_key_dir} must hold "
                f"the keys profile {profile.name} lists in gpg_keys ({', '.join(profile.gpg_keys)})"
            )
        repoid = f"{repo}-source" if kind == "source" else f"{repo}-{arch}-{kind}"
        work = Path(self.work_dir)
        ws = fresh_workspace(work / f"reposync-{repoid}")
        log_path = work / f"reposync-{repoid}.log"
        log_path.write_text("")
        url = dnf.yumrepofs_url(site.peridot_url, profile.project_id, repo, arch, kind, hashed=self.hashed)
        ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo(repoid, url)], keys))
        for argv in (dnf.rpm_initdb_argv(ws), *(dnf.rpm_import_argv(ws, k) for k in keys)):
            done = subprocess.run(argv, capture_output=True, text=True, env=dnf_env())
            if done.returncode != 0:
                raise AirflowFailException(f"{shlex.join(argv)} failed: {done.stderr.strip()}; the key files in "
                                           f"RELENG_GPG_KEY_DIR={site.gpg_key_dir} must be armored public keys")
        label = f"{repo} {'source' if kind == 'source' else f'{arch} {kind}'}"
        return _Job(profile, site, keys, url, repoid, label, Path(self.dest),
                    Path(self.previous) if self.previous else None, ws, log_path)

    def _upstream_unchanged(self, job: _Job) -> bool:
        """True when the build system serves the reference tree's repomd.xml and its signature holds."""
        reference = job.previous or job.dest
        try:
            local = (reference / REPOMD).read_bytes()
            with urllib.request.urlopen(f"{job.url}/{REPOMD}", timeout=REPOMD_TIMEOUT) as answer:
                remote = answer.read()
        except (OSError, urllib.error.URLError):
            return False  # no reference, or the build system did not answer: dnf runs and reports
        if remote != local:
            return False
        keyring = job.ws.root / "keyring.gpg"
        keyring.write_bytes(b"".join(dearmor(k.read_text()) for k in job.keys))
        signature = reference / "repodata" / "repomd.xml.asc"
        check = subprocess.run(gpgv_argv(keyring, signature, reference / REPOMD), capture_output=True, text=True)
        if check.returncode != 0:
            self.log.info("%s: %s does not verify with the profile's keys (gpgv exit %d); running dnf", job.label,
                          signature, check.returncode)
        return check.returncode == 0

    def _reuse_reference(self, job: _Job) -> tuple[TreeReport | None, list[str]]:
        """Upstream is unchanged: link the previous compose's packages and copy its repodata (nothing to do
        in place). Returns the verified tree's report and the linked hrefs, or None when dnf must run."""
        linked: list[str] = []
        try:
            if job.previous:
                index = package_index(job.previous)
                linked = link_unchanged(job.dest, job.previous, index.values(), previous_index=index)
                copy_repodata(job.previous, job.dest)
        except (RepodataError, OSError) as exc:
            self.log.warning("%s: could not take the unchanged tree from %s (%s); running dnf", job.label,
                             job.previous, exc)
            return None, []
        report = verify_tree(job.dest)
        if not report.ok:
            self.log.info("%s: the unchanged tree does not verify (%s); running dnf", job.label,
                          "; ".join(report.problems(3)))
            return None, []
        self.log.info("%s: upstream repodata unchanged since %s; %d packages taken as they are", job.label,
                      job.previous or job.dest, report.packages)
        return report, linked

    def _reposync(self, job: _Job) -> tuple[list[int], list[str]]:
        """``dnf reposync``, linking from the previous compose first; returns download sizes and linked hrefs."""
        argv = dnf.reposync_argv(job.ws, job.repoid, job.dest, major=job.profile.major, disttag=job.profile.disttag,
                                 gpgcheck=False, delete=self.delete)
        wanted = None
        linked: list[str] = []
        if job.previous or _has_shared_files(job.dest):
            rc, tail = run_dnf([*argv, "--urls"], job.log_path, on_start=self._set_proc)
            self._check_dnf(rc, tail, [], job)
            wanted = package_index(_cached_repodata(job.ws, job.repoid))
            if job.previous:
                try:
                    linked = link_unchanged(job.dest, job.previous, wanted.values())
                except RepodataError as exc:
                    self.log.warning("%s: nothing linked from the previous compose: %s", job.label, exc)
                self.log.info("%s: %d of %d packages unchanged since %s, hard-linked", job.label, len(linked),
                              len(wanted), job.previous)
            removed = break_shared_links(job.dest, wanted, keep=linked)
            if removed:
                self.log.info("%s: removed %d files shared with another tree that dnf would have rewritten",
                              job.label, len(removed))
            argv.append("--cacheonly")  # exactly the metadata the links were chosen against

        lines: list[str] = []  # what dnf said about failures and signatures
        downloads: list[int] = []

        def watch(line: str) -> None:
            size = package_download(line, job.repoid)
            if size is not None:
                downloads.append(size)
            elif line.startswith("[") or "rror" in line or "GPG" in line or "key" in line:
                lines.append(line)
            if line.startswith(("[FAILED]", "[MIRROR]", "Error")):
                self.log.warning("%s: dnf: %s", job.label, line)

        job.dest.mkdir(parents=True, exist_ok=True)
        with _Progress(job.dest / "Packages", job.label, self.log, self.progress_interval,
                       len(wanted) if wanted is not None else None):
            rc, tail = run_dnf(argv, job.log_path, on_line=watch, on_start=self._set_proc)
        self._check_dnf(rc, tail, lines, job)
        if wanted is not None:
            cached = _cached_repodata(job.ws, job.repoid)
            if (job.dest / REPOMD).read_bytes() != (cached / REPOMD).read_bytes():
                raise AirflowException(f"{job.url} changed while it was synced (repomd.xml differs between the "
                                       "metadata the packages were chosen from and the one downloaded); retry the task")
        return downloads, linked

    def _check_signatures(self, job: _Job) -> None:
        """Every package's signature against the profile's keys only; a failure is not retriable."""
        files = [tree_path(job.dest, p.href) for p in iter_packages(job.dest)]
        try:
            bad = check_signatures(job.ws.installroot, files, env=dnf_env(), batch=CHECKSIG_BATCH)
        except SignatureToolError as exc:
            raise AirflowException(f"{job.label}: {exc}; retry the task") from None
        if bad:
            shown = "\n".join(bad[:20]) + (f"\n... and {len(bad) - 20} more" if len(bad) > 20 else "")
            raise AirflowFailException(
                f"{len(bad)} of {len(files)} packages synced from {job.url} do not verify with the keys of profile "
                f"{job.profile.name} ({', '.join(job.profile.gpg_keys)} in RELENG_GPG_KEY_DIR={job.site.gpg_key_dir})"
                f":\n{shown}\nUnsigned packages and packages signed with another key are refused; fix the keys or "
                "the build system's signing."
            )

    def _check_dnf(self, rc: int, tail: list[str], lines: list[str], job: _Job) -> None:
        """Fail for good on a signature problem; fail (retriable) on any other dnf error or failed download."""
        gpg = gpg_failures([*lines, *tail])
        if gpg:
            raise AirflowFailException(
                f"signature check failed syncing {job.url}:\n" + "\n".join(dict.fromkeys(gpg)) + "\n"
                f"The keys profile {job.profile.name} lists ({', '.join(job.profile.gpg_keys)}) in "
                f"RELENG_GPG_KEY_DIR={job.site.gpg_key_dir} do not verify what the build system serves; fix the key "
                f"files or the profile's gpg_keys. Full dnf log: {job.log_path}"
            )
        failed = failed_downloads([*lines, *tail])
        if failed or rc != 0:
            what = f"{len(dict.fromkeys(failed))} package download(s) failed" if failed else f"dnf exited {rc}"
            output = "\n".join(tail)
            raise AirflowException(
                f"dnf reposync of {job.url} failed ({what}); last dnf output:\n{output}\nFull dnf log: {job.log_path}"
            )


def _has_shared_files(dest: Path) -> bool:
    for dirpath, _dirs, files in os.walk(dest / "Packages"):
        for name in files:
            if os.lstat(os.path.join(dirpath, name)).st_nlink > 1:
                return True
    return False


def _cached_repodata(ws: dnf.DnfWorkspace, repoid: str) -> Path:
    """The repo's metadata as dnf cached it (``<installroot>/<cachedir>/<repoid>-<hash>/``)."""
    cache = ws.installroot / str(ws.cachedir).lstrip("/")
    found = [p for p in cache.glob(f"{repoid}-*") if (p / REPOMD).is_file()]
    if len(found) != 1:
        raise AirflowException(f"dnf left no single metadata cache for {repoid} under {cache} (found {len(found)})")
    return found[0]
