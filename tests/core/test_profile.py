"""Release profile loading and validation: the shipped profiles, each kind of error, the CLI."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from releng.core.profile import ProfileError, find_profile, load_profile, profile_names

ROOT = Path(__file__).resolve().parents[2]
RELEASES = ROOT / "config" / "releases"


def _el9() -> dict:
    return yaml.safe_load((RELEASES / "el9.yaml").read_text())


def _write(tmp_path: Path, data: dict | str, name: str = "el9") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def _problems(tmp_path: Path, data: dict | str, name: str = "el9") -> dict[str, str]:
    path = _write(tmp_path, data, name)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    for problem in err.value.problems:
        assert problem.file == str(path)
    return {p.key: p.reason for p in err.value.problems}


@pytest.mark.parametrize("name", ["el8", "el9", "el10"])
def test_shipped_profiles_are_valid(name):
    profile = load_profile(RELEASES / f"{name}.yaml")
    assert profile.name == name
    assert profile.revision == f"{profile.major}.{profile.minor}"
    assert profile.fullname == f"Rocky Linux {profile.revision}"
    assert {"BaseOS", "AppStream", "extras"} <= set(profile.repo_ids)
    assert set(profile.repoclosure) <= set(profile.repo_ids)
    assert profile.iso_images["dvd"].disc and not profile.iso_images["dvd"].isoskip


def test_el9_facts():
    p = find_profile("el9", RELEASES)
    assert p.arches == ("x86_64", "aarch64", "ppc64le", "s390x")
    assert p.repo("all").dir == "devel"
    assert p.repo_arches("all", ["x86_64", "aarch64"]) == ("x86_64", "aarch64", "i686")
    assert p.repo_arches("BaseOS", ["aarch64"]) == ("aarch64",)
    assert p.repoclosure["SAP"] == ("BaseOS", "AppStream", "HighAvailability")
    assert p.repoclosure["all"] == ()
    assert p.iso_images["dvd"].repos == ("BaseOS", "AppStream")
    assert p.cloud_images["GenericCloud"].primary_variant == "Base"
    assert p.cloud_images["GenericCloud"].arches == p.arches
    assert p.gpg_keys == ("RPM-GPG-KEY-Rocky-9", "RPM-GPG-KEY-Rocky-9-Testing")
    with pytest.raises(KeyError, match="no repo 'devel'"):
        p.repo("devel")


def test_profile_lookup_names_the_available_profiles(tmp_path):
    assert profile_names(RELEASES) == ["el10", "el8", "el9-beta", "el9-sig-cloud", "el9", "el9lh"]
    with pytest.raises(ProfileError, match="no release profile 'el7'; available: el10, el8, el9-beta, "
                                           "el9-sig-cloud, el9, el9lh"):
        find_profile("el7", RELEASES)
    with pytest.raises(ProfileError, match="is not a profile name"):
        find_profile("../el9", RELEASES)


def test_unknown_arch(tmp_path):
    data = _el9()
    data["arches"] = ["x86_64", "sparc64"]
    problems = _problems(tmp_path, data)
    assert problems["arches[1]"].startswith("unknown arch 'sparc64'; known arches: x86_64, aarch64")


def test_repoclosure_naming_a_repo_not_in_the_repo_list(tmp_path):
    data = _el9()
    data["repoclosure"]["AppStream"] = ["BaseOS", "Missing"]
    data["repoclosure"]["devel"] = []
    problems = _problems(tmp_path, data)
    assert "'Missing' is not a repo in `repos`" in problems["repoclosure.AppStream[1]"]
    # the empanadas bug: the map used the on-disk name instead of the repo id
    assert "'devel' is the directory name of repo 'all', use the repo id" in problems["repoclosure.devel"]


def test_iso_and_lorax_repos_must_exist(tmp_path):
    data = _el9()
    data["iso"]["images"]["dvd"]["repos"] = ["BaseOS", "Appstream"]
    data["iso"]["lorax"]["repos"] = ["BaseOS", "Nope"]
    problems = _problems(tmp_path, data)
    assert "'Appstream' is not a repo" in problems["iso.images.dvd.repos[1]"]
    assert "'Nope' is not a repo" in problems["iso.lorax.repos[1]"]


def test_missing_keys(tmp_path):
    data = _el9()
    del data["revision"]
    del data["build_system"]
    del data["iso"]["lorax"]
    del data["repos"][0]["id"]
    problems = _problems(tmp_path, data)
    assert problems["revision"].startswith("missing required key")
    assert problems["build_system"].startswith("missing required key")
    assert problems["iso.lorax"].startswith("missing required key")
    assert problems["repos[0].id"].startswith("missing required key")


def test_wrong_types(tmp_path):
    data = _el9()
    data["major"] = "9"
    data["arches"] = "x86_64"
    data["repos"][2]["multilib"] = "yes"
    data["iso"]["images"]["dvd"]["disc"] = 1
    data["iso"]["lorax"]["rootfs_size"] = True
    problems = _problems(tmp_path, data)
    assert problems["major"] == "must be an integer, got a string '9'"
    assert problems["arches"] == "must be a list, got a string 'x86_64'"
    assert problems["repos[2].multilib"] == "must be a boolean, got a string 'yes'"
    assert problems["iso.images.dvd.disc"] == "must be a boolean, got an integer 1"
    assert problems["iso.lorax.rootfs_size"] == "must be an integer, got a boolean True"


def test_revision_must_match_major_minor(tmp_path):
    data = _el9()
    data["minor"] = 6
    problems = _problems(tmp_path, data)
    assert problems["revision"] == "'9.7' does not match major.minor 9.6"


def test_revision_format_and_fullname(tmp_path):
    data = _el9()
    data["revision"] = 9.7  # unquoted YAML float
    data["fullname"] = "Rocky Linux 9.6"
    data["disttag"] = "el8"
    problems = _problems(tmp_path, data)
    assert problems["revision"].startswith("must be a string, got float 9.7")
    assert problems["disttag"] == "'el8' does not match major 9; expected el9"


def test_fullname_must_follow_revision(tmp_path):
    data = _el9()
    data["fullname"] = "Rocky Linux 9.6"
    expected = "'Rocky Linux 9.6' does not match distname and revision 'Rocky Linux 9.7'"
    assert _problems(tmp_path, data)["fullname"] == expected


def test_unknown_keys_are_reported(tmp_path):
    data = _el9()
    data["allowed_arches"] = ["x86_64"]
    data["iso"]["images"]["dvd"]["resposcan"] = True
    problems = _problems(tmp_path, data)
    assert problems["allowed_arches"].startswith("unknown key; known keys: arches, bugurl")
    assert problems["iso.images.dvd.resposcan"].startswith("unknown key")


def test_name_must_match_file(tmp_path):
    assert "does not match the file name 'el10.yaml'" in _problems(tmp_path, _el9(), name="el10")["name"]


def test_identifiers_and_references(tmp_path):
    data = _el9()
    data["checksum"] = "md5"
    data["build_system"]["project_id"] = "not-a-uuid"
    data["gpg_keys"] = ["https://example.org/RPM-GPG-KEY", "../key"]
    data["rclvl"] = "rc1"
    data["repos"].append({"id": "BaseOS"})
    data["repos"].append({"id": "Other", "dir": "devel"})
    data["cloud_images"]["EC2"]["primary_variant"] = "Missing"
    data["cloud_images"]["EC2"]["arches"] = ["riscv64"]
    data["extra_files"]["files"].append("../../etc/passwd")
    problems = _problems(tmp_path, data)
    assert problems["checksum"] == "'md5' is not supported; use one of sha256"
    assert problems["build_system.project_id"].startswith("'not-a-uuid' is not a UUID")
    assert "must be a key file name" in problems["gpg_keys[0]"]
    assert "must be a key file name" in problems["gpg_keys[1]"]
    assert problems["rclvl"].startswith("'rc1' is not valid")
    assert problems["repos[12].id"] == "repo 'BaseOS' is listed twice"
    assert problems["repos[13].dir"] == "directory 'devel' is already used by another repo"
    assert problems["cloud_images.EC2.primary_variant"].startswith("'Missing' is not one of the variants")
    assert problems["cloud_images.EC2.arches[0]"].startswith("'riscv64' is not one of the profile's arches")
    assert "must be a path inside the repository" in problems["extra_files.files[6]"]


def test_multilib_needs_a_multilib_arch(tmp_path):
    data = _el9()
    data["arches"] = ["aarch64"]
    assert _problems(tmp_path, data)["repos[11].multilib"] == "needs one of x86_64 in `arches`"


def test_every_problem_is_reported_at_once(tmp_path):
    data = _el9()
    data["arches"] = ["sparc"]
    data["minor"] = "7"
    data["repoclosure"]["CRB"] = ["Nope"]
    del data["disttag"]
    assert {"arches[0]", "minor", "repoclosure.CRB[0]", "disttag"} <= set(_problems(tmp_path, data))


def test_yaml_errors_name_the_line(tmp_path):
    problems = _problems(tmp_path, "name: el9\nrevision: \"9.7\"\narches: [x86_64\n")
    assert problems[""].startswith("invalid YAML at line")
    dup = _problems(tmp_path, "name: el9\nmajor: 9\nmajor: 8\n")
    assert "duplicate key 'major' (first at line 2)" in dup[""]
    assert "line 3" in dup[""]
    assert _problems(tmp_path, "")[""] == "the profile is empty"
    assert _problems(tmp_path, "- a\n- b\n")[""] == "must be a mapping, got a list"


def test_an_edited_profile_is_validated_again(tmp_path):
    """A DAG parse keeps what each profile's text made; an edit (even one that keeps the size and the mtime's
    second) is read and validated again, and a broken profile is refused every time it is asked for."""
    good = yaml.safe_dump(_el9(), sort_keys=False)
    bad = good.replace('revision: "9.7"', 'revision: "9.8"').replace("revision: '9.7'", "revision: '9.8'")
    assert bad != good and len(bad) == len(good)
    path = _write(tmp_path, good)
    assert load_profile(path).revision == "9.7"
    path.write_text(bad)
    for _ in range(2):
        with pytest.raises(ProfileError, match=r"revision: '9\.8' does not match major.minor 9\.7"):
            load_profile(path)
    path.write_text(good)
    assert load_profile(path).revision == "9.7"
    assert load_profile(path) is load_profile(path)


def test_yaml_problems_read_as_before(tmp_path):
    """libyaml parses the profiles; a file it refuses is reported in PyYAML's words, with the line."""
    problems = _problems(tmp_path, "name: el9\narches:\n\t- x86_64\n")
    assert problems[""] == "invalid YAML at line 3, column 1: found character '\\t' that cannot start any token"
    problems = _problems(tmp_path, "name: el9\nrepos: *nope\n")
    assert problems[""] == "invalid YAML at line 2, column 8: found undefined alias 'nope'"


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml: profiles are parsed in Python")
@pytest.mark.parametrize("path", sorted(RELEASES.glob("*.yaml")), ids=lambda p: p.stem)
def test_libyaml_reads_the_shipped_profiles_as_pyyaml_does(path):
    from releng.core.profile import _FastLoader, _StrictLoader

    text = path.read_text()
    assert yaml.load(text, Loader=_FastLoader) == yaml.load(text, Loader=_StrictLoader)


