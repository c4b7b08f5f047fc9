"""sync_repos: one (repo, arch, kind) from the build system into a compose tree, verified.

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
   A signature problem is :class:`SyncRefused` (retrying cannot fix keys).
4. **Verification** against the tree's repodata (``verify_repo``): every package present with its
   size and checksum, every metadata file with its checksum. With ``delete``, files in ``Packages/``
   that the repodata does not list are removed.

What steps 3 and 4 established about a package is kept on its inode (``InodeFacts``: an extended
attribute with the checksum and the key set its signature was checked with, valid while size and mtime
are unchanged). A package hard-linked from the previous compose carries it, so a no-op resync checks
sizes and the repodata but hashes and signature-checks only files no earlier sync vouched for.

A rerun converges: dnf skips files that match and re-downloads the rest, and verification gates
the result. The sync writes into ``dest`` directly (not a temp dir) so that a retry keeps what the
failed attempt downloaded; nothing downstream reads ``dest`` before the sync succeeds.

Nothing here needs Airflow: the build system comes in as a :class:`RepoSource` (the operator passes
``releng.hooks.buildsystem.BuildSystemHook``) and messages go to plain callables.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from releng.core import dnf
from releng.core.fs import human_bytes
from releng.core.layout import LayoutError, safe_part
from releng.core.modes import make_public_tree
from releng.core.profile import ReleaseProfile
from releng.core.repo.dnf_output import failed_downloads, gpg_failures, package_download
from releng.core.repo.primary import PackageEntry, iter_packages, package_index
from releng.core.repo.repomd import REPOMD, RepoError, stale_metadata, tree_path
from releng.core.repo.signatures import SignatureToolError, check_signatures, dearmor, gpgv_argv
from releng.core.repo.trees import (
    CrossMountError,
    break_shared_links,
    copy_repodata,
    link_unchanged,
    samefile_count,
)
from releng.core.repo.verify import InodeFacts, TreeReport, verify_repo
from releng.core.run import ToolError, run, stream

OUTPUT_TAIL = 25
CHECKSIG_BATCH = 500

Log = Callable[[str], None]


class SyncError(RuntimeError):
    """The sync failed in a way a retry may fix (the build system, the network, a download, dnf)."""


class SyncRefused(SyncError):
    """The sync cannot succeed as asked (parameters, keys, signatures); retrying does not help."""


class RepoSource(Protocol):
    """The build system as the sync needs it: where a repo is and what its ``repomd.xml`` is now."""

    def repo_url(self, project_id: str, repo: str, arch: str, kind: str = "os", *, hashed: bool = False) -> str: ...

    def fetch_repomd(self, repo_url: str) -> bytes: ...


@dataclass(frozen=True)
class SyncResult:
    """What one sync made; ``to_xcom`` is the task's return value."""

    repo: str
    arch: str
    kind: str
    dest: str
    packages: int
    downloaded: int
    linked: int
    bytes: int
    seconds: float

    def to_xcom(self) -> dict:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: dict) -> SyncResult:
        return cls(**value)


@dataclass(frozen=True)
class _Job:
    """One validated sync: what the steps share."""

    profile: ReleaseProfile
    key_dir: Path
    keys: tuple[Path, ...]
    url: str
    repoid: str
    label: str
    dest: Path
    previous: Path | None
    delete: bool
    ws: dnf.DnfWorkspace
    log_path: Path
    log: Log
    warn: Log
    on_start: Callable[[subprocess.Popen], None] | None


