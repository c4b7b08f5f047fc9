"""Fixture build system: tiny real RPMs and real repodata laid out like Peridot's yumrepofs.

Part of the local stack, not of the product. For every release profile it
builds, with rpmbuild, a few small packages per repo and arch (a cross-repo
dependency, a /bin/sh provider, a noarch package, debuginfo and source
packages), signs them with a throwaway key, writes repodata with createrepo_c
(comps groups, modules where the profile says so) and signs ``repomd.xml``:

    <root>/http/v1/projects/<project_id>/repo/[hashed-]<Repo>/<arch>[-debug]   binary and debug repos
    <root>/http/v1/projects/<project_id>/repo/[hashed-]<Repo>/src              source repo
    <root>/keys/<key name from the profile>                                    the throwaway public key

A beta or lookahead profile of the same major, repos and arches as a stable one gets that release's packages:
its project directory is a link to the stable project's, so they are built once (:func:`package_source`).

``serve`` answers like yumrepofs: package downloads are 302 redirects to a blob
path, and faults (404/500 for a path prefix) can be switched on for tests.

    python -m dev.buildsystem build ROOT [--profile el9 ...]
    python -m dev.buildsystem serve ROOT --port 18080
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from releng.core.gpg import agent_session
from releng.core.profile import STABLE, ReleaseProfile, load_profile, profile_paths
from releng.core.repo.metadata import open_metadata
from releng.core.repo.repomd import read_repomd, tree_path

SOURCE_DATE_EPOCH = "1735689600"  # 2025-01-01: stable build times so rebuilt fixtures are comparable
KEY_UID = "Local stack fixture key (throwaway, NOT a distribution key) <fixture@releng.invalid>"
BLOB_PREFIX = "/_blobs"
FAULTS_PATH = "/_fixture/faults"
FIXTURE_VERSION = "3"  # bump when the generated content changes, so cached fixtures are rebuilt


@dataclass(frozen=True)
class Package:
    """One fixture package; ``arch`` is ``noarch`` or ``arch`` (built for each repo arch)."""

    name: str
    version: str = "1.0"
    release: str = "1"
    arch: str = "arch"
    requires: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    debuginfo: bool = False
    group: str | None = None


@dataclass
class RepoContent:
    """What one repo of one profile holds; ``spec`` names the source package."""

    spec: str
    packages: list[Package]
    comps: bool = False
    modules: bool = False


@dataclass
class Fixture:
    """What was built: the index a test or the stack reads (``fixture.json``)."""

    root: Path
    base_url_path: str = "/v1/projects"
    profiles: dict[str, dict] = field(default_factory=dict)

    @property
    def http_root(self) -> Path:
        return self.root / "http"

    @property
    def key_dir(self) -> Path:
        return self.root / "keys"

    def repo_dir(self, project_id: str, repo_id: str, arch: str, *, hashed: bool = False, debug: bool = False) -> Path:
        name = f"hashed-{repo_id}" if hashed else repo_id
        leaf = "src" if arch == "src" else f"{arch}-debug" if debug else arch
        return self.http_root / "v1" / "projects" / project_id / "repo" / name / leaf


def _run(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {result.returncode}): {' '.join(argv)}\n{result.stderr.strip()}")
    return result


# --- what the fixture contains -------------------------------------------------------------


def repo_contents(profile: ReleaseProfile, extra_packages: int = 0) -> dict[str, RepoContent]:
    """Packages per repo: BaseOS provides /bin/sh and libfoo, AppStream's foo-app needs them.

    ``extra_packages`` adds that many dependency-free ``<repo>-bulk-NNNN`` packages to every repo
    (for benchmarks that need a repo of realistic length; the default fixture has none).
    """
    major = str(profile.major)
    contents: dict[str, RepoContent] = {}
    for repo in profile.repos:
        spec = f"fixture-{repo.id.lower()}"
        deps = profile.repoclosure.get(repo.id, ())
        if repo.id == "BaseOS":
            pkgs = [
                Package(f"{profile.shortname.lower()}-release", arch="noarch", group="core",
                        provides=("system-release", f"system-release(releasever) = {major}")),
                Package("fixture-sh", provides=("/bin/sh",), group="core"),
                Package("libfoo", debuginfo=True, group="core"),
            ]
        elif repo.id == "AppStream":
            pkgs = [
                Package("foo-app", version="2.1", release="3", requires=("libfoo >= 1.0", "foo-data", "/bin/sh"),
                        debuginfo=True, group="foo-tools"),
                Package("foo-data", arch="noarch", group="foo-tools"),
            ]
        else:
            # Other repos need something from the first repo they may close against, so closure is exercised.
            requires = ("libfoo",) if "BaseOS" in deps else ()
            if "AppStream" in deps:
                requires += ("foo-app",)
            name = f"{repo.id.lower()}-tools"
            pkgs = [Package(name, requires=requires, debuginfo=True, group=repo.id.lower())]
        pkgs += [Package(f"{repo.id.lower()}-bulk-{i:04d}") for i in range(extra_packages)]
        contents[repo.id] = RepoContent(spec, pkgs, comps=repo.comps, modules=repo.modules)
    return contents


def _spec(content: RepoContent, profile: ReleaseProfile, version: str = "1.0", release: str = "1") -> str:
    """One spec per repo; the main package has no %files, so only the subpackages are built."""
    lines = [
        f"Name: {content.spec}", f"Version: {version}", f"Release: {release}%{{?dist}}", "License: MIT",
        f"Summary: Fixture packages for {profile.fullname} (local stack, not a real package)",
        "AutoReqProv: no", "%global debug_package %{nil}", "%description", "Fixture source package.",
    ]
    install = ["%install"]
    for pkg in content.packages:
        subs = [(pkg, pkg.name)] + ([(pkg, f"{pkg.name}-debuginfo")] if pkg.debuginfo else [])
        for owner, name in subs:
            lines += [f"%package -n {name}", f"Summary: Fixture package {name}",
                      f"Version: {owner.version}", f"Release: {owner.release}%{{?dist}}"]
            if owner.arch == "noarch":
                lines.append("BuildArch: noarch")
            if name == owner.name:
                lines += [f"Requires: {r}" for r in owner.requires]
                lines += [f"Provides: {p}" for p in owner.provides]
            lines += [f"%description -n {name}", f"Fixture package {name} of the local stack build system.",
                      f"%files -n {name}", f"/usr/share/fixture/{name}.txt"]
            content_line = f"{name} {owner.version}-{owner.release} fixture"
            install += ["mkdir -p %{buildroot}/usr/share/fixture",
                        f"echo '{content_line}' > %{{buildroot}}/usr/share/fixture/{name}.txt"]
    return "\n".join(lines + install + ["%changelog", "* Wed Jan 01 2025 Fixture <fixture@releng.invalid> - 1.0-1",
                                        "- fixture"]) + "\n"


def _comps(content: RepoContent, repo_id: str) -> str:
    groups: dict[str, list[str]] = {}
    for pkg in content.packages:
        groups.setdefault(pkg.group or repo_id.lower(), []).append(pkg.name)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">', "<comps>"]
    for gid, names in groups.items():
        out += ["  <group>", f"    <id>{gid}</id>", f"    <name>{gid} (fixture)</name>",
                f"    <description>Fixture group of {repo_id}</description>",
                "    <default>true</default>", "    <uservisible>true</uservisible>", "    <packagelist>"]
        out += [f'      <packagereq type="mandatory">{n}</packagereq>' for n in names]
        out += ["    </packagelist>", "  </group>"]
    if repo_id == "BaseOS":
        out += ["  <environment>", "    <id>minimal-environment</id>", "    <name>Minimal Install (fixture)</name>",
                "    <description>Fixture environment</description>", "    <display_order>1</display_order>",
                "    <grouplist>", "      <groupid>core</groupid>", "    </grouplist>", "  </environment>"]
    return "\n".join([*out, "</comps>"]) + "\n"


def _modules(content: RepoContent, repo_id: str, arch: str, dist: str) -> str:
    pkg = content.packages[0]
    return (_module_doc(pkg, repo_id, arch, dist) + "---\ndocument: modulemd-defaults\nversion: 1\ndata:\n"
            f"  module: {pkg.name}\n  stream: \"1\"\n  profiles:\n    \"1\": [common]\n...\n")


def _module_doc(pkg: Package, repo_id: str, arch: str, dist: str, module_version: int = 1) -> str:
    """The modulemd document of stream 1 of module ``pkg.name`` whose one artifact is ``pkg``."""
    pkg_arch = "noarch" if pkg.arch == "noarch" else arch
    return (
        "---\ndocument: modulemd\nversion: 2\ndata:\n"
        f"  name: {pkg.name}\n  stream: \"1\"\n  version: {module_version}\n  context: fixture0\n  arch: {arch}\n"
        f"  summary: Fixture module of {repo_id}\n  description: Fixture module.\n"
        "  license:\n    module: [MIT]\n"
        f"  profiles:\n    common:\n      rpms: [{pkg.name}]\n"
        f"  artifacts:\n    rpms:\n    - {pkg.name}-0:{pkg.version}-{pkg.release}.{dist}.{pkg_arch}\n...\n"
    )


# --- building ------------------------------------------------------------------------------


def _gen_key(gnupg: Path) -> str:
    gnupg.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    params = gnupg / "keyparams"
    params.write_text(f"%no-protection\nKey-Type: RSA\nKey-Length: 2048\nKey-Usage: sign\n"
                      f"Name-Real: {KEY_UID.split(' <')[0]}\nName-Email: fixture@releng.invalid\n"
                      "Expire-Date: 0\n%commit\n")
    _run(["gpg", "--batch", "--quiet", "--gen-key", str(params)], env=env)
    out = _run(["gpg", "--batch", "--list-keys", "--with-colons"], env=env).stdout
    return next(line.split(":")[9] for line in out.splitlines() if line.startswith("fpr"))


def _rpmbuild(spec: Path, topdir: Path, target: str | None, dist: str) -> list[Path]:
    out = topdir / (target or "src")
    argv = ["rpmbuild", "-bb" if target else "-bs", "--quiet", "--define", f"_topdir {topdir}",
            "--define", f"_rpmdir {out}", "--define", f"_srcrpmdir {out}", "--define", f"dist .{dist}",
            "--define", "use_source_date_epoch_as_buildtime 1", "--define", "clamp_mtime_to_source_date_epoch 1",
            "--define", "_buildhost fixture.releng.invalid", "--define", f"_builddir {topdir}/build-{target or 'src'}",
            "--define", f"_buildrootdir {topdir}/buildroot-{target or 'src'}"]
    if target:
        argv += ["--target", target]
    _run([*argv, str(spec)], env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH})
    return sorted(out.rglob("*.rpm"))


def _sign(rpms: list[Path], gnupg: Path, fpr: str) -> None:
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    for start in range(0, len(rpms), 200):
        _run(["rpmsign", "--define", "__gpg /usr/bin/gpg", "--define", f"_gpg_name {fpr}", "--addsign",
              *map(str, rpms[start:start + 200])], env=env, stdin=subprocess.DEVNULL)


def _rpm_arch(rpm: Path) -> str:
    return rpm.name.rsplit(".", 2)[-2]


def write_repo(repo: Path, rpms: Iterable[Path], *, hashed: bool, gnupg: Path, fpr: str,
               comps: str | None = None, modules: str | None = None) -> None:
    """Lay out Packages/ (first-letter subdirs when hashed), run createrepo_c, sign repomd.xml."""
    if repo.exists():
        shutil.rmtree(repo)
    _add_packages(repo, rpms, hashed=hashed)
    (repo / "Packages").mkdir(parents=True, exist_ok=True)
    _index_repo(repo, gnupg=gnupg, fpr=fpr, comps=comps, modules=modules)


def _add_packages(repo: Path, rpms: Iterable[Path], *, hashed: bool) -> None:
    pkgdir = repo / "Packages"
    for rpm in rpms:
        dest = pkgdir / rpm.name[0].lower() / rpm.name if hashed else pkgdir / rpm.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rpm, dest)


def _index_repo(repo: Path, *, gnupg: Path, fpr: str, comps: str | None = None, modules: str | None = None,
                updateinfo: str | None = None) -> None:
    """createrepo_c over ``repo`` (comps groups), then modules and updateinfo with modifyrepo_c; sign repomd.xml."""
    argv = ["createrepo_c", "--quiet", "--no-database", "--workers", "1", "--checksum", "sha256",
            "--revision", SOURCE_DATE_EPOCH]
    with tempfile.TemporaryDirectory(prefix="fixture-comps-") as tmp:
        if comps:
            groupfile = Path(tmp) / "comps.xml"  # createrepo_c names the group record after the file
            groupfile.write_text(comps)
            argv += ["--groupfile", str(groupfile)]
        _run([*argv, str(repo)])
    for mdtype, text, name in (("modules", modules, "modules.yaml"), ("updateinfo", updateinfo, "updateinfo.xml")):
        if text:
            with tempfile.TemporaryDirectory(prefix=f"fixture-{mdtype}-") as tmp:
                mfile = Path(tmp) / name  # modifyrepo_c names the record after the file
                mfile.write_text(text)
                _run(["modifyrepo_c", f"--mdtype={mdtype}", str(mfile), str(repo / "repodata")])
    _run(["gpg", "--batch", "--yes", "--quiet", "--local-user", fpr, "--armor", "--detach-sign",
          "-o", str(repo / "repodata" / "repomd.xml.asc"), str(repo / "repodata" / "repomd.xml")],
         env={**os.environ, "GNUPGHOME": str(gnupg)})


def _build_rpms(pool: ThreadPoolExecutor, tmp: Path, profiles: Sequence[ReleaseProfile],
                extra_packages: int = 0) -> dict[tuple, list[Path]]:
    """rpmbuild every repo's spec for each of its arches (binary) and once without (source)."""
    jobs = {}
    for p in profiles:
        for repo_id, content in repo_contents(p, extra_packages).items():
            top = tmp / p.name / repo_id
            (top / "SPECS").mkdir(parents=True)
            spec = top / "SPECS" / f"{content.spec}.spec"
            spec.write_text(_spec(content, p))
            for arch in (*p.repo_arches(repo_id), None):
                jobs[(p.name, repo_id, arch)] = pool.submit(_rpmbuild, spec, top, arch, p.disttag)
    return {key: job.result() for key, job in jobs.items()}


