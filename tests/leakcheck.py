"""What a test session leaves behind: processes still running and files in the temp directories.

The session (``tests/conftest.py``) takes a snapshot of the process table and of /tmp when it starts, looks
again after every test (to name the test after which something first appeared) and at the end fails the run
when something it started is still there. Processes count as the session's only when they are (1)
descendants of the pytest process, (2) carry this session's id in their environment (:data:`SESSION_ENV`,
inherited by everything the tests start), or (3) have their cwd, command line, ``GNUPGHOME`` or ``HOME``
under this session's temp directories or, without another session's id, under the checkout. Processes of
other test sessions on the machine carry their own id and are never counted.

The session runs with ``TMPDIR`` pointing at a private directory (:func:`private_tmpdir`): whatever
honours it (Python's tempfile, mktemp, Go, glib, dnf) writes there, so anything left in it is this session's.
New entries in /tmp itself come from tools with a fixed /tmp path, or from other programs on the machine
(another test session's SeaweedFS makes sockets of the same kind). One counts when a process of this session
was seen with it open, or its name holds the pid of a process of this session or a port one was given (weed's
``weed.<host>.<user>.log.<level>.<time>.<pid>``, ``seaweedfs-<service>-<port>.sock``); one seen open only by
other programs, or a socket still bound, is not counted; the rest are listed as not counted.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SESSION_ENV = "PYTEST_RELENG_SESSION"
PRIVATE_TMP_PREFIX = "releng-tests-"
# A port in a command line: -s3.port=8333, --port 8080, 127.0.0.1:8080.
_PORT_ARG = re.compile(r"(?:port[\w.]*[= ]|:)(\d{2,5})$")


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: (pid, start) names one process even when pids are reused
    state: str
    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> tuple[int, int]:
        return self.pid, self.start

    @property
    def name(self) -> str:
        return os.path.basename(self.argv[0]) if self.argv else f"pid {self.pid}"

    def describe(self) -> str:
        return f"pid {self.pid} `{' '.join(self.argv)[:300]}` (cwd {self.cwd or '?'})"


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def read_proc(pid: int, *, env: bool = True) -> Proc | None:
    """One process from /proc, or None when it has gone (or is not readable)."""
    raw = _read(f"/proc/{pid}/stat")
    if not raw:
        return None
    try:
        rest = raw.rsplit(b")", 1)[1].split()
        state, ppid, start = rest[0].decode(), int(rest[1]), int(rest[19])
    except (IndexError, ValueError):
        return None
    argv = tuple(a.decode(errors="replace") for a in _read(f"/proc/{pid}/cmdline").split(b"\0") if a)
    try:
        cwd = os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        cwd = ""
    environ: dict[str, str] = {}
    if env:
        for item in _read(f"/proc/{pid}/environ").split(b"\0"):
            name, sep, value = item.partition(b"=")
            if sep:
                environ[name.decode(errors="replace")] = value.decode(errors="replace")
    return Proc(pid, ppid, start, state, argv, cwd, environ)


def processes(*, env: bool = True) -> dict[tuple[int, int], Proc]:
    """Every live process (zombies, which have exited and only wait to be reaped, left out)."""
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry), env=env)
            if proc is not None and proc.state not in ("Z", "X"):
                found[proc.key] = proc
    return found


def homedirs(proc: Proc) -> list[str]:
    """The GnuPG homes a process names: ``--homedir X`` / ``--homedir=X`` and ``GNUPGHOME``."""
    found = [proc.env["GNUPGHOME"]] if proc.env.get("GNUPGHOME") else []
    for i, arg in enumerate(proc.argv):
        if arg == "--homedir" and i + 1 < len(proc.argv):
            found.append(proc.argv[i + 1])
        elif arg.startswith("--homedir="):
            found.append(arg.split("=", 1)[1])
    return found


def _under(path: str, roots: Iterable[str]) -> str | None:
    for root in roots:
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return root
    return None


def points_under(proc: Proc, roots: Iterable[str]) -> str | None:
    """What of the process (cwd, an argument, GNUPGHOME, HOME) lies under one of ``roots``; None if nothing."""
    roots = [r for r in roots if r]
    if (root := _under(proc.cwd, roots)) is not None:
        return f"its cwd is under {root}"
    for home in homedirs(proc):
        if (root := _under(os.path.abspath(home), roots)) is not None:
            return f"its GnuPG home {home} is under {root}"
    if (root := _under(proc.env.get("HOME", ""), roots)) is not None:
        return f"its HOME is under {root}"
    for arg in proc.argv:
        for piece in re.split(r"[=,:]", arg):
            if piece.startswith("/") and (root := _under(piece, roots)) is not None:
                return f"its command line names {piece}, under {root}"
    return None


def using(roots: Iterable[str], procs: Iterable[Proc] | None = None) -> list[tuple[Proc, str]]:
    """Live processes whose cwd, GnuPG home (``--homedir``/``GNUPGHOME``) or HOME is under one of ``roots``."""
    roots = [str(Path(r).resolve()) for r in roots]
    found = []
    for proc in procs if procs is not None else processes().values():
        if proc.pid == os.getpid():
            continue
        where = None
        if (root := _under(proc.cwd, roots)) is not None:
            where = f"its cwd is under {root}"
        for home in homedirs(proc):
            if where is None and (root := _under(os.path.abspath(home), roots)) is not None:
                where = f"its GnuPG home {home} is under {root}"
        if where is None and (root := _under(proc.env.get("HOME", ""), roots)) is not None:
            where = f"its HOME is under {root}"
        if where:
            found.append((proc, where))
    return found


def _ancestors(proc: Proc, table: dict[int, Proc]) -> Iterator[int]:
    seen = set()
    pid = proc.ppid
    while pid > 1 and pid not in seen:
        seen.add(pid)
        yield pid
        parent = table.get(pid)
        if parent is None:
            return
        pid = parent.ppid


def hint(proc: Proc) -> str:
    """What most likely left the process and what to do about it."""
    name = proc.name
    if name in ("gpg-agent", "dirmngr", "keyboxd", "scdaemon"):
        homes = homedirs(proc) or ["~/.gnupg"]
        if "/pubring" in homes[0]:
            return ("dnf's key import (repo_gpgcheck) started it in the workspace's keyring and it outlived dnf; "
                    "call releng.core.dnf.stop_gpg_agents(workspace) after dnf, in a finally")
        return ("gpg started it for that GnuPG home and nothing stopped it; run the gpg commands inside "
                "releng.core.gpg.agent_session(home) (or call releng.core.gpg.stop_agents(home) when the step ends)")
    if name == "weed":
        return ("a SeaweedFS server (dev.stack.start_s3) that was not stopped; call the Service's stop() in the "
                "fixture's teardown")
    if name in ("airflow", "gunicorn") or "airflow" in " ".join(proc.argv[:3]):
        return "an Airflow process that was not stopped; stop the stack or Service that started it"
    return (f"{name} was still running after its test; the test or fixture that started it must wait for it or "
            "stop it (releng.core.run.stream kills its tool when the caller stops early)")


@dataclass
class Leftover:
    what: str
    first_seen: str
    hint: str

    def render(self) -> str:
        return f"  - {self.what}\n      first seen after: {self.first_seen}\n      likely cause: {self.hint}"


def private_tmpdir() -> tuple[Path, Path]:
    """Give this process (and everything it starts) a private temp directory; returns it and the real one.

    pytest's own temp root stays where it was (``PYTEST_DEBUG_TEMPROOT``), so ``tmp_path`` directories are
    kept for inspection as usual.
    """
    real = Path(tempfile.gettempdir()).resolve()
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", str(real))
    private = Path(tempfile.mkdtemp(prefix=f"{PRIVATE_TMP_PREFIX}{os.getpid()}-", dir=real))
    os.environ["TMPDIR"] = str(private)
    tempfile.tempdir = str(private)
    return private, real


def _kind(path: Path) -> str:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "gone"
    return ("socket" if stat.S_ISSOCK(mode) else "directory" if stat.S_ISDIR(mode)
            else "symlink" if stat.S_ISLNK(mode) else "file")


def _bound_sockets() -> set[str]:
    """Paths of the unix sockets some process is bound to."""
    paths = set()
    for line in _read("/proc/net/unix").decode(errors="replace").splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 8 and fields[7].startswith("/"):
            paths.add(fields[7])
    return paths


def _holds(held: set[str], path: str) -> bool:
    return any(h == path or h.startswith(path + "/") for h in held)


def _held_paths(procs: Iterable[Proc]) -> set[str]:
    """The cwd and open files of ``procs``."""
    held = set()
    for proc in procs:
        if proc.cwd:
            held.add(proc.cwd)
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                held.add(os.readlink(f"/proc/{proc.pid}/fd/{fd}"))
            except OSError:
                continue
    return held


class Session:
    """The leak check of one pytest session."""

    def __init__(self, checkout: Path):
        self.id = f"{os.getpid()}-{os.urandom(4).hex()}"
        os.environ[SESSION_ENV] = self.id
        self.checkout = str(checkout.resolve())
        self.private_tmp, self.real_tmp = private_tmpdir()
        self.roots: list[str] = [str(self.private_tmp)]
        self.start_procs = set(processes(env=False))
        self.start_pids = {pid for pid, _start in self.start_procs}
        self.start_tmp = set(os.listdir(self.real_tmp))
        self.proc_first_seen: dict[tuple[int, int], str] = {}
        self.tmp_first_seen: dict[str, str] = {}
        self.tmp_mine: set[str] = set()  # new /tmp entries seen open by this session's processes
        self.tmp_foreign: set[str] = set()  # ... seen open only by other programs (another session's log)
        self.seen_pids: set[int] = {os.getpid()}
        self.seen_ports: set[int] = set()
        self.unattributed: list[str] = []
        self.leftovers: list[Leftover] = []
        self.checked = False

    def add_root(self, path: Path | str) -> None:
        """A directory only this session uses (pytest's basetemp)."""
        path = str(Path(path).resolve())
        if path not in self.roots:
            self.roots.append(path)

    # --- whose is it ---------------------------------------------------------------------------------------

    def owns(self, proc: Proc, table: dict[int, Proc]) -> tuple[str, bool] | None:
        """Why ``proc`` is this session's (and whether it may be stopped by the check), or None."""
        if os.getpid() in _ancestors(proc, table):
            return "a descendant of the pytest process", True
        marker = proc.env.get(SESSION_ENV)
        if marker == self.id:
            return f"it carries this session's {SESSION_ENV}", True
        if marker:
            return None  # another test session's
        if (why := points_under(proc, self.roots)) is not None:
            return why, True
        if (why := points_under(proc, [self.checkout])) is not None:
            # A child of a process that ran before the session (a local stack started from the checkout) is
            # not the session's; a daemon (its parent is init) or an orphan is.
            mine = set(_ancestors(table[os.getpid()], table)) if os.getpid() in table else set()
            if any(pid in self.start_pids and pid not in mine for pid in _ancestors(proc, table)):
                return None
            return why, False
        return None

    def new_processes(self) -> list[tuple[Proc, str, bool]]:
        table = processes(env=False)
        by_pid = {p.pid: p for p in table.values()}
        found = []
        for key, bare in table.items():
            if key in self.start_procs or bare.pid == os.getpid():
                continue
            proc = read_proc(bare.pid)  # with its environment
            if proc is None or proc.key != key:
                continue
            owned = self.owns(proc, by_pid)
            if owned is not None:
                found.append((proc, *owned))
        return found

    def new_tmp_entries(self) -> list[Path]:
        entries = [self.private_tmp / name for name in os.listdir(self.private_tmp)]
        for name in os.listdir(self.real_tmp):
            path = self.real_tmp / name
            if name in self.start_tmp or path == self.private_tmp or str(path) in self.roots:
                continue  # pytest --basetemp=/tmp/NAME: the session's own temp root
            if name.startswith(("pytest-of-", PRIVATE_TMP_PREFIX)):
                continue  # pytest's temp root; another session's private temp directory
            entries.append(path)
        return entries

    def _why_ours(self, path: Path) -> str | None:
        """Why a new /tmp entry is this session's, or None when nothing shows it (another program's, maybe)."""
        if str(path) in self.tmp_mine:
            return "a process of this session had it open"
        numbers = {int(n) for n in re.findall(r"\d+", path.name)}
        if numbers & self.seen_pids:
            return "its name holds the pid of a process of this session"  # weed.<host>.<user>.log.<...>.<pid>
        if numbers & self.seen_ports:
            return "its name holds a port a process of this session was given"  # seaweedfs-s3-<port>.sock
        return None

    # --- after each test and at the end --------------------------------------------------------------------

    def after_test(self, nodeid: str) -> None:
        ours = self.new_processes()
        for proc, _why, _stoppable in ours:
            self.proc_first_seen.setdefault(proc.key, nodeid)
            self.seen_pids.add(proc.pid)
            self.seen_ports.update(int(m.group(1)) for a in proc.argv[:64] if (m := _PORT_ARG.search(a)))
        undecided = []
        for path in self.new_tmp_entries():
            self.tmp_first_seen.setdefault(str(path), nodeid)
            if path.parent != self.private_tmp and str(path) not in self.tmp_mine | self.tmp_foreign:
                undecided.append(str(path))
        if undecided:  # whose process has it open (or as its cwd) now: a shell's redirect, a tool's work dir
            keys = {p.key for p, _w, _s in ours}
            table = processes(env=False)
            mine = _held_paths([p for k, p in table.items() if k in keys or p.pid == os.getpid()])
            others = _held_paths([p for k, p in table.items() if k not in keys and p.pid != os.getpid()])
            for text in undecided:
                if _holds(mine, text):
                    self.tmp_mine.add(text)
                elif _holds(others, text):
                    self.tmp_foreign.add(text)

    def check(self, ignore: Iterable[Path] = ()) -> list[Leftover]:
        """Every leftover of the session; the session's own processes among them are stopped afterwards."""
        self.checked = True
        ignored = {str(Path(p)) for p in ignore}
        procs = self.new_processes()
        leftovers = [Leftover(f"process {proc.describe()}, this session's because {why}",
                              self.proc_first_seen.get(proc.key, "the last test"), hint(proc))
                     for proc, why, _stoppable in procs]
        ours = {p.key for p, _w, _s in procs}
        others = [p for k, p in processes().items() if k not in ours and p.pid != os.getpid()]
        held, bound = _held_paths(others), _bound_sockets()
        self.unattributed = []
        for path in self.new_tmp_entries():
            text = str(path)
            if text in ignored:
                continue
            first = self.tmp_first_seen.get(text, "the last test")
            if path.parent == self.private_tmp:
                leftovers.append(Leftover(f"{_kind(path)} {path} in the session's TMPDIR", first,
                                          "a temporary file or directory that was not removed; use `with "
                                          "tempfile.TemporaryDirectory()` or the test's tmp_path"))
                continue
            if text not in self.tmp_mine and (text in self.tmp_foreign or text in bound or _holds(held, text)):
                continue  # another program's: it had it open, or has it bound or open now
            why = self._why_ours(path)
            if why is None:
                self.unattributed.append(f"{_kind(path)} {path} (first seen after {first})")
                continue
            leftovers.append(Leftover(f"{_kind(path)} {path} in /tmp, this session's because {why}", first,
                                      "a tool wrote to a fixed /tmp path; give it a path under its own directory "
                                      "(a flag or the service's state dir), or remove the file when the step or "
                                      "service ends"))
        self.leftovers = leftovers
        for proc, _why, stoppable in procs:
            if stoppable:
                _stop(proc)
        return leftovers

    def cleanup(self) -> None:
        """Remove the private temp directory and what is left in it (reported by :meth:`check`)."""
        shutil.rmtree(self.private_tmp, ignore_errors=True)

    def report(self) -> str:
        lines = []
        if self.leftovers:
            lines += [f"{len(self.leftovers)} leftover(s) of this test session (processes it started that still "
                      "run, files it left in the temp directories); each must be stopped or removed by whatever "
                      "made it:"]
            lines += [item.render() for item in self.leftovers]
        if self.unattributed:
            lines += ["New in /tmp during the run, not counted (nothing shows this session made them; another "
                      "program on the machine may have). If the tests made one, give that tool a path of its own:"]
            lines += [f"  - {item}" for item in self.unattributed]
        return "\n".join(lines)


def _stop(proc: Proc) -> None:
    """Stop a leftover process (after it has been reported), so a failed run leaves nothing running."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            now = read_proc(proc.pid, env=False)
            if now is None or now.start != proc.start or now.state in ("Z", "X"):
                return
            time.sleep(0.05)
