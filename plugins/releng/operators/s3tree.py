"""pull_unpack_tree: one arch's lorax result from S3 into the compose (empanadas §7.3, verified).

DAG wiring: pair each lorax result with its planned arch (``zip`` keeps element i with element i;
``expand`` would build a cross product)::

    pull = PullUnpackTreeOperator.partial(task_id="pull_unpack_tree", map_index_template="{{ task.arch }}") \\
        .expand_kwargs(build_lorax.output.zip(items).map(pull_unpack_kwargs))
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from botocore.exceptions import ClientError

from releng.core import lorax, s3keys, tarsafe, treeinfo
from releng.core.checksums import checksum, file_digest, write_checksum_file
from releng.core.layout import ComposeLayout, LayoutError
from releng.core.modes import make_public, public_dirs
from releng.core.settings import settings
from releng.operators.common import load_release

PROGRESS_EVERY = 15.0  # seconds between download progress lines
SKIPPED_TOP_DIRS = ("Packages", "repodata")  # the repo's own content; an installer tree never replaces it


def pull_unpack_kwargs(pair: tuple[dict, dict]) -> dict:
    """``.map()`` callable: (lorax result, planned arch item) -> PullUnpackTreeOperator kwargs."""
    result, item = pair
    summary = item["summary"]
    return {"arch": item["arch"], "release": summary["release"], "compose_id": summary["compose_id"],
            "compose_root": summary["compose_root"], "rc": bool(summary["rc"]),
            "kickstart": bool(summary.get("full_run", True)), "lorax_result": result}


def _flag(value: bool | str) -> bool:
    return value.strip().lower() in ("true", "1", "yes") if isinstance(value, str) else bool(value)


class PullUnpackTreeOperator(BaseOperator):
    """Fetch one arch's lorax tarball from S3, verify and unpack it, place the boot ISO and the installer tree.

    Idempotent: every file is placed through a temp name and a rename, and a rerun converges.
    Returns ``{"arch", "volid", "boot_iso", "lorax_dir", "tree_files"}``.

    :param arch: RPM arch
    :param release: release profile name (``el9``)
    :param compose_id: the compose's id (``Rocky-9.7-20250101.000000``)
    :param compose_root: compose root (default: ``RELENG_COMPOSE_ROOT``)
    :param rc: release candidate (boot ISO name and volume id carry the RC level)
    :param lorax_result: the lorax task's XCom ``{"arch", "key", "sha256", "size"}``
    :param newest: without ``lorax_result``, take the newest upload under the arch's prefix (by epoch)
    :param kickstart: also merge into ``BaseOS/<arch>/kickstart`` (full runs)
    :param bucket: S3 bucket (default: ``RELENG_S3_BUCKET``)
    :param aws_conn_id: Airflow AWS connection (default: ``RELENG_S3_CONN_ID``)
    """

    template_fields: Sequence[str] = ("arch", "release", "compose_id", "compose_root", "rc", "lorax_result",
                                      "newest", "kickstart", "bucket")
    ui_color = "#e0ecf8"

    def __init__(self, *, arch: str, release: str, compose_id: str, compose_root: str | None = None,
                 rc: bool | str = False, lorax_result: dict | None = None, newest: bool | str = False,
                 kickstart: bool | str = True, bucket: str | None = None, aws_conn_id: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.arch = arch
        self.release = release
        self.compose_id = compose_id
        self.compose_root = compose_root
        self.rc = rc
        self.lorax_result = lorax_result
        self.newest = newest
        self.kickstart = kickstart
        self.bucket = bucket
        self.aws_conn_id = aws_conn_id

    # --- execute -------------------------------------------------------------------------------
    def execute(self, context: Context) -> dict:
        s = settings()
        bucket = self.bucket or s.s3_bucket
        layout = self._layout()
        rc = _flag(self.rc)
        hook = S3Hook(aws_conn_id=self.aws_conn_id or s.s3_conn_id)
        key, expected = self._choose_key(hook, bucket, layout)
        tree = self._fetch_and_unpack(hook, bucket, key, expected, layout)

        volid = lorax.boot_iso_volid(tree / "images" / "boot.iso")
        if volid != layout.volid(self.arch, rc):
            raise AirflowFailException(
                f"s3://{bucket}/{key}: boot.iso has volume id {volid!r}, expected {layout.volid(self.arch, rc)!r}; "
                f"the tarball was built for another release or rc setting (rc={rc}); rebuild lorax for this compose")
        digests = treeinfo.DigestCache()
        boot_iso = self._place_boot_iso(layout, tree, rc, digests)
        image = lorax.installer_image(layout.profile)
        kinds = ("os", "kickstart") if _flag(self.kickstart) else ("os",)
        files = 0
        for kind in kinds:
            dest = layout.repo_tree(image.variant, self.arch, kind)
            started = time.monotonic()
            files = self._merge_tree(tree, dest)
            try:
                treeinfo.write_tree_treeinfo(tree, dest, layout.profile, self.arch, kind, image, digests)
            except treeinfo.TreeInfoError as exc:
                raise AirflowFailException(str(exc)) from None
            self.log.info("merged %d installer files into %s and rewrote its .treeinfo (%.1f s)", files, dest,
                          time.monotonic() - started)
        return {"arch": self.arch, "volid": volid, "boot_iso": str(boot_iso),
                "lorax_dir": str(layout.lorax_dir(self.arch)), "tree_files": files}

    def _layout(self) -> ComposeLayout:
        s = settings()
        profile = load_release(self.release)
        try:
            layout = ComposeLayout(profile, Path(self.compose_root or s.compose_root), self.compose_id)
            layout.lorax_dir(self.arch)
        except LayoutError as exc:
            raise AirflowFailException(f"cannot place the lorax tree for {self.arch}: {exc}") from None
        if self.arch not in profile.arches:
            raise AirflowFailException(f"arch {self.arch!r} is not an arch of {profile.name} "
                                       f"({', '.join(profile.arches)})")
        if not layout.top.is_dir():
            raise AirflowFailException(f"compose directory {layout.top} does not exist; prepare_compose creates it")
        return layout

    # --- S3 ------------------------------------------------------------------------------------
    def _choose_key(self, hook: S3Hook, bucket: str, layout: ComposeLayout) -> tuple[str, dict | None]:
        """The exact key from the lorax result, or the newest upload (by numeric epoch) when asked."""
        p = layout.profile
        prefix = s3keys.lorax_prefix(p.major, self.arch)
        name = s3keys.lorax_tarball_name(p.revision, self.arch)
        if self.lorax_result:
            result = dict(self.lorax_result)
            try:
                lorax.check_result(result, self.arch)
            except lorax.LoraxError as exc:
                raise AirflowFailException(f"the lorax task's result cannot be used: {exc}") from None
            key = result["key"]
            if not (key.startswith(prefix) and key.endswith(f"/{name}") and s3keys.epoch_of(key) is not None):
                raise AirflowFailException(f"lorax result key {key!r} is not a {p.name} {self.arch} lorax tarball "
                                           f"({prefix}<epoch>/{name}); check how build_lorax was wired")
            return key, result
        if not _flag(self.newest):
            raise AirflowFailException(f"no lorax result for {self.arch}: wire build_lorax's output into "
                                       "lorax_result, or set newest=True to take the newest upload")
        keys = [k for k in hook.list_keys(bucket_name=bucket, prefix=prefix) or []
                if k.rsplit("/", 1)[-1] == name and s3keys.epoch_of(k) is not None]
        if not keys:
            raise AirflowFailException(f"no {name} under s3://{bucket}/{prefix}; run build_lorax for {self.arch} first")
        key = max(keys, key=lambda k: s3keys.epoch_of(k) or 0)
        self.log.info("newest of %d lorax uploads for %s: s3://%s/%s", len(keys), self.arch, bucket, key)
        return key, None

    def _fetch_and_unpack(self, hook: S3Hook, bucket: str, key: str, expected: dict | None,
                          layout: ComposeLayout) -> Path:
        where = f"s3://{bucket}/{key}"
        head = hook.head_object(key, bucket)
        if head is None:
            raise AirflowFailException(f"{where} does not exist; rerun build_lorax for {self.arch} "
                                       "(or check RELENG_S3_BUCKET and the connection's endpoint)")
        size = int(head["ContentLength"])
        recorded = (head.get("Metadata") or {}).get(s3keys.CHECKSUM_METADATA)
        if not recorded:
            raise AirflowFailException(f"{where} has no {s3keys.CHECKSUM_METADATA} metadata, so it cannot be "
                                       "verified; it was not uploaded by build-lorax.sh, rebuild it")
        if expected and (expected["size"] != size or expected["sha256"] != recorded):
            raise AirflowFailException(
                f"{where} is {size} bytes with sha256 {recorded}, but build_lorax uploaded {expected['size']} "
                f"bytes with sha256 {expected['sha256']}; the object was replaced, rerun build_lorax")
        if size > lorax.TARBALL_LIMITS.max_total_size:
            raise AirflowFailException(f"{where} is {size} bytes, over the {lorax.TARBALL_LIMITS.max_total_size} "
                                       "byte limit for a lorax tarball")
        downloads = layout.work / "lorax" / f".{self.arch}.download"
        shutil.rmtree(downloads, ignore_errors=True)
        downloads.mkdir(parents=True)
        try:
            path = self._download(hook, bucket, key, downloads, size)
            started = time.monotonic()
            digest = file_digest(path)
            self.log.info("sha256 %s (%d bytes in %.1f s)", digest, size, time.monotonic() - started)
            if digest != recorded:
                raise AirflowFailException(
                    f"{where} is corrupt: its sha256 is {digest} but the object metadata records {recorded}; "
                    f"nothing was unpacked. Rerun build_lorax for {self.arch} to upload it again")
            try:
                # Merge: lorax/ and the log are replaced, the DVD step's trees beside them stay.
                done = tarsafe.safe_extract(path, layout.lorax_dir(self.arch), lorax.TARBALL_LIMITS, merge=True)
            except tarsafe.TarSafetyError as exc:
                raise AirflowFailException(f"{where} was not unpacked: {exc}") from None
        finally:
            shutil.rmtree(downloads, ignore_errors=True)
        self.log.info("unpacked %d members (%d bytes) into %s in %.1f s", done.members, done.bytes, done.path,
                      done.seconds)
        tree = done.path / "lorax"
        missing = [rel for rel in (".treeinfo", "images/boot.iso") if not (tree / rel).is_file()]
        if missing:
            shutil.rmtree(tree, ignore_errors=True)
            raise AirflowFailException(f"{where} is not a lorax result: lorax/{', lorax/'.join(missing)} missing; "
                                       "rebuild it with build-lorax.sh")
        return tree

    def _download(self, hook: S3Hook, bucket: str, key: str, directory: Path, size: int) -> Path:
        target = directory / key.rsplit("/", 1)[-1]
        stop = threading.Event()
        watcher = threading.Thread(target=self._report_progress, args=(target, size, stop), daemon=True)
        started = time.monotonic()
        watcher.start()
        try:
            path = Path(hook.download_file(key, bucket, local_path=str(directory), preserve_file_name=True,
                                           use_autogenerated_subdir=False))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
                raise AirflowFailException(f"s3://{bucket}/{key} does not exist; rerun build_lorax for "
                                           f"{self.arch}") from None
            raise AirflowException(f"downloading s3://{bucket}/{key} failed: {exc}") from exc
        finally:
            stop.set()
            watcher.join()
        elapsed = max(time.monotonic() - started, 1e-6)
        got = path.stat().st_size
        if got != size:
            raise AirflowException(f"downloaded {got} bytes of s3://{bucket}/{key}, expected {size}; retry")
        self.log.info("downloaded s3://%s/%s: %d bytes in %.1f s (%.1f MB/s)", bucket, key, got, elapsed,
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
    def _place_boot_iso(self, layout: ComposeLayout, tree: Path, rc: bool, digests: treeinfo.DigestCache) -> Path:
        """``work/isos/<arch>/<Short>-<R>[-RC]-<arch>-boot.iso`` plus its generic and latest symlinks,
        a manifest and a ``.CHECKSUM`` for each name; the ISO is hashed once."""
        source = tree / "images" / "boot.iso"
        isos = layout.work_isos(self.arch)
        public_dirs(isos)
        name = layout.iso_name(self.arch, "boot", rc)
        iso = isos / name
        _link_or_copy(source, iso)
        _link_or_copy(tree / "images" / "boot.iso.manifest", isos / f"{name}.manifest")
        started = time.monotonic()
        digest = file_digest(iso)
        digests.seed(iso, digest)
        self.log.info("boot ISO %s: sha256 %s (%d bytes in %.1f s)", iso, digest, iso.stat().st_size,
                      time.monotonic() - started)
        aliases = (layout.iso_generic_name(self.arch, "boot"), layout.iso_latest_name(self.arch, "boot"))
        for alias in aliases:
            _symlink(name, isos / alias)
            _symlink(f"{name}.manifest", isos / f"{alias}.manifest")
        for entry in (name, *aliases):
            write_checksum_file(isos / f"{entry}.CHECKSUM", [checksum(isos / entry, name=entry, digest=digest)])
        return iso

    def _merge_tree(self, tree: Path, dest: Path) -> int:
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
                    _symlink(os.readlink(source), target_dir / entry)
                else:
                    _link_or_copy(source, target_dir / entry)
                count += 1
        return count


def _link_or_copy(source: Path, dest: Path) -> None:
    """Hard-link ``source`` at ``dest`` (a copy across filesystems) through a temp name; idempotent."""
    if dest.exists() and not dest.is_symlink() and os.path.samefile(source, dest):
        return
    tmp = dest.with_name(f".{dest.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copy2(source, tmp)
    make_public(tmp)
    os.replace(tmp, dest)


def _symlink(target: str, link: Path) -> None:
    """A relative symlink ``link -> target`` through a temp name; an existing correct link is kept."""
    if link.is_symlink() and os.readlink(link) == target:
        return
    tmp = link.with_name(f".{link.name}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)