def _plan_repos(fixture: Fixture, profiles: Sequence[ReleaseProfile], built: dict[tuple, list[Path]],
                extra_packages: int = 0):
    """Yield (repo path, rpms, options) for every os, debug and source repo, plain and hashed; fill the index."""
    for p in profiles:
        index = fixture.profiles[p.name] = {"project_id": p.project_id, "repos": {}}
        for repo_id, content in repo_contents(p, extra_packages).items():
            listing = index["repos"][repo_id] = {}
            comps = _comps(content, repo_id) if content.comps else None
            for arch in (*p.repo_arches(repo_id), "src"):
                rpms = built[(p.name, repo_id, None if arch == "src" else arch)]
                binary = [r for r in rpms if "-debuginfo-" not in r.name and _rpm_arch(r) in (arch, "noarch", "src")]
                debug = [r for r in rpms if "-debuginfo-" in r.name]
                listing[arch] = sorted(r.name for r in binary)
                if arch != "src":
                    listing[f"{arch}-debug"] = sorted(r.name for r in debug)
                modules = _modules(content, repo_id, arch, p.disttag) if content.modules and arch != "src" else None
                for hashed in (False, True):
                    if arch == "src":
                        yield fixture.repo_dir(p.project_id, repo_id, arch, hashed=hashed), binary, {"hashed": hashed}
                        continue
                    yield (fixture.repo_dir(p.project_id, repo_id, arch, hashed=hashed), binary,
                           {"hashed": hashed, "comps": comps, "modules": modules})
                    yield (fixture.repo_dir(p.project_id, repo_id, arch, hashed=hashed, debug=True), debug,
                           {"hashed": hashed})


