"""A full_compose run whose parameters the release refuses (issue 13): the form refuses what it can (an arch no
release ships, a disc image no release builds), prepare_compose refuses the rest in one line before any work, and
finalize_compose, which must run after every work task ended, points at prepare_compose instead of a message of its
own."""

from __future__ import annotations

import copy
import json

import pytest

from tests.dagrun import parse_dag, run_dag

pytestmark = [pytest.mark.slow]


def test_the_form_refuses_what_no_release_offers(airflow_db, site):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(parse_dag("full_compose").params)
    for bad in ({"arches": ["riscv64"]}, {"arches": ["sparc"]}, {"extra_isos": ["minimal"]},
                {"extra_isos": ["BaseOS"]}):
        with pytest.raises(ParamValidationError):
            params.update(bad)
    params.update({"arches": None, "extra_isos": None})  # what the form sends for an empty choice
    assert params.validate()["arches"] is None


def test_a_refused_combination_stops_at_prepare_with_the_reason_first(airflow_db, site, caplog):
    dr, states = run_dag("full_compose", {"release": "el9", "arches": ["x86_64"], "rc": True, "full_run": False})
    assert dr.state == "failed", json.dumps(states, indent=1)
    assert states["prepare_compose"] == ["failed"]
    assert {t for t, s in states.items() if s == ["failed"]} == {"prepare_compose", "finalize_compose"}
    assert not any(s == ["success"] for t, s in states.items() if t != "release_staging")
