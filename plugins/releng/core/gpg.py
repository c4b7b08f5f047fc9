"""GnuPG homes and the daemons gpg starts in them: stopped when the step that started them ends.

gpg starts a ``gpg-agent`` (and, for some commands, ``dirmngr``) on first need: signing, listing secret
keys, importing keys, generating keys. The daemon detaches and outlives the command, the task and the
GnuPG home itself; on a worker that runs for months every such step would leave one more daemon. Its
sockets are created in the home (or in ``/run/user/<uid>/gnupg/d.<hash>/`` when that directory exists).

* :func:`agent_session` wraps a step that runs gpg on a home: the agent started inside is stopped at the
  end, by the last of the sessions on that home that are open at once (in any process: concurrent tasks
  signing with one key share its agent, and stopping it under another task's signature would fail that
  task). An agent already running when the first session began (a site's agent holding a passphrase or a
  card) is left running.
* :func:`stop_agents` stops the daemons of a home that belongs to one step only (dnf's per-repo keyring, a
  temporary keyring) and waits until the agent has exited.
* :data:`NO_AUTOSTART` runs gpg without starting an agent, for commands that need no secret key
  (``--import`` of public keys, ``--verify``, ``--list-keys``).
* :func:`copy_home` copies a home without its sockets (a socket cannot be copied: ``ENXIO``).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from releng.core.run import run, tool_env

NO_AUTOSTART = "--no-autostart"
LOCK_NAME = ".releng-agent.lock"
STOP_WAIT_SECONDS = 10.0
_STOP = "stop"
_KEEP = "keep"


def _homedir(home: Path | None) -> list[str]:
    return ["--homedir", str(home)] if home is not None else []


def kill_argv(home: Path | None) -> list[str]:
    """Stop every daemon gpg runs for ``home`` (gpg-agent, dirmngr, scdaemon, keyboxd)."""
    return ["gpgconf", *_homedir(home), "--kill", "all"]


def remove_socketdir_argv(home: Path | None) -> list[str]:
    """Remove ``home``'s socket directory under ``/run/user/<uid>/gnupg`` (nothing when its sockets are in it)."""
    return ["gpgconf", *_homedir(home), "--remove-socketdir"]


def agent_pid_argv(home: Path | None) -> list[str]:
    return ["gpg-connect-agent", *_homedir(home), NO_AUTOSTART, "getinfo pid", "/bye"]


def agent_pid(home: Path | None) -> int | None:
    """The pid of the gpg-agent serving ``home``, or None when none answers (none is started to ask)."""
    out = run(agent_pid_argv(home), check=False).stdout
    for line in out.splitlines():
        if line.startswith("D ") and line[2:].strip().isdigit():
            return int(line[2:].strip())
    return None


def agent_running(home: Path | None) -> bool:
    """A gpg-agent answers on ``home``'s socket."""
    return agent_pid(home) is not None


def _alive(pid: int) -> bool:
    """``pid`` is a process that has not exited (a zombie waiting for its parent to reap it has exited)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in (b"Z", b"X")


def stop_agents(home: Path | None, wait: float = STOP_WAIT_SECONDS) -> int | None:
    """Stop the daemons of ``home`` and wait until its agent has exited; remove its socket directory.

    Returns the pid of the agent that was stopped, or None when none was running. An agent that has not
    exited ``wait`` seconds after it was told to is killed (SIGKILL).
    """
    pid = agent_pid(home)
    run(kill_argv(home), check=False)
    if pid is not None:
        deadline = time.monotonic() + wait
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    run(remove_socketdir_argv(home), check=False)
    return pid


def _lock_path(home: Path | None) -> Path:
    if home is not None:
        return Path(home) / LOCK_NAME
    listed = run(["gpgconf", "--list-dirs", "homedir"], check=False).stdout.strip()
    return Path(listed or Path.home() / ".gnupg") / LOCK_NAME


def start_agent_argv(home: Path | None) -> list[str]:
    return ["gpg-agent", *_homedir(home), "--daemon"]


def start_agent(home: Path | None) -> None:
    """Start ``home``'s agent now, once, for the sessions that follow.

    Left to gpg, every gpg command that needs an agent and finds none starts one and gives up after a few
    seconds of waiting for it (``can't connect to the agent``); on a loaded worker with several tasks signing
    at once that wait runs out. ``gpg-agent --daemon`` returns when its socket listens. A failure here is left
    to the gpg command that follows, which reports it."""
    # The daemon keeps the descriptors it was given: captured output would never reach end of file.
    with suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(start_agent_argv(home), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=tool_env(), timeout=60, check=False)


@contextmanager
def agent_session(home: Path | None) -> Iterator[None]:
    """Run gpg on ``home`` inside: the agent gpg starts is stopped when the last open session on ``home`` ends.

    Sessions on one home count across processes through a lock file in the home (``.releng-agent.lock``):
    each holds it shared; the one that gets it exclusively at its end is the last and stops the agent,
    unless the first session found an agent already running (that agent is the site's, and stays).
    """
    path = _lock_path(home)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # other sessions are open: the first of them decided
            fcntl.flock(fd, fcntl.LOCK_SH)
        else:  # the only session: decide whether the agent is ours to stop, and start ours
            os.ftruncate(fd, 0)
            running = agent_running(home)
            os.pwrite(fd, (_KEEP if running else _STOP).encode(), 0)
            if not running:
                start_agent(home)
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # another session is still open; it stops the agent
        else:
            if os.pread(fd, 16, 0).decode(errors="replace").strip() != _KEEP:
                stop_agents(home)
        finally:
            os.close(fd)


def ignore_sockets(directory: str, names: Iterable[str]) -> list[str]:
    """A ``shutil.copytree`` ignore function: skip sockets and FIFOs (an agent's ``S.gpg-agent*``), which
    cannot be copied, and gpg's lock files."""
    skipped = []
    for name in names:
        try:
            mode = os.lstat(os.path.join(directory, name)).st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode) or name.endswith(".lock"):
            skipped.append(name)
    return skipped


def copy_home(source: Path, dest: Path) -> Path:
    """Copy GnuPG home ``source`` to ``dest`` (mode 0700) without sockets and lock files."""
    shutil.copytree(source, dest, symlinks=True, ignore=ignore_sockets)
    os.chmod(dest, 0o700)
    return dest
