"""finalize_compose: the compose's STATUS from its tasks' end states, the published ISOs and images with
their CHECKSUM files (clear-signed with the release key when one is set) and torrents,
composeinfo.json/images.json/rpms.json, and the ``latest-<Short>-<profile>`` link.

While any watched task has not ended it refuses and leaves STATUS as it is. A failed required task
writes DOOMED; failed failable deliverables make the compose FINISHED_INCOMPLETE. The latest link
moves only for a finished compose, atomically.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from releng.core import metadata
from releng.core.checksums import checksum_text, read_checksum_file, write_checksum_file
from releng.core.compose.prepare_compose import ComposePlan, ComposeSummary, plan_compose
from releng.core.compose.status import reopen, write_status
from releng.core.fs import swap_symlink
from releng.core.layout import ComposeLayout, LayoutError, download_path, variant_id
from releng.core.log import Logger
from releng.core.profile import ReleaseProfile, Repo
from releng.core.repo.primary import iter_packages
from releng.core.staging.signing import clearsign_file, gpg_session, require_key
from releng.core.torrents import SUFFIX as TORRENT_SUFFIX
from releng.core.torrents import TorrentSettings, make_torrent, torrent_path
from releng.core.treeinfo import write_repo_treeinfo

log = logging.getLogger(__name__)


def move_latest_link(layout: ComposeLayout) -> None:
    """Point ``latest-<Short>-<profile>`` at this compose: a new link renamed over the old one (atomic)."""
    link = layout.latest_link
    if link.exists() and not link.is_symlink():
        raise LayoutError(f"{link} exists and is not a symlink; move it away so the latest link can be managed")
    swap_symlink(layout.top.name, link)  # relative: the tree stays valid when mounted elsewhere


@dataclass(frozen=True)
class Outcome:
    status: str
    failed_required: tuple[str, ...]
    failed_optional: tuple[str, ...]


FAILED_STATES = frozenset({"failed", "upstream_failed"})
# Airflow's finished states; anything else (running, queued, scheduled, deferred, up_for_retry,
# up_for_reschedule, restarting, no state yet) is a task that may still write into the compose.
ENDED_STATES = frozenset({"success", "skipped", "removed", *FAILED_STATES})


class ComposeNotEnded(RuntimeError):
    """Some watched task has not ended; the compose cannot be finalized yet."""

    def __init__(self, unfinished: list[tuple[str, str | None]]):
        self.unfinished = unfinished
        listed = ", ".join(f"{key} ({state or 'not started'})" for key, state in unfinished[:20])
        more = f" and {len(unfinished) - 20} more" if len(unfinished) > 20 else ""
        super().__init__(f"refusing to finalize: {len(unfinished)} work tasks have not ended: {listed}{more}; "
                         f"the compose stays STARTED. Let them end, then clear finalize_compose")


def _task_of(key: str, task_ids: Iterable[str]) -> str:
    """The task id of a state key: ``sync_repos`` or, for a mapped instance, ``sync_repos_12``."""
    for task_id in sorted(task_ids, key=len, reverse=True):
        if key == task_id or (key.startswith(task_id + "_") and key[len(task_id) + 1:].isdigit()):
            return task_id
    return key


def missing_tasks(states: Mapping[str, str | None], task_ids: Iterable[str]) -> list[str]:
    """The task ids among ``task_ids`` that have no instance at all in ``states``."""
    task_ids = list(task_ids)
    present = {_task_of(key, task_ids) for key in states}
    return [t for t in task_ids if t not in present]


def failable_keys(profile: ReleaseProfile, plan: ComposePlan, tasks: Mapping[str, str]) -> set[str]:
    """State keys (``task_<map_index>``) of the deliverables the profile marks failable.

    ``tasks`` maps a mapped task id to the plan list it runs over (``{"pull_cloud_images": "cloud"}``);
    the map index is the item's position in that list.
    """
    keys = set()
    for task_id, kind in tasks.items():
        for index, item in enumerate(getattr(plan, kind)):
            spec = profile.cloud_images[item["image_type"]] if kind == "cloud" else profile.iso_images[item["image"]]
            if spec.failable:
                keys.add(f"{task_id}_{index}")
    return keys


def describe_keys(keys: Iterable[str], plan: ComposePlan, tasks: Mapping[str, str]) -> list[str]:
    """State keys with what they built, for people: ``pull_cloud_images_3 (cloud image Azure, x86_64)``.

    ``tasks`` maps a mapped task id to its plan list, as for :func:`failable_keys`; other keys stay as they are.
    """
    out = []
    for key in keys:
        task_id, _, index = key.rpartition("_")
        items = getattr(plan, tasks[task_id]) if task_id in tasks and index.isdigit() else []
        if items and int(index) < len(items):
            item = items[int(index)]
            what = (f"cloud image {item['image_type']}" if tasks[task_id] == "cloud" else f"ISO {item['image']}")
            out.append(f"{key} ({what}, {item['arch']})")
        else:
            out.append(key)
    return out


def compose_outcome(states: Mapping[str, str | None], failable: Iterable[str], task_ids: Iterable[str]) -> Outcome:
    """STATUS from the run's task states, as Airflow reports them (``task`` or ``task_<map_index>``):
    a failed required task dooms the compose; a failed failable deliverable makes it FINISHED_INCOMPLETE.
    ``failable`` holds task ids (every instance may fail) or single state keys. ComposeNotEnded when any
    task has not ended (a sync waiting to retry may still succeed), whatever else failed.
    """
    states = {key: getattr(state, "value", state) for key, state in states.items()}  # enum members: their values
    optional = set(failable)
    task_ids = list(task_ids)
    unfinished = sorted(((k, state) for k, state in states.items() if state not in ENDED_STATES),
                        key=lambda item: item[0])
    if unfinished:
        raise ComposeNotEnded(unfinished)
    failed = sorted(k for k, state in states.items() if state in FAILED_STATES)

    def is_optional(key: str) -> bool:
        return key in optional or _task_of(key, task_ids) in optional

    failed_optional = tuple(k for k in failed if is_optional(k))
    failed_required = tuple(k for k in failed if not is_optional(k))
    if failed_required:
        return Outcome("DOOMED", failed_required, failed_optional)
    return Outcome("FINISHED_INCOMPLETE" if failed_optional else "FINISHED", (), failed_optional)


@dataclass(frozen=True)
class Distribution:
    """What users get beside the images: a torrent of each, and the CHECKSUM files' signature.

    :param torrents: the site's torrent settings; None makes no torrents
    :param signing_key: the release key (``RELENG_REPO_SIGNING_KEY``) each per-arch CHECKSUM is clear-signed
        with; empty leaves CHECKSUM unsigned
    :param gnupghome: the GnuPG home holding it (``RELENG_GNUPGHOME``; None: gpg's default)
    """

    torrents: TorrentSettings | None = None
    signing_key: str = ""
    gnupghome: Path | None = None


class ComposeDoomed(RuntimeError):
    """A required task failed, or finalizing itself failed: STATUS is DOOMED and the latest link did not move."""


@dataclass(frozen=True)
class FinalizeResult:
    compose_id: str
    status: str
    top: Path
    failed_optional: tuple[str, ...]
    images: int
    failed_optional_named: tuple[str, ...] = ()  # the same, with what each built (for logs and notifications)

    def to_xcom(self) -> dict:
        return {"compose_id": self.compose_id, "status": self.status, "top": str(self.top),
                "failed_optional": list(self.failed_optional), "images": self.images}


def finalize_compose(layout: ComposeLayout, summary: ComposeSummary, states: Mapping[str, str | None],
                     watched: Iterable[str], deliverables: Mapping[str, str],
                     logger: Logger = log, distribution: Distribution | None = None) -> FinalizeResult:
    """Decide STATUS from the run's task states (``task`` or ``task_<map_index>``), publish, write metadata.

    ``deliverables`` maps a mapped task id to the plan list it runs over, for the deliverables the profile
    may mark ``failable``. ``distribution`` adds torrents and signed CHECKSUM files. ComposeNotEnded while a
    watched task has not ended; SigningError, before anything changes, when the signing key is not in the
    keyring; ComposeDoomed after writing DOOMED.
    """
    distribution = distribution or Distribution()
    watched = tuple(watched)
    plan = plan_compose(layout.profile, summary.params)
    failable = failable_keys(layout.profile, plan, deliverables)
    # a watched task without any instance in this run has not started either
    states = {**dict.fromkeys(missing_tasks(states, watched)), **states}
    outcome = compose_outcome(states, failable, watched)
    if outcome.status == "DOOMED":
        write_status(layout, "DOOMED")
        raise ComposeDoomed(
            f"compose {layout.compose_id} is DOOMED; failed: "
            f"{', '.join(describe_keys(outcome.failed_required, plan, deliverables))}. "
            f"The latest link still points at the previous compose. Fix the cause and trigger a new compose."
        )
    fingerprints = None
    if distribution.signing_key:
        with gpg_session(distribution.gnupghome):
            fingerprints = require_key(distribution.signing_key, distribution.gnupghome)
    reopen(layout)  # a rerun rewrites checksums and metadata: not FINISHED while it does
    try:
        records = publish(layout, summary.params.arches, summary.params.rc, logger, distribution, fingerprints)
        write_metadata(layout, summary, records, logger)
    except Exception as exc:
        write_status(layout, "DOOMED")  # never leave a compose STARTED after its last task failed
        raise ComposeDoomed(f"compose {layout.compose_id} is DOOMED: finalizing failed: {exc}") from exc
    write_status(layout, outcome.status)
    move_latest_link(layout)
    return FinalizeResult(layout.compose_id, outcome.status, layout.top, outcome.failed_optional, len(records),
                          tuple(describe_keys(outcome.failed_optional, plan, deliverables)))


def link_tree(src: Path, dest: Path) -> int:
    """Hard-link files (and copy symlinks) from src into dest; existing identical entries are kept."""
    count = 0
    for root, _dirs, files in os.walk(src):
        target_dir = dest / Path(root).relative_to(src)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in files:
            s, d = Path(root) / name, target_dir / name
            if s.is_symlink():
                swap_symlink(os.readlink(s), d)
            elif not d.exists() or not os.path.samefile(s, d):
                d.unlink(missing_ok=True)
                os.link(s, d)
            count += 1
    return count


def publish(layout: ComposeLayout, arches: Iterable[str], rc: bool, logger: Logger = log,
            distribution: Distribution | None = None, fingerprints: set[str] | None = None,
            ) -> list[metadata.ImageRecord]:
    """work/isos and work/images -> compose/ (hard links), per-arch CHECKSUM (clear-signed when
    ``distribution`` has a signing key), a torrent per image (when it has torrent settings), images.json records.

    Each deliverable's own ``.CHECKSUM`` is reused: a multi-GB ISO is never hashed again for its checksum;
    its torrent is made once (hashing it with SHA-1) and kept while the image stays the same.
    """
    distribution = distribution or Distribution()
    records: list[metadata.ImageRecord] = []
    with gpg_session(distribution.gnupghome) if distribution.signing_key else nullcontext():
        for arch in arches:
            for work, published, kind in ((layout.work_isos(arch), layout.iso_dir(arch), "iso"),
                                          (layout.work_images(arch), layout.images_dir(arch), "image")):
                if not work.is_dir():
                    continue
                linked = link_tree(work, published)
                entries = [e for sidecar in sorted(published.glob("*.CHECKSUM"))
                           for e in read_checksum_file(sidecar) if e.name != "CHECKSUM"]
                if distribution.signing_key:
                    signed = clearsign_file(published / "CHECKSUM", checksum_text(entries), distribution.signing_key,
                                            distribution.gnupghome, fingerprints)
                    logger.info("%s/CHECKSUM %s with %s", published, "signed" if signed else "already signed",
                                distribution.signing_key)
                else:
                    write_checksum_file(published / "CHECKSUM", entries)
                logger.info("published %d files into %s (%d checksum entries)", linked, published, len(entries))
                if distribution.torrents is not None:
                    publish_torrents(layout, published, arch, kind, distribution.torrents, logger)
                records += image_records(layout, published, arch, kind, rc)
    return records


def image_files(directory: Path) -> list[Path]:
    """The published ISOs or images of a directory: regular files, not the generic/latest links, checksums,
    manifests, torrents or READMEs."""
    return [path for path in sorted(directory.iterdir())
            if not path.is_symlink() and path.is_file()
            and path.suffix not in (".CHECKSUM", ".manifest", TORRENT_SUFFIX)
            and path.name not in ("CHECKSUM", "README") and not path.name.startswith(".")]


def publish_torrents(layout: ComposeLayout, directory: Path, arch: str, kind: str, settings: TorrentSettings,
                     logger: Logger = log) -> int:
    """A torrent beside each image of ``directory`` whose web seed is the image's production download URL;
    torrents of images no longer there are removed. Returns how many torrents were written (kept ones do not
    count)."""
    images = image_files(directory)
    written = 0
    sub = "isos" if kind == "iso" else "images"
    for image in images:
        webseed = settings.webseed(f"{download_path(layout.profile)}/{sub}/{arch}/{image.name}")
        sha = metadata.recorded_sha256(image)
        written += make_torrent(image, sha, webseed, settings, creation_date=layout.timestamp,
                                comment=f"{layout.profile.shortname} {layout.profile.revision} {arch}: {image.name}",
                                logger=logger)
    wanted = {torrent_path(image).name for image in images}
    for stale in directory.glob(f"*{TORRENT_SUFFIX}"):
        if stale.name not in wanted:
            stale.unlink()
            logger.info("removed %s: its image is no longer published", stale)
    return written


def image_records(layout: ComposeLayout, directory: Path, arch: str, kind: str,
                  rc: bool) -> list[metadata.ImageRecord]:
    """images.json entries of the published ISOs (``kind="iso"``) or cloud images of one directory."""
    out = []
    for path in image_files(directory):
        st = path.stat()
        rel = str(path.relative_to(layout.compose))
        sha = metadata.recorded_sha256(path)
        if kind == "iso":
            image_name = path.name.rsplit("-", 1)[1].removesuffix(".iso")
            variant = (layout.profile.iso_images[image_name].variant if image_name in layout.profile.iso_images
                       else layout.profile.lorax_settings().variant)
            out.append(metadata.ImageRecord(
                rel, arch, variant, "boot" if image_name == "boot" else "dvd", "iso", st.st_size,
                int(st.st_mtime), sha, volume_id=layout.volid(arch, rc), bootable=True,
                implant_md5=metadata.implanted_md5(path), subvariant=variant))
        else:
            image_type, cloud_variant = cloud_kind_of(layout.profile, path.name)
            fmt = layout.profile.cloud_images[image_type].format
            ptype, pformat = metadata.cloud_image_type(fmt, cloud_variant)
            subvariant = f"{image_type}-{cloud_variant}" if cloud_variant else image_type
            out.append(metadata.ImageRecord(rel, arch, "BaseOS", ptype, pformat, st.st_size, int(st.st_mtime), sha,
                                            subvariant=subvariant))
    return out


def cloud_kind_of(profile: ReleaseProfile, filename: str) -> tuple[str, str | None]:
    """(cloud image type, variant) of a published image file name; ValueError when it matches none."""
    rest = filename.removeprefix(f"{profile.shortname}-{profile.major}-")
    for image_type, image in profile.cloud_images.items():
        for variant in image.variants or (None,):
            stem = f"{image_type}-{variant}-" if variant else f"{image_type}-"
            if rest.startswith(stem):
                return image_type, variant
    raise ValueError(f"{filename} in images/ matches no cloud image of {profile.name}")


def write_metadata(layout: ComposeLayout, summary: ComposeSummary, records: list[metadata.ImageRecord],
                   logger: Logger = log) -> None:
    params = summary.params
    date = layout.compose_id.rsplit("-", 1)[1].split(".")[0]
    ci = metadata.compose_info(layout, params.arches, date, params.rc, metadata.iso_variants(layout, params.images),
                               has_images=any(r.path.startswith("images/") for r in records))
    metadata.dump(ci, layout.metadata / "composeinfo.json")
    metadata.dump(metadata.images_manifest(layout, records, date), layout.metadata / "images.json")
    rpms = list(rpm_records(layout, params.arches, params.full_run))
    metadata.dump(metadata.rpms_manifest(layout, rpms, date), layout.metadata / "rpms.json")
    logger.info("metadata: %d variants, %d images, %d packages in %s", len(ci.variants.variants),
                len(records), len(rpms), layout.metadata)


def compose_trees(layout: ComposeLayout, arches: Iterable[str],
                  full_run: bool) -> Iterator[tuple[Repo, str, str, Path]]:
    """(repo, arch, kind, tree) of every repo tree this compose made."""
    profile = layout.profile
    kinds: tuple[str, ...] = ("os", "kickstart", "debug") if full_run else ("os",)
    if profile.sig:
        kinds = tuple(k for k in kinds if k != "kickstart")  # a SIG has no installer, so no kickstart trees
    for repo in profile.repos:
        for arch in profile.repo_arches(repo.id, arches):
            for kind in kinds:
                tree = layout.repo_tree(repo.id, arch, kind)
                if tree.is_dir():
                    yield repo, arch, kind, tree
        source = layout.repo_tree(repo.id, "src", "source")
        if full_run and source.is_dir():
            yield repo, "src", "source", source


def rpm_records(layout: ComposeLayout, arches: Iterable[str], full_run: bool) -> Iterator[metadata.RpmRecord]:
    """rpms.json entries from each tree's repodata, with the key id each package is really signed with;
    also the basic .treeinfo/.discinfo/media.repo of every plain repo tree."""
    arches = tuple(arches)
    timestamp = layout.timestamp
    for repo, arch, kind, tree in compose_trees(layout, arches, full_run):
        write_repo_treeinfo(tree, layout.profile, arch, variant_id(repo.dir), timestamp)
        if kind == "kickstart":
            continue  # the same packages as os; rpms.json lists each package once per variant and arch
        packages = list(iter_packages(tree))
        keys = metadata.signature_keys([tree / p.href for p in packages])
        category = {"os": "binary", "debug": "debug", "source": "source"}[kind]
        # productmd lists source packages under each binary arch of the variant
        record_arches = layout.profile.repo_arches(repo.id, arches) if kind == "source" else (arch,)
        for p in packages:
            path = str((tree / p.href).relative_to(layout.compose))
            srpm = None if kind == "source" else metadata.srpm_nevra(p.sourcerpm, p.epoch)
            for record_arch in record_arches:
                yield metadata.RpmRecord(variant_id(repo.dir), record_arch, p.nevra, path, keys[tree / p.href],
                                         category, srpm)