def _inputs_digest(profiles: Sequence[ReleaseProfile], extra_packages: int = 0) -> str:
    h = hashlib.sha256(FIXTURE_VERSION.encode())
    if extra_packages:
        h.update(f"extra_packages={extra_packages}".encode())
    h.update(Path(__file__).read_bytes())
    for p in profiles:
        h.update(p.path.read_bytes())
    return h.hexdigest()


def build(root: Path, profiles: Sequence[ReleaseProfile], *, log=print, extra_packages: int = 0) -> Fixture:
    """Build (or reuse, when the inputs are unchanged) the fixture build system under ``root``.

    ``extra_packages``: bulk packages added to every repo (see :func:`repo_contents`); 0 is the fixture.
    """
    root = Path(root).resolve()
    fixture = Fixture(root)
    index = root / "fixture.json"
    digest = _inputs_digest(profiles, extra_packages)
    if index.is_file():
        data = json.loads(index.read_text())
        if data.get("digest") == digest:
            fixture.profiles = data["profiles"]
            log(f"fixture build system: reusing {root} ({len(fixture.profiles)} profiles)")
            return fixture
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    gnupg = root / "gnupg"
    gnupg.mkdir(mode=0o700)
    with agent_session(gnupg):  # gpg and rpmsign start an agent for the key; stopped when the build ends
        _build(fixture, gnupg, profiles, extra_packages, log)
    index.write_text(json.dumps({"digest": digest, "profiles": fixture.profiles}, indent=1, sort_keys=True))
    return fixture


