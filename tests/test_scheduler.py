"""prix_lm_full under the real scheduler, driven as a user drives it (reliability #25, 26, 28, 31, 34).

``airflow standalone`` and ``mlflow server`` start on loopback through ``tools.ui.Services`` (what
``make ui`` runs), with the small real-data mirror and the tiny model. Then, in order:

1. ``dbpedia_refresh`` finds a release newer than anything acquired and starts one full run (A).
2. In Chromium, a user logs in, opens ``prix_lm_full`` and triggers it from the form with a
   training Param changed (run B). B waits while A runs (one run of a release at a time); then
   A is stopped, so that only one whole pipeline run is paid for.
3. B's training process is SIGKILLed mid-run; Airflow retries the task, which resumes from its
   checkpoint; every task of B succeeds; B's model equals an uninterrupted training's, and there
   is one MLflow child run for it.
4. Every stage of B delivered its outputs (files, MLflow runs, plots, the registry, new facts,
   the similarity and probing tables), all from the one settings file of the DAG run.
5. ``dbpedia_refresh`` again: nothing newer, nothing starts.
6. In Chromium, MLflow shows B's run, its child runs, a metric and a plot.
7. Neither the generated password nor the signing secret appears in any log or MLflow param.

Screenshots go to ``var/reports/test-artifacts/scheduler/``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tools.mirror_server import MirrorServer
from tools.sample_mirror import build
from tools.ui import Services
from prixlm_model.config import PROJECT_ROOT, load_settings, read_settings, settings_digest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # whole pipeline runs under the scheduler
RELEASE = "2016.10.01"
GROUP = "databus/dbpedia/generic"

# The whole DAG in a few minutes: the tiny base model, a few optimizer steps, a handful of queries.
BUDGET = {
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
    "PRIXLM_EVAL__SINGLE_BASELINE": "false",  # the Single models' training and evaluation: tests/test_training.py, test_evaluate.py
    "PRIXLM_TRAIN__CHECKPOINT_EVERY": "1",  # a checkpoint per step: the killed run has one to resume from
    "PRIXLM_EVAL__BASELINES": '["TransE"]',
    "PRIXLM_TASKS__RETRY_DELAY_S": "1",
}

SHOTS = PROJECT_ROOT / "var" / "reports" / "test-artifacts" / "scheduler"
BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Api:
    """Airflow's REST API as the UI's form uses it, with a token from the generated password."""

    def __init__(self, services: Services) -> None:
        self.url = services.airflow_url
        password = json.loads(services.password_file.read_text())["admin"]
        self.token = self.call("POST", "/auth/token", {"username": "admin", "password": password}, auth=False)["access_token"]

    def call(self, method: str, path: str, body: dict | None = None, auth: bool = True) -> dict:
        request = urllib.request.Request(f"{self.url}{path}", method=method, data=json.dumps(body).encode() if body is not None else None,
                                         headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {self.token}"} if auth else {})})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def runs(self, dag_id: str) -> dict[str, dict]:
        return {run["dag_run_id"]: run for run in self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"]}

    def tasks(self, dag_id: str, run_id: str) -> dict[str, dict]:
        quoted = urllib.request.quote(run_id, safe="")
        found = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances?limit=100")["task_instances"]
        return {(t["task_id"] if t["map_index"] < 0 else f"{t['task_id']}[{t['map_index']}]"): t for t in found}

    def wait(self, dag_id: str, run_id: str, timeout_s: float = 1200, states=("success", "failed")) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.runs(dag_id).get(run_id)
            if run and run["state"] in states:
                return run
            time.sleep(3)
        raise TimeoutError(f"{dag_id} {run_id} not in {states} after {timeout_s:.0f}s: {self.tasks(dag_id, run_id)}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    sample = load_settings().sample.model_copy(update={"mirror_dir": tmp_path_factory.mktemp("small") / "mirror", "max_facts": 2000})
    data_root = tmp_path_factory.mktemp("scheduler") / "var"
    with MirrorServer(build(sample)) as mirror:
        overrides = {"paths": {"data_root": str(data_root), "cache_dir": str(PROJECT_ROOT / "var/cache")},
                     "acquire": {"mirror_url": f"{mirror.url}/{GROUP}"}, "model": {"base": "tiny"}}
        settings = load_settings(overrides)
        env = {**BUDGET, "PRIXLM_PATHS__DATA_ROOT": str(data_root), "PRIXLM_PATHS__CACHE_DIR": str(PROJECT_ROOT / "var/cache"),
               "PRIXLM_ACQUIRE__MIRROR_URL": f"{mirror.url}/{GROUP}",
               # this test's own ports, so a `make ui` on the same machine does not collide with it
               "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()), "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
        with Services(settings, free_port(), free_port(), env) as services:
            api = Api(services)
            for dag_id in ("prix_lm_full", "dbpedia_refresh"):
                api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            yield {"services": services, "api": api, "settings": settings, "root": data_root}


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=BROWSER_ARGS)
        yield chromium.new_page(viewport={"width": 1400, "height": 900})
        chromium.close()


def test_dags_load_and_bad_params_are_refused(stack) -> None:
    """reliability #29: both DAGs load without import errors; a bad Param is refused at trigger time, naming it."""
    api = stack["api"]
    assert {dag["dag_id"] for dag in api.call("GET", "/api/v2/dags")["dags"]} >= {"prix_lm_full", "dbpedia_refresh"}
    assert api.call("GET", "/api/v2/importErrors")["import_errors"] == []
    with pytest.raises(urllib.error.HTTPError) as refused:
        api.call("POST", "/api/v2/dags/prix_lm_full/dagRuns", {"logical_date": None, "conf": {"languages": ["xx"]}})
    body = refused.value.read().decode()
    assert refused.value.code == 400 and "languages" in body and "'xx' is not one of" in body, body
    assert api.runs("prix_lm_full") == {}


