"""build_lorax: one mapped task for the configured backend, a pod per arch or a local run.

Both backends run ``include/lorax/build-lorax.sh`` with the options of
:func:`releng.core.lorax.lorax_options` and return the same XCom:
``{"arch", "key", "sha256", "size"}`` (the exact S3 key of the uploaded tarball).

DAG wiring (``items`` is the list of ``{"arch", "summary"[, "epoch"]}`` that the ``plan.lorax`` task
returns; the S3 epoch defaults to the compose id's time, so every arch of a run shares it and a
retry overwrites the same key). The backend is chosen when the DAG file is parsed, so the
dag-processor must carry the same ``RELENG_LORAX_BACKEND`` as the workers::

    build_lorax = lorax_task(plan["lorax"].output)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from releng.core.settings import Settings, settings
from releng.hooks.s3 import s3_hook
from releng.operators.common import load_release

if TYPE_CHECKING:
    from releng.core import lorax
    from releng.core.layout import ComposeLayout

# A lorax image is several GB: a fresh node needs minutes to pull it.
POD_STARTUP_TIMEOUT = 900


def job_for(item: dict) -> tuple[lorax.LoraxJob, ComposeLayout]:
    """The lorax job of one planned arch: ``{"arch", "summary": {release, compose_root, compose_id, rc, hashed}}``."""
    from releng.core import lorax
    from releng.core.layout import ComposeLayout
    summary = item["summary"]
    s = settings()
    profile = load_release(summary["release"])
    layout = ComposeLayout(profile, Path(summary["compose_root"]), summary["compose_id"])
    epoch = item.get("epoch") or lorax.compose_epoch(layout.compose_id)
    try:
        job = lorax.lorax_job(layout, item["arch"], rc=bool(summary["rc"]), hashed=bool(summary["hashed"]),
                              peridot_url=s.peridot_url, bucket=s.s3_bucket, epoch=int(epoch))
    except lorax.LoraxError as exc:
        raise AirflowFailException(str(exc)) from None
    return job, layout


def lorax_pod_kwargs(item: dict) -> dict:
    """``.map()`` callable: one planned arch -> the KubernetesPodOperator kwargs of its pod."""
    from releng.core import lorax
    job, layout = job_for(item)
    return lorax.pod_kwargs(job, layout.profile.major, lorax.script_files())


def lorax_local_kwargs(item: dict) -> dict:
    """``.map()`` callable: one planned arch -> the LoraxLocalOperator kwargs."""
    job, _ = job_for(item)
    return {"arch": job.arch, "revision": job.revision, "options": list(job.options), "bucket": job.bucket,
            "key": job.key, "removes": list(job.removes)}


def pod_partial_kwargs(s: Settings) -> dict[str, Any]:
    """LoraxPodOperator arguments shared by every arch's pod (image, namespace, resources, secret), plain values."""
    return {"namespace": s.lorax_namespace, "image": s.lorax_image, "s3_secret": s.lorax_s3_secret,
            "cpu": s.lorax_cpu, "memory": s.lorax_memory}


def lorax_task(items, *, task_id: str = "build_lorax", site: Settings | None = None, **partial_kwargs):
    """The mapped lorax task for ``RELENG_LORAX_BACKEND``: a pod per arch, or a local run per arch.

    :param items: XComArg resolving to ``[{"arch", "summary"[, "epoch"]}, ...]``
    :param task_id: the task id (the SOP's ``build_lorax``)
    :param site: settings to use (default: the process settings)
    :param partial_kwargs: further operator arguments for ``partial`` (retries, pool, ...)
    """
    s = site or settings()
    if s.lorax_backend == "kubernetes":
        return LoraxPodOperator.partial(task_id=task_id, map_index_template="{{ task.labels['compose-arch'] }}",
                                        **pod_partial_kwargs(s), **partial_kwargs) \
            .expand_kwargs(items.map(lorax_pod_kwargs))
    return LoraxLocalOperator.partial(task_id=task_id, aws_conn_id=s.s3_conn_id,
                                      map_index_template="{{ task.arch }}", **partial_kwargs) \
        .expand_kwargs(items.map(lorax_local_kwargs))


