"""The release choice on the trigger forms (releng.dagparams), parsed as the dag-processor parses the DAGs:
a missing RELENG_CONFIG_DIR is a clear import error, a broken profile is never offered but named, and the
default is RELENG_DEFAULT_RELEASE or the newest release by version."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[1]
RELEASES = ROOT / "config" / "releases"
# the DAGs with a release on the form
FORMS = ["full_compose", "general_updates", "point_release", "promote_to_production"]
DAG_FILES = ["full_compose.py", "general_updates.py", "point_release.py", "promote_to_production.py",
             "scheduled_updates.py"]


def parse(monkeypatch, config_dir: Path):
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("RELENG_CONFIG_DIR", str(config_dir))
    settings.cache_clear()
    return DagBag(dag_folder=str(ROOT / "dags"))


def release_schema(bag, dag_id: str) -> dict:
    return bag.dags[dag_id].params.get_param("release").schema


def configs(tmp_path: Path, broken: dict[str, tuple[str, str]]) -> Path:
    """The shipped stable profiles (el8, el9, el10; the others' order is tests/core/test_releases.py's), with
    ``{name: (old, new)}`` text replacements that break some of them."""
    config = tmp_path / "releases"
    config.mkdir()
    for name in ("el8", "el9", "el10"):
        shutil.copy(RELEASES / f"{name}.yaml", config)
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
    for dag_id in FORMS:
        schema = release_schema(bag, dag_id)
        assert schema["enum"] == ["el10", "el9"] and bag.dags[dag_id].params["release"] == "el10"
        description = bag.dags[dag_id].params.get_param("release").description
        assert (f"Not offered: el8 (invalid; python -m releng validate): {config / 'el8.yaml'}: arches[1]: "
                "unknown arch 'sparc64'") in description
    # issue 13: no "null" choice on promote_to_production either; each release shows its version and arches
    assert release_schema(bag, "full_compose")["values_display"] == {"el10": "el10 (Rocky Linux 10.1)",
                                                                    "el9": "el9 (Rocky Linux 9.7)"}
    assert "Arches per release: el10: x86_64, aarch64, ppc64le, s390x; el9: x86_64, aarch64, ppc64le, s390x." \
        in bag.dags["full_compose"].params.get_param("release").description
    for name in DAG_FILES:  # the dag-processor's log of each file says it too
        (warning,) = bag.captured_warnings[str(ROOT / "dags" / name)]
        assert "el8.yaml: arches[1]: unknown arch 'sparc64'" in warning and "not offered" in warning


def test_the_default_release_is_the_newest_by_version(monkeypatch, tmp_path):
    """10.1 is newer than 9.7 and 8.10 (as text "el10" < "el8" < "el9"): every trigger form offers el10 first."""
    bag = parse(monkeypatch, configs(tmp_path, {}))
    assert bag.import_errors == {}
    for dag_id in FORMS:
        assert bag.dags[dag_id].params["release"] == "el10", dag_id


def test_the_default_release_setting_picks_every_forms_default(monkeypatch, tmp_path):
    monkeypatch.setenv("RELENG_DEFAULT_RELEASE", "el8")
    bag = parse(monkeypatch, configs(tmp_path, {}))
    assert bag.import_errors == {}
    for dag_id in FORMS:
        assert bag.dags[dag_id].params["release"] == "el8", dag_id
        bag.dags[dag_id].params.validate()


def test_a_default_release_that_is_no_profile_is_an_import_error_saying_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("RELENG_DEFAULT_RELEASE", "el11")
    config = configs(tmp_path, {})
    bag = parse(monkeypatch, config)
    assert sorted(bag.dags) == ["scheduled_updates"]  # it has no trigger form
    assert sorted(Path(f).name for f in bag.import_errors) == sorted(f"{d}.py" for d in FORMS)
    for err in bag.import_errors.values():
        assert (f"RELENG_DEFAULT_RELEASE='el11' is not a release profile in RELENG_CONFIG_DIR='{config}'; set "
                "RELENG_DEFAULT_RELEASE to one of el10, el9, el8, or unset it to offer the newest release first") in err


def test_a_default_release_whose_profile_is_broken_is_an_import_error_naming_the_problems(monkeypatch, tmp_path):
    monkeypatch.setenv("RELENG_DEFAULT_RELEASE", "el9")
    config = configs(tmp_path, {"el9": ('revision: "9.7"', 'revision: "9.8"')})
    bag = parse(monkeypatch, config)
    assert sorted(Path(f).name for f in bag.import_errors) == sorted(f"{d}.py" for d in FORMS)
    for err in bag.import_errors.values():
        assert "RELENG_DEFAULT_RELEASE='el9' names a release profile that is invalid; fix it" in err
        assert f"{config / 'el9.yaml'}: revision: '9.8' does not match" in err


def test_a_broken_release_stops_no_dag_and_stays_scheduled(monkeypatch, tmp_path):
    """A broken el10 is not the default (el9, the newest valid one, is) and stops no DAG from loading; the schedule
    still lists it, so its own updates run fails, naming the problems, while the other releases' runs go on."""
    config = configs(tmp_path, {"el10": ('revision: "10.1"', 'revision: "10.2"')})
    bag = parse(monkeypatch, config)
    assert bag.import_errors == {}
    assert sorted(bag.dags) == sorted([*FORMS, "scheduled_updates"])
    for dag_id in FORMS:
        assert bag.dags[dag_id].params["release"] == "el9"
    assert bag.dags["scheduled_updates"].description.startswith("general_updates of el9, el8, el10 at ")


def test_no_valid_profile_is_an_import_error_listing_the_problems(monkeypatch, tmp_path):
    config = configs(tmp_path, {n: ("name: ", "nmae: ") for n in ("el8", "el9", "el10")})
    bag = parse(monkeypatch, config)
    assert sorted(Path(f).name for f in bag.import_errors) == DAG_FILES
    for err in bag.import_errors.values():
        assert f"no release profile in RELENG_CONFIG_DIR='{config}' is valid" in err
        assert f"{config / 'el10.yaml'}: nmae: unknown key" in err
