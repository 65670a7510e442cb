"""The DAGs under a real Airflow (``airflow dags test``, SQLite), downloading from a loopback mirror."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jobs.acquire import acquire
from jobs.mirror_server import MirrorServer
from prixlm_model.config import PROJECT_ROOT, load_settings, param_schemas
from prixlm_model.runtime import service_environment

pytestmark = pytest.mark.slow
GROUP = "databus/dbpedia/generic"


@pytest.fixture(scope="module")
def mirror_server(sample_mirror: Path):
    with MirrorServer(sample_mirror) as server:
        yield server


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, mirror_server: MirrorServer):
    """Run Airflow CLI commands against a fresh, migrated SQLite metadata database."""
    data_root = tmp_path_factory.mktemp("airflow-data")
    overrides = {"PRIXLM_PATHS__DATA_ROOT": str(data_root), "PRIXLM_ACQUIRE__MIRROR_URL": f"{mirror_server.url}/{GROUP}"}
    settings = load_settings({"paths": {"data_root": str(data_root)}, "acquire": {"mirror_url": f"{mirror_server.url}/{GROUP}"}})
    env = service_environment(settings)
    env.update(overrides)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(["airflow", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
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


def test_acquire_task_runs_under_dags_test(airflow):
    result = airflow("dags", "test", "prix_lm_full", "-c", json.dumps({"release": "2016.04.01", "languages": ["fr", "en"]}))
    assert "acquired release 2016.04.01: 6 files" in result.stdout + result.stderr
    manifest = json.loads((airflow.settings.paths.data_root / "raw/2016.04.01/manifest.json").read_text())
    assert manifest["complete"] and len(manifest["files"]) == 6
    for entry in manifest["files"]:
        assert (airflow.settings.paths.data_root / entry["path"]).stat().st_size == entry["bytes"]


def test_bad_params_are_rejected_naming_the_field(airflow):
    result = airflow("dags", "test", "prix_lm_full", "-c", json.dumps({"languages": ["xx"]}), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "languages" in output and "'xx' is not one of" in output


def test_refresh_starts_the_pipeline_only_for_a_new_release(airflow, mirror_server):
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
