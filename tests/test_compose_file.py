"""The production-like stack: docker-compose.yaml and Dockerfile, checked without a container engine.

(a) Shape, with PyYAML (merge keys resolve) and a small implementation of Compose's variable
    interpolation. (b) `docker-compose config -q` (Debian's v1.29) when it is on PATH: the file is
    valid for it, and it refuses to render when a required variable is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
DOCKERFILE = ROOT / "Dockerfile"

AIRFLOW_VERSION = "3.3.2"
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-worker",
    "airflow-triggerer",
    "airflow-init",
}
EXPECTED_SERVICES = AIRFLOW_SERVICES | {"postgres", "redis"}

# Variables the file requires (`${VAR:?message}`); sample values for rendering it in tests.
REQUIRED_VARS = {
    "RELENG_SECRETS_DIR": "/etc/releng/secrets",
    "RELENG_APPROVERS": "approver,alice",
    "RELENG_KUBECONFIG_DIR": "/etc/releng/kube",
}

# The site settings every task sees, with their production values (DESIGN.md; the worker runs tasks).
PRODUCTION_SETTINGS = {
    "RELENG_CONFIG_DIR": "/opt/airflow/config/releases",
    "RELENG_COMPOSE_ROOT": "/mnt/releng/compose",
    "RELENG_STAGING_ROOT": "/mnt/releng/repos-staging",
    "RELENG_PRODUCTION_ROOT": "/mnt/releng/repos-production",
    "RELENG_PERIDOT_URL": "https://yumrepofs.build.resf.org/v1/projects",
    "RELENG_S3_BUCKET": "resf-empanadas",
    "RELENG_S3_CONN_ID": "releng_s3",
    "RELENG_LORAX_BACKEND": "kubernetes",
    "RELENG_APPROVERS": REQUIRED_VARS["RELENG_APPROVERS"],
    "RELENG_GPG_KEY_DIR": "/etc/pki/rpm-gpg",
    "RELENG_LORAX_IMAGE": "ghcr.io/rocky-linux/sig-core-toolkit:latest",
    "RELENG_LORAX_NAMESPACE": "empanadas",
    "RELENG_LORAX_CPU": "4",
    "RELENG_LORAX_MEMORY": "8Gi",
    "RELENG_LORAX_S3_SECRET": "empanadas-s3",
    "RELENG_UPDATES_SCHEDULE": "0 3 * * *",
    "RELENG_UPDATES_RELEASES": "",
    "RELENG_DEFAULT_RELEASE": "",
    "RELENG_REPO_SIGNING_KEY": "",
    "RELENG_GNUPGHOME": "",
    "RELENG_PROMOTION_MAX_DELETE": "0.1",
    "RELENG_APPROVAL_TIMEOUT_HOURS": "24",
    "RELENG_EXTRA_FILES_GIT": "",
    "RELENG_NOTIFY_EMAIL": "",
    "RELENG_NOTIFY_APPROVERS_EMAIL": "",
    "RELENG_NOTIFY_WEBHOOK": "",
    "RELENG_NOTIFY_FROM": "",
    "RELENG_SMTP_CONN_ID": "releng_smtp",
    "RELENG_AIRFLOW_URL": "",
    "RELENG_COMPOSE_DEADLINE_HOURS": "",
    "RELENG_APPROVAL_REMINDER_HOURS": "",
    "RELENG_MIRROR_HANDOFF_COMMAND": "",
    "RELENG_MIRROR_HANDOFF_URL": "",
    "RELENG_MIRROR_HANDOFF_ATTEMPTS": "3",
    "RELENG_MIRROR_HANDOFF_RETRY_DELAY": "60",
    "RELENG_DOWNLOAD_URL": "https://download.rockylinux.org",
    "RELENG_TORRENT_TRACKERS": "",
    "RELENG_TORRENT_PIECE_SIZE": "",
    "RELENG_REPODATA_POOL_SLOTS": "4",
    "RELENG_TEST_SITE": "false",
    "RELENG_VETTING_BOOT_TIMEOUT": "120",
}
DATA_MOUNT = "/mnt/releng"  # one mount for the three trees: hard links between them need it
DATA_TREES = ("/mnt/releng/compose", "/mnt/releng/repos-staging", "/mnt/releng/repos-production")
PROJECT_MOUNTS = {f"/opt/airflow/{d}": f"./{d}" for d in ("dags", "plugins", "include", "config", "logs")}
DEPENDS_ON_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


# --- Compose variable interpolation (the subset Compose v1 and v2 agree on) -----------------------


class MissingVariableError(ValueError):
    """A `${VAR:?message}` / `${VAR?message}` variable is unset (or empty for `:?`)."""


_VAR = re.compile(r"\$(?:(?P<escaped>\$)|(?P<named>[_a-zA-Z][_a-zA-Z0-9]*)|\{(?P<braced>[^}]*)\}|(?P<invalid>))")
_BRACED = re.compile(r"^(?P<name>[_a-zA-Z][_a-zA-Z0-9]*)(?:(?P<op>:-|-|:\?|\?)(?P<arg>.*))?$", re.S)


def interpolate_string(text: str, env: dict[str, str]) -> str:
    def substitute(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        if m.group("named"):
            return env.get(m.group("named"), "")
        if m.group("invalid") is not None and m.group("braced") is None:
            raise ValueError(f"invalid interpolation in {text!r}")
        b = _BRACED.match(m.group("braced"))
        if not b:
            raise ValueError(f"invalid interpolation ${{{m.group('braced')}}} in {text!r}")
        name, op, arg = b.group("name"), b.group("op"), b.group("arg")
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and not value)):
            raise MissingVariableError(f"{name}: {arg}")
        return value or ""

    return _VAR.sub(substitute, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate_string(node, env)
    if isinstance(node, dict):
        return {k: interpolate(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env) for v in node]
    return node


def load_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """docker-compose.yaml with merge keys resolved and variables substituted from ``env``."""
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    return interpolate(raw, dict(REQUIRED_VARS) if env is None else env)


def airflow_common_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The `x-airflow-common` environment, rendered (what every Airflow process gets)."""
    return {k: str(v) for k, v in load_compose(env)["x-airflow-common"]["environment"].items()}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        source, target = parts[0], parts[1]
        out[target] = source
    return out


