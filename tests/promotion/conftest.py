"""Promotion test fixtures: staging and production under tmp roots (set through the RELENG_* settings),
an el9 staging tree copied from the fixture build system's signed repos, tree digests, and helpers
that change staging the way general_updates would (a new signed package version, new repodata)."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from releng.core.gpg import agent_session, copy_home
from releng.core.layout import ReleaseTrees
from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[2]
STAGED_REPOS = ("BaseOS", "AppStream")
STAGED_ARCHES = ("x86_64", "aarch64")


@dataclass
class Trees:
    staging_root: Path
    production_root: Path
    staging: Path      # the el9 release directory in staging (9.7-RC1)
    production: Path   # the el9 release directory in production (9.7)
    category: Path     # production's mirror/pub/rocky


@pytest.fixture
def trees(tmp_path, monkeypatch, el9) -> Trees:
    """Empty staging and production roots, exported as RELENG_* (approver: ``approver``)."""
    staging_root, production_root = tmp_path / "staging", tmp_path / "production"
    staging_root.mkdir()
    production_root.mkdir()
    monkeypatch.setenv("RELENG_STAGING_ROOT", str(staging_root))
    monkeypatch.setenv("RELENG_PRODUCTION_ROOT", str(production_root))
    monkeypatch.setenv("RELENG_APPROVERS", "approver")
    settings.cache_clear()
    rt = ReleaseTrees(el9, staging_root, production_root)
    yield Trees(staging_root, production_root, rt.staging_dir(True), rt.production_dir(), rt.production_category())
    settings.cache_clear()


@pytest.fixture(scope="session")
def fixture_iso(tmp_path_factory) -> Path:
    """A bootable x86_64 ISO with its media MD5 and BIOS and UEFI El Torito entries: the lorax stand-in's
    boot.iso (it boots to its ISOLINUX menu in QEMU), built once per session."""
    out = tmp_path_factory.mktemp("fixture-iso") / "lorax"
    subprocess.run([sys.executable, str(ROOT / "include" / "lorax" / "lorax-standin"), "--product=Rocky Linux",
                    "--version=9.7", "--release=9.7", "--isfinal", "--source=http://127.0.0.1:9/BaseOS/x86_64/os",
                    "--squashfs-only", "--variant=BaseOS", "--nomacboot", "--buildarch=x86_64",
                    "--volid=Rocky-9-7-x86_64-dvd", "--rootfs-size=4", str(out)],
                   check=True, capture_output=True, env={**os.environ, "SOURCE_DATE_EPOCH": "1715000000"})
    return out / "images" / "boot.iso"


def stage_el9(fixture, profile, dest: Path, iso_image: Path) -> Path:
    """Lay the fixture's hashed el9 repos out as a staged release: os, debug, source, kickstart, and a bootable
    ISO (``iso_image``) in isos/x86_64 with its CHECKSUM."""
    pid = profile.project_id
    for repo in STAGED_REPOS:
        for arch in STAGED_ARCHES:
            shutil.copytree(fixture.repo_dir(pid, repo, arch, hashed=True), dest / repo / arch / "os")
            shutil.copytree(fixture.repo_dir(pid, repo, arch, hashed=True, debug=True),
                            dest / repo / arch / "debug" / "tree")
        shutil.copytree(fixture.repo_dir(pid, repo, "src", hashed=True), dest / repo / "source" / "tree")
    # kickstart: the packages hard-linked to os/ (what perform_hardlink does), metadata copied
    os_tree, ks = dest / "BaseOS" / "x86_64" / "os", dest / "BaseOS" / "x86_64" / "kickstart"
    shutil.copytree(os_tree, ks, copy_function=os.link, ignore=shutil.ignore_patterns("repodata"))
    shutil.copytree(os_tree / "repodata", ks / "repodata")
    isos = dest / "isos" / "x86_64"
    isos.mkdir(parents=True)
    iso = isos / "Rocky-9.7-RC1-x86_64-boot.iso"
    shutil.copyfile(iso_image, iso)
    (isos / "CHECKSUM").write_text(f"SHA256 ({iso.name}) = {hashlib.sha256(iso.read_bytes()).hexdigest()}\n")
    (isos / "Rocky-9-latest-x86_64-boot.iso").symlink_to(iso.name)
    return dest


def change_checksum_file(trees: Trees) -> None:
    """A change to promote that still vets: a comment line added to isos/x86_64/CHECKSUM."""
    checksum = trees.staging / "isos" / "x86_64" / "CHECKSUM"
    checksum.write_text("# changed\n" + checksum.read_text())


@pytest.fixture
def staged(trees, fixture_buildsystem, el9, fixture_iso, monkeypatch) -> Trees:
    monkeypatch.setenv("RELENG_GPG_KEY_DIR", str(fixture_buildsystem.key_dir))  # vetting's install checks
    monkeypatch.setenv("RELENG_VETTING_BOOT_TIMEOUT", "60")
    settings.cache_clear()
    stage_el9(fixture_buildsystem, el9, trees.staging, fixture_iso)
    return trees


def tree_digest(root: Path, *, strict: bool = False) -> str:
    """Everything a mirror sees: names, types, modes, sizes, mtimes, content, link targets, hard-link groups.

    ``strict`` adds inode numbers and ctimes: equal only if nothing was rewritten, even with the same bytes.
    """
    h = hashlib.sha256()
    inodes: dict[int, str] = {}
    root = Path(root)
    if not root.exists():
        return "absent"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = os.lstat(path)
            fields = [rel, stat.filemode(st.st_mode), str(st.st_mtime_ns)]
            if stat.S_ISLNK(st.st_mode):
                fields.append(os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                fields += [str(st.st_size), hashlib.sha256(path.read_bytes()).hexdigest(),
                           inodes.setdefault(st.st_ino, rel)]
            if strict:
                fields += [str(st.st_ino), str(st.st_ctime_ns)]
            h.update("\0".join(fields).encode("utf-8", "surrogateescape") + b"\n")
    return h.hexdigest()


def fixture_signer(fixture, tmp_path: Path) -> tuple[Path, str]:
    """A private copy of the fixture key's GNUPGHOME and its fingerprint (the key that signed the repos)."""
    home = copy_home(fixture.root / "gnupg", tmp_path / "gnupg")
    with agent_session(home):  # listing secret keys starts an agent
        out = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-secret-keys"],
                             capture_output=True, text=True, check=True).stdout
    return home, next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


