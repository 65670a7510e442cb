"""The trigger form's Params: derived from the settings' types, refusing what the settings refuse (reliability #29).

The same refusal through Airflow's REST API, under the running scheduler, is in
``tests/test_scheduler.py::test_dags_load_and_bad_params_are_refused``.
"""

from __future__ import annotations

import pytest
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamValidationError

from jobs.params import overrides_from_params, param_schemas
from prixlm_model.config import load_settings


def test_param_schema_matches_settings() -> None:
    schemas = param_schemas()
    assert schemas["source"]["enum"] == ["databus", "classic", "mirror"]
    assert "en" in schemas["languages"]["items"]["enum"] and "xx" not in schemas["languages"]["items"]["enum"]
    assert schemas["release"]["default"] == load_settings().acquire.release


def test_bad_params_are_refused_naming_the_value() -> None:
    """Airflow's own Param check, with the schema the DAG declares: an unknown language and a path are refused."""
    schemas = param_schemas()
    with pytest.raises(ParamValidationError, match="'xx' is not one of"):
        Param(**schemas["languages"]).resolve(["xx"])
    with pytest.raises(ParamValidationError, match="does not match"):
        Param(**schemas["release"]).resolve("../etc")
    assert Param(**schemas["languages"]).resolve(["fr"]) == ["fr"]


def test_params_become_the_overrides_of_their_settings() -> None:
    overrides = overrides_from_params({"max_steps": 3, "languages": ["fr"], "beam_size": None, "unknown": 1})
    assert overrides == {"train": {"max_steps": 3}, "acquire": {"languages": ["fr"]}}
    assert load_settings(overrides).train.max_steps == 3
