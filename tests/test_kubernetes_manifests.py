"""deploy/kubernetes: our values for the official Airflow Helm chart, the data PVC, the lorax RBAC, and the lorax
pod the KubernetesPodOperator path builds, validated offline against the Kubernetes API schemas
(kubernetes-validate, strict: unknown fields are errors).

The chart itself is not vendored: the values' Kubernetes objects are checked by building the worker pod spec
the chart makes from them (volumes, mounts, env, resources, node selector) and validating that, and the chart
keys this project relies on are checked by name below.
"""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from releng.core.arches import KUBE_ARCH
from releng.core.settings import Settings
from tests.operators.test_lorax_kpo import SUMMARY, dag, kube_settings, unmapped  # noqa: F401 (fixtures)

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "kubernetes"
K8S_VERSION = "1.37.0"  # the schemas kubernetes-validate ships (offline)
TREES = ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")
# Top-level keys of the official chart's values.yaml this file uses (apache/airflow chart/values.yaml).
CHART_KEYS = {"executor", "airflowVersion", "images", "uid", "gid", "fernetKeySecretName", "apiSecretKeySecretName",
              "jwtSecretName", "data", "postgresql", "redis", "env", "config", "workers", "logs", "dagProcessor",
              "triggerer"}


def validate(resource: dict) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


def manifests() -> list[tuple[str, dict]]:
    return [(f"{path.name}#{i}", doc) for path in sorted(DEPLOY.glob("*.yaml")) if path.name != "values.yaml"
            for i, doc in enumerate(yaml.safe_load_all(path.read_text())) if doc]


@pytest.mark.parametrize("name, doc", manifests(), ids=[n for n, _ in manifests()])
def test_every_manifest_is_valid(name, doc):
    validate(doc)


def test_a_broken_manifest_is_caught():
    """The validator is strict: a misspelt field or a wrong type fails (so the tests above can fail)."""
    pvc = yaml.safe_load((DEPLOY / "releng-data-pvc.yaml").read_text())
    pvc["spec"]["accesModes"] = pvc["spec"].pop("accessModes")
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pvc)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
           "spec": {"containers": [{"name": "x", "image": "x", "volumeMounts": [{"name": "v", "mountPath": 3}]}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(pod)


def worker_pod(values: dict) -> dict:
    """The parts of the chart's worker pod our values set, as a Pod manifest."""
    workers = values["workers"]
    image = values["images"]["airflow"]
    return {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "releng-worker-0", "namespace": "releng"},
        "spec": {
            "securityContext": {"runAsUser": values["uid"], "runAsGroup": values["gid"], "fsGroup": values["gid"]},
            "nodeSelector": workers["nodeSelector"],
            "volumes": workers["extraVolumes"],
            "containers": [{
                "name": "worker", "image": f"{image['repository']}:{image['tag']}",
                "imagePullPolicy": image["pullPolicy"], "args": ["bash", "-c", "exec airflow celery worker"],
                "env": values["env"] + workers["env"], "volumeMounts": workers["extraVolumeMounts"],
                "resources": workers["resources"],
            }],
        },
    }


def test_values_use_the_chart_keys_and_valid_kubernetes_objects(values):
    assert set(values) <= CHART_KEYS, f"keys the chart does not have: {set(values) - CHART_KEYS}"
    validate(worker_pod(values))


def test_the_three_trees_are_on_one_readwritemany_volume(values):
    env = {e["name"]: e["value"] for e in values["env"]}
    mounts = values["workers"]["extraVolumeMounts"]
    holders = {mount["name"] for mount in mounts for tree in TREES
               if env[tree].startswith(mount["mountPath"].rstrip("/") + "/")}
    assert len(holders) == 1, f"the trees must be on one mount (hard links), not {holders}"
    (volume,) = [v for v in values["workers"]["extraVolumes"] if v["name"] in holders]
    pvc = yaml.safe_load((DEPLOY / "releng-data-pvc.yaml").read_text())
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    settings = Settings.from_env(env)  # the site settings are valid together
    assert settings.lorax_backend == "kubernetes" and not settings.test_site


def test_celery_settings_and_secrets(values):
    assert values["executor"] == "CeleryExecutor" and values["workers"]["replicas"] >= 2
    assert values["config"]["celery"]["worker_concurrency"] > 0
    assert 3600 <= values["config"]["celery_broker_transport_options"]["visibility_timeout"] < 86400
    assert values["redis"]["passwordSecretName"] and values["data"]["brokerUrlSecretName"]
    text = (DEPLOY / "values.yaml").read_text().lower()
    assert "password:" not in text.replace("passwordsecretname:", ""), "no password values in the file"
    # the S3 connection is mounted on the workers only, through the secrets backend of the workers' env
    assert all("AWS" not in e["name"] and "CONN_RELENG_S3" not in e["name"] for e in values["env"])
    worker_env = {e["name"]: e["value"] for e in values["workers"]["env"]}
    assert worker_env["AIRFLOW__SECRETS__BACKEND"].endswith("LocalFilesystemBackend")


@pytest.mark.parametrize("arch", ["x86_64", "aarch64", "ppc64le", "s390x"])  # el9's arches
def test_rendered_lorax_pod_is_valid_and_on_its_arch(dag, arch):  # noqa: F811
    pod = unmapped(dag, {"arch": arch, "summary": SUMMARY}).pod_operator().build_pod_request_obj(dry_run=True)
    manifest = ApiClient().sanitize_for_serialization(pod)
    validate(manifest)
    assert manifest["spec"]["nodeSelector"] == {"kubernetes.io/arch": KUBE_ARCH[arch]}
