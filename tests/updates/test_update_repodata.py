"""releng.core.updates.update_repodata: argv builders, merges, the repodata swap, and the regeneration with
the real createrepo_c, modifyrepo_c and gpg on copies of the fixture build system's repos."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from releng.core.gpg import agent_session
from releng.core.repo.primary import iter_packages
from releng.core.repo.repomd import read_repomd, tree_path
from releng.core.repo.verify import verify_repo
from releng.core.run import ToolError
from releng.core.staging.signing import sign_argv, signing_key_problem, verify_signature_argv
from releng.core.updates import UpdatesError
from releng.core.updates.update_repodata import (
    RepodataJob,
    createrepo_update_argv,
    distro_tag,
    merge_modules,
    merge_updateinfo,
    metadata_text,
    modifyrepo_argv,
    regenerate_repodata,
    swap_repodata,
)

# --- argv builders -------------------------------------------------------------------------------


def test_createrepo_update_argv():
    argv = createrepo_update_argv(Path("/s/AppStream/x86_64/os"), Path("/w/out"),
                                  reuse=[Path("/s/AppStream/x86_64/os"), Path("/w/synced")],
                                  groupfile=Path("/w/inputs/comps.xml"), distro="cpe:/o:rocky:rocky:9,Rocky Linux 9",
                                  workers=3)
    assert argv == ["createrepo_c", "--update", "--outputdir", "/w/out", "--checksum", "sha256",
                    "--general-compress-type=xz", "--no-database", "--unique-md-filenames", "--error-exit-val",
                    "--workers", "3", "--update-md-path", "/s/AppStream/x86_64/os", "--update-md-path", "/w/synced",
                    "--groupfile", "/w/inputs/comps.xml", "--distro=cpe:/o:rocky:rocky:9,Rocky Linux 9",
                    "/s/AppStream/x86_64/os"]
    assert "--retain-old-md" not in " ".join(argv)
    plain = createrepo_update_argv(Path("/t"), Path("/o"))
    assert "--groupfile" not in plain and "--update-md-path" not in plain and plain[-1] == "/t"


def test_a_relative_groupfile_is_refused():
    with pytest.raises(UpdatesError, match="absolute"):
        createrepo_update_argv(Path("/t"), Path("/o"), groupfile=Path("comps.xml"))


def test_modifyrepo_and_gpg_argv():
    assert modifyrepo_argv(Path("/w/modules.yaml"), Path("/w/out/repodata"), "modules") == [
        "modifyrepo_c", "--mdtype=modules", "--compress-type=xz", "--checksum", "sha256", "--unique-md-filenames",
        "/w/modules.yaml", "/w/out/repodata"]
    assert sign_argv(Path("/r/repomd.xml"), "ABCD", Path("/keys")) == [
        "gpg", "--homedir", "/keys", "--batch", "--no-tty", "--yes", "--local-user", "ABCD", "--armor",
        "--detach-sign", "--output", "/r/repomd.xml.asc", "/r/repomd.xml"]
    assert sign_argv(Path("/r/repomd.xml"), "ABCD")[:3] == ["gpg", "--batch", "--no-tty"]
    assert verify_signature_argv(Path("/r/repomd.xml"))[-3:] == ["--verify", "/r/repomd.xml.asc", "/r/repomd.xml"]


def test_distro_tag(el9):
    assert distro_tag(el9) == "cpe:/o:rocky:rocky:9,Rocky Linux 9"


# --- merges --------------------------------------------------------------------------------------

MODULE = """---
document: modulemd
version: 2
data:
  name: foo
  stream: "1"
  version: {version}
  context: c0
  arch: x86_64
  summary: {summary}
  artifacts:
    rpms: [foo-0:1.{version}-1.el9.x86_64]
