"""Oversized trigger confs are refused by the REST API (400) before a run exists, through the Params' own
maxLength/maxItems; what the refusal echoes back is Airflow's (see the last test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from releng.core.settings import settings

ROOT = Path(__file__).resolve().parents[1]
BIG = "x" * 100_000

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("airflow_db")]


@pytest.fixture(scope="module")
def api():
    """The REST app with this checkout's DAGs in the metadata database, and an admin token."""
    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from fastapi.testclient import TestClient

    settings.cache_clear()
    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert bag.import_errors == {}
        sync_bag_to_db(bag, bundle.name, bundle.version)
    token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    yield TestClient(create_app(apps="core")), {"Authorization": f"Bearer {token}"}


def _runs(dag_id: str) -> int:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as s:
        return s.query(DagRun).filter(DagRun.dag_id == dag_id).count()


def _trigger(api, dag_id: str, conf: dict):
    client, headers = api
    return client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}, headers=headers)


@pytest.mark.parametrize("dag_id, conf, message", [
    ("full_compose", {"release": "el9", "extra_isos": [BIG]}, "Invalid input for param extra_isos: "),
    ("full_compose", {"release": "el9", "extra_isos": ["dvd"] * 1000}, "Invalid input for param extra_isos: "),
    ("full_compose", {"release": "el9", "arches": ["x86_64"] * 20_000}, "Invalid input for param arches: "),
    ("general_updates", {"release": "el9", "repos": [BIG]}, "Invalid input for param repos: "),
    ("general_updates", {"release": "el9", "repos": [f"Repo{i}" for i in range(1000)]},
     "Invalid input for param repos: "),
    ("full_compose", {"release": BIG}, "Invalid input for param release: "),
    ("promote_to_production", {"release": BIG}, "Invalid input for param release: "),
    ("point_release", {"release": "el9", "previous": BIG}, "Invalid input for param previous: "),
])
def test_oversized_params_are_refused_before_a_run_exists(api, dag_id, conf, message):
    before = _runs(dag_id)
    r = _trigger(api, dag_id, conf)
    assert r.status_code == 400, r.text[:300]
    assert r.json()["detail"].startswith(message)
    assert _runs(dag_id) == before


def test_the_refusal_echo_is_airflows_own(api):
    """Airflow's API returns str(jsonschema.ValidationError) as the 400 detail: it quotes the refused value
    in full twice (the message and 'On instance:'). The Params bound what is accepted, not that echo."""
    r = _trigger(api, "general_updates", {"release": "el9", "repos": [BIG]})
    detail = r.json()["detail"]
    # repos is a choice of the releases' repo ids (issue 13), so the refusal names the choices
    assert r.status_code == 400 and detail.count(BIG) == 2 and "is not one of" in detail and "On instance" in detail
