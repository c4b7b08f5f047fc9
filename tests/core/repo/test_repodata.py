"""releng.core.repo against real repos of the fixture build system (createrepo_c output, signed RPMs)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from releng.core.repo import metadata as repo_metadata
from releng.core.repo.dnf_output import failed_downloads, gpg_failures, package_download, parse_repoclosure
from releng.core.repo.primary import iter_packages, package_index
from releng.core.repo.repomd import RepoError, read_repomd, stale_metadata, tree_path
from releng.core.repo.signatures import check_signatures, checksig_argv, unverified_signatures
from releng.core.repo.trees import break_shared_links, link_unchanged, make_kickstart_tree, samefile_count
from releng.core.repo.verify import verify_repo


@pytest.fixture
def tree(tmp_path, fixture_buildsystem, el9) -> Path:
    """A copy of the fixture's hashed BaseOS x86_64 repo: what reposync leaves on disk."""
    upstream = fixture_buildsystem.repo_dir(el9.project_id, "BaseOS", "x86_64", hashed=True)
    dest = tmp_path / "os"
    shutil.copytree(upstream, dest)
    return dest


def _rpms(tree: Path) -> dict[str, Path]:
    return {p.relative_to(tree).as_posix(): p for p in sorted(tree.rglob("*.rpm"))}


def test_packages_are_read_from_primary(tree):
    packages = list(iter_packages(tree))
    assert sorted(p.href for p in packages) == sorted(_rpms(tree))
    by_name = {p.name: p for p in packages}
    libfoo = by_name["libfoo"]
    assert (libfoo.epoch, libfoo.version, libfoo.release, libfoo.arch) == ("0", "1.0", "1.el9", "x86_64")
    assert libfoo.nevra == "libfoo-0:1.0-1.el9.x86_64"
    assert libfoo.href == "Packages/l/libfoo-1.0-1.el9.x86_64.rpm" and libfoo.filename == libfoo.href[11:]
    path = tree / libfoo.href
    assert libfoo.checksum_type == "sha256"
    assert libfoo.checksum == hashlib.sha256(path.read_bytes()).hexdigest()
    assert libfoo.size == path.stat().st_size
    assert by_name["rocky-release"].arch == "noarch"


def test_repomd_records_name_every_metadata_file(tree):
    records = read_repomd(tree)
    assert {"primary", "filelists", "other", "group", "group_gz"} <= {r.type for r in records}
    for rec in records:
        path = tree / rec.href
        assert rec.size == path.stat().st_size
        assert rec.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_complete_tree_verifies(tree):
    report = verify_repo(tree)
    assert report.ok, report.problems()
    assert report.packages == 3
    assert report.bytes == sum(p.stat().st_size for p in _rpms(tree).values())
    assert not (report.missing or report.corrupt or report.extra or report.metadata)


