"""One local stack (dev/stack.py, started through its CLI like a user would) shared by the slow tests that need a
running Airflow: starting one builds the fixture build system for every profile and takes minutes, so the session
starts it once, on first use, and stops it at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dev import stack

ROOT = Path(__file__).resolve().parents[1]
# Set to a running stack's directory to run the tests against it (while working on them) instead of a new one.
REUSE = "TEST_LIVE_STACK_DIR"


def cli(stack_dir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dev.stack", "--dir", str(stack_dir), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class LiveStack:
    """A stack this session started: its directory and what ``start`` printed."""

    dir: Path
    out: str

    @property
    def state(self) -> stack.Stack:
        found = stack.Stack.load(self.dir)
        assert found is not None, f"the shared stack in {self.dir} is not running"
        return found


class SharedStack:
    """Starts the stack on first use; a test that stopped it (test_stack's stop test) gets it started again."""

    def __init__(self, stack_dir: Path) -> None:
        self.dir = stack_dir
        self.current: LiveStack | None = None

    def get(self) -> LiveStack:
        reuse = os.environ.get(REUSE)
        if reuse:  # a developer's running stack, left running (python -m dev.stack start)
            found = stack.Stack.load(Path(reuse))
            assert found is not None, f"{REUSE}={reuse} names no running stack; start one with python -m dev.stack"
            return LiveStack(Path(reuse), (Path(reuse) / "env").read_text())
        running = stack.Stack.load(self.dir)
        if self.current is None or running is None or not all(s.alive() for s in running.services):
            if running is not None:
                cli(self.dir, "stop")
            ports = [str(stack.free_port()) for _ in range(3)]
            result = cli(self.dir, "start", "--airflow-port", ports[0], "--buildsystem-port", ports[1],
                         "--s3-port", ports[2])
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            self.current = LiveStack(self.dir, result.stdout)
        return self.current

    def stop(self) -> None:
        if not os.environ.get(REUSE):
            cli(self.dir, "stop")
