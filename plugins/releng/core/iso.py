"""DVD ISOs built by replaying lorax's boot.iso with xorriso, and the cloud image pick.

DVD (empanadas §9, Pungi §3.3): per (arch, image) a variant copy of the lorax
tree with the disc ``.treeinfo``, ``.discinfo`` and ``media.repo``; a graft
list of that tree, the extra files and the image's repos; an xorriso dialog
that replays boot.iso's boot setup (``-boot_image any replay``) and grafts the
rest; then ``implantisomd5``, a manifest, a boot sanity check and checksums.
The ISO is written under a temp name beside the compose and renamed into
``work/isos/<arch>/`` at the end, so a failed or killed run leaves nothing half
written there, and a rerun converges: xorriso gets ``SOURCE_DATE_EPOCH`` = the
lorax tree's build time and sets every file and directory time on the ISO to it,
so the same contents give a byte-identical DVD whatever the input trees' mtimes.

Cloud images (empanadas §10): the newest upload per (type, variant, arch),
ordered by (date, build number, upload epoch) as numbers; empanadas sorted the
keys as strings, so build ``.10`` lost to ``.2``.

The pure parts (names, graft list and order, dialog, argv builders, parsers)
run nothing; :func:`build_dvd` runs the tools.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from releng.core import checksums, modes, treeinfo
from releng.core.layout import COMPOSE_ID_RE, ComposeLayout, LayoutError, repo_dir_name
from releng.core.profile import CloudImage, IsoImage, ReleaseProfile

log = logging.getLogger(__name__)

BOOT_ISO = "images/boot.iso"
BOOT_MANIFEST = "images/boot.iso.manifest"
# Files the variant tree rewrites; never hard-linked from the lorax tree.
REWRITTEN = (".treeinfo", ".discinfo", "media.repo")
# Paths that may replace boot.iso's copy on the DVD (empanadas' set plus .treeinfo: the DVD must carry the
# rewritten one with [media] and the repo variants even when lorax put its own .treeinfo into boot.iso).
UPDATABLE_PATHS = frozenset({
    "isolinux/isolinux.cfg", "etc/yaboot.conf", "ppc/ppc64/yaboot.conf", "EFI/BOOT/BOOTX64.conf",
    "EFI/BOOT/grub.cfg", "images/efiboot.img", ".discinfo", ".treeinfo",
})
_BOOT_DIRS = ("images/", "isolinux/", "EFI/", "etc/", "ppc/")
_BOOT_SUFFIXES = (".img", ".ins")
MAX_VOLID = 32  # ISO 9660 volume identifier field
_PVD_OFFSET = 16 * 2048


class IsoError(RuntimeError):
    """A tool failed while building; a retry may help (disk full, killed process)."""


class IsoInputError(IsoError):
    """The inputs are wrong (missing tree, bad volume id, broken boot setup); retrying will not help."""


# --- what to build ------------------------------------------------------------------------------------


def dvd_images(profile: ReleaseProfile) -> tuple[IsoImage, ...]:
    """The images that become ISOs: ``disc`` and not ``isoskip`` (el9: dvd)."""
    return tuple(i for i in profile.iso_images.values() if i.disc and not i.isoskip)


def disc_image(profile: ReleaseProfile, name: str) -> IsoImage:
    """The ``iso.images`` entry called ``name``; IsoInputError unless it is a buildable disc."""
    image = profile.iso_images.get(name)
    buildable = ", ".join(i.name for i in dvd_images(profile)) or "none"
    if image is None:
        raise IsoInputError(f"{profile.name} has no iso image {name!r}; buildable images: {buildable}")
    if not image.disc:
        raise IsoInputError(f"iso image {name!r} of {profile.name} is a tree (disc: false), not an ISO; "
                            f"buildable images: {buildable}")
    if image.isoskip:
        raise IsoInputError(f"iso image {name!r} of {profile.name} is marked isoskip; "
                            f"remove isoskip from the profile to build it")
    if name == "lorax":  # its variant tree would replace the unpacked lorax tree in work/lorax/<arch>
        raise IsoInputError(f"iso image name 'lorax' is reserved; rename iso.images.lorax in {profile.path}")
    return image


def compose_layout(profile: ReleaseProfile, compose: str | os.PathLike, compose_root: Path) -> ComposeLayout:
    """The layout of a compose given by id (``Rocky-9.7-20251123.143015.0``) or by its top directory."""
    ref = str(compose).rstrip("/")
    if COMPOSE_ID_RE.match(ref):
        return ComposeLayout(profile, Path(compose_root), ref)
    top = Path(ref)
    if not top.is_absolute() or not COMPOSE_ID_RE.match(top.name):
        raise IsoInputError(f"compose {ref!r} is neither a compose id (<Short>-<X.Y>-<YYYYMMDD.HHMMSS>[.<n>]) nor "
                            f"the absolute path of a compose directory")
    if top.parent.name != str(profile.major):
        raise IsoInputError(f"compose directory {top} is not under a {profile.major}/ directory; "
                            f"it does not belong to {profile.name}")
    return ComposeLayout(profile, top.parent.parent, top.name)


def extra_files_dir(layout: ComposeLayout) -> Path:
    return layout.work / "global" / "extra-files"


def variant_tree_dir(layout: ComposeLayout, arch: str, image: str) -> Path:
    return layout.lorax_dir(arch) / image


def dialog_path(layout: ComposeLayout, arch: str, image: str) -> Path:
    """Where the xorriso dialog is kept for inspection (empanadas' graft-list place)."""
    return layout.lorax_dir(arch) / f"xorriso-{image}-{arch}.txt"


# --- disc .discinfo and media.repo (the disc .treeinfo comes from releng.core.treeinfo) -------------------


def discinfo_text(timestamp: int, fullname: str, arch: str) -> str:
    """``.discinfo``: an integer timestamp (empanadas wrote a float), name, arch, disc list."""
    return f"{int(timestamp)}\n{fullname}\n{arch}\nALL\n"


def media_repo_text(timestamp: int, fullname: str) -> str:
    return (f"[InstallMedia]\nname={fullname}\nmediaid={int(timestamp)}\nmetadata_expire=-1\n"
            "gpgcheck=0\ncost=500\n")


# --- graft list -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Graft:
    """One dialog line: put ``source`` at ``iso_path``; ``update`` replaces boot.iso's copy."""

    iso_path: str
    source: Path
    update: bool = False

    def line(self) -> str:
        return f"{'-update' if self.update else '-map'} {xorriso_quote(str(self.source))} " \
               f"{xorriso_quote('/' + self.iso_path)}"


def xorriso_quote(word: str) -> str:
    """One word of xorriso's quoted input; refuses what its quoting cannot carry."""
    if not word or any(c in word for c in "\n\r\0\\") or ("'" in word and '"' in word):
        raise IsoInputError(f"path {word!r} cannot be passed to xorriso (empty, newline, backslash or both "
                            f"quote marks); rename it")
    return f'"{word}"' if "'" in word else f"'{word}'"


def scan_tree(root: Path, prefix: str = "") -> dict[str, Path]:
    """ISO path -> source for every file (and empty directory) under ``root``.

    A symlink that stays inside ``root`` is kept as a link; one that points outside is replaced by
    its target (a DVD must not carry links into the build host); a dangling one is an error.
    """
    root = Path(root)
    out: dict[str, Path] = {}
    real_root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = here.relative_to(root).as_posix()
        base = prefix if rel_dir == "." else f"{prefix}{rel_dir}/"
        linked_dirs = [d for d in dirnames if (here / d).is_symlink()]
        dirnames[:] = [d for d in dirnames if d not in linked_dirs]
        for name in [*filenames, *linked_dirs]:
            path = here / name
            out[base + name] = _graft_source(path, real_root) if path.is_symlink() else path
        if not filenames and not dirnames and not linked_dirs and base:
            out[base.rstrip("/")] = here
    return out


def _graft_source(link: Path, real_root: Path) -> Path:
    target = link.resolve()
    if not target.exists():
        raise IsoInputError(f"{link} is a dangling symlink (-> {os.readlink(link)}); fix or remove it")
    return link if target.is_relative_to(real_root) else target


def repo_sources(layout: ComposeLayout, image: IsoImage, arch: str) -> list[tuple[str, Path]]:
    """(ISO prefix, directory) of the Packages and repodata of each repo of a ``reposcan`` image."""
    if not image.reposcan:
        return []
    out = []
    for repo_id in image.repos:
        tree = layout.repo_tree(repo_id, arch)
        name = repo_dir_name(layout.profile, repo_id)
        for sub in ("Packages", "repodata"):
            if not (tree / sub).is_dir():
                raise IsoInputError(f"{tree / sub} is missing; the {repo_id} repo for {arch} has not been synced "
                                    f"(run sync_repos for it first)")
            out.append((f"{name}/{sub}/", tree / sub))
    return out


def parse_manifest(text: str) -> frozenset[str]:
    """ISO paths (no leading '/') of a boot.iso.manifest: one path per line, '/x' or './x' or quoted."""
    out = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith(("'", '"')):
            line = shlex.split(line)[0]
        line = line.removeprefix(".").strip("/")
        if line:
            out.add(line)
    return frozenset(out)


def graft_sort_key(iso_path: str) -> tuple[int, str]:
    """Boot files first, other files next, RPMs last; by path within each group (Pungi's rule)."""
    if iso_path.endswith(".rpm"):
        return 2, iso_path
    if iso_path.startswith(_BOOT_DIRS) or iso_path.endswith(_BOOT_SUFFIXES):
        return 0, iso_path
    return 1, iso_path


def graft_list(sources: Mapping[str, Path], boot_manifest: Collection[str]) -> list[Graft]:
    """The grafts for the DVD: paths already in boot.iso are left to the replay unless updatable."""
    grafts = []
    for iso_path, source in sources.items():
        if iso_path in boot_manifest:
            if iso_path in UPDATABLE_PATHS:
                grafts.append(Graft(iso_path, source, update=True))
            continue
        grafts.append(Graft(iso_path, source))
    return sorted(grafts, key=lambda g: graft_sort_key(g.iso_path))


def system_id(arch: str) -> str:
    return "PPC" if arch.startswith("ppc") else "LINUX"


def xorriso_dialog(boot_iso: Path, outdev: Path, volid: str, arch: str, grafts: Sequence[Graft],
                   stamp: int | None = None) -> list[str]:
    """The xorriso dialog (empanadas' xorriso.tmpl.txt): replay boot.iso, graft the rest, ``-end``.

    With ``stamp``, every file and directory on the ISO gets that time, so the ISO depends only on the
    contents (a re-synced repo or a redeployed extra file has new mtimes, not new bytes).
    """
    lines = [
        f"-indev {xorriso_quote(str(boot_iso))}",
        f"-outdev {xorriso_quote(str(outdev))}",
        # xorriso would otherwise wait for a flush every 16 MiB; build_dvd fsyncs the finished ISO once,
        # so the kernel writes it back while implantisomd5 and the checksum read it.
        "-stdio_sync off",
        "-boot_image any replay",
        "-joliet on",
        f"-system_id {system_id(arch)}",
        "-compliance joliet_long_names",
    ]
    if arch == "ppc64le":
        lines.append("-compliance untranslated_names")
    lines.append(f"-volid {xorriso_quote(volid)}")
    if stamp is not None:
        lines.append(f"-volume_date all_file_dates ={int(stamp)}")
    lines += [g.line() for g in grafts]
    lines.append("-end")
    return lines


# --- argv builders (Pungi wrapper style) and output parsers ---------------------------------------------


def xorriso_argv(dialog: Path) -> list[str]:
    """Run a dialog file; ``-no_rc`` keeps host startup files out of it."""
    return ["xorriso", "-no_rc", "-options_from_file", str(dialog)]


def implantisomd5_argv(iso: Path, supported: bool = True) -> list[str]:
    return ["implantisomd5", *(["--supported-iso"] if supported else []), str(iso)]


def checkisomd5_argv(iso: Path) -> list[str]:
    return ["checkisomd5", str(iso)]


def xorriso_find_argv(iso: Path) -> list[str]:
    return ["xorriso", "-no_rc", "-indev", str(iso), "-find", "/"]


def el_torito_report_argv(iso: Path) -> list[str]:
    """Both reports in one run: ``as_mkisofs`` (empanadas' SORRY check) and ``plain`` (boot entries)."""
    return ["xorriso", "-no_rc", "-indev", str(iso), "-report_el_torito", "as_mkisofs",
            "-report_el_torito", "plain"]


def parse_find_output(text: str) -> list[str]:
    """Sorted ISO paths ('/x/y') from ``xorriso -find /`` (one quoted path per line), without '/'."""
    paths = set()
    for line in text.splitlines():
        if not line.startswith(("'", '"')):
            continue
        path = "/" + shlex.split(line)[0].removeprefix(".").strip("/")
        if path != "/":
            paths.add(path)
    return sorted(paths)


_ENTRY_RE = re.compile(r"^El Torito boot img :\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)")
_PATH_RE = re.compile(r"^El Torito img path :\s+(\d+)\s+(\S.*)$")


def boot_setup(report: str) -> tuple[str, tuple[tuple[str, ...], ...]]:
    """The boot record summary and El Torito entries (number, platform, bootable, emulation, path)."""
    record = next((line.split(":", 1)[1].strip() for line in report.splitlines()
                   if line.startswith("Boot record")), "none")
    entries: dict[str, list[str]] = {}
    for line in report.splitlines():
        if m := _ENTRY_RE.match(line):
            entries[m[1]] = [m[1], m[2], m[3], m[4]]
        elif (m := _PATH_RE.match(line)) and m[1] in entries:
            entries[m[1]].append(m[2].strip())
    return record, tuple(tuple(entries[k]) for k in sorted(entries, key=int))


def check_boot_report(dvd_report: str, boot_report: str, iso_name: str) -> None:
    """The sanity check: no SORRY (empanadas), and the DVD boots exactly like boot.iso."""
    if "SORRY" in dvd_report or "FAILURE" in dvd_report:
        problem = next(line for line in dvd_report.splitlines() if "SORRY" in line or "FAILURE" in line)
        raise IsoInputError(f"{iso_name} was not built correctly: xorriso reports {problem.strip()!r}")
    dvd, boot = boot_setup(dvd_report), boot_setup(boot_report)
    if dvd != boot:
        raise IsoInputError(f"{iso_name} does not boot like boot.iso: boot record {dvd[0]!r} entries {dvd[1]} "
                            f"instead of {boot[0]!r} {boot[1]}; check the boot.iso and the updated boot files")


def read_volid(iso: Path) -> str:
    """The Primary Volume Descriptor's volume id (pycdlib; the raw PVD when pycdlib cannot parse it)."""
    cd = pycdlib.PyCdlib()
    try:
        cd.open(str(iso))
    except PyCdlibException:
        return _raw_volid(iso)
    try:
        return cd.pvd.volume_identifier.decode("ascii", "replace").strip()
    finally:
        cd.close()


def _raw_volid(iso: Path) -> str:
    with open(iso, "rb") as f:
        f.seek(_PVD_OFFSET)
        pvd = f.read(2048)
    if pvd[1:6] != b"CD001" or pvd[0] != 1:
        raise IsoInputError(f"{iso} has no ISO 9660 primary volume descriptor; it is not an ISO image")
    return pvd[40:72].decode("ascii", "replace").strip()


def check_volid(found: str, layout: ComposeLayout, arch: str, rc: bool, boot_iso: Path) -> str:
    """boot.iso's volid must be the release's (inst.stage2=hd:LABEL= in its boot configs names it)."""
    try:
        expected = layout.volid(arch, rc)
    except LayoutError as exc:
        raise IsoInputError(f"{exc}; shorten the profile's shortname or rclvl ({layout.profile.path})") from None
    if len(found) > MAX_VOLID:
        raise IsoInputError(f"volume id {found!r} of {boot_iso} is {len(found)} characters; ISO 9660 allows "
                            f"{MAX_VOLID}")
    if found != expected:
        raise IsoInputError(f"volume id {found!r} of {boot_iso} is not {expected!r}: the boot configs look for "
                            f"LABEL={found}, so the DVD must keep it; rebuild lorax for {arch} with "
                            f"--volid={expected} (rc={rc}) or run this step with the matching rc flag")
    return found


# --- running the tools ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DvdResult:
    arch: str
    image: str
    iso: Path
    size: int
    sha256: str
    volid: str

    def xcom(self) -> dict:
        return {"arch": self.arch, "image": self.image, "iso": str(self.iso), "size": self.size,
                "sha256": self.sha256, "volid": self.volid}


_PROGRESS_RE = re.compile(r"Writing:|ISO image produced|Written to medium|WARNING|SORRY|FAILURE|completed")


def run_tool(argv: Sequence[str], logger: logging.Logger, *, env: Mapping[str, str] | None = None,
             show: Callable[[str], bool] = lambda _line: True, what: str = "") -> str:
    """Run a tool, streaming its output lines to ``logger`` (those ``show`` accepts); return the output.

    A non-zero exit raises IsoError with the tail of the output.
    """
    logger.info("running: %s", shlex.join(argv))
    tail: deque[str] = deque(maxlen=40)
    lines: list[str] = []
    try:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env=dict(env) if env is not None else None)
    except FileNotFoundError:
        raise IsoError(f"{argv[0]} is not installed (scripts/install-system-tools.sh installs it)") from None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        lines.append(line)
        tail.append(line)
        if show(line):
            logger.info("  %s: %s", Path(argv[0]).name, line)
    if proc.wait():
        detail = "\n".join(tail)
        raise IsoError(f"{what or argv[0]} failed with exit status {proc.returncode}: {shlex.join(argv)}\n{detail}")
    return "\n".join(lines)


