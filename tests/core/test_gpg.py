"""GnuPG daemons end with the step that started them (issue 9 finding 2), with real gpg: the signing functions,
the signature checker and agent sessions shared by concurrent steps; an agent that ran before is left alone."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from releng.core import gpg
from releng.core.repo.signatures import SignatureChecker
from releng.core.run import ToolError
from releng.core.staging.signing import (
    SigningError,
    key_fingerprints,
    require_key,
    sign_repomd,
    signed_by,
    signing_key_problem,
)
from tests import leakcheck
from tests.promotion.conftest import new_release_key


@pytest.fixture
def release_key(tmp_path) -> tuple[Path, str]:
    home = tmp_path / "gnupg"
    return home, new_release_key(home)


def _agents(home: Path) -> list[int]:
    return [p.pid for p, _why in leakcheck.using([home]) if p.name == "gpg-agent"]


def test_new_release_key_leaves_no_agent(release_key):
    home, _key = release_key
    assert _agents(home) == [] and not gpg.agent_running(home)


def test_signing_and_listing_stop_the_agent_they_start(release_key, tmp_path):
    home, key = release_key
    repomd = tmp_path / "repodata" / "repomd.xml"
    repomd.parent.mkdir()
    repomd.write_text("<repomd/>\n")
    assert signing_key_problem(key, home) is None  # gpg --list-secret-keys starts an agent
    assert _agents(home) == []
    fingerprints = sign_repomd(repomd, key, home)
    assert signed_by(repomd, fingerprints, home) and _agents(home) == []


def test_the_signature_checker_runs_gpg_without_an_agent(release_key, tmp_path):
    """It imports the public key into a private keyring it deletes afterwards: an agent there would be
    orphaned for good."""
    home, key = release_key
    checker = SignatureChecker(key, home)
    try:
        assert checker.fingerprints and _agents(checker.home) == []
    finally:
        checker.close()


def test_the_last_of_concurrent_sessions_stops_the_agent(release_key):
    """Two steps sign with one key at once (mapped tasks): the first to end must not stop the agent under the
    other's signature; the last one stops it."""
    home, key = release_key
    inside, first_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def other_step() -> None:
        try:
            with gpg.agent_session(home):
                assert key_fingerprints(key, home)
                inside.set()
                first_done.wait(30)
                assert key_fingerprints(key, home)  # the agent the first step used is still there
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    thread = threading.Thread(target=other_step)
    with gpg.agent_session(home):
        assert key_fingerprints(key, home)
        pid = gpg.agent_pid(home)
        thread.start()
        assert inside.wait(30)
    assert gpg.agent_pid(home) == pid  # the other step's session is still open
    first_done.set()
    thread.join(30)
    assert not errors, errors
    assert not gpg.agent_running(home) and _agents(home) == []


def test_an_agent_that_ran_before_is_left_running(release_key):
    home, key = release_key
    subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True, capture_output=True)
    pid = gpg.agent_pid(home)
    try:
        with gpg.agent_session(home):
            assert key_fingerprints(key, home)
        assert gpg.agent_pid(home) == pid  # a site's agent (a passphrase, a card) is not ours to stop
    finally:
        assert gpg.stop_agents(home) == pid
    assert _agents(home) == []


def test_stop_agents_waits_until_the_agent_has_exited(release_key):
    home, key = release_key
    key_fingerprints(key, home)  # a session of its own: nothing left
    subprocess.run(["gpg-connect-agent", "--homedir", str(home), "/bye"], check=True, capture_output=True)
    pid = gpg.agent_pid(home)
    assert pid is not None and gpg.stop_agents(home) == pid
    assert leakcheck.read_proc(pid) is None or leakcheck.read_proc(pid).state == "Z"
    assert gpg.stop_agents(home) is None  # none running: nothing to do


def test_gpg_that_cannot_answer_is_not_reported_as_a_missing_key(release_key, monkeypatch):
    """A Celery update run failed one `update_repodata` of ~60 with the message "None": gpg's agent did not come
    up in time under load, `--list-secret-keys` listed nothing, require_key asked again to word the error, got the
    key the second time, and raised SigningError(None), which fails without retries. A gpg that cannot answer is
    a ToolError (retried) that says so; the key is asked for once."""
    home, key = release_key
    # gpg's agent cannot start: gpg's own autostart runs a program that fails, and the session does not start one
    # first (which it does to avoid gpg's short wait, tested below).
    monkeypatch.setattr(gpg, "start_agent", lambda home: None)
    (home / "gpg.conf").write_text("agent-program /bin/false\n")
    with pytest.raises(ToolError, match="gpg could not list the secret keys") as caught:
        require_key(key, home)
    assert "not a missing key" in str(caught.value) and "None" != str(caught.value)
    with pytest.raises(ToolError):
        signing_key_problem(key, home)
    (home / "gpg.conf").unlink()
    assert require_key(key, home) and _agents(home) == []
    with pytest.raises(SigningError, match="has no secret key"):
        require_key("0000DEADBEEF0000", home)
    assert _agents(home) == []


def test_the_first_session_starts_the_agent_once_for_all(release_key, tmp_path):
    """gpg left to itself starts an agent per command that finds none and gives up after a few seconds of
    waiting; the first session starts it (`gpg-agent --daemon` returns when it listens) and every gpg inside uses
    that one."""
    home, key = release_key
    with gpg.agent_session(home):
        pid = gpg.agent_pid(home)
        assert pid is not None  # before any gpg command ran
        repomd = tmp_path / "repomd.xml"
        repomd.write_text("<repomd/>\n")
        for _ in range(3):
            sign_repomd(repomd, key, home)
        assert gpg.agent_pid(home) == pid
    assert not gpg.agent_running(home) and _agents(home) == []
