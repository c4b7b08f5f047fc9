"""pull_unpack_tree: one arch's lorax result from S3 into the compose, verified.

The tarball is fetched by the exact key build_lorax returned (or the newest upload when asked),
checked against its ``sha256`` object metadata, unpacked with size and path limits, and its
boot ISO and installer tree placed: ``work/isos/<arch>`` gets the boot ISO with its checksums and
links; ``BaseOS/<arch>/os`` (and ``kickstart``) get the installer files by hard link and a
rewritten ``.treeinfo``. Every file is placed through a temp name and a rename, so a rerun converges.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from releng.core import lorax, s3keys, tarsafe, treeinfo
from releng.core.checksums import checksum, file_digest, write_checksum_file
from releng.core.disc import NotAnIsoError, read_volid
from releng.core.fs import link_or_copy, swap_symlink
from releng.core.layout import ComposeLayout
from releng.core.log import Logger
from releng.core.modes import public_dirs

log = logging.getLogger(__name__)
PROGRESS_EVERY = 15.0  # seconds between download progress lines
SKIPPED_TOP_DIRS = ("Packages", "repodata")  # the repo's own content; an installer tree never replaces it


class UnpackError(RuntimeError):
    """Fetching failed in a way a retry may fix (a short download, an S3 error)."""


class UnpackInputError(ValueError):
    """The lorax result is missing, corrupt or for another compose; retrying will not help."""


def pull_unpack_tree(layout: ComposeLayout, arch: str, hook: Any, bucket: str, *, rc: bool,
                     lorax_result: Mapping | None = None, newest: bool = False, kickstart: bool = True,
                     logger: Logger = log) -> dict:
    """Fetch, verify and unpack ``arch``'s lorax tarball; place the boot ISO and the installer tree.

    ``hook`` is an Airflow S3Hook. Returns ``{"arch", "volid", "boot_iso", "lorax_dir", "tree_files"}``.
    """
    pull = _TreePull(layout, arch, hook, bucket, logger)
    key, expected = pull.choose_key(lorax_result, newest)
    tree = pull.fetch_and_unpack(key, expected)
    try:
        volid = read_volid(tree / "images" / "boot.iso")
    except NotAnIsoError as exc:
        raise UnpackInputError(f"s3://{bucket}/{key}: {exc}") from None
    if volid != layout.volid(arch, rc):
        raise UnpackInputError(
            f"s3://{bucket}/{key}: boot.iso has volume id {volid!r}, expected {layout.volid(arch, rc)!r}; "
            f"the tarball was built for another release or rc setting (rc={rc}); rebuild lorax for this compose")
    digests = treeinfo.DigestCache()
    boot_iso = pull.place_boot_iso(tree, rc, digests)
    image = lorax.installer_image(layout.profile)
    files = 0
    for kind in ("os", "kickstart") if kickstart else ("os",):
        dest = layout.repo_tree(image.variant, arch, kind)
        started = time.monotonic()
        files = pull.merge_tree(tree, dest)
        try:
            treeinfo.write_tree_treeinfo(tree, dest, layout.profile, arch, kind, image, digests)
        except treeinfo.TreeInfoError as exc:
            raise UnpackInputError(str(exc)) from None
        logger.info("merged %d installer files into %s and rewrote its .treeinfo (%.1f s)", files, dest,
                    time.monotonic() - started)
    return {"arch": arch, "volid": volid, "boot_iso": str(boot_iso), "lorax_dir": str(layout.lorax_dir(arch)),
            "tree_files": files}


class _TreePull:
    def __init__(self, layout: ComposeLayout, arch: str, hook: Any, bucket: str, logger: Logger):
        self.layout, self.arch, self.hook, self.bucket, self.log = layout, arch, hook, bucket, logger

    # --- S3 ------------------------------------------------------------------------------------
    def choose_key(self, lorax_result: Mapping | None, newest: bool) -> tuple[str, dict | None]:
        """The exact key from the lorax result, or the newest upload (by numeric epoch) when asked."""
        p = self.layout.profile
        prefix = s3keys.lorax_prefix(p.major, self.arch)
        name = s3keys.lorax_tarball_name(p.revision, self.arch)
        if lorax_result:
            result = dict(lorax_result)
            try:
                lorax.check_result(result, self.arch)
            except lorax.LoraxError as exc:
                raise UnpackInputError(f"the lorax task's result cannot be used: {exc}") from None
            key = result["key"]
            if not (key.startswith(prefix) and key.endswith(f"/{name}") and s3keys.epoch_of(key) is not None):
                raise UnpackInputError(f"lorax result key {key!r} is not a {p.name} {self.arch} lorax tarball "
                                       f"({prefix}<epoch>/{name}); check how build_lorax was wired")
            return key, result
        if not newest:
            raise UnpackInputError(f"no lorax result for {self.arch}: wire build_lorax's output into "
                                   "lorax_result, or set newest=True to take the newest upload")
        keys = [k for k in self.hook.list_keys(bucket_name=self.bucket, prefix=prefix) or []
                if k.rsplit("/", 1)[-1] == name and s3keys.epoch_of(k) is not None]
        if not keys:
            raise UnpackInputError(f"no {name} under s3://{self.bucket}/{prefix}; "
                                   f"run build_lorax for {self.arch} first")
        key = max(keys, key=lambda k: s3keys.epoch_of(k) or 0)
        self.log.info("newest of %d lorax uploads for %s: s3://%s/%s", len(keys), self.arch, self.bucket, key)
        return key, None

    def fetch_and_unpack(self, key: str, expected: dict | None) -> Path:
        where = f"s3://{self.bucket}/{key}"
        head = self.hook.head_object(key, self.bucket)
        if head is None:
            raise UnpackInputError(f"{where} does not exist; rerun build_lorax for {self.arch} "
                                   "(or check RELENG_S3_BUCKET and the connection's endpoint)")
        size = int(head["ContentLength"])
        recorded = (head.get("Metadata") or {}).get(s3keys.CHECKSUM_METADATA)
        if not recorded:
            raise UnpackInputError(f"{where} has no {s3keys.CHECKSUM_METADATA} metadata, so it cannot be "
                                   "verified; it was not uploaded by build-lorax.sh, rebuild it")
        if expected and (expected["size"] != size or expected["sha256"] != recorded):
            raise UnpackInputError(
                f"{where} is {size} bytes with sha256 {recorded}, but build_lorax uploaded {expected['size']} "
                f"bytes with sha256 {expected['sha256']}; the object was replaced, rerun build_lorax")
        if size > lorax.TARBALL_LIMITS.max_total_size:
            raise UnpackInputError(f"{where} is {size} bytes, over the {lorax.TARBALL_LIMITS.max_total_size} "
                                   "byte limit for a lorax tarball")
        downloads = self.layout.work / "lorax" / f".{self.arch}.download"
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir(parents=True)
        try:
            path = self._download(key, downloads, size)
            started = time.monotonic()
            digest = file_digest(path)
            self.log.info("sha256 %s (%d bytes in %.1f s)", digest, size, time.monotonic() - started)
            if digest != recorded:
                raise UnpackInputError(
                    f"{where} is corrupt: its sha256 is {digest} but the object metadata records {recorded}; "
                    f"nothing was unpacked. Rerun build_lorax for {self.arch} to upload it again")
            try:
                # Merge: lorax/ and the log are replaced, the DVD step's trees beside them stay.
                done = tarsafe.safe_extract(path, self.layout.lorax_dir(self.arch), lorax.TARBALL_LIMITS, merge=True)
            except tarsafe.TarSafetyError as exc:
                raise UnpackInputError(f"{where} was not unpacked: {exc}") from None
        finally:
            shutil.rmtree(downloads, ignore_errors=True)
        self.log.info("unpacked %d members (%d bytes) into %s in %.1f s", done.members, done.bytes, done.path,
                      done.seconds)
        tree = done.path / "lorax"
        missing = [rel for rel in (".treeinfo", "images/boot.iso") if not (tree / rel).is_file()]
        if missing:
            shutil.rmtree(tree, ignore_errors=True)
            raise UnpackInputError(f"{where} is not a lorax result: lorax/{', lorax/'.join(missing)} missing; "
                                   "rebuild it with build-lorax.sh")
        return tree

    def _download(self, key: str, directory: Path, size: int) -> Path:
        from botocore.exceptions import ClientError  # here, not at module level: DAG parsing imports this module

        target = directory / key.rsplit("/", 1)[-1]
        stop = threading.Event()
        watcher = threading.Thread(target=self._report_progress, args=(target, size, stop), daemon=True)
        started = time.monotonic()
        watcher.start()
        try:
            path = Path(self.hook.download_file(key, self.bucket, local_path=str(directory),
                                                preserve_file_name=True, use_autogenerated_subdir=False))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                raise UnpackInputError(f"s3://{self.bucket}/{key} does not exist; rerun build_lorax for "
                                       f"{self.arch}") from None
            raise UnpackError(f"downloading s3://{self.bucket}/{key} failed: {exc}") from exc
        finally:
            stop.set()
            watcher.join()
        elapsed = max(time.monotonic() - started, 1e-6)
        got = path.stat().st_size
        if got != size:
            raise UnpackError(f"downloaded {got} bytes of s3://{self.bucket}/{key}, expected {size}; retry")
        self.log.info("downloaded s3://%s/%s: %d bytes in %.1f s (%.1f MB/s)", self.bucket, key, got, elapsed,
                      got / elapsed / 1e6)
        return path

    def _report_progress(self, path: Path, size: int, stop: threading.Event) -> None:
        started = time.monotonic()
        while not stop.wait(PROGRESS_EVERY):
            done = path.stat().st_size if path.exists() else 0
            rate = done / max(time.monotonic() - started, 1e-6) / 1e6
            self.log.info("downloading: %d of %d bytes (%.0f%%, %.1f MB/s)", done, size,
                          100.0 * done / max(size, 1), rate)

    # --- placing the results -------------------------------------------------------------------
    def place_boot_iso(self, tree: Path, rc: bool, digests: treeinfo.DigestCache) -> Path:
        """``work/isos/<arch>/<Short>-<R>[-RC]-<arch>-boot.iso`` plus its generic and latest symlinks,
        a manifest and a ``.CHECKSUM`` for each name; the ISO is hashed once."""
        source = tree / "images" / "boot.iso"
        isos = self.layout.work_isos(self.arch)
        public_dirs(isos)
        name = self.layout.iso_name(self.arch, "boot", rc)
        iso = isos / name
        link_or_copy(source, iso)
        link_or_copy(tree / "images" / "boot.iso.manifest", isos / f"{name}.manifest")
        started = time.monotonic()
        digest = file_digest(iso)
        digests.seed(iso, digest)
        self.log.info("boot ISO %s: sha256 %s (%d bytes in %.1f s)", iso, digest, iso.stat().st_size,
                      time.monotonic() - started)
        aliases = (self.layout.iso_generic_name(self.arch, "boot"), self.layout.iso_latest_name(self.arch, "boot"))
        for alias in aliases:
            swap_symlink(name, isos / alias)
            swap_symlink(f"{name}.manifest", isos / f"{alias}.manifest")
        for entry in (name, *aliases):
            write_checksum_file(isos / f"{entry}.CHECKSUM", [checksum(isos / entry, name=entry, digest=digest)])
        return iso

    def merge_tree(self, tree: Path, dest: Path) -> int:
        """Hard-link (or copy) the installer tree into a repo tree; Packages/, repodata/ and .treeinfo are
        never touched (the .treeinfo is rewritten afterwards, after the files it names)."""
        count = 0
        for root, dirs, files in os.walk(tree):
            rel_root = Path(root).relative_to(tree)
            if rel_root == Path("."):
                skipped = [d for d in dirs if d in SKIPPED_TOP_DIRS]
                if skipped:
                    self.log.warning("the lorax tree has %s; left out so the repo's own stay", ", ".join(skipped))
                dirs[:] = [d for d in dirs if d not in SKIPPED_TOP_DIRS]
            target_dir = public_dirs(dest / rel_root)
            for entry in [*files, *(d for d in dirs if (Path(root) / d).is_symlink())]:
                source = Path(root) / entry
                if rel_root == Path(".") and entry in (".treeinfo", *SKIPPED_TOP_DIRS):
                    continue
                if source.is_symlink():
                    swap_symlink(os.readlink(source), target_dir / entry)
                else:
                    link_or_copy(source, target_dir / entry)
                count += 1
        return count
