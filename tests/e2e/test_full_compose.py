"""full_compose end to end on the local stack: real dnf against the fixture build system, SeaweedFS, the
lorax stand-in, xorriso, implantisomd5, productmd, rsync; Airflow's dag.test() runs every task here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import productmd.composeinfo
import productmd.images
import productmd.rpms
import productmd.treeinfo
import pytest
import yaml

from releng.core.compose.finalize_compose import image_files, publish_torrents
from releng.core.dnf import DnfRepo, DnfWorkspace, dnf_config, repoclosure_argv
from releng.core.layout import ComposeLayout
from releng.core.repo.verify import verify_repo
from releng.core.torrents import TorrentSettings, torrent_path, verify_data
from tests import leakcheck
from tests.dagrun import run_dag
from tests.e2e.digest import RECORDED, digest_lines
from tests.notifytargets import webhook  # noqa: F401 (fixture)
from tests.promotion.conftest import new_release_key
from tests.realtools import check_signed_checksum, section, transmission_show, transmission_verifies

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow]
ARCHES = ["x86_64", "aarch64"]


def _run(conf: dict):
    return run_dag("full_compose", conf)


def _compose_top(site) -> Path:
    (top,) = [p for p in (Path(site["RELENG_COMPOSE_ROOT"]) / "9").iterdir() if p.name.startswith("Rocky-9.7-")]
    return top


def _run_cmd(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def test_full_compose_two_arches(airflow_db, site, el9, fixture_buildsystem, monkeypatch, tmp_path):
    # the release key clear-signs each CHECKSUM; torrents get web seeds under the download URL
    home = tmp_path / "release-key"
    key = new_release_key(home)
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", key)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    monkeypatch.setenv("RELENG_DOWNLOAD_URL", "https://dl.releng.invalid/")
    monkeypatch.setenv("RELENG_TORRENT_TRACKERS", "udp://tracker.releng.invalid:1337/announce")
    try:
        dr, states = _run({"release": "el9", "arches": ARCHES})
        # issue 9 finding 2: nothing the compose started still runs in its trees or with the release key's home
        # (dnf's key import starts a gpg-agent per synced repo under <compose>/work/dnf; signing one in the home)
        left = leakcheck.using([*(site[r] for r in ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT",
                                                   "RELENG_PRODUCTION_ROOT")), home])
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
    assert dr.state == "success", json.dumps(states, indent=1)
    assert left == [], "\n".join(f"{p.describe()}: {why}" for p, why in left)
    top = _compose_top(site)
    compose = top / "compose"
    assert (top / "STATUS").read_text().strip() == "FINISHED"
    assert (top.parent / "latest-Rocky-9").resolve() == top
    RECORDED["el9 x86_64,aarch64"] = digest_lines(top)  # the Celery stack's test compares its compose with it

    # every package of every synced tree is present and matches its repodata, and is the build system's
    for repo in el9.repos:
        for arch in el9.repo_arches(repo.id, ARCHES):
            trees = [("os", compose / repo.dir / arch / "os"), ("debug", compose / repo.dir / arch / "debug" / "tree")]
            if arch in ARCHES:  # multilib i686 gets os and debug trees only
                trees.append(("kickstart", compose / repo.dir / arch / "kickstart"))
            else:
                assert not (compose / repo.dir / arch / "kickstart").exists()
            for kind, tree in trees:
                report = verify_repo(tree)
                assert report.ok and report.packages, (tree, report.problems(5))
                if kind == "os":
                    upstream = fixture_buildsystem.repo_dir(el9.project_id, repo.id, arch, hashed=True)
                    assert sorted(p.name for p in tree.rglob("*.rpm")) == \
                        sorted(p.name for p in upstream.rglob("*.rpm"))
        assert verify_repo(compose / repo.dir / "source" / "tree").ok
    # kickstart trees are hard links of the os trees, not second downloads
    os_rpm = next((compose / "BaseOS/x86_64/os/Packages").rglob("libfoo-*.rpm"))
    ks_rpm = compose / "BaseOS/x86_64/kickstart" / os_rpm.relative_to(compose / "BaseOS/x86_64/os")
    assert os.path.samefile(os_rpm, ks_rpm)

    # repoclosure ran for every map entry and arch
    assert states["repoclosure"] == ["success"] * (len(el9.repoclosure) * len(ARCHES))

    for arch in ARCHES:
        isos = compose / "isos" / arch
        dvd = isos / f"Rocky-9.7-{arch}-dvd.iso"
        assert dvd.is_file() and (isos / f"Rocky-9.7-{arch}-boot.iso").is_file()
        report = _run_cmd(["xorriso", "-indev", str(dvd), "-report_el_torito", "plain"]).stdout
        boot_lines = [line for line in report.splitlines() if line.startswith("El Torito boot img :")]
        assert any(" UEFI " in line for line in boot_lines)
        assert any(" BIOS " in line for line in boot_lines) == (arch == "x86_64")
        assert _run_cmd(["checkisomd5", str(dvd)]).returncode == 0
        check_signed_checksum(isos, home, key)  # gpg --verify, and sha256sum -c lists every file OK
        # the DVD's BaseOS+AppStream is a repo dnf reads and closes
        out = top / "extract" / arch
        out.mkdir(parents=True)
        for repo in ("BaseOS", "AppStream"):
            extract = _run_cmd(["xorriso", "-osirrox", "on", "-indev", str(dvd), "-extract", f"/{repo}",
                                str(out / repo)])
            assert extract.returncode == 0, extract.stderr
        ws = DnfWorkspace(top / "extract" / f"dnf-{arch}")
        ws.root.mkdir()
        ws.config.write_text(dnf_config(ws, [DnfRepo(r, f"file://{out / r}") for r in ("BaseOS", "AppStream")], [],
                                        gpgcheck=False))
        closure = _run_cmd(repoclosure_argv(ws, "AppStream", ["BaseOS", "AppStream"], arch, major=9, disttag="el9"))
        assert closure.returncode == 0, closure.stdout + closure.stderr
        listing = _run_cmd(["xorriso", "-indev", str(dvd), "-find", "/", "-maxdepth", "1", "-type", "f"]).stdout
        assert "'/EULA'" in listing and "'/RPM-GPG-KEY-Rocky-9'" in listing  # the profile's extra files
        images = compose / "images" / arch
        check_signed_checksum(images, home, key)
        assert (images / f"Rocky-9-GenericCloud.latest.{arch}.qcow2").is_symlink()
        # a torrent beside every ISO and image (not the generic/latest links), web seed at its production URL
        for directory, sub in ((isos, "isos"), (images, "images")):
            files = image_files(directory)
            assert files and sorted(p.name for p in directory.glob("*.torrent")) == \
                sorted(f"{p.name}.torrent" for p in files)
            for image in files:
                listing = transmission_show(torrent_path(image))
                assert f"Name: {image.name}" in listing
                assert section(listing, "WEBSEEDS") == \
                    [f"https://dl.releng.invalid/pub/rocky/9.7/{sub}/{arch}/{image.name}"]
                assert [t for t in section(listing, "TRACKERS") if "://" in t] == \
                    ["udp://tracker.releng.invalid:1337/announce"]
                assert verify_data(torrent_path(image), image)
    assert transmission_verifies(torrent_path(compose / "isos/x86_64/Rocky-9.7-x86_64-dvd.iso"),
                                 compose / "isos/x86_64", tmp_path / "client")
    # finalizing again keeps every torrent: nothing is hashed or written twice
    torrent_bytes = {p: p.read_bytes() for p in compose.glob("*/*/*.torrent")}
    layout = ComposeLayout(el9, top.parents[1], top.name)
    settings = TorrentSettings("https://dl.releng.invalid", ("udp://tracker.releng.invalid:1337/announce",))
    for arch in ARCHES:
        assert publish_torrents(layout, compose / "isos" / arch, arch, "iso", settings) == 0
        assert publish_torrents(layout, compose / "images" / arch, arch, "image", settings) == 0
    assert {p: p.read_bytes() for p in compose.glob("*/*/*.torrent")} == torrent_bytes

    # productmd loads all the metadata, and every .treeinfo
    metadata = compose / "metadata"
    ci = productmd.composeinfo.ComposeInfo()
    ci.load(str(metadata / "composeinfo.json"))
    assert ci.compose.id == top.name == (metadata / "COMPOSE_ID").read_text()
    assert "fixture" in (metadata / "EULA").read_text()
    key = "RPM-GPG-KEY-Rocky-9"
    assert (metadata / key).read_text() == (fixture_buildsystem.key_dir / key).read_text()
    images = productmd.images.Images()
    images.load(str(metadata / "images.json"))
    dvds = [i for v in images.images.values() for a in v.values() for i in a if i.type == "dvd"]
    assert sorted(i.arch for i in dvds) == sorted(ARCHES)
    assert all(i.implant_md5 and i.volume_id == f"Rocky-9-7-{i.arch}-dvd" for i in dvds)
    rpms = productmd.rpms.Rpms()
    rpms.load(str(metadata / "rpms.json"))
    listed = {n for srpms in rpms.rpms["AppStream"]["aarch64"].values() for n in srpms}
    assert "foo-app-0:2.1-3.el9.aarch64" in listed
    treeinfos = sorted(compose.rglob(".treeinfo"))
    assert len(treeinfos) >= len(el9.repos) * len(ARCHES) * 3
    for path in treeinfos:
        productmd.treeinfo.TreeInfo().load(str(path))
    baseos = productmd.treeinfo.TreeInfo()
    baseos.load(str(compose / "BaseOS/x86_64/os/.treeinfo"))
    assert baseos.stage2.mainimage == "images/install.img" and "AppStream" in baseos.variants.variants

    # staging holds the compose, and its links point at it
    staging = Path(site["RELENG_STAGING_ROOT"]) / "mirror/pub/rocky"
    staged = staging / "9.7"
    assert (staged / "metadata" / "COMPOSE_ID").read_text() == top.name
    # the same files, torrents and signed CHECKSUMs included; repomd.xml is re-signed there with the release key
    diff = _run_cmd(["diff", "-r", "--no-dereference", "-x", "repomd.xml.asc", str(compose), str(staged)])
    assert diff.returncode == 0, diff.stdout[-2000:]
    assert (staged / "isos/x86_64/Rocky-9.7-x86_64-dvd.iso.torrent").is_file()
    assert os.readlink(staging / "latest-9") == "9.7"


def test_finalize_runs_only_after_every_work_task_ended(airflow_db, site, el9):
    """No DVD and no cloud images: their mapped tasks are skipped at once, the syncs and closure are not."""
    dr, states = _run({"release": "el9", "arches": ["x86_64"], "full_run": False, "extra_isos": []})
    assert dr.state == "success", json.dumps(states, indent=1)
    tis = dr.get_task_instances()
    (finalize,) = [ti for ti in tis if ti.task_id == "finalize_compose"]
    (staging,) = [ti for ti in tis if ti.task_id == "sync_to_staging"]
    after = ("finalize_compose", "wait_for_staging", "sync_to_staging", "release_staging")  # downstream of finalize
    work = [ti for ti in tis if ti.task_id not in after]
    assert states["sync_repos"] == ["success"] * 13 and states["repoclosure"] == ["success"] * len(el9.repoclosure)
    assert states["build_dvd_iso"] == states["pull_cloud_images"] == ["skipped"]
    ran = [ti for ti in work if ti.state != "skipped"]  # skipped instances never ran and have no dates
    assert {ti.task_id for ti in ran} >= {"prepare_compose", "sync_repos", "repoclosure", "deploy_extra_files"}
    for ti in ran:
        assert ti.state == "success" and ti.end_date <= finalize.start_date, (ti.task_id, ti.map_index)
    assert finalize.end_date <= staging.start_date
    top = _compose_top(site)
    assert (top / "STATUS").read_text().strip() == "FINISHED"
    rpms = productmd.rpms.Rpms()
    rpms.load(str(top / "compose" / "metadata" / "rpms.json"))
    assert set(rpms.rpms) == {repo.dir for repo in el9.repos}  # every synced repo, not the first few


def test_unclosed_repo_dooms_the_compose_before_isos_and_staging(airflow_db, site, monkeypatch, tmp_path, capfd,
                                                                 webhook):  # noqa: F811
    monkeypatch.setenv("RELENG_NOTIFY_WEBHOOK", webhook.url)
    config = tmp_path / "releases"
    shutil.copytree(ROOT / "config" / "releases", config)
    profile = yaml.safe_load((config / "el9.yaml").read_text())
    profile["repoclosure"]["AppStream"] = []  # AppStream needs BaseOS's libfoo and /bin/sh
    (config / "el9.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    monkeypatch.setenv("RELENG_CONFIG_DIR", str(config))
    compose_root = Path(site["RELENG_COMPOSE_ROOT"]) / "9"
    compose_root.mkdir(parents=True)
    previous = compose_root / "Rocky-9.7-20250101.000000"
    previous.mkdir()
    (compose_root / "latest-Rocky-9").symlink_to(previous.name)

    dr, states = _run({"release": "el9", "arches": ["aarch64"], "full_run": False})
    assert dr.state == "failed"
    log = capfd.readouterr()
    assert "libfoo >= 1.0" in log.out + log.err and "/bin/sh" in log.out + log.err  # the unresolved deps are listed
    assert "failed" in states["repoclosure"]
    assert states["build_dvd_iso"] == ["upstream_failed"] and states["pull_unpack_tree"] == ["upstream_failed"]
    assert states["finalize_compose"] == ["failed"] and states["sync_to_staging"] == ["upstream_failed"]
    top = next(p for p in compose_root.iterdir() if p.name.startswith("Rocky-9.7-") and p != previous)
    assert (top / "STATUS").read_text().strip() == "DOOMED"
    assert os.readlink(compose_root / "latest-Rocky-9") == previous.name
    (told,) = webhook.received  # release engineering heard of it, once, with what failed
    assert told[1]["event"] == "compose_doomed" and told[1]["data"]["top"] == str(top)
    assert "repoclosure" in told[1]["text"] and told[1]["data"]["compose_id"] == top.name
    assert not list((top / "compose").glob("isos/*/*.iso"))
    assert not any(Path(site["RELENG_STAGING_ROOT"]).iterdir())


def test_second_compose_links_unchanged_packages(airflow_db, site, tmp_path, monkeypatch):
    """Two composes of aarch64 alone: the second hard-links every package of the first. Then an update run of
    the release (issue 9 finding 5) touches only the trees the compose staged."""
    conf = {"release": "el9", "arches": ["aarch64"], "full_run": False, "repoclosure": False, "extra_isos": []}
    first_run, states = _run(conf)
    assert first_run.state == "success", json.dumps(states, indent=1)
    root = Path(site["RELENG_COMPOSE_ROOT"]) / "9"
    first = (root / "latest-Rocky-9").resolve()
    second_run, states = _run(conf)
    assert second_run.state == "success", json.dumps(states, indent=1)
    second = (root / "latest-Rocky-9").resolve()
    assert second != first
    synced = [ti.xcom_pull(task_ids="sync_repos", map_indexes=ti.map_index)
              for ti in second_run.get_task_instances() if ti.task_id == "sync_repos"]
    assert synced and sum(r["downloaded"] for r in synced) == 0
    assert sum(r["linked"] for r in synced) == sum(r["packages"] for r in synced) > 0
    rpms = sorted((first / "compose").rglob("*.rpm"))
    assert rpms
    for rpm in rpms:
        assert os.path.samefile(rpm, second / rpm.relative_to(first))

    # general_updates after the aarch64-only compose, with nothing new in the build system: no tree of an arch
    # that was never composed appears, no metadata is rewritten (compression and content stay), and the
    # signatures are made again with the site's key (the compose kept the build system's).
    staging = Path(site["RELENG_STAGING_ROOT"]) / "mirror" / "pub" / "rocky" / "9.7"
    repodirs = sorted(p.parent.relative_to(staging) for p in staging.rglob("repodata/repomd.xml"))
    assert repodirs and {p.parts[1] for p in repodirs} <= {"aarch64", "source"}
    metadata = {p.relative_to(staging): p.read_bytes() for p in staging.rglob("repodata/*")
                if p.name != "repomd.xml.asc"}
    home = tmp_path / "release-key"
    key = new_release_key(home)
    monkeypatch.setenv("RELENG_REPO_SIGNING_KEY", key)
    monkeypatch.setenv("RELENG_GNUPGHOME", str(home))
    try:
        updates, states = run_dag("general_updates", {"release": "el9"})
        assert updates.state == "success", json.dumps(states, indent=1)
        assert sorted(p.parent.relative_to(staging) for p in staging.rglob("repodata/repomd.xml")) == repodirs
        assert {p.relative_to(staging): p.read_bytes() for p in staging.rglob("repodata/*")
                if p.name != "repomd.xml.asc"} == metadata
        results = [ti.xcom_pull(task_ids="update_repodata", map_indexes=ti.map_index)
                   for ti in updates.get_task_instances() if ti.task_id == "update_repodata"]
        assert len(results) == len(repodirs) and all(r["added"] == 0 and r["signed"] for r in results)
        for repodir in repodirs:
            repomd = staging / repodir / "repomd.xml"
            check = _run_cmd(["gpg", "--homedir", str(home), "--batch", "--verify", f"{repomd}.asc", str(repomd)])
            assert check.returncode == 0, (repodir, check.stderr)
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
