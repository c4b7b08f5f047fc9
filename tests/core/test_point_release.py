"""Point release pieces on small real trees: the hard-linked vault (createrepo_c metadata, gpg signatures), crashes
at each step followed by a rerun, refusals that leave everything as it was, link switching, the plan, and the
per-category file lists."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from releng.core import filelist
from releng.core.point_release import plan as plan_mod
from releng.core.point_release import switch_links, vault_release
from releng.core.promotion import update_file_lists
from releng.core.promotion.base import PromotionError
from releng.core.promotion.target import PromotionTarget, StateDir
from releng.core.staging.signing import key_fingerprints, signed_by
from tests.promotion.conftest import new_release_key, tree_digest


def _release(path: Path) -> Path:
    """A point release tree: two repositories with createrepo_c metadata, kickstart packages hard-linked to os,
    an ISO with its latest link."""
    for repo in ("BaseOS", "AppStream"):
        os_tree = path / repo / "x86_64" / "os"
        (os_tree / "Packages" / "a").mkdir(parents=True)
        (os_tree / "Packages" / "a" / f"{repo}-payload.bin").write_bytes(repo.encode() * 5000)
        subprocess.run(["createrepo_c", "--quiet", "--no-database", str(os_tree)], check=True)
    ks = path / "BaseOS" / "x86_64" / "kickstart" / "Packages" / "a"
    ks.mkdir(parents=True)
    os.link(path / "BaseOS" / "x86_64" / "os" / "Packages" / "a" / "BaseOS-payload.bin", ks / "BaseOS-payload.bin")
    isos = path / "isos" / "x86_64"
    isos.mkdir(parents=True)
    (isos / "Rocky-9.6-x86_64-boot.iso").write_bytes(b"i" * 65536)
    (isos / "Rocky-9-latest-x86_64-boot.iso").symlink_to("Rocky-9.6-x86_64-boot.iso")
    return path


@pytest.fixture
def prod(tmp_path) -> dict[str, Path]:
    root = tmp_path / "production"
    release = _release(root / "mirror" / "pub" / "rocky" / "9.6")
    state = root / ".releng"
    state.mkdir(parents=True)
    return {"root": root, "release": release, "vault": root / "mirror" / "vault" / "rocky" / "9.6",
            "work": state / "vault-work", "retired": state / "retired"}


def _vault(prod, **kwargs) -> dict:
    return vault_release.vault_release(prod["release"], prod["vault"], work_root=prod["work"],
                                       retired_root=prod["retired"], **kwargs)


def _payload_inodes(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.stat().st_ino for p in tree.rglob("*")
            if p.is_file() and not p.is_symlink() and "repodata" not in p.parts}


def test_vault_is_hard_links_with_its_own_checked_repodata(prod):
    inodes = _payload_inodes(prod["release"])
    digest = tree_digest(prod["release"])
    result = _vault(prod)
    assert result["state"] == "vaulted" and result["retired"] and not prod["release"].exists()
    assert _payload_inodes(prod["vault"]) == inodes
    assert tree_digest(prod["vault"]) != digest  # the same content, but repodata are new inodes, so:
    repomd = prod["vault"] / "BaseOS" / "x86_64" / "os" / "repodata" / "repomd.xml"
    assert repomd.stat().st_nlink == 1 and result["repodata_files"] > 0 and result["metadata"]["repos"] == 2
    assert os.readlink(prod["vault"] / "isos" / "x86_64" / "Rocky-9-latest-x86_64-boot.iso") == \
        "Rocky-9.6-x86_64-boot.iso"
    ks = prod["vault"] / "BaseOS" / "x86_64" / "kickstart" / "Packages" / "a" / "BaseOS-payload.bin"
    assert ks.stat().st_nlink == 2  # os and kickstart still share the inode; nothing else holds it now
    assert not list(prod["work"].iterdir()) and not list(prod["retired"].iterdir())
    again = _vault(prod)
    assert again["state"] == "already vaulted"


@pytest.mark.parametrize("crash", ["mid-build", "before-rename", "mid-retire"])
def test_a_crash_at_any_step_and_a_rerun_converge(prod, monkeypatch, crash):
    inodes = _payload_inodes(prod["release"])
    calls = {"n": 0}
    if crash == "mid-build":
        real_link = os.link

        def link(src, dst, *a, **k):
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError("simulated crash")
            return real_link(src, dst, *a, **k)
        monkeypatch.setattr(vault_release.os, "link", link)
    elif crash == "before-rename":
        monkeypatch.setattr(vault_release.os, "rename", lambda *a: (_ for _ in ()).throw(OSError("crash")))
    else:
        real_rmtree = shutil.rmtree

        def rmtree(path, *a, **k):
            if Path(path).parent == prod["retired"]:
                real_rmtree(Path(path) / "BaseOS")  # half deleted
                raise OSError("simulated crash")
            return real_rmtree(path, *a, **k)
        monkeypatch.setattr(vault_release.shutil, "rmtree", rmtree)
    with pytest.raises(OSError):
        _vault(prod)
    if crash == "mid-retire":
        assert not prod["release"].exists() and prod["vault"].is_dir()  # out of mirror/pub at once, not half
    else:
        assert not prod["vault"].exists() and prod["release"].is_dir()  # no half vault is visible
    monkeypatch.undo()
    result = _vault(prod)
    assert result["state"] == ("already vaulted" if crash == "mid-retire" else "vaulted")
    assert _payload_inodes(prod["vault"]) == inodes and not prod["release"].exists()
    assert not list(prod["work"].iterdir()) and not list(prod["retired"].iterdir())
    assert not [p for p in prod["vault"].rglob("*") if ".vault-tmp" in p.name]


def test_an_existing_vault_that_differs_is_refused_and_left_alone(prod):
    prod["vault"].mkdir(parents=True)
    (prod["vault"] / "README").write_text("someone's notes\n")
    before = tree_digest(prod["root"], strict=True)
    with pytest.raises(vault_release.VaultError, match=r"already exists and is not a hard-linked vault.*move it away"):
        _vault(prod)
    assert tree_digest(prod["root"], strict=True) == before


def test_different_file_systems_are_refused_before_anything_is_written(prod):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(prod["root"]).st_dev:
        pytest.skip("no second file system (/dev/shm) on this machine")
    elsewhere = Path(shm / f"releng-vault-{os.getpid()}")
    elsewhere.mkdir()
    try:
        (prod["root"] / "mirror" / "vault").symlink_to(elsewhere)
        before = tree_digest(prod["root"], strict=True)
        with pytest.raises(vault_release.VaultError, match=r"cannot cross file systems.*nothing was changed"):
            _vault(prod)
        assert tree_digest(prod["root"], strict=True) == before and not any(elsewhere.iterdir())
    finally:
        shutil.rmtree(elsewhere)


def test_vault_repodata_is_signed_with_the_release_key_without_touching_the_release(prod, tmp_path):
    home = tmp_path / "gnupg"
    fpr = new_release_key(home)
    release_repomd = prod["release"] / "BaseOS" / "x86_64" / "os" / "repodata" / "repomd.xml"
    kept = {"ino": release_repomd.stat().st_ino, "bytes": release_repomd.read_bytes()}
    inodes = _payload_inodes(prod["release"])
    result = _vault(prod, signing_key=fpr, gnupghome=home)
    assert result["metadata"]["signed"] == 2 and result["metadata"]["signatures"] == 2
    vault_repomd = prod["vault"] / "BaseOS" / "x86_64" / "os" / "repodata" / "repomd.xml"
    assert signed_by(vault_repomd, key_fingerprints(fpr, home), home)
    assert vault_repomd.read_bytes() == kept["bytes"] and vault_repomd.stat().st_ino != kept["ino"]
    assert _payload_inodes(prod["vault"]) == inodes


def test_links_are_swapped_never_nested_and_real_directories_refused(tmp_path):
    category = tmp_path / "rocky"
    for d in ("9.7-RC1", "9.7-RC2"):
        (category / d).mkdir(parents=True)
    (category / "9.7").symlink_to("9.7-RC1")
    changed = switch_links.point_links(category, {"9.7": "9.7-RC2", "latest-9": "9.7-RC2"})
    assert changed == {"9.7": ["9.7-RC1", "9.7-RC2"], "latest-9": [None, "9.7-RC2"]}
    assert os.readlink(category / "9.7") == "9.7-RC2" and not (category / "9.7-RC1" / "9.7-RC2").exists()
    assert switch_links.point_links(category, {"9.7": "9.7-RC2", "latest-9": "9.7-RC2"}) == {}  # a rerun
    assert sorted(p.name for p in category.iterdir()) == ["9.7", "9.7-RC1", "9.7-RC2", "latest-9"]
    assert not list((category / "9.7-RC2").iterdir())  # the old script's rerun made 9.7-RC2/9.7
    (category / "9").mkdir()
    before = tree_digest(category, strict=True)
    with pytest.raises(switch_links.LinkError, match="is a real directory, not a link"):
        switch_links.point_links(category, {"latest-9": "9.7-RC1", "9": "9.7-RC1"})
    with pytest.raises(switch_links.LinkError, match=r"9.8 does not exist"):
        switch_links.point_links(category, {"latest-9": "9.8"})
    assert tree_digest(category, strict=True) == before


def test_plan_finds_the_previous_release_and_refuses_what_cannot_be_done(prod, el9, tmp_path):
    from releng.core.layout import ReleaseTrees

    staging = tmp_path / "staging"
    (staging / "mirror" / "pub" / "rocky" / "9.7-RC1").mkdir(parents=True)
    (prod["root"] / "mirror" / "pub" / "rocky" / "9.5").mkdir()
    trees = ReleaseTrees(el9, staging, prod["root"])
    category = prod["root"] / "mirror" / "pub" / "rocky"
    target = PromotionTarget("el9", True, "9.7", staging / "mirror/pub/rocky/9.7-RC1", category / "9.7", category,
                             "rocky", StateDir(prod["root"] / ".releng"))
    assert plan_mod.previous_release(trees, None) == "9.6"  # the newest earlier 9.N
    with pytest.raises(PromotionError, match="not an earlier point release of 9"):
        plan_mod.previous_release(trees, "9.8")
    with pytest.raises(PromotionError, match=r"neither .*9.4 nor"):
        plan_mod.previous_release(trees, "9.4")
    made = plan_mod.point_release_plan(target, trees, None)
    assert made["vault"]["state"] == "to vault" and made["vault"]["linked_files"] == 4
    assert made["production_link_changes"] == {"9": [None, "9.7"], "latest-9": [None, "9.7"]}
    assert any(a.startswith("vault 9.6:") for a in made["actions"])
    prod["vault"].mkdir(parents=True)
    (prod["vault"] / "x").write_text("x")
    with pytest.raises(PromotionError, match=r"(?s)cannot be done as it stands.*not a hard-linked vault"):
        plan_mod.point_release_plan(target, trees, None)


# --- file lists per category -------------------------------------------------------------------------------------


def _target(root: Path) -> PromotionTarget:
    category = root / "mirror" / "pub" / "rocky"
    return PromotionTarget("el9", False, "9.7", root / "staging", category / "9.7", category, "rocky",
                           StateDir(root / ".releng"))


def _snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns, p.stat().st_ino)
            for p in root.rglob("*") if p.is_file() and p.name.startswith(("fullfile", "imagelist"))
            and ".releng" not in p.parts}


def test_a_change_in_one_category_rewrites_only_its_lists_and_the_roots(prod):
    root = prod["root"]
    target = _target(root)
    (root / "mirror" / "pub" / "rocky" / "9").symlink_to("9.6")
    sig = root / "mirror" / "pub" / "sig" / "9" / "kernel" / "x86_64" / "os"
    sig.mkdir(parents=True)
    (sig / "kernel.bin").write_bytes(b"k")
    first = update_file_lists.update_file_lists(target)  # no lists yet: every category that exists gets them
    assert list(first["categories"]) == ["rocky", "sig", "root"]  # innermost first; no mirror/vault yet
    assert not (root / "mirror" / "vault").exists()
    assert (root / "fullfiletimelist-rocky").exists() and (root / "mirror/pub/sig/fullfiletimelist-sig").exists()
    root_list = filelist.parse_timelist((root / "fullfiletimelist-rocky").read_text())
    assert "mirror/pub/sig/fullfiletimelist-sig" in {e.path for e in root_list.files}
    assert not [e for e in root_list.files if e.path.startswith(".releng")]
    assert update_file_lists.update_file_lists(target)["skipped"] is True
    before = _snapshot(root)

    # a SIG change marks sig and root only
    assert update_file_lists.mark_lists_stale(target, sig / "kernel.bin") == ["sig", "root"]
    (sig / "kernel-2.bin").write_bytes(b"k2")
    result = update_file_lists.update_file_lists(target)
    assert list(result["categories"]) == ["sig", "root"]
    after = _snapshot(root)
    for name in ("fullfilelist", "imagelist-rocky", "fullfiletimelist-rocky"):
        assert after[f"mirror/pub/rocky/{name}"] == before[f"mirror/pub/rocky/{name}"]  # bytes, mtime, inode
    assert after["mirror/pub/sig/fullfiletimelist-sig"] != before["mirror/pub/sig/fullfiletimelist-sig"]
    assert after["fullfiletimelist-rocky"] != before["fullfiletimelist-rocky"]

    # the vault (vault_release's marks) and then the rocky category: the SIG lists stay as they were
    _vault(prod, mark_changed=lambda p: update_file_lists.mark_lists_stale(target, p))
    result = update_file_lists.update_file_lists(target)
    assert list(result["categories"]) == ["rocky", "vault", "root"]
    final = _snapshot(root)
    assert {k: v for k, v in final.items() if k.startswith("mirror/pub/sig/")} == \
        {k: v for k, v in after.items() if k.startswith("mirror/pub/sig/")}
    vault_list = filelist.parse_timelist((root / "mirror/vault/fullfiletimelist-vault").read_text())
    assert "rocky/9.6/BaseOS/x86_64/os/repodata/repomd.xml" in vault_list.checksums["SHA1"]
    assert (root / "mirror/vault/imagelist-vault").read_text().splitlines() == [
        "./rocky/9.6/isos/x86_64/Rocky-9-latest-x86_64-boot.iso", "./rocky/9.6/isos/x86_64/Rocky-9.6-x86_64-boot.iso"]
