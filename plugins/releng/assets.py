"""Airflow Assets shared by the DAGs: the staging tree that `promote_to_production` listens to."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by full_compose and general_updates after they write staging. The event's extra names what changed:
# {"release": "el9", "rc": true, "staging_dir": "...", "source": "full_compose", "compose_id": "..."};
# general_updates sends "source": "general_updates", "repos": [...] and "packages_added": N instead of compose_id.
# The URI's scheme starts with "x-": Airflow normalizes any other scheme through the providers' URI handlers,
# and looking those up imports every installed provider's asset module (amazon's imports boto3) at DAG parse time.
STAGING_ASSET = Asset(name="releng_staging", uri="x-releng://staging")