def package_source(profile: ReleaseProfile, profiles: Sequence[ReleaseProfile]) -> ReleaseProfile | None:
    """The stable profile whose packages a beta or lookahead ``profile`` serves (same major, repos and arches
    within its arches), or None when it gets packages of its own."""
    if profile.channel == STABLE or profile.sig:
        return None
    for other in profiles:
        if (other.channel == STABLE and not other.sig and other.major == profile.major and other.repos == profile.repos
                and set(profile.arches) <= set(other.arches)):
            return other
    return None


def _build(fixture: Fixture, gnupg: Path, profiles: Sequence[ReleaseProfile], extra_packages: int, log) -> None:
    """The key, the packages (built and signed) and the repos of a new fixture."""
    fpr = _gen_key(gnupg)
    pub = _run(["gpg", "--batch", "--armor", "--export", fpr], env={**os.environ, "GNUPGHOME": str(gnupg)}).stdout
    fixture.key_dir.mkdir()
    (fixture.key_dir / "README").write_text(
        "Throwaway public key of the local stack's fixture build system. It is stored under the key\n"
        "file names the release profiles list, so that signature checks run for real. NOT a distribution key.\n")
    for p in profiles:
        for name in p.gpg_keys:
            (fixture.key_dir / name).write_text(pub)

    sources = {p.name: package_source(p, profiles) for p in profiles}
    own = [p for p in profiles if sources[p.name] is None]
    workers = os.cpu_count() or 2
    with tempfile.TemporaryDirectory(prefix="fixture-rpmbuild-") as tmp, ThreadPoolExecutor(workers) as pool:
        built = _build_rpms(pool, Path(tmp), own, extra_packages)
        _sign([rpm for rpms in built.values() for rpm in rpms], gnupg, fpr)
        log(f"fixture build system: built and signed {sum(len(r) for r in built.values())} packages")
        repos = list(_plan_repos(fixture, own, built, extra_packages))
        for job in [pool.submit(write_repo, path, rpms, gnupg=gnupg, fpr=fpr, **kw) for path, rpms, kw in repos]:
            job.result()
    for p in profiles:
        source = sources[p.name]
        if source is not None:  # the same repos under the profile's own project id
            project = fixture.http_root / "v1" / "projects" / p.project_id
            project.symlink_to(source.project_id, target_is_directory=True)
            fixture.profiles[p.name] = {"project_id": p.project_id, "repos": fixture.profiles[source.name]["repos"]}
            log(f"fixture build system: {p.name} ({p.channel}) serves {source.name}'s packages")
    log(f"fixture build system: wrote {len(repos)} repos under {fixture.http_root}")