def test_refresh_starts_one_full_run_for_a_new_release(stack) -> None:
    """reliability #28, the other half: a newer release under the running scheduler starts exactly one run."""
    api = stack["api"]
    triggered = api.call("POST", "/api/v2/dags/dbpedia_refresh/dagRuns", {"logical_date": None})
    assert api.wait("dbpedia_refresh", triggered["dag_run_id"], 300)["state"] == "success"
    assert list(api.runs("prix_lm_full")) == [f"refresh__{RELEASE}"]
    stack["a"] = f"refresh__{RELEASE}"


def test_form_trigger_waits_for_the_running_release(stack, browser) -> None:
    """reliability #26: a second run of the release, triggered from the form while the first runs, waits its turn."""
    api, page = stack["api"], browser
    page.goto(f"{stack['services'].airflow_url}/dags/prix_lm_full")
    page.wait_for_url("**/auth/login**", timeout=60_000)
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", json.loads(stack["services"].password_file.read_text())["admin"])
    page.click("button[type=submit]")
    page.wait_for_url("**/dags/prix_lm_full**", timeout=60_000)
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    steps = dialog.locator("input[name=element_max_steps]")
    steps.fill("4")  # one Param changed: another model than run A's
    page.screenshot(path=str(SHOTS / "1-trigger-form.png"), full_page=True)
    before = set(api.runs("prix_lm_full"))
    dialog.get_by_role("button", name="Trigger").last.click()
    deadline = time.monotonic() + 60
    while not (set(api.runs("prix_lm_full")) - before) and time.monotonic() < deadline:
        time.sleep(1)
    (b,) = set(api.runs("prix_lm_full")) - before
    stack["b"] = b
    page.screenshot(path=str(SHOTS / "2-dag-runs.png"), full_page=True)
    page.goto("about:blank")  # the Airflow UI polls the API while open: leave the cores to the pipeline
    assert api.runs("prix_lm_full")[b]["conf"]["max_steps"] == 4
    states = []
    for _ in range(5):  # ten seconds of both runs side by side
        runs = api.runs("prix_lm_full")
        assert runs[stack["a"]]["state"] == "running", runs[stack["a"]]
        states.append(runs[b]["state"])
        time.sleep(2)
    assert set(states) == {"queued"}, f"run B was {states} while run A ran"
    # Run A has shown what it had to (the refresh started it; B waits for it): stop it, as a user
    # would from the UI, so that the test pays for one whole pipeline run, not two.
    api.call("PATCH", f"/api/v2/dags/prix_lm_full/dagRuns/{urllib.request.quote(stack['a'], safe='')}", {"state": "failed"})
    assert api.wait("prix_lm_full", stack["a"], 60)["state"] == "failed"


def assert_every_task_ran(api: Api, run_id: str) -> None:
    """Every task of the run succeeded (only the Single training, not asked for here, is skipped)."""
    states = {task: info["state"] for task, info in api.tasks("prix_lm_full", run_id).items()}
    assert {task for task, state in states.items() if state != "success"} <= {"pretrain_single"}, states
    assert {"configure", "acquire", "parse", "sequences", "split", "shards", "pretrain", "single_languages", "evaluate", "construct",
            "similarity", "probe", "retention"} <= set(states)