def run_dnf(argv: Sequence[str], log_path: Path, *, on_line: Log | None = None,
            on_start: Callable[[subprocess.Popen], None] | None = None) -> tuple[int, list[str]]:
    """Run dnf, appending its output (stdout and stderr) to ``log_path``; return the exit code and the last lines."""
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL)
    with open(log_path, "a", encoding="utf-8") as out:
        out.write(f"$ {shlex.join(map(str, argv))}\n")
        out.flush()
        try:
            with stream(argv, what="dnf", env=dnf.dnf_env(), on_start=on_start) as lines:
                for line in lines:
                    out.write(line + "\n")
                    text = line.strip()
                    if text:
                        tail.append(text)
                        if on_line:
                            on_line(text)
        except ToolError as exc:
            if exc.returncode is None:  # dnf could not start
                raise SyncError(str(exc)) from None
            return exc.returncode, list(tail)
    return 0, list(tail)


class Progress:
    """Samples ``Packages/`` every ``interval`` seconds while dnf runs and logs packages, bytes and rate."""

    def __init__(self, packages_dir: Path, label: str, log: Log, interval: float, total: int | None = None):
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
            self.log(f"{self.label}: {count}{of} packages, {human_bytes(size)}, {human_bytes(rate)}/s")

    def __enter__(self) -> Progress:
        self._last = (time.monotonic(), self.sample()[1])
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def sync_repo(profile: ReleaseProfile, repo: str, arch: str, kind: str, *, dest: Path | str, work_dir: Path | str,
              key_dir: Path, source: RepoSource, hashed: bool = False, delete: bool = False,
              previous: Path | str | None = None, progress_interval: float = 5.0, log: Log = print,
              warn: Log | None = None, on_start: Callable[[subprocess.Popen], None] | None = None) -> SyncResult:
    """Sync one (repo, arch, kind) of ``profile`` from ``source`` into ``dest``; verify it; link the unchanged.

    :param repo: build-system repo id (``BaseOS``, ``all``).
    :param arch: architecture (``x86_64``); for ``kind="source"`` it only names the work files.
    :param kind: ``os``, ``debug`` or ``source``.
    :param dest: the tree to fill, e.g. ``ComposeLayout.repo_tree(repo, arch, kind)``.
    :param work_dir: where the private dnf workspace and the dnf log go.
    :param key_dir: the directory holding the profile's ``gpg_keys`` (RELENG_GPG_KEY_DIR).
    :param source: the build system (repo URL and its current ``repomd.xml``).
    :param hashed: sync the build system's ``hashed-<repo>`` variant (Packages/<first letter>/).
    :param delete: remove files in ``dest`` that upstream no longer lists.
    :param previous: the same tree in the previous compose; unchanged packages are hard-linked from it.
    :param progress_interval: seconds between progress lines while dnf runs.
    :param log: receives progress and summary lines; ``warn`` (default ``log``) receives warnings.
    :param on_start: called with each dnf process as it starts (so a task kill can stop it).
    :raises SyncRefused: bad parameters, keys or signatures. :raises SyncError: anything a retry may fix.
    """
    started = time.monotonic()
    job = _prepare(profile, repo, arch, kind, Path(dest), Path(work_dir), key_dir, source, hashed, delete,
                   Path(previous) if previous else None, log, warn or log, on_start)
    try:
        result = _sync(job, source, repo, arch, kind, progress_interval, started)
    finally:
        stopped = dnf.stop_gpg_agents(job.ws)  # dnf's key import starts one per repo; it outlives dnf
        if stopped:
            log(f"{job.label}: stopped the gpg-agent dnf started for the repo's keys (pid "
                f"{', '.join(map(str, stopped))})")
    shutil.rmtree(job.ws.root, ignore_errors=True)
    return result