def load(root: Path) -> Fixture:
    """The index of an already built fixture."""
    data = json.loads((Path(root) / "fixture.json").read_text())
    return Fixture(Path(root).resolve(), profiles=data["profiles"])


def publish_update(root: Path, profile: ReleaseProfile, repo_id: str, package_name: str, version: str,
                   release: str, *, advisory: str | None = None) -> list[str]:
    """Publish a new build of a fixture package into a built fixture, as the build system does for an update.

    The package keeps its relations; it is built with rpmbuild (from its own source package), signed with
    the fixture key and added to every arch, debug and source repo of ``repo_id``, plain and hashed, next
    to the builds already there. Each repo's metadata is rewritten with its comps groups; for the package
    a repo's module lists, a new module version naming the build is added; ``advisory`` (an id such as
    ``RLBA-2025:0001``) adds an updateinfo entry for it. Returns the file names added.
    """
    fixture = load(root)
    content = repo_contents(profile)[repo_id]
    old = next((p for p in content.packages if p.name == package_name), None)
    if old is None:
        raise ValueError(f"{repo_id} of the {profile.name} fixture has no package {package_name!r}; it has "
                         f"{', '.join(p.name for p in content.packages)}")
    pkg = replace(old, version=version, release=release)
    gnupg = fixture.root / "gnupg"
    with agent_session(gnupg):  # signing starts an agent for the key; stopped when the update is published
        added = _publish(fixture, gnupg, profile, repo_id, content, pkg, advisory)
    index = fixture.root / "fixture.json"
    data = json.loads(index.read_text())
    data["profiles"] = fixture.profiles
    index.write_text(json.dumps(data, indent=1, sort_keys=True))
    return sorted(added)


