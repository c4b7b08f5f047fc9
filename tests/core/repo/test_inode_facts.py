"""What verification established about a package travels with its inode (core/repo/verify.py ``InodeFacts``).

A no-op resync links the previous compose's packages; their checksums are not hashed again while size and
mtime are unchanged, and a package rewritten in place (same size, new content) is hashed and caught.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from releng.core.compose.sync_repos import signature_fact
from releng.core.repo.primary import iter_packages
from releng.core.repo.repomd import tree_path
from releng.core.repo.verify import INODE_FACTS_XATTR, InodeFacts, verify_repo


@pytest.fixture
def tree(tmp_path, fixture_buildsystem, el9) -> Path:
    upstream = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True)
    dest = tmp_path / "first" / "os"
    dest.parent.mkdir()
    shutil.copytree(upstream, dest)
    try:
        os.setxattr(dest / "repodata" / "repomd.xml", "user.releng.probe", b"1")
    except OSError:
        pytest.skip("no user extended attributes on the test file system")
    return dest


def _packages_hashed(report) -> int:
    return report.bytes_hashed - sum(f.stat().st_size for f in (report.tree / "repodata").iterdir()
                                     if f.name != "repomd.xml" and not f.name.endswith(".asc"))


def test_a_linked_tree_is_not_hashed_again(tree, tmp_path):
    first = verify_repo(tree, cache=InodeFacts())
    assert first.ok and first.packages and _packages_hashed(first) == first.bytes

    linked = tmp_path / "second" / "os"
    linked.parent.mkdir()
    subprocess.run(["cp", "-al", str(tree), str(linked)], check=True)
    again = verify_repo(linked, cache=InodeFacts())
    assert again.ok and again.bytes_hashed == 0  # packages and repodata are the same inodes: nothing is read

    without = verify_repo(linked)  # an empty VerifyCache hashes everything, as before
    assert without.ok and _packages_hashed(without) == without.bytes


def test_a_package_rewritten_in_place_is_hashed_and_caught(tree):
    assert verify_repo(tree, cache=InodeFacts()).ok
    victim = tree_path(tree, next(iter_packages(tree)).href)
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))  # same size, new mtime: the recorded fact no longer holds

    report = verify_repo(tree, cache=InodeFacts())
    assert not report.ok and len(report.corrupt) == 1 and victim.name in report.corrupt[0]


def test_facts_live_in_the_xattr_and_need_the_same_size_and_mtime(tree):
    victim = tree_path(tree, next(iter_packages(tree)).href)
    facts = InodeFacts()
    facts.remember(victim, os.stat(victim), "sha256:abc")
    assert INODE_FACTS_XATTR in os.listxattr(victim)
    assert facts.known(victim, os.stat(victim), "sha256:abc")
    os.utime(victim, ns=(1, 1))
    assert not facts.known(victim, os.stat(victim), "sha256:abc")


def test_the_signature_fact_names_the_key_set(tmp_path):
    a, b = tmp_path / "a.asc", tmp_path / "b.asc"
    a.write_text("key a")
    b.write_text("key b")
    assert signature_fact([a, b]) == signature_fact([b, a])
    assert signature_fact([a]) != signature_fact([a, b])
