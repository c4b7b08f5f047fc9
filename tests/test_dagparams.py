"""The release choice on the trigger forms (releng.dagparams), parsed as the dag-processor parses the DAGs:
a missing RELENG_CONFIG_DIR is a clear import error, and a broken profile is never offered but named."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ROOT / "config" / "releases"
DAG_FILES = ["full_compose.py", "general_updates.py", "promote_to_production.py"]


def parse(monkeypatch, config_dir: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RELENG_CONFIG_DIR", str(config_dir))
    settings.cache_clear()
    return DagBag(dag_folder=str(ROOT / "dags"))


def release_schema(bag, dag_id: str) -> dict:
    return bag.dags[dag_id].params.get_param("release").schema


def configs(tmp_path: Path, broken: dict[str, tuple[str, str]]) -> Path:
    """The shipped profiles, with ``{name: (old, new)}`` text replacements that break some of them."""
    config = tmp_path / "releases"
    shutil.copytree(RELEASES, config)
    for name, (old, new) in broken.items():
        path = config / f"{name}.yaml"
        text = path.read_text()
        assert old in text
        path.write_text(text.replace(old, new))
    return config


@pytest.mark.parametrize("setup, reason", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("not a directory"), "is not a directory"),
    (lambda p: p.mkdir(), "holds no release profiles (*.yaml)"),
])
def test_an_unusable_config_dir_is_an_import_error_naming_it(monkeypatch, tmp_path, setup, reason):
    config = tmp_path / "releases"
    setup(config)
    bag = parse(monkeypatch, config)
    assert bag.dags == {}
    assert sorted(Path(f).name for f in bag.import_errors) == DAG_FILES
    for err in bag.import_errors.values():
        assert f"RELENG_CONFIG_DIR='{config}' {reason}" in err, err
        assert "not allowed to define a Schedule" not in err


def test_a_broken_profile_is_not_offered_and_is_named_on_the_form(monkeypatch, tmp_path):
    config = configs(tmp_path, {"el8": ("arches: [x86_64, aarch64]", "arches: [x86_64, sparc64]")})
    bag = parse(monkeypatch, config)
    assert bag.import_errors == {}
    for dag_id in ("full_compose", "general_updates"):
        schema = release_schema(bag, dag_id)
        assert schema["enum"] == ["el10", "el9"] and bag.dags[dag_id].params["release"] == "el9"
        description = bag.dags[dag_id].params.get_param("release").description
        assert (f"Not offered: el8 (invalid; python -m releng validate): {config / 'el8.yaml'}: arches[1]: "
                "unknown arch 'sparc64'") in description
    assert release_schema(bag, "promote_to_production")["enum"] == [None, "el10", "el9"]
    for name in DAG_FILES:  # the dag-processor's log of each file says it too
        (warning,) = bag.captured_warnings[str(ROOT / "dags" / name)]
        assert "el8.yaml: arches[1]: unknown arch 'sparc64'" in warning and "not offered" in warning


def test_a_broken_scheduled_release_stops_general_updates_not_the_others(monkeypatch, tmp_path):
    """Scheduled runs update the last profile by name; with that one broken they must not update another."""
    config = configs(tmp_path, {"el9": ('revision: "9.7"', 'revision: "9.8"')})
    bag = parse(monkeypatch, config)
    (err,) = [e for f, e in bag.import_errors.items() if Path(f).name == "general_updates.py"]
    assert "scheduled runs update el9" in err and f"{config / 'el9.yaml'}: revision: '9.8' does not match" in err
    assert "not allowed to define a Schedule" not in err
    assert sorted(bag.dags) == ["full_compose", "promote_to_production"]
    assert release_schema(bag, "full_compose")["enum"] == ["el10", "el8"]
    assert bag.dags["full_compose"].params["release"] == "el8"


def test_no_valid_profile_is_an_import_error_listing_the_problems(monkeypatch, tmp_path):
    config = configs(tmp_path, {n: ("name: ", "nmae: ") for n in ("el8", "el9", "el10")})
    bag = parse(monkeypatch, config)
    assert sorted(Path(f).name for f in bag.import_errors) == DAG_FILES
    for err in bag.import_errors.values():
        assert f"no release profile in RELENG_CONFIG_DIR='{config}' is valid" in err
        assert f"{config / 'el10.yaml'}: nmae: unknown key" in err