def _publish(fixture: Fixture, gnupg: Path, profile: ReleaseProfile, repo_id: str, content: RepoContent,
             pkg: Package, advisory: str | None) -> set[str]:
    """Build and sign ``pkg``, add it to every repo of ``repo_id`` and rewrite their metadata; the files added."""
    fpr = _fingerprint(gnupg)
    update = RepoContent(f"fixture-update-{pkg.name}", [pkg])
    listing = fixture.profiles[profile.name]["repos"][repo_id]
    added: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="fixture-update-") as tmp:
        top = Path(tmp)
        (top / "SPECS").mkdir()
        spec = top / "SPECS" / f"{update.spec}.spec"
        spec.write_text(_spec(update, profile, pkg.version, pkg.release))
        built = {arch: _rpmbuild(spec, top, None if arch == "src" else arch, profile.disttag)
                 for arch in (*profile.repo_arches(repo_id), "src")}
        _sign([rpm for rpms in built.values() for rpm in rpms], gnupg, fpr)
        for arch, rpms in built.items():
            binary = [r for r in rpms if "-debuginfo-" not in r.name and _rpm_arch(r) in (arch, "noarch", "src")]
            debug = [r for r in rpms if "-debuginfo-" in r.name]
            for is_debug, files in ((False, binary), (True, debug)):
                if not files:
                    continue
                key = f"{arch}-debug" if is_debug else arch
                listing[key] = sorted({*listing[key], *(r.name for r in files)})
                added.update(r.name for r in files)
                for hashed in (False, True):
                    repo = fixture.repo_dir(profile.project_id, repo_id, arch, hashed=hashed, debug=is_debug)
                    _add_packages(repo, files, hashed=hashed)
                    extra = {}
                    if not is_debug and arch != "src":
                        extra = _updated_metadata(repo, content, pkg, repo_id, arch, profile.disttag, advisory, files)
                    _index_repo(repo, gnupg=gnupg, fpr=fpr, **extra)
    return added


def _fingerprint(gnupg: Path) -> str:
    out = _run(["gpg", "--batch", "--list-secret-keys", "--with-colons"], env={**os.environ, "GNUPGHOME": str(gnupg)})
    return next(line.split(":")[9] for line in out.stdout.splitlines() if line.startswith("fpr"))


def _current_metadata(repo: Path, mdtype: str) -> str | None:
    record = next((r for r in read_repomd(repo) if r.type == mdtype), None)
    if record is None:
        return None
    with open_metadata(tree_path(repo, record.href)) as f:
        return f.read().decode()


