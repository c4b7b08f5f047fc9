"""build_dvd_iso: one DVD per (arch, image) by replaying lorax's boot.iso with xorriso.

Per (arch, image): a variant copy of the lorax tree with the disc ``.treeinfo``,
``.discinfo`` and ``media.repo``; a graft list of that tree, the extra files and
the image's repos; an xorriso dialog that replays boot.iso's boot setup
(``-boot_image any replay``) and grafts the rest; then ``implantisomd5``, a
manifest, a boot sanity check and checksums. The ISO is written under a temp
name beside the compose and renamed into ``work/isos/<arch>/`` at the end, so a
failed or killed run leaves nothing half written there, and a rerun converges:
xorriso gets ``SOURCE_DATE_EPOCH`` = the lorax tree's build time and sets every
file and directory time on the ISO to it, so the same contents give a
byte-identical DVD whatever the input trees' mtimes.

The pure parts (names, graft list and order, dialog, argv builders, parsers)
run nothing; :func:`build_dvd` runs the tools.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from releng.core import checksums, modes, treeinfo
from releng.core.compose.deploy_extra_files import extra_files_dir
from releng.core.disc import MAX_VOLID, NotAnIsoError, discinfo_text, media_repo_text, read_volid
from releng.core.fs import atomic_write, link_or_copy, swap_symlink
from releng.core.layout import ComposeLayout, LayoutError, repo_dir_name
from releng.core.log import Logger
from releng.core.profile import IsoImage, ReleaseProfile
from releng.core.run import ToolError, stream, tool_env

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


def variant_tree_dir(layout: ComposeLayout, arch: str, image: str) -> Path:
    return layout.lorax_dir(arch) / image


def dialog_path(layout: ComposeLayout, arch: str, image: str) -> Path:
    """Where the xorriso dialog is kept for inspection."""
    return layout.lorax_dir(arch) / f"xorriso-{image}-{arch}.txt"


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
    """The xorriso dialog replays boot.iso: replay boot.iso, graft the rest, ``-end``.

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

    def to_xcom(self) -> dict:
        return {"arch": self.arch, "image": self.image, "iso": str(self.iso), "size": self.size,
                "sha256": self.sha256, "volid": self.volid}


_PROGRESS_RE = re.compile(r"Writing:|ISO image produced|Written to medium|WARNING|SORRY|FAILURE|completed")


def run_tool(argv: Sequence[str], logger: Logger, *, env: Mapping[str, str] | None = None,
             show: Callable[[str], bool] = lambda _line: True, what: str = "") -> str:
    """Run a tool, streaming its output lines to ``logger`` (those ``show`` accepts); return the output.

    A non-zero exit raises IsoError with the tail of the output.
    """
    logger.info("running: %s", " ".join(map(str, argv)))
    lines: list[str] = []
    try:
        with stream(argv, what=what or None, env=tool_env(env)) as output:
            for line in output:
                lines.append(line)
                if show(line):
                    logger.info("  %s: %s", Path(argv[0]).name, line)
    except ToolError as exc:
        raise IsoError(str(exc)) from exc
    return "\n".join(lines)


def iso_manifest(path: Path, logger: Logger = log) -> list[str]:
    """The sorted paths on an ISO, as its ``.manifest`` lists them (also what boot.iso.manifest holds)."""
    return parse_find_output(run_tool(xorriso_find_argv(path), logger, show=lambda _line: False))


def build_variant_tree(layout: ComposeLayout, arch: str, image: IsoImage, lorax_tree: Path,
                       logger: Logger = log) -> tuple[Path, int]:
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
                    link_or_copy(here / name, work / rel / name)
                files += 1
        try:
            treeinfo.write_disc_treeinfo(lorax_tree, work / ".treeinfo", layout.profile, arch, image)
        except (treeinfo.TreeInfoError, KeyError) as exc:
            raise IsoInputError(f"cannot write the {image.name} disc .treeinfo: {exc}") from None
        os.utime(work / ".treeinfo", (stamp, stamp))
        for name, text in ((".discinfo", discinfo_text(stamp, layout.profile.fullname, arch)),
                           ("media.repo", media_repo_text(stamp, layout.profile.fullname))):
            os.utime(atomic_write(work / name, text), (stamp, stamp))
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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_dvd(layout: ComposeLayout, arch: str, image_name: str, rc: bool, *, lorax_tree: Path | None = None,
              logger: Logger = log) -> DvdResult:
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
    try:
        found = read_volid(boot_iso)
    except NotAnIsoError as exc:
        raise IsoInputError(str(exc)) from None
    volid = check_volid(found, layout, arch, rc, boot_iso)
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
        atomic_write(dialog_file, "\n".join(dialog) + "\n")
        env = {"SOURCE_DATE_EPOCH": str(stamp)}
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
            digests = checksums.hash_once(tmp_iso, (profile.checksum, "sha256"))
            writeback.result()
        _fsync(tmp_iso)  # what implantisomd5 wrote
        size = tmp_iso.stat().st_size
        modes.make_public(tmp_iso)
        final = out_dir / name
        os.replace(tmp_iso, final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    atomic_write(out_dir / f"{name}.manifest", "".join(f"{p}\n" for p in manifest))
    links = (layout.iso_generic_name(arch, image.name), layout.iso_latest_name(arch, image.name))
    for entry_name in (name, *links):
        entry = checksums.Checksum(entry_name, size, profile.checksum, digests[profile.checksum])
        checksums.write_checksum_file(out_dir / f"{entry_name}.CHECKSUM", [entry])
    for link in links:
        swap_symlink(name, out_dir / link)
        swap_symlink(f"{name}.manifest", out_dir / f"{link}.manifest")
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