...
"""
DEFAULTS = '---\ndocument: modulemd-defaults\nversion: 1\ndata:\n  module: foo\n  stream: "{stream}"\n...\n'


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def test_modules_keep_staging_s_versions_and_take_the_build_system_s():
    old = MODULE.format(version=1, summary="old") + DEFAULTS.format(stream=1)
    new = MODULE.format(version=1, summary="rebuilt") + MODULE.format(version=2, summary="new") + \
        DEFAULTS.format(stream=2)
    merged = merge_modules(old, new)
    docs = _docs(merged)
    assert [(d["document"], d["data"].get("version"), d["data"].get("summary")) for d in docs] == [
        ("modulemd", 1, "rebuilt"), ("modulemd-defaults", None, None), ("modulemd", 2, "new")]
    assert docs[1]["data"]["stream"] == "2"  # one defaults document per module, the build system's
    assert merge_modules(merged, new) == merged  # a rerun changes nothing
    assert merge_modules(None, None) is None
    assert _docs(merge_modules(old, None)) == _docs(old)


def test_broken_modules_metadata_is_named():
    with pytest.raises(UpdatesError, match=r"AppStream x86_64 os.*not valid YAML"):
        merge_modules("---\ndocument: modulemd\ndata: [unclosed\n...\n", None, "AppStream x86_64 os")


UPDATE = ('<update type="bugfix"><id>{id}</id><title>{title}</title><pkglist><collection>'
          '<package name="foo" version="1" release="1" epoch="0" arch="x86_64"><filename>f.rpm</filename></package>'
          '</collection></pkglist></update>')


def test_updateinfo_keeps_old_advisories_and_takes_the_build_system_s():
    old = f'<?xml version="1.0"?><updates>{UPDATE.format(id="A-1", title="old")}</updates>'
    new = f'<updates>{UPDATE.format(id="A-1", title="fixed")}{UPDATE.format(id="A-2", title="new")}</updates>'
    merged = merge_updateinfo(old, new)
    root = ET.fromstring(merged)
    assert [(u.findtext("id"), u.findtext("title")) for u in root.iter("update")] == [("A-1", "fixed"),
                                                                                       ("A-2", "new")]
    assert root.find("update/pkglist/collection/package/filename").text == "f.rpm"
    assert merge_updateinfo(merged, new) == merged
    with pytest.raises(UpdatesError, match="not valid XML"):
        merge_updateinfo("<updates>", None)


# --- the swap ------------------------------------------------------------------------------------


def _copy_repo(fixture, el9, repo: str, dest: Path, arch: str = "x86_64") -> Path:
    shutil.copytree(fixture.repo_dir(el9.project_id, repo, arch, hashed=True), dest)
    return dest


def _names_missing(tree: Path) -> list[str]:
    if not (tree / "repodata" / "repomd.xml").is_file():
        return []
    return [r.href for r in read_repomd(tree) if not tree_path(tree, r.href).is_file()]


class StepChecker:
    """Wraps os.replace and Path.unlink: after every rename or removal, the tree's repomd.xml names only
    files that exist."""

    def __init__(self, monkeypatch, tree: Path):
        self.tree, self.steps, self.problems = tree, 0, []
        real_replace, real_unlink = os.replace, Path.unlink

        def replace(src, dst, *a, **kw):
            real_replace(src, dst, *a, **kw)
            self.check(f"rename {Path(dst).name}")

        def unlink(path, *a, **kw):
            real_unlink(path, *a, **kw)
            self.check(f"unlink {path.name}")

        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(Path, "unlink", unlink)

    def check(self, step: str) -> None:
        self.steps += 1
        missing = _names_missing(self.tree)
        if missing:
            self.problems.append(f"after {step}: repomd.xml names missing {missing}")


def test_the_swap_never_shows_a_repomd_naming_a_missing_file(fixture_buildsystem, el9, tmp_path, monkeypatch):
    tree = _copy_repo(fixture_buildsystem, el9, "AppStream", tmp_path / "tree")
    old_files = {p.name for p in (tree / "repodata").iterdir()}
    new = tmp_path / "new"
    (new / "repodata").mkdir(parents=True)
    subprocess.run(["createrepo_c", "-q", "--outputdir", str(new), "--general-compress-type=xz", str(tree)],
                   check=True)
    (tree / "repodata" / ".leftover.tmp").write_text("from a killed run")

    checker = StepChecker(monkeypatch, tree)
    result = swap_repodata(new, tree)
    monkeypatch.undo()

    assert checker.problems == [] and checker.steps >= 8
    assert (tree / "repodata" / "repomd.xml").read_bytes() == (new / "repodata" / "repomd.xml").read_bytes()
    # the build system's signature is not valid for the new repomd.xml: it went, as did the superseded files
    assert not (tree / "repodata" / "repomd.xml.asc").exists() and not result.signed
    now = {p.name for p in (tree / "repodata").iterdir()}
    assert now == {"repomd.xml"} | {Path(r.href).name for r in read_repomd(new)}
    assert sorted(result.removed) == sorted(old_files - now - {"repomd.xml.asc"})
    assert verify_repo(tree).ok

    again = swap_repodata(new, tree)  # a rerun: every data file is already there
    assert again.copied == 0 and again.unchanged == len(read_repomd(new)) and again.removed == []


def test_the_step_checker_catches_metadata_published_first(fixture_buildsystem, el9, tmp_path, monkeypatch):
    """The check above can fail: repomd.xml renamed in before its data files is caught."""
    tree = _copy_repo(fixture_buildsystem, el9, "AppStream", tmp_path / "tree")
    new = tmp_path / "new"
    (new / "repodata").mkdir(parents=True)
    subprocess.run(["createrepo_c", "-q", "--outputdir", str(new), "--general-compress-type=xz", str(tree)],
                   check=True)
    checker = StepChecker(monkeypatch, tree)
    shutil.copy2(new / "repodata" / "repomd.xml", tmp_path / "repomd.tmp")
    os.replace(tmp_path / "repomd.tmp", tree / "repodata" / "repomd.xml")
    assert checker.problems and "names missing" in checker.problems[0]


# --- the regeneration (real tools) ---------------------------------------------------------------


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


def _suffixes(tree: Path) -> dict[str, str]:
    return {r.type: Path(r.href).suffix for r in read_repomd(tree)}


@pytest.fixture
def trees(fixture_buildsystem, el9, tmp_path):
    """A staging AppStream x86_64 tree as a compose staged it (the build system's metadata, unsigned here:
    staged without a signing key), holding also an older build the build system no longer has (foo-data), and
    the same repo as just synced from the build system, which has a new build (libfoo, copied into staging by
    sync_to_staging) and no longer foo-data."""
    tree = _copy_repo(fixture_buildsystem, el9, "AppStream", tmp_path / "staging")
    (tree / "repodata" / "repomd.xml.asc").unlink()
    synced = _copy_repo(fixture_buildsystem, el9, "AppStream", tmp_path / "synced")
    base = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True)
    (synced / "Packages" / "f" / "foo-data-1.0-1.el9.noarch.rpm").unlink()
    for dest in (synced, tree):
        (dest / "Packages" / "l").mkdir(exist_ok=True)
        shutil.copy2(base / "Packages" / "l" / "libfoo-1.0-1.el9.x86_64.rpm", dest / "Packages" / "l")
    subprocess.run(["createrepo_c", "-q", "--update", "--keep-all-metadata", "--no-database", str(synced)],
                   check=True)
    return tree, synced


def _job(el9, tree: Path, synced: Path, scratch: Path, **kw) -> RepodataJob:
    return RepodataJob(tree=tree, synced=synced, scratch=scratch, label="AppStream x86_64 os",
                       distro=distro_tag(el9), comps_required=True, modules_required=True, **kw)


def test_regeneration_lists_every_package_and_keeps_groups_and_modules(el9, trees, tmp_path):
    tree, synced = trees
    upstream_modules = metadata_text(synced, ("modules",))
    compression = _suffixes(tree)
    lines = []
    result = regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"), log=lines.append)

    assert result.changed and not result.signed and result.packages == 3
    assert result.added == ["libfoo-0:1.0-1.el9.x86_64"]  # the only one the old metadata did not list
    assert {p.href for p in iter_packages(tree)} == {"Packages/f/foo-app-2.1-3.el9.x86_64.rpm",
                                                     "Packages/f/foo-data-1.0-1.el9.noarch.rpm",
                                                     "Packages/l/libfoo-1.0-1.el9.x86_64.rpm"}
    assert {"group", "modules"} <= set(result.metadata)
    assert metadata_text(tree, ("group",)) == metadata_text(synced, ("group",))
    assert _docs(metadata_text(tree, ("modules",))) == _docs(upstream_modules)
    # staging's compression is kept for every record it had (createrepo_c's default is another one)
    assert {t: x for t, x in _suffixes(tree).items() if t in compression} == compression
    assert not (tree / "repodata" / "repomd.xml.asc").exists()
    report = verify_repo(tree)
    assert report.ok and report.extra == []
    assert not (tmp_path / "scratch").exists()
    assert "1 packages not in staging's metadata" in lines[0] and "regenerating" in lines[0]
    assert "3 packages (1 new, 2 before)" in lines[1] and "not signed" in lines[1]


def test_a_tree_with_nothing_new_is_left_byte_identical(fixture_buildsystem, el9, tmp_path):
    """The build system's repo brings nothing staging's metadata lacks: no createrepo_c run, no new repomd.xml,
    the build system's signature stays (it is still valid: repomd.xml did not change)."""
    tree = _copy_repo(fixture_buildsystem, el9, "AppStream", tmp_path / "staging")
    synced = _copy_repo(fixture_buildsystem, el9, "AppStream", tmp_path / "synced")
    before = _digest(tree)
    lines = []
    result = regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"), log=lines.append)
    assert not result.changed and result.signed and result.added == [] and result.packages == 2
    assert _digest(tree) == before
    assert lines == ["AppStream x86_64 os: nothing new; metadata left as it is"]