def test_missing_file(tmp_path):
    with pytest.raises(ProfileError, match="file not found"):
        load_profile(tmp_path / "el9.yaml")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "releng", *args], cwd=ROOT, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT / "plugins")})


def test_cli_accepts_the_shipped_profiles():
    result = _cli("validate", "config/releases")
    assert result.returncode == 0, result.stderr
    assert "config/releases/el9.yaml: ok (Rocky Linux 9.7" in result.stdout
    assert len(result.stdout.splitlines()) == 6
    assert "config/releases/el9lh.yaml: ok (Rocky Linux 9.8, lookahead channel" in result.stdout
    assert "config/releases/el9-sig-cloud.yaml: ok (Rocky Linux 9.7, SIG cloud" in result.stdout


def test_cli_defaults_to_the_config_dir():
    result = _cli("validate")
    assert result.returncode == 0, result.stderr
    assert "el10.yaml: ok" in result.stdout


def test_cli_rejects_a_broken_profile_naming_the_key(tmp_path):
    data = copy.deepcopy(_el9())
    data["repoclosure"]["AppStream"] = ["BaseOS", "Missing"]
    bad = _write(tmp_path, data)
    result = _cli("validate", str(RELEASES / "el8.yaml"), str(bad))
    assert result.returncode == 1
    assert "el8.yaml: ok" in result.stdout
    assert f"{bad}: repoclosure.AppStream[1]: 'Missing' is not a repo" in result.stderr
    assert "1 of 2 profile(s) invalid" in result.stderr


def test_cli_usage_errors(tmp_path):
    assert _cli("validate", str(tmp_path)).returncode == 1
    assert _cli().returncode == 2