# --- (a) shape ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose) -> dict[str, Any]:
    return compose["services"]


def test_expected_services(services):
    assert EXPECTED_SERVICES <= set(services), f"missing: {EXPECTED_SERVICES - set(services)}"
    commands = {name: services[name].get("command") for name in AIRFLOW_SERVICES - {"airflow-init"}}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-worker": "celery worker",
        "airflow-triggerer": "triggerer",
    }
    # Anything optional must sit behind a profile, so `up` starts exactly the expected services.
    extra = {n for n, s in services.items() if n not in EXPECTED_SERVICES and not s.get("profiles")}
    assert not extra, f"services outside the expected set need a profile: {extra}"


def test_airflow_services_share_image_and_environment(compose, services):
    common = compose["x-airflow-common"]
    assert common["build"] == "."
    assert common["image"] == "releng-airflow:latest"
    assert (
        load_compose({**REQUIRED_VARS, "RELENG_IMAGE": "registry.example/releng:1"})["x-airflow-common"]["image"]
        == "registry.example/releng:1"
    )
    for name, svc in services.items():
        if not name.startswith("airflow-"):
            continue
        assert svc.get("image") == common["image"] and svc.get("build") == ".", name
        env = svc.get("environment", {})
        differing = {k for k, v in common["environment"].items() if env.get(k) != v}
        assert not differing, f"{name} does not carry the common environment: {sorted(differing)}"


