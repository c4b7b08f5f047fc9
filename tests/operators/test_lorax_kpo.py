"""Lorax through Kubernetes without a cluster.

1. The rendered pod per arch: the mapped task from ``lorax_task`` is unmapped with each arch's
   kwargs, its KubernetesPodOperator built as the task builds it when it runs, and
   ``build_pod_request_obj(dry_run=True)`` builds exactly what a worker would send.
2. The real KubernetesPodOperator with the real kubernetes client against the in-process fake
   API server (tests/fakes/fake_k8s.py), including the XCom: KPO execs ``cat
   /airflow/xcom/return.json`` in the ``airflow-xcom-sidecar`` over a websocket, which the fake
   implements, so the value returned here came through the provider's own extraction.

The operator is executed directly with a minimal context (as the provider's own tests do):
``dag.test()`` only runs DAGs serialized from the configured dags folder, and a test-only DAG
does not belong in ``dags/``.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pendulum
import pytest
import yaml
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowException
from airflow.serialization.serialized_objects import DagSerialization
from airflow.utils.helpers import prune_dict
from kubernetes.client import ApiClient

from releng.core import lorax
from releng.core.arches import KUBE_ARCH
from releng.core.settings import settings
from releng.operators.build_lorax import lorax_pod_kwargs, lorax_task
from tests.fakes.fake_k8s import SIDECAR, FakeK8s, Outcome

SUMMARY = {"release": "el9", "compose_id": "Rocky-9.7-20250101.000000", "compose_root": "/srv/compose", "rc": False,
           "hashed": True}
EPOCH = 1735689600
PROJECT = "dff20351-7d36-4f7c-9eea-7f039f5026d0"  # el9's build-system project


@pytest.fixture
def kube_settings(monkeypatch):
    monkeypatch.setenv("RELENG_LORAX_BACKEND", "kubernetes")
    monkeypatch.setenv("RELENG_LORAX_IMAGE", "registry.example.org/releng/lorax:el9")
    monkeypatch.setenv("RELENG_LORAX_NAMESPACE", "compose")
    monkeypatch.setenv("RELENG_LORAX_CPU", "6")
    monkeypatch.setenv("RELENG_LORAX_MEMORY", "12Gi")
    monkeypatch.setenv("RELENG_LORAX_S3_SECRET", "lorax-s3-credentials")
    monkeypatch.setenv("RELENG_S3_BUCKET", "releng-bucket")
    monkeypatch.setenv("RELENG_PERIDOT_URL", "https://yumrepofs.example.org/v1/projects")
    settings.cache_clear()
    yield settings()
    settings.cache_clear()


def items(*arches: str) -> list[dict]:
    return [{"arch": arch, "summary": SUMMARY} for arch in arches]


@pytest.fixture
def dag(kube_settings):
    with DAG("lorax_kpo_test", schedule=None, start_date=pendulum.datetime(2025, 1, 1), catchup=False) as d:
        @task
        def plan() -> list[dict]:
            return items("x86_64", "aarch64")

        lorax_task(plan(), retries=0)
    return d


def unmapped(dag, item: dict):
    op = dag.get_task("build_lorax").unmap(lorax_pod_kwargs(item))
    op.render_template_fields({"params": {}, "task": op})
    return op


@pytest.mark.parametrize("arch", list(KUBE_ARCH)[:4])
def test_rendered_pod_per_arch(dag, arch):
    op = unmapped(dag, {"arch": arch, "summary": SUMMARY})
    kpo = op.pod_operator()  # what the task runs: the provider's operator, built when it executes
    pod = kpo.build_pod_request_obj(dry_run=True)
    c = pod.spec.containers[0]
    env = {e.name: e.value for e in c.env}

    assert pod.metadata.namespace == "compose" and pod.metadata.name.startswith(f"buildiso-9-{KUBE_ARCH[arch]}")
    assert pod.spec.node_selector == {"kubernetes.io/arch": KUBE_ARCH[arch]}
    assert pod.metadata.labels["compose-arch"] == arch and pod.spec.restart_policy == "Never"
    assert c.image == "registry.example.org/releng/lorax:el9"
    assert c.command == lorax.POD_COMMAND
    assert c.args == [
        "--product=Rocky Linux", "--version=9.7", "--release=9.7", "--isfinal",
        f"--source=https://yumrepofs.example.org/v1/projects/{PROJECT}/repo/hashed-BaseOS/{arch}",
        f"--source=https://yumrepofs.example.org/v1/projects/{PROJECT}/repo/hashed-AppStream/{arch}",
        "--squashfs-only", "--bugurl=https://bugs.rockylinux.org", "--variant=BaseOS", "--nomacboot",
        f"--buildarch={arch}", f"--volid=Rocky-9-7-{arch}-dvd", "--rootfs-size=4"]
    assert env["LORAX_S3_KEY"] == f"buildiso-9-{KUBE_ARCH[arch]}/{EPOCH}/lorax-9.7-{arch}.tar.gz"
    assert env["LORAX_S3_BUCKET"] == "releng-bucket" and env["LORAX_WORK_DIR"] == "/builddir"
    # The files reach the pod unaltered (the bootstrap's printf adds the final newline back).
    assert env["LORAX_BUILD_SH"] + "\n" == lorax.BUILD_SCRIPT.read_text()
    assert env["LORAX_S3_UPLOAD_PY"] + "\n" == (lorax.INCLUDE_DIR / "s3_upload.py").read_text()
    assert [e.secret_ref.name for e in c.env_from] == ["lorax-s3-credentials"]
    assert c.resources.requests == {"cpu": "6", "memory": "12Gi"} and c.resources.limits == {"memory": "12Gi"}
    assert c.security_context == {"privileged": True}
    assert c.termination_message_policy == "FallbackToLogsOnError"
    assert [(m.name, m.mount_path) for m in c.volume_mounts if m.name == "builddir"] == [("builddir", "/builddir")]
    assert SIDECAR in [s.name for s in pod.spec.containers]  # do_xcom_push
    assert op.render_template(op.map_index_template, {"task": op}) == arch
    assert kpo.on_finish_action.value == "delete_succeeded_pod" and kpo.startup_timeout_seconds >= 600
    manifest = yaml.safe_dump(prune_dict(ApiClient().sanitize_for_serialization(pod), mode="strict"))
    assert "LORAX_BUILD_SH" in manifest and "lorax-s3-credentials" in manifest


def test_mapped_dag_serializes(dag):
    data = DagSerialization.to_dict(dag)
    task_data = next(t for t in data["dag"]["tasks"] if t["__var"]["task_id"] == "build_lorax")["__var"]
    assert task_data["_is_mapped"] is True
    assert "lorax_pod_kwargs" in json.dumps(task_data)


class FakeTI:
    """The parts of a task instance KubernetesPodOperator touches."""

    def __init__(self, task_id: str, map_index: int):
        self.dag_id, self.task_id, self.map_index, self.try_number = "lorax_kpo_test", task_id, map_index, 1
        self.pushed: dict[str, object] = {}
        self.start_date = pendulum.now("UTC")

    def xcom_push(self, key: str, value) -> None:
        self.pushed[key] = value


def run_pod(dag, arch: str, map_index: int, fake: FakeK8s):
    op = unmapped(dag, {"arch": arch, "summary": SUMMARY})
    ti = FakeTI(op.task_id, map_index)
    context = {"ti": ti, "run_id": "manual__2025-01-01", "dag": dag, "task": op, "params": {},
               "dag_run": SimpleNamespace(run_id="manual__2025-01-01")}
    return ti, op.execute(context)


def lorax_pod(pod: dict) -> Outcome:
    """The pod "runs" build-lorax.sh: its XCom file is derived from the env the pod was given."""
    c = next(c for c in pod["spec"]["containers"] if c["name"] == "base")
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    if env["LORAX_ARCH"] == "aarch64":
        return Outcome(1, ["build-lorax: building aarch64", "Error: dependency check failed",
                           "build-lorax: ERROR: lorax failed for aarch64 with exit status 1; nothing was uploaded"])
    result = {"arch": env["LORAX_ARCH"], "key": env["LORAX_S3_KEY"], "sha256": "5" * 64, "size": 123456}
    return Outcome(0, ["build-lorax: building x86_64", json.dumps(result)], json.dumps(result))


@pytest.fixture
def fake_k8s(tmp_path, monkeypatch):
    with FakeK8s(lorax_pod) as fake:
        config = fake.write_kubeconfig(tmp_path / "kubeconfig", namespace="compose")
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT",
                           json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": config}}))
        yield fake


def test_pod_succeeds_and_returns_the_sidecar_xcom(dag, fake_k8s):
    ti, result = run_pod(dag, "x86_64", 0, fake_k8s)

    assert result == {"arch": "x86_64", "key": f"buildiso-9-amd64/{EPOCH}/lorax-9.7-x86_64.tar.gz",
                      "sha256": "5" * 64, "size": 123456}
    posted = fake_k8s.created[0]
    assert posted["metadata"]["labels"]["compose-arch"] == "x86_64"
    assert posted["metadata"]["labels"]["map_index"] == "0"
    assert posted["spec"]["nodeSelector"] == {"kubernetes.io/arch": "amd64"}
    commands = [(container, command[:2]) for _, container, command in fake_k8s.execs]
    assert commands == [(SIDECAR, ["/bin/sh", "-c"]), (SIDECAR, ["/bin/sh"])]  # read return.json, stop the sidecar
    assert ("GET", f"/api/v1/namespaces/compose/pods/{posted['metadata']['name']}/log") in fake_k8s.requests
    assert fake_k8s.pods == {}  # delete_succeeded_pod
    assert ti.pushed["pod_name"] == posted["metadata"]["name"] and ti.pushed["pod_namespace"] == "compose"


def test_failed_pod_fails_the_task_with_the_pod_error(dag, fake_k8s):
    with pytest.raises(AirflowException) as err:
        run_pod(dag, "aarch64", 1, fake_k8s)

    message = str(err.value)
    assert "returned a failure" in message
    assert "lorax failed for aarch64 with exit status 1" in message  # FallbackToLogsOnError termination message
    assert "LORAX_BUILD_SH" not in message and len(message) < 2048 + 200  # the log tail, not the pod spec
    (_, name), = fake_k8s.pods  # a failed pod is kept for debugging, marked as checked
    assert name.startswith("buildiso-9-arm64")
    assert fake_k8s.pods[("compose", name)]["metadata"]["labels"]["already_checked"] == "True"
    assert fake_k8s.pods[("compose", name)]["status"]["phase"] == "Failed"
