"""One way to run an external tool: argv lists only, no stdin, C locale, and one error naming what failed.

Long-running tools whose output is streamed into a task log (dnf, xorriso,
rsync, lorax) use :func:`stream`; short ones use :func:`run`.
"""

from __future__ import annotations

import collections
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

TAIL_CHARS = 2000


class ToolError(RuntimeError):
    """A tool exited non-zero or could not start; the message holds its command line and the end of its output."""

    def __init__(self, message: str, *, argv: Sequence[str] = (), returncode: int | None = None, output: str = ""):
        super().__init__(message)
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


def tool_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment tools run with: this process's plus the C locale (parsers read English output)."""
    return {**os.environ, "LC_ALL": "C.UTF-8", **(extra or {})}


def _failed(argv: Sequence[str | os.PathLike[str]], returncode: int | None, output: str, what: str | None) -> ToolError:
    label = what or os.path.basename(str(argv[0]))
    tail = output.strip()[-TAIL_CHARS:]
    status = "could not start" if returncode is None else f"exited {returncode}"
    return ToolError(f"{label} {status}: {' '.join(map(str, argv))}\n{tail}".rstrip(), argv=[str(a) for a in argv],
                     returncode=returncode, output=tail)


def run(argv: Sequence[str | os.PathLike[str]], *, check: bool = True, what: str | None = None,
        env: Mapping[str, str] | None = None, input: str | bytes | None = None, cwd: str | os.PathLike | None = None,
        timeout: float | None = None,
        text: bool = True) -> subprocess.CompletedProcess:
    """Run a tool to completion and capture its output; :class:`ToolError` when it fails and ``check`` is set."""
    argv = [str(a) for a in argv]
    try:
        result = subprocess.run(argv, capture_output=True, text=text, errors="replace" if text else None,
                                stdin=None if input is not None else subprocess.DEVNULL, input=input,
                                env=dict(env) if env is not None else tool_env(), cwd=cwd, timeout=timeout)
    except FileNotFoundError as exc:
        raise _failed(argv, None, f"{exc}; install it (scripts/install-system-tools.sh)", what) from None
    except subprocess.TimeoutExpired:
        raise _failed(argv, None, f"no answer within {timeout} s", what) from None
    if check and result.returncode != 0:
        out = result.stderr or result.stdout
        raise _failed(argv, result.returncode, out if isinstance(out, str) else out.decode(errors="replace"), what)
    return result


@contextmanager
def stream(argv: Sequence[str | os.PathLike[str]], *, what: str | None = None, env: Mapping[str, str] | None = None,
           cwd: str | os.PathLike | None = None, tail_lines: int = 40,
           on_start: Callable[[subprocess.Popen], None] | None = None) -> Iterator[Iterator[str]]:
    """Run a tool with stdout and stderr merged; yields its lines as they come; fails with the last lines.

    The process is killed if the caller stops early (an exception, a task kill), so nothing is left running.
    """
    argv = [str(a) for a in argv]
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, errors="replace", env=dict(env) if env is not None else tool_env(), cwd=cwd)
    except FileNotFoundError as exc:
        raise _failed(argv, None, f"{exc}; install it (scripts/install-system-tools.sh)", what) from None
    if on_start is not None:
        on_start(proc)

    def lines() -> Iterator[str]:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            yield line

    try:
        yield lines()
        for _ in lines():  # drain what the caller did not read
            pass
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    if rc != 0:
        raise _failed(argv, rc, "\n".join(tail), what)