def test_executor_and_execution_api(compose, services):
    env = compose["x-airflow-common"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    secret_urls = secret_url_templates(env)
    assert secret_urls["AIRFLOW__CELERY__BROKER_URL"] == ("redis_password", "redis://:{}@redis:6379/0")  # a password
    assert secret_urls["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == (
        "postgres_password", "postgresql+psycopg2://airflow:{}@postgres/airflow")
    # The driver is named: SQLAlchemy 2.1's default for plain postgresql:// is psycopg 3, which the
    # pins do not install (found by test_scaleout_config: the worker died with "No module named 'psycopg'").
    assert secret_urls["AIRFLOW__CELERY__RESULT_BACKEND"][1].startswith("db+postgresql+psycopg2://")
    assert int(env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]) == 4
    assert 3600 <= int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) < 86400
    # Workers reach the Execution API through the api-server's service name and container port.
    url = env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
    assert url == "http://airflow-apiserver:8080/execution/"
    assert any(str(p).endswith(":8080") for p in services["airflow-apiserver"]["ports"])
    assert str(env["AIRFLOW__CORE__LOAD_EXAMPLES"]).lower() == "false"
    assert str(env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"]).lower() == "true"
    assert str(env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"]).lower() == "true"
    assert env["AIRFLOW__CORE__AUTH_MANAGER"].endswith(".SimpleAuthManager")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == "admin:admin,approver:user"


SECRET_OPTIONS = {  # Airflow option -> the secret file it is read from
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgres_password",
    "AIRFLOW__CELERY__RESULT_BACKEND": "postgres_password",
    "AIRFLOW__CELERY__BROKER_URL": "redis_password",
    "AIRFLOW__CORE__FERNET_KEY": "fernet_key",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwt_secret",
    "AIRFLOW__API__SECRET_KEY": "api_secret_key",
}
READ_SECRET = "/opt/airflow/include/secrets/read-secret"


def secret_url_templates(env: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """option -> (secret file name, URL template or "") of every ``*_CMD`` setting that reads a secret file."""
    out = {}
    for key, command in env.items():
        if key.endswith("_CMD"):
            argv = str(command).split()
            assert argv[0] == READ_SECRET and argv[1].startswith("/run/secrets/"), (key, command)
            out[key.removesuffix("_CMD")] = (argv[1].removeprefix("/run/secrets/"), argv[2] if len(argv) > 2 else "")
    return out


def _secret_names(service: dict[str, Any]) -> list[str]:
    return [s if isinstance(s, str) else s["source"] for s in service.get("secrets", [])]


def test_secrets_are_files_read_through_cmd_settings(raw, services):
    """Issue 10 finding 6: no secret in any container's environment; each is a secret file read by *_CMD."""
    env = raw["x-airflow-common"]["environment"]
    assert {k: v[0] for k, v in secret_url_templates(env).items()} == SECRET_OPTIONS
    assert not set(SECRET_OPTIONS) & set(env), "a secret option set directly, not through its _CMD"
    assert (ROOT / "include/secrets/read-secret").stat().st_mode & 0o111, "read-secret must be executable"
    for name in AIRFLOW_SERVICES:
        assert set(SECRET_OPTIONS.values()) <= set(_secret_names(services[name])), name
    assert _secret_names(services["postgres"]) == ["postgres_password"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert _secret_names(services["redis"]) == ["redis_password"]
    assert "requirepass" in " ".join(services["redis"]["command"])
    assert "REDISCLI_AUTH" in " ".join(services["redis"]["healthcheck"]["test"])
    assert env["RELENG_APPROVERS"].startswith("${RELENG_APPROVERS:?")
    for secret in raw["secrets"].values():
        assert secret["file"].startswith("${RELENG_SECRETS_DIR:?")


def test_read_secret_prints_the_secret_or_the_url(tmp_path):
    script = str(ROOT / "include/secrets/read-secret")
    (tmp_path / "pw").write_text("0123abcd\n")
    out = subprocess.run([script, str(tmp_path / "pw"), "redis://:{}@redis:6379/0"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout == "redis://:0123abcd@redis:6379/0"  # no newline: Airflow keeps it
    assert subprocess.run([script, str(tmp_path / "pw")], capture_output=True, text=True).stdout == "0123abcd"
    (tmp_path / "bad").write_text("a/b@c\n")
    bad = subprocess.run([script, str(tmp_path / "bad"), "x{}"], capture_output=True, text=True)
    assert bad.returncode == 1 and "must be URL-safe" in bad.stderr
    missing = subprocess.run([script, str(tmp_path / "nope")], capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot read the secret file" in missing.stderr


@pytest.mark.parametrize("var", sorted(REQUIRED_VARS))
def test_each_required_variable_fails_loudly(var):
    env = {k: v for k, v in REQUIRED_VARS.items() if k != var}
    with pytest.raises(MissingVariableError, match=rf"^{var}: .*\b{var}\b"):
        load_compose(env)
    with pytest.raises(MissingVariableError):  # empty counts as missing (`:?`)
        load_compose({**env, var: ""})


def test_connections(compose, services):
    from airflow.sdk import Connection

    env = compose["x-airflow-common"]["environment"]
    assert not [k for k in env if k.startswith("AIRFLOW_CONN_") and k != "AIRFLOW_CONN_KUBERNETES_DEFAULT"]
    assert env["RELENG_S3_CONN_ID"] == "releng_s3"
    # releng_s3 (the S3 keys) reaches the workers only: their secrets backend reads connections.json
    for name in AIRFLOW_SERVICES:
        is_worker = name == "airflow-worker"
        assert ("connections" in _secret_names(services[name])) == is_worker, name
        assert ("AIRFLOW__SECRETS__BACKEND" in services[name]["environment"]) == is_worker, name
    worker = services["airflow-worker"]
    assert {"source": "connections", "target": "connections.json"} in worker["secrets"]
    assert worker["environment"]["AIRFLOW__SECRETS__BACKEND_KWARGS"] == (
        '{"connections_file_path": "/run/secrets/connections.json"}')
    k8s = Connection.from_uri(env["AIRFLOW_CONN_KUBERNETES_DEFAULT"], conn_id="kubernetes_default")
    assert k8s.conn_type == "kubernetes"
    assert k8s.extra_dejson == {"kube_config_path": "/opt/airflow/kube/config"}


def test_worker_has_every_site_setting(services):
    env = services["airflow-worker"]["environment"]
    assert {k: env.get(k) for k in PRODUCTION_SETTINGS} == PRODUCTION_SETTINGS
    from releng.core.settings import DEFAULTS, Settings

    assert set(PRODUCTION_SETTINGS) == set(DEFAULTS) | {"RELENG_APPROVERS"}, "a site setting was added or removed"
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    assert settings.lorax_backend == "kubernetes"
    assert settings.approvers == ("approver", "alice")


def test_project_folders_mounted_everywhere(services):
    for name in AIRFLOW_SERVICES:
        m = mounts(services[name])
        for target, source in PROJECT_MOUNTS.items():
            assert m.get(target) == source, f"{name}: {target} must be mounted from {source}"
    assert mounts(services["airflow-worker"])["/opt/airflow/kube"] == REQUIRED_VARS["RELENG_KUBECONFIG_DIR"]
    assert mounts(services["airflow-triggerer"])["/opt/airflow/kube"] == REQUIRED_VARS["RELENG_KUBECONFIG_DIR"]


def test_data_trees_mounted_where_tasks_write(services, compose):
    worker = mounts(services["airflow-worker"])
    assert worker.get(DATA_MOUNT) == "/srv/releng", "the worker mounts the one data volume"
    # The three trees are inside that one mount, and nothing mounts over a part of it.
    env = services["airflow-worker"]["environment"]
    trees = [env[k] for k in ("RELENG_COMPOSE_ROOT", "RELENG_STAGING_ROOT", "RELENG_PRODUCTION_ROOT")]
    assert tuple(trees) == DATA_TREES
    for tree in trees:
        covering = [t for t in worker if tree == t or tree.startswith(t.rstrip("/") + "/")]
        assert covering == [DATA_MOUNT], f"{tree} must be on the one data mount, not on {covering}"
    assert worker["/etc/pki/rpm-gpg"] == "/etc/pki/rpm-gpg"
    assert mounts(services["airflow-init"]).get(DATA_MOUNT) == "/srv/releng"  # it fixes their ownership
    # Only the worker (and the one-shot init) can touch the trees.
    for name in AIRFLOW_SERVICES - {"airflow-worker", "airflow-init"}:
        assert DATA_MOUNT not in mounts(services[name]), f"{name} must not mount the data trees"
    # The host path comes from a variable.
    moved = mounts(load_compose({**REQUIRED_VARS, "RELENG_DATA_HOST_DIR": "/srv/data"})["services"]["airflow-worker"])
    assert moved[DATA_MOUNT] == "/srv/data"


def test_depends_on_and_healthchecks(services):
    for name, svc in services.items():
        for dep, spec in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            condition = spec["condition"]
            assert condition in DEPENDS_ON_CONDITIONS, f"{name} -> {dep}: bad condition {condition}"
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no healthcheck"
            if condition == "service_completed_successfully":
                assert dep == "airflow-init"
    for name in ("postgres", "redis", *sorted(AIRFLOW_SERVICES - {"airflow-init"})):
        assert services[name]["healthcheck"]["test"], name
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert services["redis"]["image"].startswith("redis:7.2")
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])
    assert ":8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    for name in AIRFLOW_SERVICES - {"airflow-init"}:
        assert services[name]["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully", name
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy", name
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy", name


def test_init_migrates_and_imports_pools(services):
    init = services["airflow-init"]
    script = "\n".join(init["command"])
    assert init["user"] == "0:0"
    assert "airflow db migrate" in script
    assert "airflow pools import /opt/airflow/config/pools.json" in script
    assert script.index("airflow db migrate") < script.index("airflow pools import")
    assert "set -euo pipefail" in script
    for tree in DATA_TREES:
        assert tree in script
    assert "chown -R" not in script.split("for tree")[1].split("done")[0], "never chown a mirror tree recursively"
    # Shell variables are escaped ($$) so Compose leaves them alone.
    assert "${tree}" in script and "${uid}" in script


def test_pools_file_the_init_imports():
    import json

    path = ROOT / "config" / "pools.json"
    if not path.is_file():
        pytest.fail("config/pools.json is missing: airflow-init imports it and stops the stack without it")
    pools = json.loads(path.read_text())
    for name in ("reposync", "iso_build", "repodata", "rsync", "promotion"):
        assert name in pools, f"config/pools.json lacks pool {name}"
        assert isinstance(pools[name]["slots"], int) and pools[name]["slots"] > 0
        assert "description" in pools[name]


def test_dockerfile():
    lines = [ln.strip() for ln in DOCKERFILE.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    froms = [ln for ln in lines if ln.upper().startswith("FROM ")]
    assert len(froms) == 1 and froms[0].split()[1].startswith(f"apache/airflow:{AIRFLOW_VERSION}"), froms
    text = "\n".join(lines)
    assert re.search(r"^COPY\s+scripts/install-system-tools\.sh\s", text, re.M)
    run_install = [ln for ln in lines if ln.startswith("RUN") and "install-system-tools.sh" in ln]
    assert run_install, "the system tools installer must run in the image"
    assert "rm -rf /var/lib/apt/lists" in text
    pip = [ln for ln in lines if ln.startswith("RUN") and "pip install" in ln]
    assert pip and "-r" in pip[0] and "requirements.txt" in pip[0]
    assert f'"apache-airflow=={AIRFLOW_VERSION}"' in pip[0], "pin the image's Airflow when installing requirements"
    assert re.search(r"^COPY\s+(--chown=\S+\s+)?requirements\.txt\s", text, re.M)
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users[-1] == "airflow"
    # root for the installer, airflow for pip
    assert (
        text.index("USER root")
        < text.index("install-system-tools.sh")
        < text.index("USER airflow")
        < text.index("pip install")
    )
    for folder in ("dags", "plugins", "include", "config"):
        assert re.search(rf"^COPY\s+(--chown=\S+\s+)?{folder}/\s+/opt/airflow/{folder}/?$", text, re.M), folder
    requirements = (ROOT / "requirements.txt").read_text().splitlines()
    pinned = [r for r in requirements if r.lower().startswith("apache-airflow==")]
    assert pinned in ([], [f"apache-airflow=={AIRFLOW_VERSION}"]), "requirements.txt must pin the image's Airflow"


def test_dockerignore():
    ignored = {
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()[:1] not in ("", "#")
    }
    assert {".venv", ".stack", ".git", ".env", "logs"} <= ignored
    # What the Dockerfile copies must stay in the build context.
    assert not ignored & {"scripts", "requirements.txt", "dags", "plugins", "include", "config"}
    assert "include/lorax/lorax-standin" in ignored, "the lorax stand-in stays out of the production image"


# --- (b) docker-compose v1 ------------------------------------------------------------------------

DOCKER_COMPOSE = shutil.which("docker-compose")
needs_docker_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose not on PATH (apt-get install docker-compose)"
)


def _docker_compose(env: dict[str, str], *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # An empty --env-file so that a developer's .env cannot change the outcome; a minimal environment
    # so that nothing from the calling shell (a started local stack exports RELENG_*) leaks in.
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)}
    return subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(empty), "-f", str(COMPOSE_FILE), *args],
        env={**base, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@needs_docker_compose
def test_docker_compose_config_valid(tmp_path):
    res = _docker_compose(REQUIRED_VARS, "config", "-q", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "WARNING" not in res.stderr, res.stderr  # e.g. "The X variable is not set"
    res = _docker_compose(REQUIRED_VARS, "config", "--services", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert EXPECTED_SERVICES <= set(res.stdout.split())


@needs_docker_compose
def test_docker_compose_agrees_with_this_test(tmp_path, services):
    """docker-compose's own rendering of the worker matches what the shape tests checked."""
    res = _docker_compose(REQUIRED_VARS, "config", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    rendered = yaml.safe_load(res.stdout)["services"]
    for name in AIRFLOW_SERVICES:
        assert {k: str(v) for k, v in rendered[name]["environment"].items()} == {
            k: str(v) for k, v in services[name]["environment"].items()
        }, name
        targets = {v.split(":")[1] for v in rendered[name]["volumes"]}
        assert targets == set(mounts(services[name])), name


@needs_docker_compose
@pytest.mark.parametrize("var", sorted(REQUIRED_VARS))
def test_docker_compose_refuses_missing_required_variable(tmp_path, var):
    env = {k: v for k, v in REQUIRED_VARS.items() if k != var}
    res = _docker_compose(env, "config", "-q", tmp_path=tmp_path)
    assert res.returncode != 0
    # v1 prints "... in service "x": <message>"; the message itself must name the variable.
    message = res.stderr.strip().rsplit('": ', 1)[-1]
    assert var in message, res.stderr[-500:]