def test_a_signed_tree_is_not_published_unsigned(fixture_buildsystem, el9, trees, tmp_path):
    """Staging's repomd.xml is signed and the run changes it: without a signing key nothing is published."""
    tree, synced = trees
    shutil.copy2(fixture_buildsystem.repo_dir(el9.project_id, "AppStream", "x86_64", hashed=True) / "repodata"
                 / "repomd.xml.asc", tree / "repodata")
    before = _digest(tree)
    with pytest.raises(UpdatesError, match=r"is signed .*changes it \(1 packages not in staging's metadata.*"
                                           r"set RELENG_REPO_SIGNING_KEY.*Staging is unchanged"):
        regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"))
    assert _digest(tree) == before


def test_regenerating_unchanged_input_publishes_nothing(el9, trees, tmp_path):
    tree, synced = trees
    regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"))
    before, inode = _digest(tree), (tree / "repodata" / "repomd.xml").stat().st_ino
    again = regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"))
    assert not again.changed and again.added == [] and again.packages == 3
    assert _digest(tree) == before and (tree / "repodata" / "repomd.xml").stat().st_ino == inode


def _signing_key(home: Path, name: str = "Test repo key") -> str:
    home.mkdir(mode=0o700, exist_ok=True)
    with agent_session(home):
        subprocess.run(["gpg", "--homedir", str(home), "--batch", "--passphrase", "", "--quick-gen-key",
                        f"{name} <repo@releng.invalid>", "rsa2048", "sign", "never"], check=True, capture_output=True)
    out = subprocess.run(["gpg", "--homedir", str(home), "--with-colons", "--list-keys", name], check=True,
                         capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


def _valid_signer(tree: Path, home: Path) -> str | None:
    repomd = tree / "repodata" / "repomd.xml"
    out = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--status-fd", "1", "--verify",
                          f"{repomd}.asc", str(repomd)], capture_output=True, text=True)
    return next((line.split()[-1] for line in out.stdout.splitlines() if line.startswith("[GNUPG:] VALIDSIG")), None)


