"""make_kickstart_trees: the kickstart tree of a compose's repo and arch, linked from its os tree."""

from __future__ import annotations

import os
import shutil

import pytest

from releng.core.compose.make_kickstart_trees import KickstartResult, KickstartTreeError, make_kickstart_trees
from releng.core.layout import ComposeLayout


@pytest.fixture
def layout(el9, fixture_buildsystem, tmp_path) -> ComposeLayout:
    layout = ComposeLayout.new(el9, tmp_path / "compose-root", "20250101.000000")
    shutil.copytree(fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True),
                    layout.repo_tree("BaseOS", "x86_64"))
    return layout


def test_the_kickstart_tree_shares_the_os_trees_packages(layout):
    lines: list[str] = []
    result = make_kickstart_trees(layout, "BaseOS", "x86_64", log=lines.append)
    assert result == KickstartResult("BaseOS", "x86_64", 3) and result.to_xcom() == {
        "repo": "BaseOS", "arch": "x86_64", "packages": 3}
    os_tree, ks_tree = layout.repo_tree("BaseOS", "x86_64"), layout.repo_tree("BaseOS", "x86_64", "kickstart")
    for rpm in os_tree.rglob("*.rpm"):
        assert os.path.samefile(rpm, ks_tree / rpm.relative_to(os_tree))
    assert lines == [f"{ks_tree}: 3 packages linked from {os_tree}"]


def test_an_incomplete_os_tree_is_refused(layout):
    next(layout.repo_tree("BaseOS", "x86_64").rglob("*.rpm")).unlink()
    with pytest.raises(KickstartTreeError, match="not a complete tree"):
        make_kickstart_trees(layout, "BaseOS", "x86_64")
