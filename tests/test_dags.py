"""The DAGs under a real Airflow (``airflow dags test``, SQLite), downloading from a loopback mirror."""

from __future__ import annotations

import json
import subprocess

import pytest

from jobs.acquire import acquire
from jobs.mirror_server import MirrorServer
from jobs.sample_mirror import build
from prixlm_model.config import PROJECT_ROOT, load_settings, param_schemas
from prixlm_model.runtime import service_environment

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


@pytest.mark.timeout(2400)  # every stage of the pipeline in one `airflow dags test`
def test_whole_pipeline_under_dags_test(airflow):
    result = airflow("dags", "test", "prix_lm_full", "-c", json.dumps({"release": "2016.04.01", "languages": ["fr", "en"]}))
    output = result.stdout + result.stderr
    assert "acquired release 2016.04.01: 6 files" in output
    root = airflow.settings.paths.data_root
    manifest = json.loads((root / "raw/2016.04.01/manifest.json").read_text())
    assert manifest["complete"] and len(manifest["files"]) == 6
    for entry in manifest["files"]:
        assert (root / entry["path"]).stat().st_size == entry["bytes"]
    for stage in ("parsed", "sequences", "split", "shards"):
        assert (root / stage / "2016.04.01" / "_SUCCESS").exists(), f"{stage} did not finish:\n{output[-3000:]}"
    table = json.loads((root / "split/2016.04.01/stats.json").read_text())["table"]
    assert {row["lang"] for row in table} == {"fr", "en"} and all(row["test"] > 0 for row in table)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(airflow.settings.mlflow.resolved_uri())
    experiment = client.get_experiment_by_name(airflow.settings.mlflow.experiment)
    runs = client.search_runs([experiment.experiment_id], "tags.`prixlm.stage` = 'split'")
    assert len(runs) == 1 and runs[0].data.params["release"] == "2016.04.01"
    fr = next(row for row in table if row["lang"] == "fr")
    assert runs[0].data.metrics["table.fr.test"] == fr["test"]
    parent = runs[0].data.tags["mlflow.parentRunId"]
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert {run.data.tags["prixlm.stage"] for run in children} >= {"acquire", "parse", "sequences", "split", "shards"}
    (model,) = [folder for folder in (root / "models/2016.04.01").glob("prixlm-2016.04.01-*") if "-single-" not in folder.name]
    assert (model / "config.json").exists() and (model / "README.md").exists()
    assert not (root / "runs" / model.name / "checkpoints").exists()  # a finished run keeps its export, not its checkpoints
    train_runs = {run.data.tags["prixlm.stage"].rsplit("-", 1)[0]: run for run in children if run.data.tags["prixlm.stage"].startswith("train/")}
    assert set(train_runs) == {"train/prixlm-2016.04.01", "train/prixlm-2016.04.01-single-fr", "train/prixlm-2016.04.01-single-en"}
    assert len(client.get_metric_history(train_runs["train/prixlm-2016.04.01"].info.run_id, "loss")) == 2
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    pipeline = client.get_run(parent)
    assert pipeline.data.tags["prixlm.release"] == "2016.04.01" and pipeline.data.tags["airflow.dag_id"] == "prix_lm_full"
    assert pipeline.data.params["train.max_steps"] == "2"  # the resolved settings, as params and as one artifact
    assert [a.path for a in client.list_artifacts(parent, "config")] == ["config/settings.json"]
    assert [v.tags["release"] for v in client.search_model_versions("name = 'prix-lm'")] == ["2016.04.01"]
    report = json.loads((root / "reports/2016.04.01/link_prediction.json").read_text())
    assert {(row["lang"], row["model"]) for row in report["rows"]} == {
        (lang, model) for lang in ("fr", "en") for model in ("Prix-LM (All)", "Prix-LM (Single)", "TransE", "RotatE")
    }
    evaluate = next(run for run in children if run.data.tags["prixlm.stage"] == "evaluate")
    assert any(key.endswith("mrr") for key in evaluate.data.metrics)
    plots = {a.path for a in client.list_artifacts(evaluate.info.run_id, "plots")}
    assert {"plots/link_prediction_hits_at_1.png", "plots/table1.png", "plots/training_loss.png"} <= plots

    import pyarrow.parquet as pq

    predictions = root / "predictions/2016.04.01"
    assert (predictions / "_SUCCESS").exists(), f"construct did not finish:\n{output[-3000:]}"
    written = {lang: pq.read_table(predictions / f"{lang}.parquet").num_rows for lang in ("fr", "en")}
    for lang in ("fr", "en"):
        assert (predictions / f"{lang}.nt").read_text(encoding="utf-8").count("\n") == written[lang] > 0
        assert "data:image/png;base64," in (predictions / f"report_{lang}.html").read_text(encoding="utf-8")
    store_check = json.loads((predictions / "triplestore.json").read_text())
    assert store_check["ok"] and store_check["sparql_rows"] == sum(written.values())
    construct = next(run for run in children if run.data.tags["prixlm.stage"] == "construct")
    assert construct.data.metrics["fr.written"] == written["fr"] and "en.quality.ece" in construct.data.metrics
    assert pq.read_table(predictions / "fr.parquet").column("run_id").unique().to_pylist() == [construct.info.run_id]
    logged = {item.path for item in client.list_artifacts(construct.info.run_id)}
    assert {"report_fr.html", "report_en.html", "fr_reliability.png", "triplestore.json"} <= logged

    reports = root / "reports/2016.04.01"
    similarity = json.loads((reports / "similarity.json").read_text())
    models = {"Base + Mirror", "Prix-LM + Mirror"}
    assert {(row["direction"], row["model"]) for row in similarity["xel"]} == {(d, m) for d in ("fr-en", "en-fr") for m in models}
    assert {(row["pair"], row["model"]) for row in similarity["bli"]} == {("en-it", m) for m in models}
    probing = json.loads((reports / "probing.json").read_text())
    assert {(row["lang"], row["model"]) for row in probing["rows"]} == {(lang, m) for lang in ("en", "fr") for m in ("Base", "Prix-LM")}
    for name in ("similarity_xel.md", "similarity_bli.md", "similarity_xel.png", "probing.md", "probing.png"):
        assert (reports / name).is_file(), name
    assert (root / "predictions/2016.04.01/sameas-fr-en.parquet").is_file() and (root / "predictions/2016.04.01/sameas-fr-en.nt").is_file()
    for stage, metric in (("similarity", "xel.links_test.fr-en.prix_lm_mirror.mrr"), ("probe", "probing.en.prix_lm.accuracy")):
        run = next(run for run in children if run.data.tags["prixlm.stage"] == stage)
        assert metric in run.data.metrics, sorted(run.data.metrics)[:20]
        assert {"similarity_xel.md", "probing.md"} & {a.path for a in client.list_artifacts(run.info.run_id)}


def test_bad_params_are_rejected_naming_the_field(airflow):
    """FAULTS 29: an unknown language in the Params is refused at trigger time, naming the field."""
    result = airflow("dags", "test", "prix_lm_full", "-c", json.dumps({"languages": ["xx"]}), check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "languages" in output and "'xx' is not one of" in output


def test_refresh_starts_the_pipeline_only_for_a_new_release(airflow, mirror_server):
    """FAULTS 28 (no news): nothing newer than the last acquired release starts nothing."""
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
    """FAULTS 28 (no network): an unreachable source starts nothing and says why."""
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
    assert schemas["start"]["enum"] == ["dbpedia", "dbp-5l"] and schemas["start"]["default"] == "dbpedia"
    assert schemas["filters"]["items"]["enum"] == ["all", "train"] and schemas["filters"]["default"] == ["all"]
    assert "en" in schemas["languages"]["items"]["enum"] and "xx" not in schemas["languages"]["items"]["enum"]
    assert schemas["release"]["default"] == load_settings().acquire.release
