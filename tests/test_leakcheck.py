"""The session's leak check (tests/leakcheck.py, wired in tests/conftest.py), run on a small suite of its own:
a run that leaves a gpg-agent, a temporary directory or a file at a fixed /tmp path fails and names each with
the test after which it appeared; a clean run passes; the leftover processes are stopped either way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests import leakcheck

ROOT = Path(__file__).resolve().parents[1]

LEAKY = '''
import os
import re
import subprocess
import tempfile
from pathlib import Path


def test_leaves_an_agent(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                    "Leak <leak@releng.invalid>", "ed25519", "sign", "never"], check=True, capture_output=True)


def test_leaves_a_temporary_directory():
    tempfile.mkdtemp(prefix="forgotten-")


def test_writes_to_a_fixed_tmp_path():
    (Path(os.environ["PYTEST_DEBUG_TEMPROOT"]) / f"tool.log.{os.getpid()}").write_text("")


def test_clean(tmp_path):
    (tmp_path / "fine").write_text("tmp_path is pytest's")
'''


def _suite(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run ``body`` as a test module under this checkout's conftest, in a pytest process of its own."""
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "conftest.py").write_text("from tests.conftest import *  # noqa: F403 (the hooks and the check)\n"
                                       "from tests.conftest import (pytest_runtest_protocol, pytest_sessionfinish,\n"
                                       "                            pytest_sessionstart, pytest_terminal_summary)\n")
    (suite / "test_suite.py").write_text(textwrap.dedent(body))
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}"}
    env.pop("PYTEST_DEBUG_TEMPROOT", None)  # its temp root is this session's TMPDIR, cleaned below
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(suite),
                           "--basetemp", str(tmp_path / "basetemp"), str(suite)],
                          capture_output=True, text=True, cwd=suite, env=env, timeout=300)


def test_a_run_that_leaves_things_behind_fails_and_names_them(tmp_path):
    before = set(Path(tempfile.gettempdir()).iterdir())  # the inner run's /tmp is this run's TMPDIR
    try:
        run = _suite(tmp_path, LEAKY)
    finally:
        for path in set(Path(tempfile.gettempdir()).iterdir()) - before:
            if path.name.startswith("tool.log."):
                path.unlink()
    out = run.stdout
    assert run.returncode == 1 and "4 passed" in out, out + run.stderr
    assert "3 leftover(s) of this test session" in out, out
    agent = out[out.index("process pid"):]
    assert f"gpg-agent --homedir {tmp_path}/basetemp/test_leaves_an_agent0/gnupg" in agent
    assert "first seen after: test_suite.py::test_leaves_an_agent" in agent
    assert "releng.core.gpg.agent_session(home)" in agent  # what to do about it
    assert "forgotten-" in out and "in the session's TMPDIR" in out
    assert "first seen after: test_suite.py::test_leaves_a_temporary_directory" in out
    assert re.search(r"file \S+/tool\.log\.\d+ in /tmp, this session's because its name holds the pid of a "
                     r"process of this session", out), out
    assert leakcheck.using([tmp_path]) == []  # the check stopped the agent it reported


def test_a_clean_run_passes(tmp_path):
    run = _suite(tmp_path, LEAKY.split("def test_leaves_an_agent")[0] + "def test_clean(tmp_path):\n"
                 "    (tmp_path / 'fine').write_text('tmp_path is pytest\\'s')\n")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "leftover" not in run.stdout


def test_another_sessions_processes_are_not_counted(tmp_path):
    """A process carrying another session's id, even with its home in the checkout, is that session's."""
    home = ROOT / ".stack" / "leakcheck-other-session"
    session = leakcheck.Session.__new__(leakcheck.Session)
    session.id, session.checkout, session.roots, session.start_pids = "mine", str(ROOT), [str(tmp_path)], set()
    other = leakcheck.Proc(4242, 1, 1, "S", ("gpg-agent", "--homedir", str(home), "--daemon"), "/",
                           {leakcheck.SESSION_ENV: "theirs"})
    table = {other.pid: other}
    assert session.owns(other, table) is None
    unmarked = leakcheck.Proc(4243, 1, 1, "S", other.argv, "/", {})
    assert session.owns(unmarked, {unmarked.pid: unmarked}) == (f"its GnuPG home {home} is under {ROOT}", False)
    marked = leakcheck.Proc(4244, 1, 1, "S", other.argv, "/", {leakcheck.SESSION_ENV: "mine"})
    assert session.owns(marked, {marked.pid: marked})[0] == f"it carries this session's {leakcheck.SESSION_ENV}"


def test_a_basetemp_in_tmp_is_the_sessions_own(tmp_path):
    """``pytest --basetemp=/tmp/NAME``: that directory is the session's temp root (a root, like its TMPDIR), not a
    leftover in /tmp, even after a process of the session (the shared stack, kept there) had it open."""
    session = leakcheck.Session.__new__(leakcheck.Session)
    session.private_tmp, session.real_tmp, session.start_tmp = tmp_path / "private", tmp_path, {"private"}
    session.private_tmp.mkdir()
    session.roots = [str(session.private_tmp)]
    basetemp = tmp_path / "browser-pt"
    basetemp.mkdir()
    (tmp_path / "tool.log").write_text("")
    session.add_root(basetemp)
    assert sorted(session.new_tmp_entries()) == [tmp_path / "tool.log"]
