"""Verifying production repositories: every repomd.xml names files that exist with the right checksums,
and repomd.xml.asc verifies against the configured signing key (real createrepo_c output, real gpg)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from releng.core.gpg import agent_session
from releng.core.promotion.base import PromotionError
from releng.core.promotion.change_report import make_report
from releng.core.promotion.promote_phases import promote_phase
from releng.core.promotion.target import resolve_target
from releng.core.promotion.verify_production import verify_production
from releng.core.repo.repomd import RepoError, find_repos
from releng.core.repo.verify import verify_tree
from releng.core.settings import settings
from tests.promotion.conftest import fixture_signer


@pytest.fixture
def tree(tmp_path, fixture_buildsystem, el9):
    root = tmp_path / "9.7"
    for repo, arch in (("BaseOS", "x86_64"), ("AppStream", "aarch64")):
        shutil.copytree(fixture_buildsystem.repo_dir(el9.project_id, repo, arch, hashed=True),
                        root / repo / arch / "os")
    shutil.copytree(fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "src", hashed=True),
                    root / "BaseOS" / "source" / "tree")
    return root


def _primary(tree):
    return next((tree / "BaseOS" / "x86_64" / "os" / "repodata").glob("*-primary.xml.gz"))


def test_good_tree_verifies_with_signatures(tree, fixture_buildsystem, tmp_path):
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    result = verify_tree(tree, signing_key=fpr, gnupghome=home)
    assert result.problems() == [] and result.repos == 3 and result.signatures == 3 and result.bytes_hashed > 0
    assert find_repos(tree) == sorted(
        p.relative_to(tree) for p in (tree / "BaseOS/x86_64/os", tree / "AppStream/aarch64/os",
                                      tree / "BaseOS/source/tree"))


def test_missing_wrong_and_resized_files_are_named(tree):
    primary = _primary(tree)
    data = bytearray(primary.read_bytes())
    data[-1] ^= 0xFF
    primary.write_bytes(bytes(data))
    other = next((tree / "AppStream" / "aarch64" / "os" / "repodata").glob("*-other.xml.gz"))
    other.unlink()
    filelists = next((tree / "BaseOS" / "source" / "tree" / "repodata").glob("*-filelists.xml.gz"))
    filelists.write_bytes(filelists.read_bytes() + b"x")
    problems = verify_tree(tree).problems()
    assert len(problems) == 3, problems
    assert any(f"AppStream/aarch64/os/repodata/{other.name} (other): missing" in p for p in problems)
    assert any(f"repodata/{primary.name} (primary): sha256 " in p and "repodata says" in p for p in problems)
    assert any(f"repodata/{filelists.name} (filelists): size " in p and ", repodata says" in p for p in problems)


def test_signatures_must_exist_and_come_from_the_configured_key(tree, fixture_buildsystem, tmp_path):
    home, fpr = fixture_signer(fixture_buildsystem, tmp_path)
    (tree / "BaseOS" / "x86_64" / "os" / "repodata" / "repomd.xml.asc").unlink()
    other_home = tmp_path / "other"
    other_home.mkdir(mode=0o700)
    repomd = tree / "AppStream" / "aarch64" / "os" / "repodata" / "repomd.xml"
    with agent_session(other_home):
        subprocess.run(["gpg", "--homedir", str(other_home), "--batch", "--passphrase", "", "--quick-gen-key",
                        "Impostor <i@x.invalid>", "rsa2048", "sign", "never"], check=True, capture_output=True)
        subprocess.run(["gpg", "--homedir", str(other_home), "--batch", "--yes", "--armor", "--detach-sign", "-o",
                        f"{repomd}.asc", str(repomd)], check=True, capture_output=True)
    problems = verify_tree(tree, signing_key=fpr, gnupghome=home).problems()
    assert len(problems) == 2, problems
    assert any("BaseOS/x86_64/os/repodata/repomd.xml.asc: missing; signing is on" in p for p in problems)
    assert any("AppStream/aarch64/os/repodata/repomd.xml.asc: does not verify repomd.xml" in p for p in problems)
    assert verify_tree(tree).problems() == []  # without a signing key, signatures are not required


def test_an_unknown_signing_key_is_a_clear_error(tree, tmp_path):
    empty = tmp_path / "empty-gnupg"
    empty.mkdir(mode=0o700)
    with pytest.raises(RepoError, match=r"signing key 'ABCDEF' is not in the keyring .*empty-gnupg"):
        verify_tree(tree, signing_key="ABCDEF", gnupghome=empty)


def test_the_cache_skips_unchanged_files_and_catches_changed_ones(tree, tmp_path):
    cache = tmp_path / "cache.json"
    assert verify_tree(tree, cache_file=cache).bytes_hashed > 0
    assert verify_tree(tree, cache_file=cache).bytes_hashed == 0
    primary = _primary(tree)
    data = bytearray(primary.read_bytes())
    data[-1] ^= 0xFF
    st = primary.stat()
    primary.write_bytes(bytes(data))
    os.utime(primary, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the ctime still moves
    result = verify_tree(tree, cache_file=cache)
    assert result.bytes_hashed == len(data) and len(result.problems()) == 1


def test_verify_production_fails_with_the_problems(staged):
    target = resolve_target("el9", True, settings())
    record = make_report(target, run_id="r", dry_run=False, allow_large_delete=False, max_delete=0.1)
    for phase in ("payload", "metadata", "deletions"):
        promote_phase(record, phase)
    assert verify_production(target, settings())["repos"] == 11
    next((staged.production / "BaseOS" / "x86_64" / "kickstart" / "repodata").glob("*-primary.xml.gz")).unlink()
    with pytest.raises(PromotionError, match=r"failed verification \(1 problems\); the file lists were not updated"
                                             r".*\n.*kickstart/repodata/\S+-primary\.xml\.gz \(primary\): missing"):
        verify_production(target, settings())