def iso_manifest(path: Path, logger: logging.Logger = log) -> list[str]:
    """The sorted paths on an ISO, as its ``.manifest`` lists them (also what boot.iso.manifest holds)."""
    return parse_find_output(run_tool(xorriso_find_argv(path), logger, show=lambda _line: False))


def _write_atomic(path: Path, text: str, mtime: int | None = None) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    modes.make_public(tmp)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)


def _link_or_copy(src: Path, dest: Path) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def build_variant_tree(layout: ComposeLayout, arch: str, image: IsoImage, lorax_tree: Path,
                       logger: logging.Logger = log) -> tuple[Path, int]:
    """``work/lorax/<arch>/<image>``: lorax's tree hard-linked, without boot.iso and its manifest, with the
    disc .treeinfo/.discinfo/media.repo; built beside and swapped in. Returns (tree, build timestamp).
    """
    try:
        lorax_ti = treeinfo.load(lorax_tree / ".treeinfo")
    except treeinfo.TreeInfoError as exc:
        raise IsoInputError(f"{exc}; pull and unpack the {arch} lorax tree again (pull_unpack_tree)") from None
    stamp = int(lorax_ti.tree.build_timestamp or 0) or int((lorax_tree / ".treeinfo").stat().st_mtime)
    dest = variant_tree_dir(layout, arch, image.name)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{image.name}.tree-", dir=dest.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would end up on the published tree
    try:
        files = 0
        for dirpath, dirnames, filenames in os.walk(lorax_tree):
            here = Path(dirpath)
            rel = here.relative_to(lorax_tree)
            (work / rel).mkdir(mode=modes.DIR_MODE, exist_ok=True)
            modes.make_public(work / rel)
            for name in [*filenames, *(d for d in dirnames if (here / d).is_symlink())]:
                rel_file = (rel / name).as_posix()
                if rel_file in (BOOT_ISO, BOOT_MANIFEST, *REWRITTEN):
                    continue
                if (here / name).is_symlink():
                    os.symlink(os.readlink(here / name), work / rel / name)
                else:
                    _link_or_copy(here / name, work / rel / name)
                files += 1
        try:
            treeinfo.write_disc_treeinfo(lorax_tree, work / ".treeinfo", layout.profile, arch, image)
        except (treeinfo.TreeInfoError, KeyError) as exc:
            raise IsoInputError(f"cannot write the {image.name} disc .treeinfo: {exc}") from None
        os.utime(work / ".treeinfo", (stamp, stamp))
        _write_atomic(work / ".discinfo", discinfo_text(stamp, layout.profile.fullname, arch), stamp)
        _write_atomic(work / "media.repo", media_repo_text(stamp, layout.profile.fullname), stamp)
        for dirpath, _dirs, _files in os.walk(work):
            os.utime(dirpath, (stamp, stamp))  # new directories; xorriso records their times
        _swap_dir(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("variant tree %s: %d files linked from %s, disc .treeinfo with variants %s",
                dest, files, lorax_tree, ", ".join(repo_dir_name(layout.profile, r) for r in image.repos))
    return dest, stamp


def remove_stale_scratch(layout: ComposeLayout, arch: str, image: str) -> list[Path]:
    """Scratch dirs a killed earlier try of this (arch, image) left in ``work/lorax/<arch>``."""
    stale = [p for pattern in (f".{image}-iso-*", f".{image}.tree-*", f".{image}.old-*")
             for p in layout.lorax_dir(arch).glob(pattern)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    return stale


def _swap_dir(new: Path, dest: Path) -> None:
    """Put ``new`` at ``dest``; an old ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists() or dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    new.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def hash_once(path: Path, algos: Iterable[str]) -> dict[str, str]:
    """Hex digests of one file for several algorithms, in one read."""
    hashers = {a: hashlib.new(a) for a in dict.fromkeys(algos)}
    buf = bytearray(checksums.CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            for h in hashers.values():
                h.update(view[:n])
    return {a: h.hexdigest() for a, h in hashers.items()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _symlink(target: str, link: Path) -> None:
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)


def build_dvd(layout: ComposeLayout, arch: str, image_name: str, rc: bool, *, lorax_tree: Path | None = None,
              logger: logging.Logger = log) -> DvdResult:
    """Build one DVD into ``work/isos/<arch>/`` with its manifest, CHECKSUM files and generic/latest links."""
    started = time.monotonic()
    profile = layout.profile
    image = disc_image(profile, image_name)
    if arch not in profile.arches:
        raise IsoInputError(f"{arch} is not an arch of {profile.name} ({', '.join(profile.arches)})")
    lorax_tree = Path(lorax_tree) if lorax_tree else layout.lorax_dir(arch) / "lorax"
    boot_iso, boot_manifest = lorax_tree / BOOT_ISO, lorax_tree / BOOT_MANIFEST
    for path, what in ((boot_iso, "lorax's boot.iso"), (boot_manifest, "boot.iso's manifest")):
        if not path.is_file():
            raise IsoInputError(f"{what} {path} is missing; the DVD replays boot.iso's boot setup, so pull and "
                                f"unpack the {arch} lorax tree first (pull_unpack_tree)")
    volid = check_volid(read_volid(boot_iso), layout, arch, rc, boot_iso)
    remove_stale_scratch(layout, arch, image.name)
    tree, stamp = build_variant_tree(layout, arch, image, lorax_tree, logger)

    sources = scan_tree(tree)
    extra = extra_files_dir(layout)
    if extra.is_dir():
        sources.update(scan_tree(extra))
    for prefix, directory in repo_sources(layout, image, arch):
        sources.update(scan_tree(directory, prefix))
    grafts = graft_list(sources, parse_manifest(boot_manifest.read_text()))
    payload = sum(g.source.stat().st_size for g in grafts if g.source.is_file())
    logger.info("%s %s: %d grafts (%d updates), %.1f MiB to add to boot.iso", arch, image.name, len(grafts),
                sum(g.update for g in grafts), payload / 2**20)

    out_dir = layout.work_isos(arch)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = layout.iso_name(arch, image.name, rc)
    _check_space(out_dir, payload + boot_iso.stat().st_size, name)
    # Built beside the compose's work/isos (same filesystem) so nothing half-written ever sits in it.
    scratch = Path(tempfile.mkdtemp(prefix=f".{image.name}-iso-", dir=layout.lorax_dir(arch)))
    try:
        tmp_iso = scratch / name
        dialog = xorriso_dialog(boot_iso, tmp_iso, volid, arch, grafts, stamp)
        dialog_file = dialog_path(layout, arch, image.name)
        _write_atomic(dialog_file, "\n".join(dialog) + "\n")
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(stamp)}
        run_tool(xorriso_argv(dialog_file), logger, env=env, what=f"xorriso building {name}",
                 show=lambda line: bool(_PROGRESS_RE.search(line)))
        # Write xorriso's output back to disk while implantisomd5 and the checksum read it from the cache.
        with ThreadPoolExecutor(1) as pool:
            writeback = pool.submit(_fsync, tmp_iso)
            run_tool(implantisomd5_argv(tmp_iso), logger, what=f"implantisomd5 on {name}")
            report = run_tool(el_torito_report_argv(tmp_iso), logger, show=lambda _l: False)
            boot_report = run_tool(el_torito_report_argv(boot_iso), logger, show=lambda _l: False)
            check_boot_report(report, boot_report, name)
            manifest = iso_manifest(tmp_iso, logger)
            digests = hash_once(tmp_iso, (profile.checksum, "sha256"))
            writeback.result()
        _fsync(tmp_iso)  # what implantisomd5 wrote
        size = tmp_iso.stat().st_size
        modes.make_public(tmp_iso)
        final = out_dir / name
        os.replace(tmp_iso, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    _write_atomic(out_dir / f"{name}.manifest", "".join(f"{p}\n" for p in manifest))
    links = (layout.iso_generic_name(arch, image.name), layout.iso_latest_name(arch, image.name))
    for entry_name in (name, *links):
        entry = checksums.Checksum(entry_name, size, profile.checksum, digests[profile.checksum])
        checksums.write_checksum_file(out_dir / f"{entry_name}.CHECKSUM", [entry])
    for link in links:
        _symlink(name, out_dir / link)
        _symlink(f"{name}.manifest", out_dir / f"{link}.manifest")
    elapsed = time.monotonic() - started
    logger.info("%s: %.1f MiB, %d paths, volume id %s, %s %s; %.1f s (%.1f MiB/s)", final, size / 2**20,
                len(manifest), volid, profile.checksum, digests[profile.checksum], elapsed,
                size / 2**20 / max(elapsed, 1e-6))
    return DvdResult(arch, image.name, final, size, digests["sha256"], volid)


def _check_space(directory: Path, needed: int, name: str) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed * 1.05:
        raise IsoError(f"not enough space for {name} in {directory}: about {needed / 2**30:.2f} GiB needed, "
                       f"{free / 2**30:.2f} GiB free; free space on the compose volume and retry")


# --- cloud images (empanadas §10) -------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class CloudBuild:
    """One uploaded cloud image; orders by (date, build, epoch) as numbers, newest last."""

    date: str
    build: int
    epoch: int
    key: str
    variant: str | None

    @property
    def filename(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def cloud_kind(image_type: str, variant: str | None) -> str:
    return f"{image_type}-{variant}" if variant else image_type


def cloud_image(profile: ReleaseProfile, image_type: str, arch: str) -> CloudImage:
    image = profile.cloud_images.get(image_type)
    if image is None:
        raise IsoInputError(f"{profile.name} has no cloud image type {image_type!r}; "
                            f"types: {', '.join(profile.cloud_images) or 'none'}")
    if arch not in image.arches:
        raise IsoInputError(f"cloud image {image_type} of {profile.name} is not built for {arch} "
                            f"(arches: {', '.join(image.arches)})")
    return image


def _name_re(profile: ReleaseProfile, kind: str, arch: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(f'{profile.shortname}-{profile.major}-{kind}-{profile.revision}-')}"
                      rf"(?P<date>\d{{8}})\.(?P<build>\d+)\.{re.escape(arch)}$")


def parse_cloud_key(profile: ReleaseProfile, image: CloudImage, variant: str | None, arch: str,
                    key: str) -> CloudBuild | None:
    """The build a key holds when it is ``<prefix><name>/<epoch>/<name>.<format>`` of this kind, else None."""
    parts = key.split("/")
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    _, name, epoch, filename = parts
    if filename != f"{name}.{image.format}":
        return None
    m = _name_re(profile, cloud_kind(image.type, variant), arch).match(name)
    if not m:
        return None
    return CloudBuild(m["date"], int(m["build"]), int(epoch), key, variant)


def select_cloud_builds(profile: ReleaseProfile, image: CloudImage, arch: str,
                        keys: Iterable[str]) -> tuple[dict[str | None, CloudBuild], list[str | None]]:
    """The newest build per variant among ``keys``, and the variants that have none."""
    keys = list(keys)
    chosen: dict[str | None, CloudBuild] = {}
    missing: list[str | None] = []
    for variant in image.variants or (None,):
        builds = [b for k in keys if (b := parse_cloud_key(profile, image, variant, arch, k))]
        if builds:
            chosen[variant] = max(builds)
        else:
            missing.append(variant)
    return chosen, missing


def cloud_latest_names(profile: ReleaseProfile, image: CloudImage, variant: str | None, arch: str) -> list[str]:
    """``Rocky-9-<Type>-<Variant>.latest.<arch>.<fmt>``, plus ``Rocky-9-<Type>.latest...`` for the primary."""
    stem = f"{profile.shortname}-{profile.major}"
    names = [f"{stem}-{cloud_kind(image.type, variant)}.latest.{arch}.{image.format}"]
    if variant is not None and variant == image.primary_variant:
        names.append(f"{stem}-{image.type}.latest.{arch}.{image.format}")
    return names


def cloud_partial_dir(layout: ComposeLayout, arch: str) -> Path:
    """Downloads land here first: beside ``work/images/<arch>`` (same filesystem), never inside it."""
    return layout.work_images(arch).parent / f".{arch}.partial"


def verify_cloud_download(path: Path, key: str, expected: str) -> str:
    """Hash a downloaded image once; IsoInputError when it is not what the upload recorded."""
    digest = hash_once(path, ("sha256",))["sha256"]
    if digest != expected.lower():
        raise IsoInputError(f"s3 object {key} does not match its sha256 metadata: expected {expected}, downloaded "
                            f"{digest}; the upload is corrupt, re-upload the image (or fix its metadata)")
    return digest


def install_cloud_image(layout: ComposeLayout, image: CloudImage, build: CloudBuild, arch: str, downloaded: Path,
                        digest: str) -> list[str]:
    """Move a verified download into ``work/images/<arch>``; write its ``.CHECKSUM``, the latest links
    (each with a ``.CHECKSUM`` under the link's own name), and drop older builds of the same kind.
    Returns the names written.
    """
    profile = layout.profile
    out = modes.public_dirs(layout.work_images(arch))
    final = out / build.filename
    modes.make_public(downloaded)  # a NamedTemporaryFile download is 0600
    if downloaded != final:
        os.replace(downloaded, final)
    size = final.stat().st_size
    written = [final.name]
    checksums.write_checksum_file(out / f"{final.name}.CHECKSUM",
                                  [checksums.Checksum(final.name, size, "sha256", digest)])
    for link in cloud_latest_names(profile, image, build.variant, arch):
        _symlink(final.name, out / link)
        checksums.write_checksum_file(out / f"{link}.CHECKSUM", [checksums.Checksum(link, size, "sha256", digest)])
        written.append(link)
    pattern = _name_re(profile, cloud_kind(image.type, build.variant), arch)
    suffix = f".{image.format}"
    for old in out.iterdir():
        stem = old.name.removesuffix(".CHECKSUM").removesuffix(suffix)
        if old.name.startswith(final.name) or not pattern.match(stem) or old.is_symlink():
            continue
        old.unlink()
    return written


def local_cloud_digest(path: Path, size: int) -> str | None:
    """The sha256 of an image already downloaded by an earlier try (None when absent or of another size)."""
    if not path.is_file() or path.is_symlink() or path.stat().st_size != size:
        return None
    return hash_once(path, ("sha256",))["sha256"]