def test_signed_then_a_new_key_then_no_key(el9, trees, tmp_path):
    tree, synced = trees
    home = tmp_path / "gnupg"
    key = _signing_key(home)
    assert signing_key_problem(key, home) is None
    assert "has no secret key" in signing_key_problem("0000DEADBEEF0000", home)

    signed = regenerate_repodata(_job(el9, tree, synced, tmp_path / "s1", signing_key=key, gnupghome=home))
    assert signed.changed and signed.signed and _valid_signer(tree, home) == key
    assert not regenerate_repodata(_job(el9, tree, synced, tmp_path / "s2", signing_key=key, gnupghome=home)).changed

    # A new key in the same keyring: the old signature still verifies, but it is not the configured key's, so
    # only the signature is replaced (repomd.xml and its data files stay as they are).
    metadata = {p.name: p.read_bytes() for p in (tree / "repodata").iterdir() if p.name != "repomd.xml.asc"}
    new_key = _signing_key(home, "Next repo key")
    rotated = regenerate_repodata(_job(el9, tree, synced, tmp_path / "s3", signing_key=new_key, gnupghome=home))
    assert rotated.changed and rotated.signed and _valid_signer(tree, home) == new_key
    assert {p.name: p.read_bytes() for p in (tree / "repodata").iterdir() if p.name != "repomd.xml.asc"} == metadata

    # No key, nothing new: the tree keeps its metadata and its signature.
    before = _digest(tree)
    unchanged = regenerate_repodata(_job(el9, tree, synced, tmp_path / "s4"))
    assert not unchanged.changed and unchanged.signed and _digest(tree) == before


def test_a_repo_that_must_have_groups_but_has_none_is_refused(fixture_buildsystem, el9, tmp_path):
    tree = _copy_repo(fixture_buildsystem, el9, "extras", tmp_path / "staging")
    synced = _copy_repo(fixture_buildsystem, el9, "extras", tmp_path / "synced")
    before = _digest(tree)
    with pytest.raises(UpdatesError, match=r"comps groups.*`comps: false`"):
        regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"))
    assert _digest(tree) == before
    job = _job(el9, tree, synced, tmp_path / "scratch")
    plain = RepodataJob(**{**job.__dict__, "comps_required": False, "modules_required": False})
    assert regenerate_repodata(plain).packages == 1


def test_an_unreadable_package_fails_and_staging_keeps_its_metadata(el9, trees, tmp_path):
    tree, synced = trees
    (tree / "Packages" / "x").mkdir()
    (tree / "Packages" / "x" / "broken-1-1.el9.x86_64.rpm").write_bytes(os.urandom(4096))
    before = _digest(tree)
    with pytest.raises(ToolError, match="createrepo_c exited"):
        regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"))
    assert _digest(tree) == before


def test_a_package_of_the_build_system_missing_from_staging_is_refused(el9, trees, tmp_path):
    tree, synced = trees
    (tree / "Packages" / "l" / "libfoo-1.0-1.el9.x86_64.rpm").unlink()
    before = _digest(tree)
    with pytest.raises(UpdatesError, match=r"not in .* after the staging sync.*libfoo"):
        regenerate_repodata(_job(el9, tree, synced, tmp_path / "scratch"))
    assert _digest(tree) == before
