"""Scale fixture: a build system holding a release of the size of a real Rocky Linux 9 point release.

The fixture build system (dev/buildsystem.py) builds a handful of packages per repo with rpmbuild;
this one builds what a point release has: every repo and arch of the profile with per-arch package
counts in the order of Rocky 9's (BaseOS ~1,100, AppStream ~5,500, CRB ~2,000, the rest smaller), a
debug tree (a ``-debuginfo`` per arch package and a ``-debugsource`` per source package) and a
source tree per repo, comps groups and modules. Packages have realistic names, relations and
file lists (binaries, libraries, headers, Python modules, documentation, locales; a few packages
with thousands of files) so that filelists metadata has the size of a real release; payloads are
tiny. The RPM files are real and signed (dev/rpmfile.py writes them, ``rpm -K`` checks them),
the metadata is createrepo_c's (comps with ``--groupfile``, modules with modifyrepo_c), and
``repomd.xml`` is signed with gpg, as the fixture build system does.

Noarch packages are written once per repo and hard-linked into every arch's tree. The hashed
layout (``hashed-<Repo>``, ``Packages/<letter>/``) is written; the plain name is a symlink to it.
The result is cached under ``root`` by a digest of its inputs: a rerun with the same inputs returns
at once. Served with ``python -m dev.buildsystem serve ROOT``.

    python -m dev.scale build [ROOT] [--scale 1.0] [--files-scale 1.0] [--arches x86_64 ...]

Not part of CI (it takes minutes); the benchmarks in bench/scale.py use it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from dev.buildsystem import Fixture, _gen_key, _run
from dev.rpmfile import SENSE_EQUAL, RpmFile, RpmSpec, SigningKey, build_rpm
from releng.core.gpg import agent_session
from releng.core.profile import ReleaseProfile, load_profile

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = ROOT / ".stack" / "scale"
SCALE_VERSION = "1"  # bump when the generated content changes (the cache key: not the source files' bytes)
BUILDTIME = 1735689600
REVISION = str(BUILDTIME)

# Binary packages per arch in each repo's os tree (Rocky Linux 9.x x86_64, rounded).
PACKAGES_PER_ARCH = {"BaseOS": 1100, "AppStream": 5500, "CRB": 2000, "HighAvailability": 150,
                     "ResilientStorage": 170, "RT": 120, "NFV": 130, "SAP": 12, "SAPHANA": 10, "extras": 70,
                     "plus": 30, "all": 600}
OTHER_REPO_PACKAGES = 50  # a repo of a profile not in the table above
MODULE_STREAMS = {"AppStream": 60, "CRB": 8}
CORE_SOURCES = 40  # BaseOS's first sources: what other repos' packages require
_SYLLABLES = ("ac", "al", "an", "ar", "ba", "be", "bi", "bo", "ca", "ce", "ci", "co", "da", "de", "di", "do", "el",
              "en", "er", "es", "fa", "fe", "fi", "fo", "ga", "ge", "gi", "go", "ha", "he", "hi", "ho", "id", "il",
              "in", "io", "ja", "ka", "ke", "ki", "ko", "la", "le", "li", "lo", "lu", "ma", "me", "mi", "mo", "mu",
              "na", "ne", "ni", "no", "nu", "or", "pa", "pe", "pi", "po", "ra", "re", "ri", "ro", "ru", "sa", "se",
              "si", "so", "su", "ta", "te", "ti", "to", "tu", "ul", "un", "ur", "va", "ve", "vi", "vo", "xa", "xe",
              "yo", "za", "ze", "zi", "zo")
_LANGS = ("af", "ar", "as", "be", "bg", "bn", "ca", "cs", "da", "de", "el", "en_GB", "es", "et", "eu", "fa", "fi",
          "fr", "gl", "gu", "he", "hi", "hr", "hu", "id", "it", "ja", "kn", "ko", "lt", "lv", "ml", "mr", "nb", "nl",
          "or", "pa", "pl", "pt", "pt_BR", "ro", "ru", "sk", "sl", "sr", "sv", "ta", "te", "th", "tr", "uk", "vi",
          "zh_CN", "zh_TW")


@dataclass(frozen=True)
class Binary:
    """One binary package of a source package; ``noarch`` ones are shared by every arch."""

    name: str
    kind: str  # main, libs, devel, python, doc, data, tools
    noarch: bool
    files: int
    requires: tuple[str, ...]
    provides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Source:
    stem: str
    version: str
    release: str
    binaries: tuple[Binary, ...]


def _file_count(rng: random.Random, kind: str, files_scale: float) -> int:
    """Files in one package: most have a few dozen, a few thousands (a heavy tail, like a real release)."""
    base = {"main": 12, "libs": 4, "devel": 25, "python": 60, "doc": 40, "data": 50, "tools": 8}[kind]
    count = int(base * rng.lognormvariate(0, 1.1))
    if rng.random() < 0.01:
        count += rng.randint(1000, 6000)
    return max(1, int(count * files_scale))


def release_plan(profile: ReleaseProfile, repo_id: str, scale: float, files_scale: float) -> list[Source]:
    """The source packages of one repo, with their binaries (deterministic for the same arguments)."""
    rng = random.Random(f"{profile.name}:{repo_id}:{SCALE_VERSION}")
    target = max(1, round(PACKAGES_PER_ARCH.get(repo_id, OTHER_REPO_PACKAGES) * scale))
    prefix = "" if repo_id in ("BaseOS", "AppStream") else f"{repo_id.lower()}-"
    core = [] if repo_id in ("BaseOS", "all") else _core_names(profile, scale, files_scale)
    sources: list[Source] = []
    seen: set[str] = set()
    count = 0
    while count < target:
        stem = prefix + "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if stem in seen:
            stem = f"{stem}{len(sources)}"
        seen.add(stem)
        version = f"{rng.randint(0, 12)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}"
        release = f"{rng.randint(1, 20)}.el{profile.major}"
        extra = rng.sample(("libs", "devel", "python", "doc", "data", "tools"), rng.choice((0, 1, 1, 2, 3)))
        kinds = ["main", *extra]
        binaries = []
        for kind in kinds[: target - count]:
            name = {"main": stem, "python": f"python3-{stem}"}.get(kind, f"{stem}-{kind}")
            requires: list[str] = []
            if kind != "main":
                requires.append(stem)
            if core and kind in ("main", "tools"):
                requires += rng.sample(core, min(len(core), rng.randint(1, 3)))
            if kind in ("main", "tools") and rng.random() < 0.3 and repo_id != "all":
                requires.append("/bin/sh")
            provides = ("/bin/sh",) if repo_id == "BaseOS" and not sources and kind == "main" else ()
            binaries.append(Binary(name, kind, kind in ("doc", "data", "python") or rng.random() < 0.1,
                                   _file_count(rng, kind, files_scale), tuple(requires), provides))
        count += len(binaries)
        sources.append(Source(stem, version, release, tuple(binaries)))
    return sources


def _core_names(profile: ReleaseProfile, scale: float, files_scale: float) -> list[str]:
    return [s.stem for s in release_plan(profile, "BaseOS", scale, files_scale)[:CORE_SOURCES]]


def _paths(binary: Binary, source: Source, arch: str) -> Iterator[tuple[str, bool]]:
    """(path, is_directory) of a binary package's files."""
    stem, n = source.stem, binary.files
    lib = "/usr/lib64" if arch in ("x86_64", "aarch64", "ppc64le", "s390x") else "/usr/lib"
    if binary.kind == "main":
        yield f"/usr/share/doc/{binary.name}", True
        yield f"/usr/share/licenses/{binary.name}/LICENSE", False
        for i in range(n - 1):
            yield (f"/usr/bin/{stem}{'' if i == 0 else f'-{i}'}" if i % 4 == 0 else
                   f"/usr/share/man/man{1 + i % 8}/{stem}-{i}.{1 + i % 8}.gz" if i % 4 == 1 else
                   f"/usr/share/doc/{binary.name}/{('README', 'NEWS', 'AUTHORS', 'ChangeLog')[i % 4]}.{i}" if i % 4 == 2
                   else f"/usr/share/locale/{_LANGS[i % len(_LANGS)]}/LC_MESSAGES/{stem}-{i}.mo"), False
    elif binary.kind == "libs":
        for i in range(n):
            yield f"{lib}/lib{stem}{i or ''}.so.{i % 7}.{i % 13}.0", False
    elif binary.kind == "devel":
        yield f"/usr/include/{stem}", True
        yield f"{lib}/pkgconfig/{stem}.pc", False
        for i in range(n - 1):
            yield f"/usr/include/{stem}/{f'sub{i // 50}/' if i >= 50 else ''}{stem}_{i}.h", False
    elif binary.kind == "python":
        site = f"/usr/lib/python3.9/site-packages/{stem.replace('-', '_')}"
        yield site, True
        for i in range(n):
            module = f"{site}/{f'm{i // 30}/' if i >= 30 else ''}mod_{i}"
            yield (f"{module}.py" if i % 3 == 0 else f"{module}.cpython-39.pyc" if i % 3 == 1
                   else f"{module}.cpython-39.opt-1.pyc"), False
    elif binary.kind == "doc":
        yield f"/usr/share/doc/{binary.name}/html", True
        for i in range(n):
            yield f"/usr/share/doc/{binary.name}/html/{'api/' if i % 2 else ''}page_{i}.html", False
    elif binary.kind == "data":
        yield f"/usr/share/{stem}", True
        for i in range(n):
            yield f"/usr/share/{stem}/{('icons', 'themes', 'data', 'templates')[i % 4]}/{i // 40}/item_{i}.dat", False
    else:
        for i in range(n):
            yield f"/usr/libexec/{stem}/{stem}-helper-{i}", False


