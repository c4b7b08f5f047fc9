"""Airflow Assets shared by the DAGs: the staging tree that `promote_to_production` listens to."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by full_compose and general_updates after they write staging. The event's extra names what changed:
# {"release": "el9", "rc": true, "staging_dir": "...", "source": "full_compose", "compose_id": "..."};
# general_updates sends "source": "general_updates", "repos": [...] and "packages_added": N instead of compose_id.
STAGING_ASSET = Asset(name="releng_staging", uri="releng://staging")
