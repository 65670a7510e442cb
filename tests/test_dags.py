"""The DAGs under a real Airflow (``airflow dags test``, SQLite), downloading from a loopback mirror.

The whole pipeline runs once in the suite, under the real scheduler, as a user triggers it:
``tests/test_scheduler.py`` (every stage's outputs are checked there).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from jobs.acquire import acquire
from jobs.params import param_schemas
from jobs.runtime import service_environment
from prixlm_model.config import PROJECT_ROOT, load_settings
from tools.mirror_server import MirrorServer
from tools.sample_mirror import build

pytestmark = pytest.mark.slow
GROUP = "databus/dbpedia/generic"
# The whole DAG in a few minutes: the tiny base model, two optimizer steps, a handful of queries.
PIPELINE_BUDGET = {
    "PRIXLM_MODEL__BASE": "tiny",
    "PRIXLM_TRAIN__PRECISION": "fp32",
    "PRIXLM_TRAIN__ZERO_STAGE": "0",
    "PRIXLM_TRAIN__MICRO_BATCH": "8",
    "PRIXLM_TRAIN__GLOBAL_BATCH": "8",
    "PRIXLM_TRAIN__MAX_STEPS": "2",
    "PRIXLM_EVAL__MAX_TEST_QUERIES": "5",
    "PRIXLM_EVAL__BEAM_SIZE": "5",
    "PRIXLM_EVAL__BASELINE_MAX_EPOCHS": "2",
    "PRIXLM_EVAL__BASELINE_EVAL_EVERY": "1",
    "PRIXLM_CONSTRUCT__MAX_QUERIES": "4",
    "PRIXLM_CONSTRUCT__CALIBRATION_QUERIES": "5",
    "PRIXLM_CONSTRUCT__QUALITY_QUERIES": "5",
    "PRIXLM_CONSTRUCT__BEAM_SIZE": "5",
    "PRIXLM_CONSTRUCT__REVIEW_THRESHOLD": "0",  # two training steps calibrate to about 0: write every proposal, for review
    "PRIXLM_SIMILARITY__MIRROR_MAX_WORDS": "32",
    "PRIXLM_SIMILARITY__MIRROR_MAX_STEPS": "1",
    "PRIXLM_SIMILARITY__XEL_MAX_QUERIES": "20",
    "PRIXLM_SIMILARITY__SAMEAS_MAX_SOURCES": "50",
    "PRIXLM_SIMILARITY__BLI_PAIRS": '["en-it"]',
    "PRIXLM_SIMILARITY__BLI_TRAIN": "500",
    "PRIXLM_SIMILARITY__PROBE_LANGUAGES": '["en", "fr"]',
    "PRIXLM_SIMILARITY__PROBE_MAX_FACTS": "10",
}


@pytest.fixture(scope="module")
def mirror_server(tmp_path_factory: pytest.TempPathFactory):
    """A small real-data mirror (2,000 facts and links per chapter), so the whole DAG runs in minutes."""
    sample = load_settings().sample.model_copy(update={"mirror_dir": tmp_path_factory.mktemp("small") / "mirror", "max_facts": 2000})
    with MirrorServer(build(sample)) as server:
        yield server


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, mirror_server: MirrorServer):
    """Run Airflow CLI commands against a fresh, migrated SQLite metadata database."""
    data_root = tmp_path_factory.mktemp("airflow-data")
    overrides = {"PRIXLM_PATHS__DATA_ROOT": str(data_root), "PRIXLM_ACQUIRE__MIRROR_URL": f"{mirror_server.url}/{GROUP}",
                 "PRIXLM_PATHS__CACHE_DIR": str(PROJECT_ROOT / "var/cache"), **PIPELINE_BUDGET}
    settings = load_settings({"paths": {"data_root": str(data_root), "cache_dir": str(PROJECT_ROOT / "var/cache")},
                              "acquire": {"mirror_url": f"{mirror_server.url}/{GROUP}"}, "model": {"base": "tiny"}})
    env = service_environment(settings)
    env.update(overrides)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["airflow", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=2400)
        if check and result.returncode:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    run("db", "migrate")
    run("dags", "reserialize")
    run.settings = settings
    run.env = env
    return run


def json_output(text: str):
    """The JSON document an Airflow CLI command printed last (warnings may precede it)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines and lines[-1][0] in "[{" else []


def pipeline_runs(airflow) -> list[str]:
    runs = json_output(airflow("dags", "list-runs", "prix_lm_full", "-o", "json").stdout)
    return sorted(run["run_id"] for run in runs)


def test_dags_parse_without_errors(airflow):
    listing = airflow("dags", "list", "-o", "json").stdout
    assert {dag["dag_id"] for dag in json_output(listing)} == {"prix_lm_full", "dbpedia_refresh"}
    errors = airflow("dags", "list-import-errors", "-o", "json").stdout
    assert json_output(errors) == [], errors


def test_bad_params_are_rejected_naming_the_field(airflow):
    """reliability #29: an unknown language in the Params is refused at trigger time, naming the field."""
    result = airflow("dags", "test", "prix_lm_full", "-c", json.dumps({"languages": ["xx"]}), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "languages" in output and "'xx' is not one of" in output


def test_refresh_starts_the_pipeline_only_for_a_new_release(airflow, mirror_server):
    """reliability #28 (no news): nothing newer than the last acquired release starts nothing."""
    settings = airflow.settings
    acquire(settings.model_copy(update={"acquire": settings.acquire.model_copy(update={"release": "2016.04.01"})}))
    before = pipeline_runs(airflow)

    output = airflow("dags", "test", "dbpedia_refresh").stdout
    assert "new release 2016.10.01 (last acquired: 2016.04.01)" in output
    assert pipeline_runs(airflow) == sorted([*before, "refresh__2016.10.01"])

    acquire(settings.model_copy(update={"acquire": settings.acquire.model_copy(update={"release": "2016.10.01"})}))
    output = airflow("dags", "test", "dbpedia_refresh").stdout
    assert "is not newer than the last acquired 2016.10.01; nothing starts" in output
    assert pipeline_runs(airflow) == sorted([*before, "refresh__2016.10.01"])


def test_refresh_with_the_source_unreachable_starts_nothing(airflow):
    """reliability #28 (no network): an unreachable source starts nothing and says why."""
    before = pipeline_runs(airflow)
    airflow.env["PRIXLM_ACQUIRE__MIRROR_URL"] = "http://127.0.0.1:9/dbpedia/generic"
    airflow.env["PRIXLM_ACQUIRE__RETRIES"] = "1"
    try:
        result = airflow("dags", "test", "dbpedia_refresh")
    finally:
        airflow.env["PRIXLM_ACQUIRE__MIRROR_URL"] = airflow.settings.acquire.mirror_url
        del airflow.env["PRIXLM_ACQUIRE__RETRIES"]
    assert "cannot reach the source to look for a new release; nothing starts" in result.stdout
    assert pipeline_runs(airflow) == before


def test_param_schema_matches_settings():
    schemas = param_schemas()
    assert schemas["source"]["enum"] == ["databus", "classic", "mirror"]
    assert "en" in schemas["languages"]["items"]["enum"] and "xx" not in schemas["languages"]["items"]["enum"]
    assert schemas["release"]["default"] == load_settings().acquire.release
