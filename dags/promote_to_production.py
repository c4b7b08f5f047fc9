"""
### Promote a staged release to production

Runs when a compose or an update sync updates the **staging Asset** (the
event names the release and whether the RC directory was staged), or when
triggered by hand with a release.

1. **change_report**: one `rsync --dry-run --itemize-changes` of the staging
   release directory (`9.7-RC1`) against production (`9.7`) plus the
   repositories' primary metadata: packages added, updated and removed per
   repository and arch, files and bytes to copy, files to delete. Stored as a
   JSON promotion record with its sha256 digest. Deletions above
   `RELENG_PROMOTION_MAX_DELETE` stop the run here unless `allow_large_delete`.
2. **plan_vetting**, **vet_staging** (one instance per check),
   **vetting_verdict**: staging is checked
   with the real tools before anyone is asked: every ISO (checkisomd5, El
   Torito entries, a QEMU boot to its boot menu on x86_64), every repository's
   metadata and signature, `dnf repoclosure`, a dnf install of the profile's
   `install_check` into a scratch root, every CHECKSUM file and its signature.
   A failed check stops the run here, named in `vetting_verdict` and in release
   engineering's notification, unless `vetting_override` (recorded in the
   audit log); the approver sees the checks in a "Vetting" table.
3. **approve_promotion**: Human-in-the-loop approval by the users in
   `RELENG_APPROVERS` (Browse → Required Actions). No answer within
   `RELENG_APPROVAL_TIMEOUT_HOURS` counts as Reject. Reject skips everything
   below and production is untouched. Dry runs skip it.
4. **promote_payload**, **promote_metadata**, **promote_deletions**: exactly the
   approved changes, packages first, then repodata (`repomd.xml` last), then the
   bounded deletions; one promotion writes at a time (pool `promotion` and a
   lock file beside production).
5. **verify_production**: every `repomd.xml` names files that exist with the
   right checksums; `repomd.xml.asc` verifies when signing is configured.
6. **update_file_lists**: `fullfilelist` and `fullfiletimelist-<category>` for
   mirrors, replaced only when they changed.
7. **mirror_handoff**: the site's hand-off to the mirror system
   (`RELENG_MIRROR_HANDOFF_COMMAND` and/or `RELENG_MIRROR_HANDOFF_URL`, with
   retries); skipped when neither is set. Its failure fails this task only:
   production keeps the promoted release.
8. **record_promotion**: who decided, when, the report digest and what was
   transferred, appended to `<production root>/.releng/promotion-log.jsonl`.

The phases act only on the answer Airflow recorded for this run's approval
request, given by a user in `RELENG_APPROVERS`; forged XComs, a task marked
success by hand or a skipped approval promote nothing and are logged as
refusals in the audit log.

Clearing a failed phase runs the change report again (its setup), which needs a
new approval; the phases then converge. Params: `release` (default:
`RELENG_DEFAULT_RELEASE`, else the newest release; an Asset event's release wins),
`rc`, `dry_run` (report only), `allow_large_delete`, `vetting_override`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from releng.assets import STAGING_ASSET
from releng.core.settings import settings
from releng.dagparams import default_args, promotion_params
from releng.notifiers import deadline_alerts
from releng.operators.promotion import (
    PromotionReportOperator,
    promotion_phases,
    publish_and_record,
    vetted_approval,
)

SITE = settings()

with DAG(
    dag_id="promote_to_production",
    schedule=STAGING_ASSET,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    description="Staging to production after an approver's Approve (Browse → Required Actions); staging "
                "events start it only while it is unpaused",
    tags=["releng", "production", "promotion"],
    deadline=deadline_alerts("approval", SITE),
    default_args=default_args(retry_delay=timedelta(minutes=1)),
    params=promotion_params(
        release="Which release to promote. Runs started by the staging Asset (a compose or an update sync) "
                "promote the event's release instead.",
        rc="Promote the X.Y-RCn staging directory instead of X.Y.",
        dry_run="Only produce the change report and rsync itemization; change nothing.",
        large_delete="Allow deleting more than RELENG_PROMOTION_MAX_DELETE of the release's production files.",
    ),
):
    change_report = PromotionReportOperator(task_id="change_report", pool="promotion", retries=0)
    # plan_vetting >> vet_staging (one instance per check) >> vetting_verdict >> approve_promotion
    approve_promotion = vetted_approval(change_report, subject="Promotion to production (the run's change report)",
                                        site=SITE)
    # promote_payload >> promote_metadata >> promote_deletions >> verify_production
    first_phase, verify_production = promotion_phases()

    change_report >> approve_promotion >> first_phase
    # verify_production >> update_file_lists >> mirror_handoff >> record_promotion (a teardown of change_report)
    publish_and_record(change_report, after=verify_production)