def _sync(job: _Job, source: RepoSource, repo: str, arch: str, kind: str, progress_interval: float,
          started: float) -> SyncResult:
    """The sync proper: dnf (or the unchanged reference), verification, signatures, linking."""
    log = job.log
    log(f"{job.label}: syncing {job.url} into {job.dest}"
        + (f" (linking from {job.previous})" if job.previous else ""))
    downloads: list[int] = []
    report, linked_hrefs, entries = _reuse_reference(job) if _upstream_unchanged(job, source) else (None, [], None)
    if report is None:
        downloads, linked_hrefs = _reposync(job, progress_interval)
        report = verify_repo(job.dest, cache=InodeFacts())
    if not report.ok:
        raise SyncError(
            f"{job.dest} does not match its repodata after syncing {job.url}:\n"
            + "\n".join(report.problems()) + f"\n{report.summary()}. "
            "Retry the task; dnf re-downloads what does not match."
        )
    _check_signatures(job, entries)
    for stale in stale_metadata(job.dest):
        stale.unlink()
    if report.extra and job.delete:
        for rel in report.extra:
            (job.dest / rel).unlink()
        log(f"{job.label}: removed {len(report.extra)} files upstream no longer lists")
    elif report.extra:
        log(f"{job.label}: kept {len(report.extra)} files upstream no longer lists (delete is off), "
            f"e.g. {', '.join(report.extra[:3])}")
    fixed = make_public_tree(job.dest)  # dnf writes by the umask; the tree is published
    if fixed:
        log(f"{job.label}: made {fixed} files and directories world-readable")

    linked = samefile_count(job.dest, job.previous, linked_hrefs) if job.previous else 0
    seconds = round(time.monotonic() - started, 3)
    log(f"{job.label}: done, {report.packages} packages ({human_bytes(report.bytes)}) in {job.dest}: "
        f"{len(downloads)} downloaded (about {human_bytes(sum(downloads))}, "
        f"{human_bytes(sum(downloads) / max(seconds, 1e-6))}/s), {linked} hard-linked from the previous compose; "
        f"verified and signature-checked; {seconds:.1f}s in all")
    return SyncResult(repo, arch, kind, str(job.dest), report.packages, len(downloads), linked, report.bytes,
                      seconds)


# --- steps ---------------------------------------------------------------------------------------


def _prepare(profile: ReleaseProfile, repo: str, arch: str, kind: str, dest: Path, work: Path, key_dir: Path,
             source: RepoSource, hashed: bool, delete: bool, previous: Path | None, log: Log, warn: Log,
             on_start: Callable[[subprocess.Popen], None] | None) -> _Job:
    """Validate the parameters, find the keys, make the private workspace and rpm database."""
    if kind not in dnf.REPO_KINDS:
        raise SyncRefused(f"kind {kind!r} is not one of {', '.join(dnf.REPO_KINDS)}")
    try:
        profile.repo(repo)
    except KeyError as exc:
        raise SyncRefused(exc.args[0]) from None
    try:
        arch = safe_part(arch, "arch")
    except LayoutError as exc:
        raise SyncRefused(str(exc)) from None
    if kind != "source" and arch not in profile.repo_arches(repo):
        raise SyncRefused(f"{repo} in {profile.name} has no arch {arch!r}; "
                          f"it has {', '.join(profile.repo_arches(repo))}")
    keys = tuple(key_dir / name for name in profile.gpg_keys)
    missing = [str(k) for k in keys if not k.is_file()]
    if missing:
        raise SyncRefused(
            f"GPG key file(s) {', '.join(missing)} not found: RELENG_GPG_KEY_DIR={key_dir} must hold "
            f"the keys profile {profile.name} lists in gpg_keys ({', '.join(profile.gpg_keys)})"
        )
    repoid = f"{repo}-source" if kind == "source" else f"{repo}-{arch}-{kind}"
    ws = dnf.fresh_workspace(work / f"reposync-{repoid}")
    log_path = work / f"reposync-{repoid}.log"
    log_path.write_text("")
    url = source.repo_url(profile.project_id, repo, arch, kind, hashed=hashed)
    ws.config.write_text(dnf.dnf_config(ws, [dnf.DnfRepo(repoid, url)], keys))
    for argv in (dnf.rpm_initdb_argv(ws), *(dnf.rpm_import_argv(ws, k) for k in keys)):
        done = run(argv, check=False, env=dnf.dnf_env())
        if done.returncode != 0:
            raise SyncRefused(f"{shlex.join(argv)} failed: {done.stderr.strip()}; the key files in "
                              f"RELENG_GPG_KEY_DIR={key_dir} must be armored public keys")
    label = f"{repo} {'source' if kind == 'source' else f'{arch} {kind}'}"
    return _Job(profile, key_dir, keys, url, repoid, label, dest, previous, delete, ws, log_path, log, warn,
                on_start)


