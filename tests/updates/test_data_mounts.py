"""general_updates' sync hard-links the packages staging already has into its work area, on the data layout
docker-compose.yaml ships (issue 10 finding 1): the worker's mounts are reproduced with bind mounts in a mount
namespace of their own (`unshare -m`), and the real sync runs there against the fixture build system.

With the three trees on one mount the packages are linked, not downloaded. With compose and staging on two
mounts (the layout shipped before) Linux refuses the link ([Errno 18] Invalid cross-device link) even though
both are on one file system, and the sync stops with an error naming the mount problem instead of downloading
everything again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_compose_file import load_compose, mounts

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow
TREE = ("AppStream", "x86_64", "os")

# Runs inside the new mount namespace: bind-mount, then one sync into staging and one into the work area with
# staging as the previous tree, as general_updates' sync_repos does.
_CHILD = r"""
import json, os, subprocess, sys
from pathlib import Path
spec = json.loads(sys.argv[1])
for source, target in spec["mounts"]:
    subprocess.run(["mount", "--bind", source, target], check=True)
from releng.core.compose.sync_repos import sync_repo
from releng.core.profile import load_profile
from releng.core.repo.trees import CrossMountError
from releng.hooks.buildsystem import BuildSystemHook

profile = load_profile(spec["profile"])
kw = dict(key_dir=Path(spec["key_dir"]), source=BuildSystemHook(spec["url"], backoff=0), hashed=True,
          log=lambda _line: None)
repo, arch, kind = spec["tree"]
staged, work = Path(spec["staging_tree"]), Path(spec["work_tree"])
sync_repo(profile, repo, arch, kind, dest=staged, work_dir=Path(spec["work_dir"]) / "a", **kw)
try:
    again = sync_repo(profile, repo, arch, kind, dest=work, work_dir=Path(spec["work_dir"]) / "b", previous=staged,
                      **kw)
except CrossMountError as exc:
    print("RESULT " + json.dumps({"error": str(exc), "work_packages": len(list(work.rglob("*.rpm")))}))
else:
    same = [os.path.samefile(p, staged / p.relative_to(work)) for p in work.rglob("*.rpm")]
    print("RESULT " + json.dumps({"linked": again.linked, "downloaded": again.downloaded, "same": same}))
"""


def _unshare() -> list[str]:
    if not shutil.which("unshare"):
        pytest.fail("unshare (util-linux) is missing: apt-get install util-linux")
    return ["unshare", "-m", "--propagation", "private"] + ([] if os.geteuid() == 0 else ["--map-root-user"])


def _run_layout(tmp_path: Path, volumes: dict[str, str], roots: dict[str, str], fixture, server, el9) -> dict:
    """Bind-mount each host dir of ``volumes`` (container target -> host name) at tmp/ctr/<target> and sync
    with the trees at tmp/ctr/<root>."""
    ctr = tmp_path / "ctr"
    bind = []
    for target, host in volumes.items():
        (tmp_path / "host" / host).mkdir(parents=True, exist_ok=True)
        (ctr / target.lstrip("/")).mkdir(parents=True, exist_ok=True)
        bind.append((str(tmp_path / "host" / host), str(ctr / target.lstrip("/"))))
    release = "mirror/pub/rocky/9.7"
    spec = {
        "mounts": bind, "profile": str(ROOT / "config/releases/el9.yaml"), "key_dir": str(fixture.key_dir),
        "url": f"{server.url}/v1/projects", "tree": TREE,
        "staging_tree": str(ctr / roots["RELENG_STAGING_ROOT"].lstrip("/") / release / "AppStream/x86_64/os"),
        "work_tree": str(ctr / roots["RELENG_COMPOSE_ROOT"].lstrip("/") / "9/work-updates/AppStream/x86_64/os"),
        "work_dir": str(ctr / roots["RELENG_COMPOSE_ROOT"].lstrip("/") / "9/work-updates/work"),
    }
    res = subprocess.run([*_unshare(), sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert res.returncode == 0 and lines, res.stdout[-2000:] + res.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_updates_hard_link_on_the_shipped_layout(tmp_path, fixture_buildsystem, buildsystem_server, el9):
    worker = load_compose()["services"]["airflow-worker"]
    env = worker["environment"]
    roots = {k: env[k] for k in ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")}
    # the worker's volumes that hold a tree, exactly as the compose file mounts them (one host dir each)
    data = {target: f"volume{i}" for i, (target, _src) in enumerate(sorted(mounts(worker).items()))
            if any(root == target or root.startswith(target.rstrip("/") + "/") for root in roots.values())}
    assert data, f"the worker mounts none of the trees {roots}"
    result = _run_layout(tmp_path, data, roots, fixture_buildsystem, buildsystem_server, el9)
    assert "error" not in result, result.get("error")
    assert result["downloaded"] == 0 and result["linked"] == len(result["same"]) > 0 and all(result["same"])


def test_two_mounts_stop_the_sync_naming_the_mount_problem(tmp_path, fixture_buildsystem, buildsystem_server, el9):
    """The layout shipped before: compose and staging as two volumes of one disk."""
    volumes = {"/mnt/compose": "compose", "/mnt/repos-staging": "staging"}
    roots = {"RELENG_COMPOSE_ROOT": "/mnt/compose", "RELENG_STAGING_ROOT": "/mnt/repos-staging"}
    result = _run_layout(tmp_path, volumes, roots, fixture_buildsystem, buildsystem_server, el9)
    assert "different mounts" in result["error"] and "Invalid cross-device link" in result["error"]
    assert "RELENG_STAGING_ROOT" in result["error"] and "one mount" in result["error"]
    assert result["work_packages"] == 0, "nothing may be downloaded instead of linked"
