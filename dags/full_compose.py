"""
### Full compose

The SOP's "full compose" of one release, as one run:

1. **prepare_compose** checks the form against the release profile (bad combinations stop here,
   before any work), claims `<Short>-<X.Y>-<YYYYMMDD.HHMMSS>.<n>` under `RELENG_COMPOSE_ROOT/<major>`
   (`n` counts composes started in the same second; a rerun of the run reuses its own) with
   `STATUS=STARTED`, and plans the work.
2. In parallel:
   * **sync_repos** (`dnf reposync`, signatures checked, verified against the repodata, unchanged
     packages hard-linked from the previous compose) → **make_kickstart_trees** → **repoclosure**;
   * **build_lorax**, one per arch (a Kubernetes pod on a native node, or the worker with
     `RELENG_LORAX_BACKEND=local`), uploading the tarball to S3.
3. **pull_unpack_tree** fetches each arch's tarball by its exact key, verifies and unpacks it, and
   merges the installer tree into `BaseOS/<arch>/os` and `kickstart`.
4. **deploy_extra_files** fetches the profile's EULA, LICENSE, keys...; **build_dvd_iso** per arch
   and image (xorriso replaying lorax's boot.iso, implantisomd5, the extra files grafted on).
5. **pull_cloud_images** per arch and type. A deliverable the profile marks `failable` (cloud images
   in the shipped profiles) makes the compose `FINISHED_INCOMPLETE` when it fails, not `DOOMED`.
6. **finalize_compose** runs once every work task has ended (it refuses while any is running, queued,
   up for retry or not started), writes checksums, `composeinfo.json`/`images.json`/`rpms.json`,
   `STATUS`, and moves `latest-<Short>-<profile>` only for a finished compose. Any required failure →
   `DOOMED`. A task cleared later that rewrites the compose sets `STATUS` back to `STARTED` first.
7. **wait_for_staging** takes the staging lease (one run at a time writes or promotes staging; it
   waits, without holding a worker slot, while a promotion or another run holds it, and its log says
   who), **sync_to_staging** rsyncs the compose into `mirror/pub/<short>/<X.Y>[-RC]` of
   `RELENG_STAGING_ROOT` and updates the staging asset, which starts `promote_to_production`, and
   **release_staging** (a teardown) gives the lease back.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from releng.assets import STAGING_ASSET
from releng.core.settings import settings
from releng.dagparams import arches_param, default_args, disc_images_param, release_param, releases
from releng.notifiers import deadline_alerts
from releng.operators.build_dvd_iso import BuildDvdIsoOperator
from releng.operators.build_lorax import lorax_task
from releng.operators.compose import (
    PLAN_KINDS,
    DeployExtraFilesOperator,
    FinalizeComposeOperator,
    PlanWorkOperator,
    PrepareComposeOperator,
    SyncToStagingOperator,
    reopen_before,
    repoclosure_kwargs,
    reposync_kwargs,
)
from releng.operators.make_kickstart_trees import MakeKickstartTreesOperator
from releng.operators.pull_cloud_images import PullCloudImagesOperator
from releng.operators.pull_unpack_tree import PullUnpackTreeOperator, pull_unpack_kwargs
from releng.operators.repoclosure import RepoclosureOperator
from releng.operators.staging import ReleaseStagingOperator, WaitForStagingSensor
from releng.operators.sync_repos import SyncReposOperator

RELEASES = releases()  # the profiles, read once per parse

with DAG(
    dag_id="full_compose",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Compose one release: repos, installer trees, DVD and cloud images, then staging",
    tags=["releng", "compose", "release"],
    deadline=deadline_alerts("compose", settings()),
    default_args=default_args(),
    params={
        "release": release_param(RELEASES),
        "arches": arches_param(RELEASES),
        "rc": Param(False, type="boolean", title="Release candidate",
                    description="Build release candidate RCn (n: the profile's rclvl): names and volume ids carry "
                                "it and staging goes to X.Y-RCn. Needs Full run and Check repoclosure."),
        "hashed": Param(True, type="boolean", title="Hashed repos",
                        description="Sync from the build system's hashed-<Repo> repos (packages in first-letter "
                                    "directories, as a compose lays them out); off: the plain <Repo> repos."),
        "repoclosure": Param(True, type="boolean", title="Check repoclosure",
                             description="Check that every package's dependencies resolve (dnf repoclosure, per "
                                         "the profile's repoclosure map) before the ISOs are built."),
        "extra_isos": disc_images_param(RELEASES),
        "full_run": Param(True, type="boolean", title="Full run",
                          description="Debug, source and kickstart trees and cloud images; off: os trees only "
                                      "(a quick test compose)."),
    },
) as dag:
    prepare = PrepareComposeOperator(task_id="prepare_compose", retries=0)
    with TaskGroup("plan", tooltip="the compose's work lists, one per mapped task"):
        plan = {kind: PlanWorkOperator(task_id=kind, kind=kind, summary=prepare.output, retries=0)
                for kind in PLAN_KINDS}
    # Tasks that rewrite compose content set a finished compose back to STARTED first.
    reopen_compose = reopen_before(prepare)
    extra_files = DeployExtraFilesOperator(task_id="deploy_extra_files", summary=prepare.output,
                                           pre_execute=reopen_compose)

    sync_repos = SyncReposOperator.partial(
        task_id="sync_repos", pool="reposync", map_index_template="{{ task.repo }} {{ task.arch }} {{ task.kind }}",
        pre_execute=reopen_compose,
    ).expand_kwargs(plan["reposync"].output.map(reposync_kwargs))

    # Empty work lists skip their mapped task, so the joins run on "nothing failed", not "all succeeded".
    kickstart = MakeKickstartTreesOperator.partial(
        task_id="make_kickstart_trees", map_index_template="{{ task.repo }} {{ task.arch }}",
        pre_execute=reopen_compose,
    ).expand_kwargs(plan["kickstart"].output)

    closure = RepoclosureOperator.partial(
        task_id="repoclosure", map_index_template="{{ task.repo }} {{ task.arch }}",
        trigger_rule=TriggerRule.NONE_FAILED,
    ).expand_kwargs(plan["repoclosure"].output.map(repoclosure_kwargs))

    build_lorax = lorax_task(plan["lorax"].output)

    unpack = PullUnpackTreeOperator.partial(
        task_id="pull_unpack_tree", map_index_template="{{ task.arch }}", trigger_rule=TriggerRule.NONE_FAILED,
        pre_execute=reopen_compose,
    ).expand_kwargs(build_lorax.output.zip(plan["lorax"].output).map(pull_unpack_kwargs))

    dvd = BuildDvdIsoOperator.partial(
        task_id="build_dvd_iso", pool="iso_build", map_index_template="{{ task.arch }} {{ task.image }}",
        trigger_rule=TriggerRule.NONE_FAILED, pre_execute=reopen_compose,
    ).expand_kwargs(plan["dvd"].output)

    cloud = PullCloudImagesOperator.partial(
        task_id="pull_cloud_images", map_index_template="{{ task.arch }} {{ task.image_type }}",
        pre_execute=reopen_compose,
    ).expand_kwargs(plan["cloud"].output)

    finalize = FinalizeComposeOperator(
        task_id="finalize_compose", summary=prepare.output, trigger_rule=TriggerRule.ALL_DONE, retries=0,
        deliverables={cloud.task_id: "cloud", dvd.task_id: "dvd"},
    )
    wait_staging = WaitForStagingSensor(task_id="wait_for_staging", purpose="full_compose: sync_to_staging")
    staging = SyncToStagingOperator(task_id="sync_to_staging", summary=prepare.output, pool="rsync",
                                    outlets=[STAGING_ASSET])
    release_staging = ReleaseStagingOperator(task_id="release_staging")

    sync_repos >> kickstart >> closure
    [closure, build_lorax] >> unpack >> dvd
    extra_files >> dvd
    # finalize waits for every work task to end: an empty work list skips its task at once, so depending
    # on the last deliverables alone let it run while syncs were still running.
    [prepare, *plan.values(), extra_files, sync_repos, kickstart, closure, build_lorax, unpack, dvd, cloud] \
        >> finalize >> wait_staging >> staging >> release_staging.as_teardown(setups=wait_staging)