def _upstream_unchanged(job: _Job, source: RepoSource) -> bool:
    """True when the build system serves the reference tree's repomd.xml and its signature holds."""
    reference = job.previous or job.dest
    try:
        local = (reference / REPOMD).read_bytes()
    except OSError:
        return False  # no reference: dnf runs
    try:
        remote = source.fetch_repomd(job.url)
    except OSError as exc:
        job.log(f"{job.label}: could not compare repomd.xml with the build system ({exc}); running dnf")
        return False  # dnf runs and reports
    if remote != local:
        return False
    keyring = job.ws.root / "keyring.gpg"
    keyring.write_bytes(b"".join(dearmor(k.read_text()) for k in job.keys))
    signature = reference / "repodata" / "repomd.xml.asc"
    check = run(gpgv_argv(keyring, signature, reference / REPOMD), check=False)
    if check.returncode != 0:
        job.log(f"{job.label}: {signature} does not verify with the profile's keys (gpgv exit {check.returncode}); "
                "running dnf")
    return check.returncode == 0


def _reuse_reference(job: _Job) -> tuple[TreeReport | None, list[str], list[PackageEntry] | None]:
    """Upstream is unchanged: link the previous compose's packages and copy its repodata (nothing to do
    in place). Returns the verified tree's report, the linked hrefs and the packages of its primary (read
    once: the copied repodata is the reference's), or None when dnf must run."""
    linked: list[str] = []
    entries: list[PackageEntry] | None = None
    try:
        if job.previous:
            index = package_index(job.previous)
            linked = link_unchanged(job.dest, job.previous, index.values(), previous_index=index)
            copy_repodata(job.previous, job.dest)
            entries = list(index.values())
    except CrossMountError:
        raise  # a deployment error, not a reason to download everything again
    except (RepoError, OSError) as exc:
        job.warn(f"{job.label}: could not take the unchanged tree from {job.previous} ({exc}); running dnf")
        return None, [], None
    report = verify_repo(job.dest, entries=entries, cache=InodeFacts())
    if not report.ok:
        job.log(f"{job.label}: the unchanged tree does not verify ({'; '.join(report.problems(3))}); running dnf")
        return None, [], None
    job.log(f"{job.label}: upstream repodata unchanged since {job.previous or job.dest}; "
            f"{report.packages} packages taken as they are")
    return report, linked, entries


def _reposync(job: _Job, progress_interval: float) -> tuple[list[int], list[str]]:
    """``dnf reposync``, linking from the previous compose first; returns download sizes and linked hrefs."""
    argv = dnf.reposync_argv(job.ws, job.repoid, job.dest, major=job.profile.major, disttag=job.profile.disttag,
                             gpgcheck=False, delete=job.delete)
    wanted = None
    linked: list[str] = []
    if job.previous or _has_shared_files(job.dest):
        rc, tail = run_dnf([*argv, "--urls"], job.log_path, on_start=job.on_start)
        _check_dnf(rc, tail, [], job)
        wanted = package_index(_cached_repodata(job.ws, job.repoid))
        if job.previous:
            try:
                linked = link_unchanged(job.dest, job.previous, wanted.values())
            except CrossMountError:
                raise
            except RepoError as exc:
                job.warn(f"{job.label}: nothing linked from the previous compose: {exc}")
            job.log(f"{job.label}: {len(linked)} of {len(wanted)} packages unchanged since {job.previous}, "
                    "hard-linked")
        removed = break_shared_links(job.dest, wanted, keep=linked)
        if removed:
            job.log(f"{job.label}: removed {len(removed)} files shared with another tree that dnf would have "
                    "rewritten")
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
            job.warn(f"{job.label}: dnf: {line}")

    job.dest.mkdir(parents=True, exist_ok=True)
    with Progress(job.dest / "Packages", job.label, job.log, progress_interval,
                  len(wanted) if wanted is not None else None):
        rc, tail = run_dnf(argv, job.log_path, on_line=watch, on_start=job.on_start)
    _check_dnf(rc, tail, lines, job)
    if wanted is not None:
        cached = _cached_repodata(job.ws, job.repoid)
        if (job.dest / REPOMD).read_bytes() != (cached / REPOMD).read_bytes():
            raise SyncError(f"{job.url} changed while it was synced (repomd.xml differs between the metadata the "
                            "packages were chosen from and the one downloaded); retry the task")
    return downloads, linked


