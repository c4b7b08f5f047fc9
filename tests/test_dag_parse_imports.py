"""Parsing the DAG folder imports no heavy module and reads each release profile once.

A dag-processor parses every DAG file again and again; the cncf.kubernetes provider with the kubernetes
client, the amazon provider with boto3/botocore, and the smtp provider's mail client were most of a
parse's time, then the profiles (every DAG file validated every profile twice, with PyYAML's pure-Python
parser) and the task code the operator modules imported (lxml, productmd, the promotion and updates core
modules). Each check fills a DagBag from dags/ in a fresh interpreter (nothing already imported) and lists
what the parse imported and how often it parsed a profile. The speed itself is measured by bench/dag_parse.py.
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
                  "airflow.providers.cncf.kubernetes.hooks", "airflow.providers.amazon.aws.hooks", "lxml",
                  "productmd")
# The releng.core modules the DAG files need at parse time: the settings, the profiles and release choice (the
# trigger forms), the notification texts (deadline alerts) and the updates' work-list names. Everything else in
# releng.core is task code: an operator imports it inside execute (or its .map() callable).
PARSE_TIME_CORE = {"releng.core", "releng.core.arches", "releng.core.log", "releng.core.notify",
                   "releng.core.profile", "releng.core.releases", "releng.core.settings", "releng.core.updates"}
DAG_IDS = ["full_compose", "general_updates", "point_release", "promote_to_production", "scheduled_updates"]

_CHILD = r"""
import json, sys
import yaml
from airflow.dag_processing.dagbag import DagBag
parsed = []
_load = yaml.load
def counting_load(stream, Loader):
    parsed.append(Loader.__mro__[1].__name__)
    return _load(stream, Loader=Loader)
yaml.load = counting_load
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])
new = set(sys.modules) - before
prefixes = tuple(json.loads(sys.argv[2]))
heavy = sorted(m for m in new if m.startswith(prefixes) and
               (m in prefixes or m.startswith(tuple(p + "." for p in prefixes))))
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "heavy": heavy, "core": sorted(m for m in new if m.startswith("releng.core")),
                  "profile_parses": parsed, "libyaml": yaml.__with_libyaml__}))
"""


def _parse(backend: str, tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELENG_")}
    env.update({"AIRFLOW_HOME": str(tmp_path), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp_path}/a.db",
                "RELENG_CONFIG_DIR": str(ROOT / "config" / "releases"), "RELENG_LORAX_BACKEND": backend})
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT / "dags"), json.dumps(HEAVY_PREFIXES)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["dags"] == DAG_IDS
    return result


@pytest.mark.parametrize("backend", ["kubernetes", "local"])
def test_parsing_dags_imports_no_heavy_module(backend, tmp_path):
    result = _parse(backend, tmp_path)

    assert result["heavy"] == []
    task_code = sorted(set(result["core"]) - PARSE_TIME_CORE)
    assert task_code == [], (f"parsing the DAG folder imported task code {task_code}: import it inside the "
                             "operator's execute (or its .map() callable), not at the top of the operator module")


def test_each_profile_is_parsed_once_per_parse(tmp_path):
    """Five DAG files build trigger forms from the profile list; the profiles' YAML is parsed once, by libyaml."""
    result = _parse("local", tmp_path)

    profiles = len(list((ROOT / "config" / "releases").glob("*.yaml")))
    assert len(result["profile_parses"]) == profiles, result["profile_parses"]
    if result["libyaml"]:
        assert set(result["profile_parses"]) == {"CSafeLoader"}