class LoraxPodOperator(BaseOperator):
    """Build one arch's lorax tarball in a Kubernetes pod (the provider's KubernetesPodOperator) and return its XCom.

    The cncf.kubernetes provider and the kubernetes client are imported when the task runs, not when
    ``full_compose`` is parsed (they were most of its parse time): this operator holds plain values and
    builds the KubernetesPodOperator in :meth:`pod_operator`.

    :param name: pod name (``releng.core.lorax.pod_name``)
    :param arguments: lorax options, the pod command's arguments
    :param env_vars: the build script's environment (job settings and the script files)
    :param node_selector: the arch's node selector
    :param labels: pod labels (``compose-arch`` names the arch in the UI)
    :param namespace: Kubernetes namespace of the pod
    :param image: lorax image
    :param s3_secret: Kubernetes secret whose keys become the pod's S3 credentials
    :param cpu: CPU request
    :param memory: memory request and limit
    :param kubernetes_conn_id: Airflow Kubernetes connection (the provider's default when unset)
    """

    template_fields: Sequence[str] = ()
    ui_color = "#e8f0fe"

    def __init__(self, *, name: str, arguments: list[str], env_vars: dict[str, str], node_selector: dict[str, str],
                 labels: dict[str, str], namespace: str, image: str, s3_secret: str, cpu: str, memory: str,
                 kubernetes_conn_id: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.name, self.arguments, self.env_vars = name, arguments, env_vars
        self.node_selector, self.labels = node_selector, labels
        self.namespace, self.image, self.s3_secret, self.cpu, self.memory = namespace, image, s3_secret, cpu, memory
        self.kubernetes_conn_id = kubernetes_conn_id
        self._pod_operator: Any = None

    def pod_operator(self) -> Any:
        """The KubernetesPodOperator of this arch's pod (same task id; not attached to the DAG)."""
        from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
        from airflow.providers.cncf.kubernetes.secret import Secret
        from kubernetes.client import models as k8s

        from releng.core import lorax

        extra: dict[str, Any] = {"kubernetes_conn_id": self.kubernetes_conn_id} if self.kubernetes_conn_id else {}
        return KubernetesPodOperator(
            task_id=self.task_id, name=self.name, namespace=self.namespace, image=self.image,
            cmds=list(lorax.POD_COMMAND), arguments=list(self.arguments), env_vars=dict(self.env_vars),
            node_selector=dict(self.node_selector), labels=dict(self.labels),
            # The secret's keys (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_ENDPOINT_URL]) become env vars.
            secrets=[Secret("env", None, self.s3_secret)],
            container_resources=k8s.V1ResourceRequirements(
                requests={"cpu": self.cpu, "memory": self.memory}, limits={"memory": self.memory}),
            # lorax loop-mounts images and runs mock-like chroots.
            container_security_context={"privileged": True},
            volumes=[k8s.V1Volume(name="builddir", empty_dir=k8s.V1EmptyDirVolumeSource())],
            volume_mounts=[k8s.V1VolumeMount(name="builddir", mount_path=lorax.POD_WORK_DIR)],
            do_xcom_push=True, on_finish_action="delete_succeeded_pod", startup_timeout_seconds=POD_STARTUP_TIMEOUT,
            get_logs=True,
            # A failed pod's last log lines become its termination message, which the task error shows.
            termination_message_policy="FallbackToLogsOnError",
            # The pod spec carries the script text; the error should show the log tail, not the spec.
            log_pod_spec_on_failure=False, retries=self.retries, **extra)

    def execute(self, context: Context) -> Any:
        self._pod_operator = self.pod_operator()
        return self._pod_operator.execute(context)

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()


class LoraxLocalOperator(BaseOperator):
    """Build one arch's lorax tarball on this worker with the pod's script, upload it, return its S3 key.

    Uses ``lorax`` when installed, otherwise, on a test site (RELENG_TEST_SITE=true) only, the stand-in (the
    script says so loudly). S3 credentials
    and endpoint come from the ``aws_conn_id`` connection through the amazon provider's hook.

    :param arch: RPM arch to build (lorax builds only the host's own arch)
    :param revision: release revision, e.g. ``9.7`` (names the tarball)
    :param options: lorax options from ``releng.core.lorax.lorax_options``
    :param bucket: S3 bucket
    :param key: exact S3 key of the tarball (``releng.core.s3keys.lorax_key``)
    :param removes: packages dropped from lorax's runtime template
    :param aws_conn_id: Airflow AWS connection of the bucket
    :param work_root: directory for the build's scratch dir (default: the system temp dir)
    """

    template_fields: Sequence[str] = ("arch", "revision", "options", "bucket", "key", "removes", "work_root")
    ui_color = "#f4e8d8"

    def __init__(self, *, arch: str, revision: str, options: list[str], bucket: str, key: str,
                 removes: list[str] | None = None, aws_conn_id: str = "releng_s3", work_root: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.arch = arch
        self.revision = revision
        self.options = options
        self.bucket = bucket
        self.key = key
        self.removes = removes or []
        self.aws_conn_id = aws_conn_id
        self.work_root = work_root
        self._proc: subprocess.Popen | None = None

    def execute(self, context: Context) -> dict:
        from releng.core import lorax
        job = lorax.LoraxJob(self.arch, self.revision, tuple(self.options), self.bucket, self.key, tuple(self.removes))
        work = Path(tempfile.mkdtemp(prefix=f"lorax-{self.arch}-", dir=self.work_root))
        env = {name: value for name, value in os.environ.items() if not name.startswith(("AWS_", "LORAX_"))}
        env.update(job.env(str(work)), LORAX_PYTHON=sys.executable, **self._s3_env())
        if settings().test_site:  # only a test site may build its boot trees with the lorax stand-in
            env["LORAX_ALLOW_STANDIN"] = "1"
        argv = ["bash", str(lorax.BUILD_SCRIPT), *job.options]
        self.log.info("building lorax for %s in %s; uploading to s3://%s/%s", self.arch, work, self.bucket, self.key)
        started = time.monotonic()
        last = ""
        try:
            self._proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          start_new_session=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                line = line.rstrip("\n")
                self.log.info("%s", line)
                if line.strip():
                    last = line
            status = self._proc.wait()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if status != 0:
            raise AirflowException(f"build-lorax.sh failed for {self.arch} with exit status {status}; "
                                   "its output above says which step failed")
        try:
            result = lorax.parse_result(last, job)
        except lorax.LoraxError as exc:
            raise AirflowFailException(str(exc)) from None
        self.log.info("lorax %s: s3://%s/%s, %d bytes, sha256 %s, in %.0f s", self.arch, self.bucket, result["key"],
                      result["size"], result["sha256"], time.monotonic() - started)
        return result

    def _s3_env(self) -> dict[str, str]:
        hook = s3_hook(self.aws_conn_id)
        creds = hook.get_credentials()
        env = {"AWS_ACCESS_KEY_ID": creds.access_key, "AWS_SECRET_ACCESS_KEY": creds.secret_key,
               "AWS_DEFAULT_REGION": hook.conn_region_name or "us-east-1"}
        if creds.token:
            env["AWS_SESSION_TOKEN"] = creds.token
        endpoint = hook.conn_config.get_service_endpoint_url("s3")
        if endpoint:
            env["AWS_ENDPOINT_URL"] = endpoint
        return env

    def on_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