def _updated_metadata(repo: Path, content: RepoContent, pkg: Package, repo_id: str, arch: str, dist: str,
                      advisory: str | None, files: list[Path]) -> dict[str, str | None]:
    """comps, modules and updateinfo of an os repo after ``pkg`` was added to it."""
    modules = _current_metadata(repo, "modules")
    if modules and content.packages[0].name == pkg.name:
        modules += _module_doc(pkg, repo_id, arch, dist, modules.count("document: modulemd\n") + 1)
    updateinfo = _current_metadata(repo, "updateinfo")
    if advisory:
        entries = "".join(
            f'        <package name="{pkg.name}" version="{pkg.version}" release="{pkg.release}.{dist}" epoch="0" '
            f'arch="{_rpm_arch(f)}"><filename>{f.name}</filename></package>\n' for f in files)
        entry = (f'  <update from="fixture@releng.invalid" status="final" type="bugfix" version="2">\n'
                 f"    <id>{advisory}</id>\n    <title>{pkg.name} bug fix update (fixture)</title>\n"
                 f'    <issued date="2025-01-02 00:00:00"/>\n    <updated date="2025-01-02 00:00:00"/>\n'
                 f"    <severity>None</severity>\n    <summary>Fixture advisory</summary>\n"
                 f"    <description>Fixture advisory for {pkg.name}.</description>\n    <references/>\n"
                 f'    <pkglist>\n      <collection short="{dist}">\n        <name>{dist}</name>\n{entries}'
                 "      </collection>\n    </pkglist>\n  </update>\n")
        empty = '<?xml version="1.0" encoding="UTF-8"?>\n<updates>\n'
        head = updateinfo.rsplit("</updates>", 1)[0] if updateinfo else empty
        updateinfo = head + entry + "</updates>\n"
    return {"comps": _comps(content, repo_id) if content.comps else None, "modules": modules,
            "updateinfo": updateinfo}


# --- serving -------------------------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Static files with yumrepofs' package redirects and switchable faults."""

    server: BuildSystemServer

    def log_message(self, format: str, *args) -> None:
        if self.server.access_log:
            self.server.access_log.write(f"{self.command} {self.path} {args[1] if len(args) > 1 else ''}\n")
            self.server.access_log.flush()

    def _fault(self, path: str) -> int | None:
        for prefix, status in self.server.faults.items():
            if path.startswith(prefix):
                return status
        return None

    def _route(self) -> bool:
        path = unquote(urlsplit(self.path).path)
        status = self._fault(path)
        if status:
            self.send_error(status, f"fault injected for {path}")
            return False
        if path.endswith(".rpm") and not path.startswith(BLOB_PREFIX):
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", BLOB_PREFIX + path)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        if path.startswith(BLOB_PREFIX):
            self.path = self.path[len(BLOB_PREFIX):]
        return True

    def do_GET(self) -> None:
        if self._route():
            super().do_GET()

    def do_HEAD(self) -> None:
        if self._route():
            super().do_HEAD()

    def do_PUT(self) -> None:
        """``PUT /_fixture/faults`` with ``{"/path/prefix": 500}`` (or ``{}``) sets the faults."""
        if urlsplit(self.path).path != FAULTS_PATH:
            self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)
            return
        faults = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.server.faults = {str(k): int(v) for k, v in faults.items()}
        body = json.dumps(self.server.faults).encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class BuildSystemServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str = "127.0.0.1", port: int = 0, access_log=None):
        self.faults: dict[str, int] = {}
        self.access_log = access_log
        directory = str(Path(root) / "http")
        super().__init__((host, port), lambda *a: _Handler(*a, directory=directory))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> BuildSystemServer:
        threading.Thread(target=self.serve_forever, daemon=True, name="fixture-build-system").start()
        return self


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.buildsystem", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the fixture repos")
    b.add_argument("root", type=Path)
    b.add_argument("--config-dir", type=Path, default=Path(__file__).resolve().parents[1] / "config" / "releases")
    b.add_argument("--profile", action="append", help="profile name (default: every profile in the config dir)")
    b.add_argument("--extra-packages", type=int, default=0, help="bulk packages added to every repo (benchmarks)")
    s = sub.add_parser("serve", help="serve a built fixture over HTTP")
    s.add_argument("root", type=Path)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=18080)
    args = parser.parse_args(argv)
    if args.cmd == "build":
        paths = profile_paths(args.config_dir)
        profiles = [load_profile(p) for p in paths if not args.profile or p.stem in args.profile]
        build(args.root, profiles, extra_packages=args.extra_packages)
        return 0
    server = BuildSystemServer(args.root, args.host, args.port, access_log=sys.stdout)
    print(f"fixture build system serving {args.root / 'http'} at {server.url}/v1/projects", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