def sign_repomd(repo: Path, gnupghome: Path, fpr: str) -> None:
    with agent_session(gnupghome):
        subprocess.run(["gpg", "--homedir", str(gnupghome), "--batch", "--yes", "--quiet", "--local-user", fpr,
                        "--armor", "--detach-sign", "-o", str(repo / "repodata" / "repomd.xml.asc"),
                        str(repo / "repodata" / "repomd.xml")], check=True, capture_output=True)


def build_rpm(workdir: Path, name: str, version: str, *, gnupghome: Path, fpr: str) -> Path:
    """A tiny signed noarch RPM, built with rpmbuild like the fixture build system builds its packages."""
    top = workdir / f"rpmbuild-{name}-{version}"
    (top / "SPECS").mkdir(parents=True)
    spec = top / "SPECS" / f"{name}.spec"
    spec.write_text(textwrap.dedent(f"""\
        Name: {name}
        Version: {version}
        Release: 1.el9
        Summary: promotion test package
        License: MIT
        BuildArch: noarch
        %description
        Test package {name} {version}.
        %install
        mkdir -p %{{buildroot}}/usr/share/{name}
        echo {version} > %{{buildroot}}/usr/share/{name}/VERSION
        %files
        /usr/share/{name}/VERSION
        """))
    subprocess.run(["rpmbuild", "-bb", "--quiet", "--define", f"_topdir {top}", str(spec)], check=True,
                   capture_output=True)
    rpm = next((top / "RPMS" / "noarch").glob("*.rpm"))
    with agent_session(gnupghome):
        subprocess.run(["rpmsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {fpr}", "--addsign",
                        str(rpm)], check=True, capture_output=True, env={**os.environ, "GNUPGHOME": str(gnupghome)},
                       stdin=subprocess.DEVNULL)
    return rpm


def update_repo(repo: Path, rpms: list[Path], *, gnupghome: Path, fpr: str) -> None:
    """What general_updates does to a staged repo: add packages, ``createrepo_c --update`` keeping comps, sign."""
    for rpm in rpms:
        dest = repo / "Packages" / rpm.name[0].lower() / rpm.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rpm, dest)
    subprocess.run(["createrepo_c", "--quiet", "--update", "--keep-all-metadata", "--no-database", "--workers", "1",
                    "--checksum", "sha256", str(repo)], check=True, capture_output=True)
    sign_repomd(repo, gnupghome, fpr)


def new_release_key(home: Path) -> str:
    """A fresh ed25519 signing key in GnuPG home ``home`` (not the build system's); returns its fingerprint.

    The gpg-agent that makes the key is stopped before it returns.
    """
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch"]
    with agent_session(home):
        subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", "Release key (test) <release@releng.invalid>",
                        "ed25519", "sign", "never"], check=True, capture_output=True)
    out = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr:"))