def training_process(run_prefix: str) -> int | None:
    """The PID of the training process (the deepspeed launcher's child) of a run, if it is running."""
    found = subprocess.run(["pgrep", "-f", f"prixlm_model.training --local_rank=0 .*--run {run_prefix}"], capture_output=True, text=True)
    pids = [int(pid) for pid in found.stdout.split()]
    return pids[0] if pids else None


def test_killed_training_is_retried_and_resumes(stack) -> None:
    """reliability #25: SIGKILL the training under the scheduler; the retry resumes, one MLflow child run, the model of an uninterrupted run."""
    api, root, b = stack["api"], stack["root"], stack["b"]
    runs = root / "runs"
    deadline = time.monotonic() + 900
    killed = None
    while killed is None and time.monotonic() < deadline:
        state = api.runs("prix_lm_full")[b]["state"]
        assert state in ("queued", "running"), api.tasks("prix_lm_full", b)
        for latest in runs.glob(f"prixlm-{RELEASE}-*/checkpoints/latest"):  # run B's, between its first and its last step
            run_name = latest.parent.parent.name
            between = latest.read_text() in ("step-1", "step-2", "step-3")
            pid = training_process(run_name) if between else None
            if pid:
                os.kill(pid, signal.SIGKILL)
                killed = run_name
        time.sleep(0.5)
    assert killed, "never saw run B's training between its first and last checkpoint"
    stack["killed"] = killed
    assert api.wait("prix_lm_full", b)["state"] == "success", api.tasks("prix_lm_full", b)
    assert api.tasks("prix_lm_full", b)["pretrain"]["try_number"] == 2
    assert_every_task_ran(api, b)
    seconds = {task: info["duration"] for task, info in api.tasks("prix_lm_full", b).items()}  # kept with the screenshots
    (SHOTS / "run-b-task-seconds.json").write_text(json.dumps(seconds, indent=1, sort_keys=True))

    models = sorted(folder.name for folder in (root / "models" / RELEASE).iterdir() if folder.is_dir())
    assert killed in models  # named by its run (two runs with other settings leave two models: tests/test_training.py)
    card = (root / "models" / RELEASE / killed / "README.md").read_text()
    assert b in card and "| step | 4 of 4 |" in card

    from mlflow.tracking import MlflowClient

    settings = stack["settings"]
    client = MlflowClient(settings.mlflow.resolved_uri())
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    train_runs = client.search_runs([experiment.experiment_id], f"tags.`prixlm.pipeline_run` = '{b}' and tags.`prixlm.stage` = 'train/{killed}'")
    assert len(train_runs) == 1  # the retry reopened its child run

    reference = uninterrupted_weights(stack, killed)
    from safetensors.torch import load_file

    exported = load_file(root / "models" / RELEASE / killed / "model.safetensors")
    shared = reference.keys() & exported.keys()
    assert len(shared) > 10 and all((reference[name] == exported[name]).all() for name in shared)