def _changelog(source: Source) -> list[tuple[int, str, str]]:
    return [(BUILDTIME - 86400 * 30 * i, f"Release Engineering <releng@fixture.invalid> - {source.version}-{i + 1}",
             f"- Rebuilt for the fixture ({i + 1})") for i in range(3)]


def _binary_spec(binary: Binary, source: Source, arch: str) -> RpmSpec:
    content = f"{binary.name} {source.version}-{source.release} scale fixture\n".encode()
    files = [RpmFile(path, b"" if is_dir else content, is_dir) for path, is_dir in _paths(binary, source, arch)]
    requires = [(r, 0, "") for r in binary.requires if r != source.stem]
    if source.stem in binary.requires:
        requires.append((source.stem, SENSE_EQUAL, f"{source.version}-{source.release}"))
    return RpmSpec(binary.name, source.version, source.release, "noarch" if binary.noarch else arch,
                   f"{binary.kind} package {binary.name} (scale fixture)",
                   f"The {binary.kind} part of {source.stem}, generated for the scale fixture. "
                   "Tiny payload, real header.", files, sourcerpm=_srpm_name(source), requires=requires,
                   provides=[(p, 0, "") for p in binary.provides], changelog=_changelog(source), buildtime=BUILDTIME)


def _debug_specs(source: Source, arch: str) -> list[RpmSpec]:
    content = f"{source.stem} debug data\n".encode()
    evr = f"{source.version}-{source.release}"
    specs = []
    for binary in source.binaries:
        if binary.noarch:
            continue
        build_id = hashlib.sha1(f"{binary.name}{arch}".encode()).hexdigest()
        files = [RpmFile(f"/usr/lib/debug/usr/bin/{binary.name}-{evr}.{arch}.debug", content)]
        files += [RpmFile(f"/usr/lib/debug/.build-id/{build_id[:2]}/{build_id[2:]}{i}.debug", content)
                  for i in range(1 + binary.files // 10)]
        specs.append(RpmSpec(f"{binary.name}-debuginfo", source.version, source.release, arch,
                             f"Debug information for {binary.name}", "Debug information (scale fixture).", files,
                             sourcerpm=_srpm_name(source),
                             requires=[(f"{source.stem}-debugsource", SENSE_EQUAL, evr)], buildtime=BUILDTIME))
    if specs:
        files = [RpmFile(f"/usr/src/debug/{source.stem}-{evr}.{arch}/src/file_{i}.c", content)
                 for i in range(5 + sum(b.files for b in source.binaries) // 4)]
        specs.append(RpmSpec(f"{source.stem}-debugsource", source.version, source.release, arch,
                             f"Debug sources for {source.stem}", "Debug sources (scale fixture).", files,
                             sourcerpm=_srpm_name(source), buildtime=BUILDTIME))
    return specs


def _srpm_name(source: Source) -> str:
    return f"{source.stem}-{source.version}-{source.release}.src.rpm"


def _source_spec(source: Source) -> RpmSpec:
    files = [RpmFile(f"{source.stem}.spec", f"Name: {source.stem}\n".encode()),
             RpmFile(f"{source.stem}-{source.version}.tar.gz", source.stem.encode())]
    return RpmSpec(source.stem, source.version, source.release, "src", f"Source of {source.stem}",
                   "Source package (scale fixture).", files, changelog=_changelog(source), buildtime=BUILDTIME)


# --- writing -------------------------------------------------------------------------------


def _hashed_path(repo: Path, filename: str) -> Path:
    return repo / "Packages" / filename[0].lower() / filename


def _write(repo: Path, spec: RpmSpec, key: SigningKey) -> None:
    dest = _hashed_path(repo, spec.filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(build_rpm(spec, key))
    os.utime(dest, (BUILDTIME, BUILDTIME))


def _link(pool: Path, repo: Path, filename: str) -> None:
    dest = _hashed_path(repo, filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.link(_hashed_path(pool, filename), dest)


def _comps(sources: Sequence[Source], repo_id: str) -> str:
    names = [b.name for s in sources for b in s.binaries]
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<!DOCTYPE comps PUBLIC "-//Red Hat, Inc.//DTD Comps info//EN" "comps.dtd">', "<comps>"]
    groups = []
    for start in range(0, len(names), 40):
        gid = f"{repo_id.lower()}-group-{start // 40:03d}"
        groups.append(gid)
        out += ["  <group>", f"    <id>{gid}</id>", f"    <name>{repo_id} group {start // 40}</name>",
                f"    <description>Scale fixture group of {repo_id}</description>", "    <default>false</default>",
                "    <uservisible>true</uservisible>", "    <packagelist>"]
        out += [f'      <packagereq type="{"mandatory" if i % 3 else "default"}">{n}</packagereq>'
                for i, n in enumerate(names[start:start + 40])]
        out += ["    </packagelist>", "  </group>"]
    if repo_id == "BaseOS":
        out += ["  <environment>", "    <id>minimal-environment</id>", "    <name>Minimal Install</name>",
                "    <description>Scale fixture environment</description>", "    <display_order>1</display_order>",
                "    <grouplist>", *[f"      <groupid>{g}</groupid>" for g in groups[:5]], "    </grouplist>",
                "  </environment>"]
    return "\n".join([*out, "</comps>"]) + "\n"


def _modules(sources: Sequence[Source], repo_id: str, arch: str) -> str | None:
    streams = MODULE_STREAMS.get(repo_id, 0)
    if not streams:
        return None
    docs = []
    step = max(1, len(sources) // max(1, streams))
    for i, source in enumerate(sources[::step][:streams]):
        artifacts = [f"    - {b.name}-0:{source.version}-{source.release}.{'noarch' if b.noarch else arch}"
                     for b in source.binaries]
        docs.append(
            "---\ndocument: modulemd\nversion: 2\ndata:\n"
            f"  name: {source.stem}\n  stream: \"{i % 3 + 1}\"\n  version: 90{i:05d}\n  context: 9edba152\n"
            f"  arch: {arch}\n  summary: Module {source.stem}\n  description: Scale fixture module.\n"
            f"  license:\n    module: [MIT]\n  profiles:\n    common:\n      rpms: [{source.stem}]\n"
            "  artifacts:\n    rpms:\n" + "\n".join(artifacts) + "\n...\n"
            f"---\ndocument: modulemd-defaults\nversion: 1\ndata:\n  module: {source.stem}\n"
            f"  stream: \"{i % 3 + 1}\"\n  profiles:\n    \"{i % 3 + 1}\": [common]\n...\n")
    return "".join(docs)


def _index(repo: Path, gnupg: Path, fpr: str, comps: str | None = None, modules: str | None = None) -> None:
    """createrepo_c (comps as the group file), modules with modifyrepo_c, repomd.xml signed with gpg."""
    argv = ["createrepo_c", "--quiet", "--no-database", "--workers", "2", "--checksum", "sha256",
            "--revision", REVISION]
    with tempfile.TemporaryDirectory(prefix="scale-md-") as tmp:
        if comps:
            (Path(tmp) / "comps.xml").write_text(comps)
            argv += ["--groupfile", str(Path(tmp) / "comps.xml")]
        _run([*argv, str(repo)])
        if modules:
            (Path(tmp) / "modules.yaml").write_text(modules)
            _run(["modifyrepo_c", "--mdtype=modules", str(Path(tmp) / "modules.yaml"), str(repo / "repodata")])
    _run(["gpg", "--batch", "--yes", "--quiet", "--local-user", fpr, "--armor", "--detach-sign",
          "-o", str(repo / "repodata" / "repomd.xml.asc"), str(repo / "repodata" / "repomd.xml")],
         env={**os.environ, "GNUPGHOME": str(gnupg)})


@dataclass(frozen=True)
class Job:
    profile_path: str
    repo_id: str
    arch: str  # an arch, "src", or "noarch" (the repo's shared noarch pool)
    scale: float
    files_scale: float
    root: str
    secret_key: bytes
    gnupg: str
    fpr: str


def _fixture(job: Job) -> tuple[Fixture, ReleaseProfile]:
    return Fixture(Path(job.root)), load_profile(Path(job.profile_path))


def _pool_dir(job: Job) -> Path:
    return Path(job.root) / "pool" / job.repo_id


def run_job(job: Job) -> dict:
    """Write one tree (or a repo's noarch pool) and index it; returns counts for the log and the index."""
    fixture, profile = _fixture(job)
    key = SigningKey(job.secret_key)
    sources = release_plan(profile, job.repo_id, job.scale, job.files_scale)
    started = time.monotonic()
    if job.arch == "noarch":
        pool = _pool_dir(job)
        for s in sources:
            for b in s.binaries:
                if b.noarch:
                    _write(pool, _binary_spec(b, s, "noarch"), key)
        return {"tree": f"{job.repo_id}/noarch pool", "seconds": time.monotonic() - started}
    gnupg, fpr = Path(job.gnupg), job.fpr
    project = profile.project_id
    if job.arch == "src":
        repo = fixture.repo_dir(project, job.repo_id, "src", hashed=True)
        for s in sources:
            _write(repo, _source_spec(s), key)
        _index(repo, gnupg, fpr)
        return {"tree": f"{job.repo_id}/src", "packages": len(sources), "seconds": time.monotonic() - started}
    repo = fixture.repo_dir(project, job.repo_id, job.arch, hashed=True)
    debug = fixture.repo_dir(project, job.repo_id, job.arch, hashed=True, debug=True)
    count = debug_count = 0
    for s in sources:
        for b in s.binaries:
            if b.noarch:
                _link(_pool_dir(job), repo, _binary_spec(b, s, "noarch").filename)
            else:
                _write(repo, _binary_spec(b, s, job.arch), key)
            count += 1
        for spec in _debug_specs(s, job.arch):
            _write(debug, spec, key)
            debug_count += 1
    repo_cfg = profile.repo(job.repo_id)
    _index(repo, gnupg, fpr, _comps(sources, job.repo_id) if repo_cfg.comps else None,
           _modules(sources, job.repo_id, job.arch) if repo_cfg.modules else None)
    (debug / "Packages").mkdir(parents=True, exist_ok=True)
    _index(debug, gnupg, fpr)
    return {"tree": f"{job.repo_id}/{job.arch}", "packages": count, "debug": debug_count,
            "seconds": time.monotonic() - started}


def _digest(profile: ReleaseProfile, scale: float, files_scale: float, arches: Sequence[str]) -> str:
    h = hashlib.sha256(f"{SCALE_VERSION}:{scale}:{files_scale}:{','.join(arches)}".encode())
    h.update(profile.path.read_bytes())
    return h.hexdigest()


def build(root: Path = DEFAULT_ROOT, profile: ReleaseProfile | None = None, *, scale: float = 1.0,
          files_scale: float = 1.0, arches: Sequence[str] | None = None, workers: int | None = None,
          log=print) -> Fixture:
    """Build (or reuse) the scale fixture of ``profile`` (default el9) under ``root``."""
    profile = profile or load_profile(ROOT / "config" / "releases" / "el9.yaml")
    chosen = tuple(arches or profile.arches)
    root = Path(root).resolve()
    fixture = Fixture(root)
    digest = _digest(profile, scale, files_scale, chosen)
    index = root / "fixture.json"
    if index.is_file() and json.loads(index.read_text()).get("digest") == digest:
        fixture.profiles = json.loads(index.read_text())["profiles"]
        log(f"scale fixture: reusing {root}")
        return fixture
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    gnupg = root / "gnupg"
    gnupg.mkdir(mode=0o700)
    started = time.monotonic()
    with agent_session(gnupg):
        fpr = _gen_key(gnupg)
        env = {**os.environ, "GNUPGHOME": str(gnupg)}
        secret = subprocess.run(["gpg", "--batch", "--export-secret-keys", fpr], env=env, check=True,
                                capture_output=True).stdout
        public = _run(["gpg", "--batch", "--armor", "--export", fpr], env=env).stdout
        fixture.key_dir.mkdir()
        for name in profile.gpg_keys:
            (fixture.key_dir / name).write_text(public)
        common = {"profile_path": str(profile.path), "scale": scale, "files_scale": files_scale, "root": str(root),
                  "secret_key": secret, "gnupg": str(gnupg), "fpr": fpr}
        with ProcessPoolExecutor(workers or os.cpu_count() or 2) as pool:
            first = [Job(repo_id=r.id, arch=a, **common) for r in profile.repos for a in ("noarch", "src")]
            for result in pool.map(run_job, first):
                log(f"scale fixture: {result}")
            trees = [Job(repo_id=r.id, arch=a, **common)
                     for r in profile.repos for a in profile.repo_arches(r.id, chosen)]
            results = []
            for result in pool.map(run_job, trees):
                log(f"scale fixture: {result}")
                results.append(result)
    shutil.rmtree(root / "pool")  # every noarch file is linked into its trees
    repo_base = root / "http" / "v1" / "projects" / profile.project_id / "repo"
    for r in profile.repos:
        (repo_base / r.id).symlink_to(f"hashed-{r.id}")
    fixture.profiles = {profile.name: {"project_id": profile.project_id, "scale": scale, "files_scale": files_scale,
                                       "trees": {res["tree"]: {"packages": res["packages"], "debug": res["debug"]}
                                                 for res in results}}}
    packages = sum(r["packages"] + r["debug"] for r in results)
    log(f"scale fixture: {packages} binary and debug package entries in {len(results)} arch trees, "
        f"in {time.monotonic() - started:.0f} s")
    index.write_text(json.dumps({"digest": digest, "profiles": fixture.profiles}, indent=1, sort_keys=True))
    return fixture


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dev.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) the scale fixture")
    b.add_argument("root", type=Path, nargs="?", default=DEFAULT_ROOT)
    b.add_argument("--profile", type=Path, default=ROOT / "config" / "releases" / "el9.yaml")
    b.add_argument("--scale", type=float, default=1.0, help="package counts relative to a real release")
    b.add_argument("--files-scale", type=float, default=1.0, help="files per package relative to the default")
    b.add_argument("--arches", nargs="*", help="arches (default: the profile's)")
    b.add_argument("--workers", type=int, help="processes (default: one per core)")
    args = parser.parse_args(argv)
    build(args.root, load_profile(args.profile), scale=args.scale, files_scale=args.files_scale, arches=args.arches,
          workers=args.workers, log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
