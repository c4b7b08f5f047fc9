"""
### General updates

The SOP's general-updates sync (the old `stable-updates-X` cron job): new builds from the build
system go into the release's staging directory, next to everything staging already published.
One release per run, one run at a time. `scheduled_updates` starts a run for every scheduled release on
`RELENG_UPDATES_SCHEDULE` (run id `scheduled_updates__<release>__<time>`); it can also be triggered by hand.

1. **prepare_updates** checks the form against the release profile (an unknown repo stops the run
   here, before any work), checks that the staging release directory exists and that the signing
   key is usable, and lays out the work area `RELENG_COMPOSE_ROOT/<major>/<Short>-<X.Y>-updates-<ts>`.
   Only the trees (repo, arch, kind) staging has are updated; the others are listed in its log (an arch
   comes to staging with a compose). A signed staging needs `RELENG_REPO_SIGNING_KEY`: the run stops
   here rather than publish unsigned metadata.
2. **sync_repos**: `dnf reposync` of the hashed repos (os, debug, source trees), signatures checked,
   verified against the repodata; packages staging already has are hard-linked, not downloaded.
3. **repoclosure** of each updated repo against the repos the profile allows (the run's new trees for
   updated repos, staging's for the others). Unresolved dependencies stop the run: staging is untouched.
4. **wait_for_staging** takes the staging lease: one run at a time writes or promotes staging, so a
   promotion between its report and its last phase (waiting for approval, say) holds this run here,
   without a worker slot, and the log says who holds it. **release_staging** (a teardown) gives it
   back after emit_staging_asset, or when the run failed.
   **sync_to_staging**: the new packages into `mirror/pub/<short>/<X.Y>[-RC]`, never deleting (older
   builds stay installable: downgrades within the point release keep working).
5. **update_repodata**, per tree: a tree with nothing new keeps its metadata byte for byte; otherwise
   `createrepo_c --update` over all the tree's packages, keeping comps groups, modules, updateinfo and
   staging's compression, `repomd.xml` signed when `RELENG_REPO_SIGNING_KEY` is set; the new metadata
   is swapped in so that staging never shows a `repomd.xml` naming a missing file.
6. **emit_staging_asset** updates the staging Asset (which starts `promote_to_production`) when
   something changed; a run that changed nothing ends here, skipped.
7. **remove_work_area**: this run's work area, and those earlier failed runs of the release left for
   inspection (staging holds their packages now).

Params: `release` (default: `RELENG_DEFAULT_RELEASE`, else the newest release), `repos` (empty: every repo of
the release), `rc` (stage into `X.Y-RCn` instead of `X.Y`). Scheduled runs set `release` and keep the other
defaults.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, TaskGroup, TriggerRule

from releng.assets import STAGING_ASSET
from releng.dagparams import default_args, release_param, releases, repos_param
from releng.operators.repoclosure import RepoclosureOperator
from releng.operators.staging import ReleaseStagingOperator, WaitForStagingSensor
from releng.operators.sync_repos import SyncReposOperator
from releng.operators.updates import (
    PLAN_KINDS,
    EmitStagingAssetOperator,
    PlanOperator,
    PrepareUpdatesOperator,
    RemoveWorkAreaOperator,
    SyncToStagingOperator,
    UpdateRepodataOperator,
)

RELEASES = releases()  # the profiles, read once per parse

with DAG(
    dag_id="general_updates",
    schedule=None,  # scheduled_updates starts one run per release
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    # remove_work_area removes every work area of the release: a second run of it at the same time would lose
    # its own. Runs for several releases queue.
    max_active_runs=1,
    doc_md=__doc__,
    description="Sync one release's updated packages from the build system into staging",
    tags=["releng", "updates", "staging"],
    default_args=default_args(),
    params={
        "release": release_param(RELEASES, description="Which release to update."),
        "repos": repos_param(RELEASES),
        "rc": Param(False, type="boolean", title="Release candidate directory",
                    description="Stage into X.Y-RCn instead of the released X.Y."),
    },
) as dag:
    prepare = PrepareUpdatesOperator(task_id="prepare_updates", retries=0)
    with TaskGroup("plan", tooltip="the run's work lists, one per mapped task"):
        plan = {kind: PlanOperator(task_id=kind, kind=kind, summary=prepare.output, retries=0)
                for kind in PLAN_KINDS}

    sync_repos = SyncReposOperator.partial(
        task_id="sync_repos", pool="reposync", map_index_template="{{ task.repo }} {{ task.arch }} {{ task.kind }}",
    ).expand_kwargs(plan["reposync"].output)

    # A run of repos outside the repoclosure map has no closure checks: the join runs on "nothing failed".
    closure = RepoclosureOperator.partial(
        task_id="repoclosure", map_index_template="{{ task.repo }} {{ task.arch }}",
        trigger_rule=TriggerRule.NONE_FAILED,
    ).expand_kwargs(plan["repoclosure"].output)

    wait_staging = WaitForStagingSensor(task_id="wait_for_staging", purpose="general_updates: staging steps",
                                        trigger_rule=TriggerRule.NONE_FAILED)
    stage = SyncToStagingOperator(task_id="sync_to_staging", pool="rsync", summary=prepare.output)

    repodata = UpdateRepodataOperator.partial(
        task_id="update_repodata", pool="repodata",  # trees in parallel; each swaps its own repomd.xml
        map_index_template="{{ task.repo }} {{ task.arch }} {{ task.kind }}",
    ).expand_kwargs(plan["repodata"].output)

    emit = EmitStagingAssetOperator(task_id="emit_staging_asset", summary=prepare.output, results=repodata.output,
                                    outlets=[STAGING_ASSET], retries=0)
    cleanup = RemoveWorkAreaOperator(task_id="remove_work_area", summary=prepare.output,
                                     trigger_rule=TriggerRule.NONE_FAILED)

    release_staging = ReleaseStagingOperator(task_id="release_staging")

    sync_repos >> closure >> wait_staging >> stage >> repodata
    emit >> cleanup
    emit >> release_staging.as_teardown(setups=wait_staging)
