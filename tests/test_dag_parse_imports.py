"""Parsing the DAG folder imports no heavy provider: the Kubernetes and AWS clients load where a task runs.

A dag-processor parses every DAG file again and again; the cncf.kubernetes provider with the kubernetes
client, the amazon provider with boto3/botocore, and the smtp provider's mail client were most of a
parse's time. Each check fills a DagBag from dags/ in a fresh interpreter (nothing already imported) and
lists the heavy modules that the parse imported. The speed itself is measured by bench/dag_parse.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY_PREFIXES = ("kubernetes", "boto3", "botocore", "aiosmtplib", "airflow.providers.cncf.kubernetes.operators",
                  "airflow.providers.cncf.kubernetes.hooks", "airflow.providers.amazon.aws.hooks")

_CHILD = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
prefixes = tuple(json.loads(sys.argv[2]))
heavy = sorted(m for m in set(sys.modules) - before if m.startswith(prefixes) and
               (m in prefixes or m.startswith(tuple(p + "." for p in prefixes))))
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "heavy": heavy}))
"""


@pytest.mark.parametrize("backend", ["kubernetes", "local"])
def test_parsing_dags_imports_no_heavy_provider(backend, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELENG_")}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/a.db",
                "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"), "RELENG_LORAX_BACKEND": backend})
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT / "dags"), json.dumps(HEAVY_PREFIXES)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])

    assert result["errors"] == {}
    assert result["dags"] == ["full_compose", "general_updates", "point_release", "promote_to_production",
                              "scheduled_updates"]
    assert result["heavy"] == []