def uninterrupted_weights(stack, run_name: str) -> dict:
    """Train run B's settings again, uninterrupted, in a fresh data root with the same shards."""
    import shutil

    from safetensors.torch import load_file

    root = stack["root"]
    other = root.parent / "uninterrupted"
    shutil.copytree(root / "shards", other / "shards")
    env = {**stack["services"].env, "PRIXLM_PATHS__DATA_ROOT": str(other), "PRIXLM_MLFLOW__TRACKING_URI": str(other / "mlflow.db"),
           "PRIXLM_TRAIN__MAX_STEPS": "4", "DS_ACCELERATOR": "cpu", "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    done = subprocess.run([sys.executable, "-m", "prixlm_model.training", "--release", RELEASE, "--run", run_name, "--no-export"],
                          env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return load_file(other / "runs" / run_name / "checkpoints" / "step-4" / "model.safetensors")


def test_every_stage_delivered_its_outputs(stack) -> None:
    """Run B, stage by stage: the files each task writes and what it logs to MLflow, from one settings file."""
    import pyarrow.parquet as pq
    from mlflow.tracking import MlflowClient

    settings, root, b, killed = stack["settings"], stack["root"], stack["b"], stack["killed"]
    manifest = json.loads((root / f"raw/{RELEASE}/manifest.json").read_text())
    assert manifest["complete"] and len(manifest["files"]) == 6
    assert all((root / entry["path"]).stat().st_size == entry["bytes"] for entry in manifest["files"])
    for stage in ("parsed", "sequences", "split", "shards"):
        assert (root / stage / RELEASE / "_SUCCESS").exists(), stage
    table = json.loads((root / f"split/{RELEASE}/stats.json").read_text())["table"]
    assert {row["lang"] for row in table} == {"fr", "en"} and all(row["test"] > 0 for row in table)

    client = MlflowClient(stack["services"].mlflow_url)  # artifacts are served by the server
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`prixlm.pipeline_run` = '{b}' and tags.`prixlm.stage` = 'pipeline'")
    assert parent.data.tags["prixlm.release"] == RELEASE and parent.data.tags["airflow.dag_id"] == "prix_lm_full"
    assert parent.info.status == "FINISHED" and parent.info.end_time > parent.info.start_time  # closed by the last task
    assert parent.data.params["train.max_steps"] == "4"  # the form's Param, in the resolved settings logged as params and one artifact
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "config")] == ["config/settings.json"]
    children = {run.data.tags["prixlm.stage"]: run for run in client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")}
    fr = next(row for row in table if row["lang"] == "fr")
    assert children["split"].data.metrics["table.fr.test"] == fr["test"]
    assert [stage for stage in children if stage.startswith("train/")] == [f"train/{killed}"]
    assert {m.step for m in client.get_metric_history(children[f"train/{killed}"].info.run_id, "loss")} == {1, 2, 3, 4}

    # One settings file for the DAG run; every Spark job and the training process resolved exactly it.
    resolved = read_settings(settings.paths.pipeline_settings(b))
    assert resolved.train.max_steps == 4
    readers = [children[stage] for stage in ("parse", "sequences", "split", "shards", f"train/{killed}")]
    assert [run.data.tags["prixlm.settings_digest"] for run in readers] == [settings_digest(resolved)] * 5

    model = root / "models" / RELEASE / killed
    assert (model / "config.json").exists() and not (root / "runs" / killed / "checkpoints").exists()  # the export stays, the checkpoints go
    assert b in {v.tags["pipeline_run"] for v in client.search_model_versions("name = 'prix-lm'")}
    report = json.loads((root / f"reports/{RELEASE}/link_prediction.json").read_text())
    assert {(row["lang"], row["model"]) for row in report["rows"]} == {
        (lang, name) for lang in ("fr", "en") for name in ("Prix-LM (All)", "TransE")
    }
    assert any(key.endswith("mrr") for key in children["evaluate"].data.metrics)
    plots = {a.path for a in client.list_artifacts(children["evaluate"].info.run_id, "plots")}
    assert {"plots/link_prediction_hits_at_1.png", "plots/table1.png", "plots/training_loss.png"} <= plots

    predictions = root / "predictions" / RELEASE
    written = {lang: pq.read_table(predictions / f"{lang}.parquet").num_rows for lang in ("fr", "en")}
    for lang in ("fr", "en"):
        assert (predictions / f"{lang}.nt").read_text(encoding="utf-8").count("\n") == written[lang] > 0
        assert "data:image/png;base64," in (predictions / f"report_{lang}.html").read_text(encoding="utf-8")
    store_check = json.loads((predictions / "triplestore.json").read_text())
    assert store_check["ok"] and store_check["sparql_rows"] == sum(written.values())
    construct = children["construct"]
    assert construct.data.metrics["fr.written"] == written["fr"] and "en.quality.ece" in construct.data.metrics
    assert pq.read_table(predictions / "fr.parquet").column("run_id").unique().to_pylist() == [construct.info.run_id]
    assert {"report_fr.html", "report_en.html", "fr_reliability.png", "triplestore.json"} <= {a.path for a in client.list_artifacts(construct.info.run_id)}

    reports = root / "reports" / RELEASE
    similarity = json.loads((reports / "similarity.json").read_text())
    compared = {"Base + Mirror", "Prix-LM + Mirror"}
    assert {(row["direction"], row["model"]) for row in similarity["xel"]} == {(d, m) for d in ("fr-en", "en-fr") for m in compared}
    assert {(row["pair"], row["model"]) for row in similarity["bli"]} == {("en-it", m) for m in compared}
    probing = json.loads((reports / "probing.json").read_text())
    assert {(row["lang"], row["model"]) for row in probing["rows"]} == {(lang, m) for lang in ("en", "fr") for m in ("Base", "Prix-LM")}
    for name in ("similarity_xel.md", "similarity_bli.md", "similarity_xel.png", "probing.md", "probing.png"):
        assert (reports / name).is_file(), name
    assert (predictions / "sameas-fr-en.parquet").is_file() and (predictions / "sameas-fr-en.nt").is_file()
    for stage, metric in (("similarity", "xel.links_test.fr-en.prix_lm_mirror.mrr"), ("probe", "probing.en.prix_lm.accuracy")):
        assert metric in children[stage].data.metrics, sorted(children[stage].data.metrics)[:20]


def test_refresh_with_nothing_new_starts_nothing(stack) -> None:
    api = stack["api"]
    before = set(api.runs("prix_lm_full"))
    triggered = api.call("POST", "/api/v2/dags/dbpedia_refresh/dagRuns", {"logical_date": None})
    assert api.wait("dbpedia_refresh", triggered["dag_run_id"], 300)["state"] == "success"
    assert api.tasks("dbpedia_refresh", triggered["dag_run_id"])["start_prix_lm_full"]["state"] == "skipped"
    assert set(api.runs("prix_lm_full")) == before


def test_mlflow_ui_shows_the_run_its_children_a_metric_and_a_plot(stack, browser) -> None:
    from mlflow.tracking import MlflowClient

    settings, page, b = stack["settings"], browser, stack["b"]
    client = MlflowClient(settings.mlflow.resolved_uri())
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`prixlm.pipeline_run` = '{b}' and tags.`prixlm.stage` = 'pipeline'")
    evaluate = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and tags.`prixlm.stage` = 'evaluate'")[0]
    base = f"{stack['services'].mlflow_url}/#/experiments/{experiment.experiment_id}"
    page.goto(f"{base}/runs")
    page.get_by_text(b).first.wait_for(timeout=60_000)  # the DAG run's parent run, on the runs table (not the GenAI overview)
    page.screenshot(path=str(SHOTS / "3-mlflow-runs.png"), full_page=True)
    page.goto(f"{base}/runs/{parent.info.run_id}")
    page.get_by_text(b).first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "4-mlflow-parent-run.png"), full_page=True)
    page.goto(f"{base}/runs/{evaluate.info.run_id}")
    page.get_by_text(f"Metrics ({len(evaluate.data.metrics)})").first.wait_for(timeout=60_000)  # the child run's metrics table
    assert any(key.endswith("hits_at_1") for key in evaluate.data.metrics)
    page.screenshot(path=str(SHOTS / "5-mlflow-evaluate-run.png"), full_page=True)
    # the plot, as the UI's artifact view fetches it from the server
    with urllib.request.urlopen(f"{stack['services'].mlflow_url}/get-artifact?path=plots/link_prediction_hits_at_1.png&run_uuid={evaluate.info.run_id}",
                                timeout=30) as response:
        assert response.read(8) == b"\x89PNG\r\n\x1a\n"
    page.goto(f"{base}/runs/{evaluate.info.run_id}/artifacts")
    page.get_by_text("plots").first.wait_for(timeout=60_000)
    page.screenshot(path=str(SHOTS / "6-mlflow-artifacts.png"), full_page=True)
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert {run.data.tags["prixlm.stage"].split("/")[0] for run in children} >= {"acquire", "parse", "split", "shards", "train", "evaluate"}


def test_no_secret_in_logs_or_mlflow(stack) -> None:
    """reliability #31: the generated password and the JWT signing secret are in their 0600 files and nowhere else."""
    services, root = stack["services"], stack["root"]
    secret_file = root / "airflow" / "jwt_secret"
    for path in (services.password_file, secret_file):
        assert path.stat().st_mode & 0o777 == 0o600
    secrets = [json.loads(services.password_file.read_text())["admin"], secret_file.read_text()]
    assert all(len(secret) >= 8 for secret in secrets)
    logs = [path for folder in (root / "airflow" / "logs", root / "reports") for path in folder.rglob("*") if path.is_file()]
    assert len(logs) > 10
    leaked = [str(path) for path in logs for secret in secrets if secret in path.read_text(errors="replace")]
    assert leaked == []

    from mlflow.tracking import MlflowClient

    settings = stack["settings"]
    client = MlflowClient(settings.mlflow.resolved_uri())
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        text = json.dumps([run.data.params, run.data.tags])
        assert not any(secret in text for secret in secrets), run.info.run_id
    assert not any(secret in os.environ.get(key, "") for key in os.environ for secret in secrets)