def signature_fact(keys: Sequence[Path]) -> str:
    """The fact "signature verified with exactly these keys" (a changed key set checks every package again)."""
    digest = hashlib.sha256(b"".join(Path(k).read_bytes() for k in sorted(keys, key=str))).hexdigest()
    return f"rpmsig:{digest}"


def _check_signatures(job: _Job, entries: Sequence[PackageEntry] | None = None) -> None:
    """Every package's signature against the profile's keys only; a failure is not retriable.

    ``entries``: the tree's packages when its primary was read already."""
    files = [tree_path(job.dest, p.href) for p in (iter_packages(job.dest) if entries is None else entries)]
    facts, fact = InodeFacts(), signature_fact(job.keys)
    stats = {f: os.stat(f) for f in files}
    unchecked = [f for f in files if not facts.known(f, stats[f], fact)]  # checked already by an earlier sync
    if len(unchecked) < len(files):
        job.log(f"{job.label}: {len(files) - len(unchecked)} of {len(files)} package signatures were checked with "
                "the same keys by an earlier sync (same files, hard-linked); checking the other "
                f"{len(unchecked)}")
    try:
        bad = check_signatures(job.ws.installroot, unchecked, env=dnf.dnf_env(), batch=CHECKSIG_BATCH)
    except SignatureToolError as exc:
        raise SyncError(f"{job.label}: {exc}; retry the task") from None
    if not bad:
        for f in unchecked:
            facts.remember(f, stats[f], fact)
    if bad:
        shown = "\n".join(bad[:20]) + (f"\n... and {len(bad) - 20} more" if len(bad) > 20 else "")
        raise SyncRefused(
            f"{len(bad)} of {len(files)} packages synced from {job.url} do not verify with the keys of profile "
            f"{job.profile.name} ({', '.join(job.profile.gpg_keys)} in RELENG_GPG_KEY_DIR={job.key_dir})"
            f":\n{shown}\nUnsigned packages and packages signed with another key are refused; fix the keys or "
            "the build system's signing."
        )


def _check_dnf(rc: int, tail: list[str], lines: list[str], job: _Job) -> None:
    """Refuse on a signature problem; fail (retriable) on any other dnf error or failed download."""
    gpg = gpg_failures([*lines, *tail])
    if gpg:
        raise SyncRefused(
            f"signature check failed syncing {job.url}:\n" + "\n".join(dict.fromkeys(gpg)) + "\n"
            f"The keys profile {job.profile.name} lists ({', '.join(job.profile.gpg_keys)}) in "
            f"RELENG_GPG_KEY_DIR={job.key_dir} do not verify what the build system serves; fix the key "
            f"files or the profile's gpg_keys. Full dnf log: {job.log_path}"
        )
    failed = failed_downloads([*lines, *tail])
    if failed or rc != 0:
        what = f"{len(dict.fromkeys(failed))} package download(s) failed" if failed else f"dnf exited {rc}"
        output = "\n".join(tail)
        raise SyncError(
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
        raise SyncError(f"dnf left no single metadata cache for {repoid} under {cache} (found {len(found)})")
    return found[0]
