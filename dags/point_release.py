"""
### Point release: the new minor release into production, the previous one into the vault

Triggered by hand on release day, once the new point release (the profile's
`revision`, e.g. 9.7) is composed and staged (`full_compose`) and vetted.
One run, one approval:

1. **change_report**: the promotion's report of the staged release directory
   (`9.7-RC1`) against production (`9.7`), plus the point release's plan, under
   the record's digest: the links to switch in staging (`latest-9`, `9.7`) and
   production (`9`, `latest-9`), and the superseded release (`previous`, by
   default the newest earlier `9.N` in production) to move to
   `mirror/vault/rocky/9.N`, with its size. A plan that cannot be carried out (a
   real directory where a link goes, a vault that holds something else, the
   vault and the release on different file systems) stops the run here.
2. **plan_vetting**, **vet_staging**, **vetting_verdict**: the same vetting of
   staging as `promote_to_production` (override: `vetting_override`).
3. **approve_promotion**: the same gate as `promote_to_production`: an
   answer Airflow recorded from a user in `RELENG_APPROVERS`; Reject or no
   answer within `RELENG_APPROVAL_TIMEOUT_HOURS` changes nothing.
4. **promote_payload**, **promote_metadata**, **promote_deletions**,
   **verify_production**: the new release directory, as a promotion does it.
5. **switch_links**: staging's links, then production's, each renamed over
   the old one (never made inside a directory).
6. **vault_release**: the previous release hard-linked into the vault (no
   second copy; repodata copied, checked and signed with the release key when
   signing is on), renamed into place whole, then taken out of `mirror/pub`.
7. **update_file_lists**: the lists of every category that changed (the
   distribution's, the vault's and the root's); the others are left as they are.
8. **mirror_handoff**, **record_promotion**: as in `promote_to_production`.

A rerun after a crash plans only what is left and converges; a rerun after
success has nothing to approve and changes nothing. Params: `release`, `rc`,
`previous`, `dry_run` (report only), `allow_large_delete`, `vetting_override`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from releng.core.settings import settings
from releng.dagparams import default_args, promotion_params
from releng.notifiers import deadline_alerts
from releng.operators.point_release import PointReleaseReportOperator, SwitchLinksOperator, VaultReleaseOperator
from releng.operators.promotion import promotion_phases, publish_and_record, vetted_approval

SITE = settings()

with DAG(
    dag_id="point_release",
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Publish a new point release (X.Y) after approval: links switched, the previous X.Y to the vault",
    tags=["releng", "production", "point-release", "vault"],
    deadline=deadline_alerts("approval", SITE),
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params=promotion_params(
        release="Release profile whose revision is the new point release.",
        rc="Promote the X.Y-RCn staging directory (the links in staging point at it).",
        after_rc={"previous": Param(None, type=["null", "string"], pattern=r"^\d+\.\d+$", maxLength=16,
                                    title="Previous release",
                                    description="The point release to move to the vault (X.Y); empty: the newest "
                                                "earlier X.Y of the same major in production.")},
        dry_run="Only produce the change report and plan; change nothing.",
        large_delete="Allow deleting more than RELENG_PROMOTION_MAX_DELETE of the new release's production files.",
    ),
):
    change_report = PointReleaseReportOperator(task_id="change_report", pool="promotion", retries=0)
    # the same vetting and gate as promote_to_production (plan_vetting >> vet_staging >> vetting_verdict)
    approve_promotion = vetted_approval(change_report, subject="Point release (the run's change report and plan)",
                                        site=SITE)
    # promote_payload >> promote_metadata >> promote_deletions >> verify_production
    first_phase, verify_production = promotion_phases()
    switch_links = SwitchLinksOperator(task_id="switch_links", pool="promotion")
    vault_release = VaultReleaseOperator(task_id="vault_release", pool="promotion")

    change_report >> approve_promotion >> first_phase
    verify_production >> switch_links >> vault_release
    # vault_release >> update_file_lists >> mirror_handoff >> record_promotion (a teardown of change_report)
    publish_and_record(change_report, after=vault_release)
