"""rsync for promotions: the one set of flag sets, argv builders, and the itemized-output parser.

Every rsync the pipeline runs between staging and production is built here, so
the flags live in one place:

* ``TREE_FLAGS``: links as links, permissions as published (``RSYNC_CHMOD``:
  directories 0755, files 0644 or 0755, whatever the source had), times,
  hard links (``-H``), sparse files. No ``-D``: a device node or FIFO in a
  release tree is a mistake and must not reach mirrors. No ``-o``/``-g``:
  production belongs to whoever runs the promotion.
  ``--modify-window=-1`` compares and sets times to the nanosecond (rsync's
  default only compares whole seconds, so a file copied within the second it
  was written keeps a different mtime and the trees never become equal).
* The dry run (``dry_run_argv``) compares the whole release tree with
  ``--delete`` and itemizes every change; it is the change report's source.
* The phases (``phase_argv``) copy only the approved paths (``--files-from``,
  NUL-separated) and never delete; the metadata phase adds ``--delay-updates``
  so a repodata directory's new files appear together at the end.
* Deletions are not an rsync: ``--delete`` removes whatever staging lacks at
  that moment, approved or not, so promotion deletes its approved list itself.

``--out-format`` prints ``%i<TAB>%l<TAB>%n%L``: rsync escapes control
characters in names as ``\\#ooo`` but not TABs, so the name is the last field.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from releng.core.fs import human_bytes
from releng.core.modes import RSYNC_CHMOD

TREE_FLAGS = ("--links", "--perms", "--times", "--modify-window=-1", "--hard-links", "--sparse", RSYNC_CHMOD)
OUT_FORMAT = "--out-format=%i\t%l\t%n%L"
PHASES = ("payload", "metadata", "deletions")
VANISHED = 24  # rsync's exit code when source files vanished while it ran

EXIT_MEANINGS = {
    1: "syntax or usage error",
    2: "protocol incompatibility",
    3: "errors selecting input/output files or directories",
    5: "error starting client-server protocol",
    10: "error in socket I/O",
    11: "error in file I/O (disk full or read-only production?)",
    12: "error in rsync protocol data stream",
    20: "killed by a signal",
    23: "partial transfer: some files could not be copied (permissions? see the messages)",
    24: "source files vanished during the transfer: staging changed while it was being copied",
    25: "the --max-delete limit stopped deletions",
    30: "timeout in data send/receive",
}

_ESCAPE = re.compile(rb"\\#([0-7]{3})")
_STAT_LINE = re.compile(r"^Number of (files|created files|deleted files|regular files transferred): ([\d,]+)(.*)$")
_STAT_PART = re.compile(r"(\w+): ([\d,]+)")


class RsyncError(RuntimeError):
    """rsync failed or was asked to do something unsafe; ``code`` is rsync's exit code when it ran."""

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.code = code


def _tree_root(path: Path, what: str) -> str:
    """An absolute directory other than ``/``, as rsync's "contents of" form (trailing slash)."""
    path = Path(path)
    if not path.is_absolute() or path == Path("/") or not path.name:
        raise RsyncError(f"{what} {str(path)!r} must be an absolute directory other than /; refusing to run rsync")
    return f"{path}/"


def dry_run_argv(staging: Path, production: Path) -> list[str]:
    """Itemize what a full mirror of ``staging`` onto ``production`` would change, deletions included."""
    return ["rsync", "--recursive", *TREE_FLAGS, "--delete", "--dry-run", "--stats", OUT_FORMAT,
            _tree_root(staging, "staging directory"), _tree_root(production, "production directory")]


def phase_argv(phase: str, staging: Path, production: Path, files_from: Path, *,
               bwlimit_kbps: int | None = None) -> list[str]:
    """Copy exactly the paths in ``files_from`` (NUL-separated, relative); ``metadata`` delays the renames."""
    if phase not in ("payload", "metadata"):
        raise RsyncError(f"no rsync flag set for phase {phase!r}; payload and metadata copy, "
                         "deletions do not use rsync")
    argv = ["rsync", *TREE_FLAGS, "--from0", f"--files-from={files_from}", OUT_FORMAT]
    if phase == "metadata":
        argv.append("--delay-updates")
    if bwlimit_kbps:
        argv.append(f"--bwlimit={int(bwlimit_kbps)}")
    return [*argv, _tree_root(staging, "staging directory"), _tree_root(production, "production directory")]


# --- itemized output ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One itemized line: ``code`` is rsync's ``%i`` (``>f+++++++++``, ``*deleting``, ``.d..t......``)."""

    code: str
    path: str
    size: int
    link: str | None = None  # symlink target (``L``) or hard-link partner (``h``)

    @property
    def is_delete(self) -> bool:
        return self.code.startswith("*deleting")

    @property
    def is_dir(self) -> bool:
        return len(self.code) > 1 and self.code[1] == "d"

    @property
    def file_type(self) -> str:
        """``f``, ``d``, ``L`` (symlink), ``D``/``S`` (device/special), or ``?`` for a deletion."""
        return "?" if self.is_delete else self.code[1]

    @property
    def transfers_data(self) -> bool:
        """A regular file whose content is sent (not a hard link to one already there)."""
        return self.code[:2] == ">f"

    @property
    def is_new(self) -> bool:
        return not self.is_delete and self.code[2:3] == "+"


