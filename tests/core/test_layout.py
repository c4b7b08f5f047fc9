"""Compose layout, names, and staging/production directories; unsafe values never become paths."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest

from releng.core.layout import (
    ComposeLayout,
    LayoutError,
    ReleaseTrees,
    compose_id,
    compose_timestamp,
    safe_part,
)


@pytest.fixture
def layout(el9):
    return ComposeLayout.new(el9, Path("/srv/compose"), "20251123.143015")


def test_compose_tree(layout):
    assert layout.compose_id == "Rocky-9.7-20251123.143015"
    assert layout.top == Path("/srv/compose/9/Rocky-9.7-20251123.143015")
    assert layout.latest_link == Path("/srv/compose/9/latest-Rocky-9")
    assert layout.repo_tree("BaseOS", "x86_64") == layout.compose / "BaseOS/x86_64/os"
    assert layout.repo_tree("all", "i686", "debug") == layout.compose / "devel/i686/debug/tree"
    assert layout.repo_tree("AppStream", "aarch64", "kickstart") == layout.compose / "AppStream/aarch64/kickstart"
    assert layout.repo_tree("CRB", "x86_64", "source") == layout.compose / "CRB/source/tree"
    assert layout.iso_dir("aarch64") == layout.compose / "isos/aarch64"
    assert layout.lorax_dir("x86_64") == layout.top / "work/lorax/x86_64"
    with pytest.raises(LayoutError, match="unknown tree kind 'iso'"):
        layout.repo_tree("BaseOS", "x86_64", "iso")


def test_names(layout):
    assert layout.volid("x86_64", rc=False) == "Rocky-9-7-x86_64-dvd"
    assert layout.volid("aarch64", rc=True) == "Rocky-9-7-RC1-aarch64-dvd"
    assert layout.iso_name("x86_64", "dvd", rc=False) == "Rocky-9.7-x86_64-dvd.iso"
    assert layout.iso_name("x86_64", "boot", rc=True) == "Rocky-9.7-RC1-x86_64-boot.iso"
    assert layout.iso_generic_name("x86_64", "dvd") == "Rocky-x86_64-dvd.iso"
    assert layout.iso_latest_name("s390x", "dvd") == "Rocky-9-latest-s390x-dvd.iso"


def test_volid_longer_than_iso9660_allows(el9):
    long = dataclasses.replace(el9, shortname="RockyLinuxEnterprise")
    with pytest.raises(LayoutError, match="ISO 9660 allows 32"):
        ComposeLayout.new(long, Path("/c"), "20251123.143015").volid("ppc64le", rc=True)


def test_timestamp_is_utc(el9):
    when = datetime(2025, 11, 23, 14, 30, 15, tzinfo=UTC)
    assert compose_timestamp(when) == "20251123.143015"
    with pytest.raises(LayoutError, match="does not have the form"):
        compose_id(el9, "2025-11-23")


def test_compose_id_counter(el9):
    assert compose_id(el9, "20261128.041500", 0) == "Rocky-9.7-20261128.041500.0"
    layout = ComposeLayout.new(el9, Path("/c"), "20261128.041500", 12)
    assert layout.compose_id == "Rocky-9.7-20261128.041500.12" and layout.respin == 12
    assert layout.timestamp == int(datetime(2026, 11, 28, 4, 15, tzinfo=UTC).timestamp())
    assert ComposeLayout.new(el9, Path("/c"), "20261128.041500").respin == 0  # an id from before the counter
    for bad in (-1, True, "1"):
        with pytest.raises(LayoutError, match="is not a non-negative integer"):
            compose_id(el9, "20261128.041500", bad)


def test_release_trees(el9):
    trees = ReleaseTrees(el9, Path("/mnt/repos-staging"), Path("/mnt/repos-production"))
    assert trees.staging_dir(rc=True) == Path("/mnt/repos-staging/mirror/pub/rocky/9.7-RC1")
    assert trees.staging_dir(rc=False) == Path("/mnt/repos-staging/mirror/pub/rocky/9.7")
    assert trees.production_dir() == Path("/mnt/repos-production/mirror/pub/rocky/9.7")
    assert trees.staging_links(rc=True) == {"latest-9": "9.7-RC1", "9.7": "9.7-RC1"}
    assert trees.staging_links(rc=False) == {"latest-9": "9.7"}


@pytest.mark.parametrize("field,value", [("revision", ""), ("revision", ".."), ("rclvl", "../x"),
                                         ("shortname", ""), ("rclvl", "")])
def test_empty_or_unsafe_values_never_become_paths(el9, field, value):
    # the sync scripts' hazard: an unknown channel left REV empty and rsync ran from the category root or /
    broken = dataclasses.replace(el9, **{field: value})
    trees = ReleaseTrees(broken, Path("/mnt/repos-staging"), Path("/mnt/repos-production"))
    with pytest.raises(LayoutError):
        paths = [trees.staging_dir(rc=True), trees.production_dir()]
        raise AssertionError(f"built {paths}")


@pytest.mark.parametrize("root", ["", "/", "relative/dir"])
def test_tree_roots_must_be_absolute_directories(el9, root):
    trees = ReleaseTrees(el9, Path(root), Path(root))
    with pytest.raises(LayoutError, match="must be an absolute directory"):
        trees.production_dir()


def test_safe_part():
    assert safe_part("9.7-RC1", "x") == "9.7-RC1"
    for bad in ("", ".", "..", "a/b", " x", "x y", "-rf"):
        with pytest.raises(LayoutError):
            safe_part(bad, "x")