def test_verify_reports_corrupt_missing_and_extra_packages(tree):
    rpms = _rpms(tree)
    flipped, truncated, removed = sorted(rpms)
    data = bytearray(rpms[flipped].read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes: only the checksum can tell
    rpms[flipped].write_bytes(bytes(data))
    rpms[truncated].write_bytes(rpms[truncated].read_bytes()[:100])
    rpms[removed].unlink()
    (tree / "Packages" / "z").mkdir()
    (tree / "Packages" / "z" / "stray-1-1.noarch.rpm").write_bytes(b"not listed")

    report = verify_repo(tree)
    assert not report.ok
    assert report.missing == [removed]
    assert sorted(c.split(":")[0] for c in report.corrupt) == sorted([flipped, truncated])
    assert any(c.startswith(f"{flipped}: sha256 ") for c in report.corrupt)
    assert f"{truncated}: size 100, repodata says" in " ".join(report.corrupt)
    assert report.extra == ["Packages/z/stray-1-1.noarch.rpm"]
    problems = report.problems()
    assert f"missing: {removed}" in problems and not any("stray" in p for p in problems)
    assert any("stray" in p for p in report.problems(include_extra=True))
    # size-only mode still sees the truncated and the missing package, not the flipped byte
    quick = verify_repo(tree, checksums=False)
    assert quick.missing == [removed] and [c.split(":")[0] for c in quick.corrupt] == [truncated]


def test_only_extra_files_leave_the_tree_ok(tree):
    (tree / "Packages" / "stray.rpm").write_bytes(b"x")
    report = verify_repo(tree)
    assert report.ok and report.extra == ["Packages/stray.rpm"]


def test_verify_checks_the_repomd_records(tree):
    filelists = next(r for r in read_repomd(tree) if r.type == "filelists")
    path = tree / filelists.href
    data = bytearray(path.read_bytes())
    data[5] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_repo(tree)
    assert not report.ok
    assert len(report.metadata) == 1 and report.metadata[0].startswith(f"{filelists.href} (filelists): sha256 ")

    path.unlink()
    assert verify_repo(tree).metadata == [f"{filelists.href} (filelists): missing"]

    (tree / "repodata" / "repomd.xml").unlink()
    report = verify_repo(tree)
    assert not report.ok and "repomd.xml does not exist" in report.metadata[0]


def test_hrefs_outside_the_tree_are_refused(tmp_path):
    assert tree_path(tmp_path, "Packages/a/a.rpm") == tmp_path / "Packages" / "a" / "a.rpm"
    for bad in ("../evil.rpm", "/etc/passwd", "Packages/../../x", ""):
        with pytest.raises(RepoError, match="not a path inside the tree"):
            tree_path(tmp_path, bad)


def _recompress_primary(tree: Path, suffix: str, compress) -> None:
    """Rewrite primary with another compression and point repomd.xml at it."""
    primary = next(r for r in read_repomd(tree) if r.type == "primary")
    old = tree / primary.href
    xml = gzip.decompress(old.read_bytes())
    new = old.with_name(f"primary.xml{suffix}")
    new.write_bytes(compress(xml))
    repomd = tree / "repodata" / "repomd.xml"
    text = repomd.read_text().replace(primary.href, f"repodata/{new.name}")
    text = text.replace(f">{primary.checksum}<", f">{hashlib.sha256(new.read_bytes()).hexdigest()}<")
    repomd.write_text(text.replace(f"<size>{old.stat().st_size}</size>", f"<size>{new.stat().st_size}</size>"))
    old.unlink()


@pytest.mark.parametrize("suffix", [".xz", ".bz2", "", ".zst"])
def test_primary_compressions(tree, suffix):
    import bz2
    import lzma

    expected = sorted(iter_packages(tree), key=lambda p: p.href)
    if suffix == ".zst" and not shutil.which("zstd"):
        pytest.skip("zstd command not installed")
    compress = {".xz": lzma.compress, ".bz2": bz2.compress, "": lambda b: b,
                ".zst": lambda b: subprocess.run(["zstd", "-q", "-c"], input=b, capture_output=True,
                                                 check=True).stdout}[suffix]
    _recompress_primary(tree, suffix, compress)
    assert sorted(iter_packages(tree), key=lambda p: p.href) == expected
    assert verify_repo(tree).ok


def test_zstd_without_a_decompressor_is_a_clear_error(tree, monkeypatch):
    _recompress_primary(tree, ".zst", lambda b: b"\x28\xb5\x2f\xfd" + b"ignored")
    monkeypatch.setattr(repo_metadata.shutil, "which", lambda _name: None)
    with pytest.raises(RepoError, match=r"zstd-compressed; reading it needs Python 3\.14 or the zstd command"):
        list(iter_packages(tree))


def test_corrupt_primary_is_a_clear_error(tree):
    primary = next(r for r in read_repomd(tree) if r.type == "primary")
    (tree / primary.href).write_bytes(gzip.compress(b"<metadata><package>"))
    with pytest.raises(RepoError, match="cannot be parsed"):
        list(iter_packages(tree))
    report = verify_repo(tree)
    assert not report.ok and report.metadata


def test_primary_is_streamed_in_flat_memory(tmp_path):
    """12,000 packages: parsing keeps far less than the ~40 MB the whole element tree takes."""
    ns = 'xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm"'
    pkg = ('<package type="rpm"><name>p{i}</name><arch>x86_64</arch><version epoch="0" ver="1" rel="1.el9"/>'
           '<checksum type="sha256" pkgid="YES">{i:064x}</checksum><summary>s</summary>'
           '<description>{desc}</description><size package="{i}" installed="1" archive="1"/>'
           '<location href="Packages/p/p{i}.rpm"/><format><rpm:license>MIT</rpm:license></format></package>')
    count, desc = 12000, "d" * 400
    body = "".join(pkg.format(i=i, desc=desc) for i in range(count))
    data = f'<?xml version="1.0"?>\n<metadata {ns} packages="{count}">{body}</metadata>'.encode()
    (tmp_path / "repodata").mkdir()
    primary = tmp_path / "repodata" / "primary.xml.gz"
    primary.write_bytes(gzip.compress(data, compresslevel=1))
    (tmp_path / "repodata" / "repomd.xml").write_text(
        '<repomd xmlns="http://linux.duke.edu/metadata/repo"><data type="primary">'
        '<checksum type="sha256">0</checksum><location href="repodata/primary.xml.gz"/></data></repomd>')
    tracemalloc.start()
    try:
        seen = total = 0
        for p in iter_packages(tmp_path):
            seen += 1
            total += p.size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == count and total == sum(range(count))
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while streaming {len(data)} bytes of primary"


def test_link_unchanged_links_only_identical_packages(tree, tmp_path):
    dest = tmp_path / "new"
    wanted = list(iter_packages(tree))
    changed = dataclasses.replace(wanted[0], checksum="0" * 64)
    linked = link_unchanged(dest, tree, [changed, *wanted[1:]])
    assert sorted(linked) == sorted(p.href for p in wanted[1:])
    for href in linked:
        assert os.path.samefile(dest / href, tree / href)
    assert not (dest / changed.href).exists()
    assert samefile_count(dest, tree, [p.href for p in wanted]) == 2
    # linking again is a no-op that still reports the links
    assert sorted(link_unchanged(dest, tree, wanted)) == sorted(p.href for p in wanted)


def test_link_unchanged_needs_the_previous_repodata(tmp_path, tree):
    with pytest.raises(RepoError, match="does not exist"):
        link_unchanged(tmp_path / "new", tmp_path / "no-previous", list(iter_packages(tree)))


def test_shared_files_dnf_could_rewrite_are_removed(tree, tmp_path):
    wanted = package_index(tree)
    good, bad, other = sorted(wanted)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.link(tree / good, elsewhere / "good.rpm")  # shared and correct: dnf will skip it
    os.link(tree / bad, elsewhere / "bad.rpm")
    (elsewhere / "bad.rpm").write_bytes(b"wrong bytes")  # shared and wrong: dnf would write through the link
    removed = break_shared_links(tree, wanted)
    assert removed == [bad]
    assert (tree / good).exists() and not (tree / bad).exists() and (tree / other).exists()
    assert (elsewhere / "bad.rpm").read_bytes() == b"wrong bytes"
    # a file just linked on purpose is kept whatever its content
    os.link(elsewhere / "bad.rpm", tree / bad)
    assert break_shared_links(tree, wanted, keep=[bad]) == []


def test_kickstart_tree_is_links_and_a_copy_of_repodata(tree, tmp_path):
    ks = tmp_path / "kickstart"
    (ks / "images").mkdir(parents=True)
    (ks / "images" / "install.img").write_bytes(b"lorax tree merged earlier")
    report = make_kickstart_tree(tree, ks)
    assert report.ok and report.packages == 3 and not report.extra
    for href in _rpms(tree):
        assert os.path.samefile(ks / href, tree / href)
    for path in (tree / "repodata").iterdir():
        copy = ks / "repodata" / path.name
        assert copy.read_bytes() == path.read_bytes() and not os.path.samefile(copy, path)
    assert (ks / "images" / "install.img").read_bytes() == b"lorax tree merged earlier"
    assert verify_repo(ks).ok
    # again, over an existing kickstart tree: same result, nothing left behind
    make_kickstart_tree(tree, ks)
    assert sorted(p.name for p in ks.iterdir()) == ["Packages", "images", "repodata"]


def test_kickstart_refuses_an_incomplete_os_tree(tree, tmp_path):
    next(iter(_rpms(tree).values())).unlink()
    with pytest.raises(RepoError, match="not a complete tree"):
        make_kickstart_tree(tree, tmp_path / "kickstart")
    assert not (tmp_path / "kickstart").exists()


def test_stale_metadata_lists_files_repomd_no_longer_names(tree):
    old = tree / "repodata" / "0000-primary.xml.gz"
    old.write_bytes(b"old")
    assert stale_metadata(tree) == [old]


def test_dnf_output_parsers():
    lines = [
        "(1/3): libfoo-1.0-1.el9.x86_64.rpm              1.6 MB/s | 6.2 kB     00:00",
        "[SKIPPED] fixture-sh-1.0-1.el9.x86_64.rpm: Already downloaded",
        "[MIRROR] broken-0.1-1.el9.noarch.rpm: Status code: 404 for http://b/broken.rpm",
        "[FAILED] broken-0.1-1.el9.noarch.rpm: No more mirrors to try - All mirrors were already tried",
        "Removing x-1-1.noarch.rpm: Public key for x-1-1.noarch.rpm is not installed",
        "Error: GPG signature check failed.",
    ]
    assert [package_download(line, "BaseOS-x86_64-os") for line in lines] == [6200, *[None] * 5]
    assert package_download("fixture-crb-1.0-1.el9.src.rpm   2.3 MB/s | 7.7 kB     00:00", "r") == 7700
    assert package_download("kernel-debug-devel-matched-5.14.0-427.13.1.el9_4.x  34 MB/s | 1.5 MB  00:00",
                                     "r") == 1_500_000
    assert package_download("BaseOS-x86_64-os   998 kB/s | 1.0 kB     00:00", "BaseOS-x86_64-os") is None
    assert failed_downloads(lines) == [lines[3]]
    assert gpg_failures(lines) == lines[4:]
    assert gpg_failures(lines[:4]) == []


CAPTURED_CHECKSIG = (  # rpm 4.18 -K of a good, an unsigned, a wrong-key, a non-rpm and a truncated package
    "/c/good.rpm: digests signatures OK\n"
    "/c/unsigned.rpm: digests OK\n"
    "/c/other.rpm: digests SIGNATURES NOT OK\n"
    "/c/notrpm.rpm:/c/trunc.rpm:"
)


def test_checksig_verdicts_are_read_per_package():
    """Issue 7 finding 7: only a package's own stdout verdict counts; noise lines are no verdict on anything."""
    files = [Path(f"/c/{n}.rpm") for n in ("good", "unsigned", "other", "notrpm", "trunc")]
    noise = "ERROR: ld.so: object 'x.so' from LD_PRELOAD cannot be preloaded: ignored.\nwarning: something: odd\n"
    bad = unverified_signatures(files, noise + CAPTURED_CHECKSIG)
    assert bad == ["/c/unsigned.rpm: digests OK", "/c/other.rpm: digests SIGNATURES NOT OK",
                   "/c/notrpm.rpm: no verdict from rpm -K (not a readable rpm package?)",
                   "/c/trunc.rpm: no verdict from rpm -K (not a readable rpm package?)"]
    assert unverified_signatures(files[:1], CAPTURED_CHECKSIG + "\n" + noise) == []
    assert unverified_signatures(files[:1], noise) == [
        "/c/good.rpm: no verdict from rpm -K (not a readable rpm package?)"]


def _rpmdb(root: Path, keys: list[Path]) -> Path:
    root.mkdir()
    subprocess.run(["rpm", "--root", str(root), "--initdb"], check=True)
    for key in keys:
        subprocess.run(["rpm", "--root", str(root), "--import", str(key)], check=True)
    return root


def test_real_rpm_checksig_with_stderr_noise(tree, tmp_path, fixture_buildsystem, el9):
    """Real rpm -K with a stray stderr line (ld.so's, from a preload that does not exist): good packages
    pass, an unsigned one and one rpm cannot read still fail, and a package without the key fails."""
    keys = [fixture_buildsystem.key_dir / k for k in el9.gpg_keys]
    root = _rpmdb(tmp_path / "root", keys)
    packages = sorted(tree.rglob("*.rpm"))
    env = {**os.environ, "LD_PRELOAD": str(tmp_path / "no-such-preload.so"), "LC_ALL": "C.UTF-8"}
    assert subprocess.run(checksig_argv(root, packages[:1]), env=env, capture_output=True,
                          text=True).stderr  # the noise is really there
    assert check_signatures(root, packages, env=env, batch=2) == []
    unsigned = tmp_path / "unsigned.rpm"
    shutil.copy(packages[0], unsigned)
    subprocess.run(["rpmsign", "--delsign", str(unsigned)], check=True, capture_output=True)
    broken = tmp_path / "broken.rpm"
    broken.write_bytes(packages[0].read_bytes()[:3000])
    bad = check_signatures(root, [*packages, unsigned, broken], env=env)
    assert bad == [f"{unsigned}: digests OK", f"{broken}: no verdict from rpm -K (not a readable rpm package?)"]
    no_keys = _rpmdb(tmp_path / "nokeys", [])
    assert check_signatures(no_keys, packages[:1], env=env) == [
        f"{packages[0]}: digests SIGNATURES NOT OK"]


def test_repoclosure_output_is_parsed():
    stdout = (
        "package: foo-app-2.1-3.el9.x86_64 from AppStream\n"
        "  unresolved deps (2):\n"
        "    /bin/sh\n"
        "    libfoo >= 1.0\n"
        "package: broken-0.1-1.el9.noarch from AppStream\n"
        "  unresolved deps (1):\n"
        "    does-not-exist >= 9\n"
    )
    assert parse_repoclosure(stdout) == {
        "foo-app-2.1-3.el9.x86_64 from AppStream": ["/bin/sh", "libfoo >= 1.0"],
        "broken-0.1-1.el9.noarch from AppStream": ["does-not-exist >= 9"],
    }
    assert parse_repoclosure("") == {}