@dataclass
class Stats:
    """The ``--stats`` counts; per-type splits are ``{"reg": n, "dir": n, "link": n}``."""

    files: dict[str, int] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    regular_transferred: int = 0

    def non_dirs(self, which: str) -> int:
        counts = getattr(self, which)
        return sum(v for k, v in counts.items() if k not in ("dir", "total"))


def unescape(raw: bytes) -> str:
    """rsync's ``\\#ooo`` escapes back to the file name's bytes, decoded like the OS does."""
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m.group(1), 8)]), raw))


def _split_link(rest: str, sep: str, root: Path | None, match: Callable[[Path, str, str], bool]) -> tuple[str, str]:
    """Split ``name<sep>target`` where the name itself may contain ``sep``: the first split that checks out."""
    starts = [m.start() for m in re.finditer(re.escape(sep), rest)]
    if root is not None:
        for i in starts:
            name, target = rest[:i], rest[i + len(sep):]
            try:
                if match(root, name, target):
                    return name, target
            except OSError:
                continue
    i = starts[0]
    return rest[:i], rest[i + len(sep):]


def _is_symlink_to(root: Path, name: str, target: str) -> bool:
    return os.readlink(root / name) == target


def _is_same_file(root: Path, name: str, partner: str) -> bool:
    return os.path.samefile(root / name, root / partner)


def parse_change(line: bytes, source_root: Path | None = None) -> Change | None:
    """One ``%i\\t%l\\t%n%L`` line, or None for anything else (messages, stats, blank lines).

    ``source_root`` lets symlink and hard-link lines whose names contain `` -> ``
    or `` => `` be split correctly by checking the source tree.
    """
    parts = line.rstrip(b"\n").split(b"\t", 2)
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    code, size, rest = parts[0].decode("ascii", "replace").strip(), int(parts[1]), unescape(parts[2])
    if not code or code[0] not in "<>ch.*":
        return None
    link = None
    if code.startswith("*"):
        code = "*deleting"
    elif code[1:2] == "L" and " -> " in rest:
        rest, link = _split_link(rest, " -> ", source_root, _is_symlink_to)
    elif code[0] == "h" and " => " in rest:
        rest, link = _split_link(rest, " => ", source_root, _is_same_file)
    path = rest[:-1] if rest.endswith("/") and rest != "/" else rest
    return Change(code, path or ".", size, link)


def parse_stats(lines: Iterable[str]) -> Stats:
    stats = Stats()
    for line in lines:
        m = _STAT_LINE.match(line.strip())
        if not m:
            continue
        total = int(m.group(2).replace(",", ""))
        split = {k: int(v.replace(",", "")) for k, v in _STAT_PART.findall(m.group(3))}
        split["total"] = total
        if m.group(1) == "files":
            stats.files = split
        elif m.group(1) == "created files":
            stats.created = split
        elif m.group(1) == "deleted files":
            stats.deleted = split
        else:
            stats.regular_transferred = total
    return stats


# --- running -----------------------------------------------------------------------------------


@dataclass
class RunResult:
    changes: list[Change]
    stats: Stats
    messages: list[str]
    seconds: float

    @property
    def files(self) -> int:
        return sum(1 for c in self.changes if not c.is_delete and not c.is_dir)

    @property
    def bytes(self) -> int:
        return sum(c.size for c in self.changes if c.transfers_data)


def _lines(stream) -> Iterator[bytes]:
    yield from iter(stream.readline, b"")


def run(argv: list[str], *, source_root: Path | None = None, log: Callable[[str], None] = lambda _m: None,
        what: str = "rsync", every: float = 10.0, pass_fds: tuple[int, ...] = ()) -> RunResult:
    """Run rsync, parse its itemized lines as they come, log counts/bytes/rate every ``every`` seconds.

    ``pass_fds`` are inherited by rsync (the production lock, so an orphaned
    rsync keeps excluding other writers). Raises RsyncError naming the exit
    code's meaning and the last messages.
    """
    if argv[0] != "rsync":
        raise RsyncError(f"not an rsync argv: {argv[:1]}")
    start = last = time.monotonic()
    changes: list[Change] = []
    other: list[str] = []
    done_bytes = 0
    env = {**os.environ, "LC_ALL": "C"}
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          env=env, pass_fds=pass_fds) as proc:
        for raw in _lines(proc.stdout):
            change = parse_change(raw, source_root)
            if change is None:
                other.append(os.fsdecode(raw).rstrip("\n"))
                continue
            changes.append(change)
            if change.transfers_data:
                done_bytes += change.size
            now = time.monotonic()
            if now - last >= every:
                last = now
                rate = done_bytes / max(now - start, 1e-6)
                log(f"{what}: {len(changes)} items, {human_bytes(done_bytes)} so far ({human_bytes(rate)}/s)")
        code = proc.wait()
    seconds = time.monotonic() - start
    messages = [m for m in other if m.strip() and not _STAT_LINE.match(m.strip())]
    if code != 0:
        meaning = EXIT_MEANINGS.get(code, "see rsync(1)")
        tail = "\n".join(messages[-20:])
        raise RsyncError(f"{what} failed with exit code {code} ({meaning}): {' '.join(argv)}\n{tail}", code)
    result = RunResult(changes, parse_stats(other), messages, seconds)
    log(f"{what}: done, {len(changes)} items, {result.files} files, {human_bytes(result.bytes)} in {seconds:.1f} s "
        f"({human_bytes(result.bytes / max(seconds, 1e-6))}/s)")
    return result
