"""MLflow bookkeeping: one parent run per Airflow DAG run, one child run per stage.

Why: users review every pipeline run in MLflow. A stage finds its child run again by tags
(DAG run id and stage) instead of creating another, so an Airflow retry or a re-run of the same
DAG run adds no duplicate runs (reliability #25, 34). mlflow is imported here, lazily, so that a DAG
parse never pays for it.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable

from prixlm_model.config import Settings, settings_digest

log = logging.getLogger(__name__)

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on the runs table, not the GenAI traces
PIPELINE_TAG = "prixlm.pipeline_run"
STAGE_TAG = "prixlm.stage"
PARENT_TAG = "mlflow.parentRunId"


def artifact_location(settings: Settings) -> str:
    """Where a database-backed store keeps artifacts: under the data root, not ./mlruns of the task's folder."""
    return (settings.paths.mlflow_root / "artifacts").as_uri()


class TrackingUnavailable(RuntimeError):
    """The MLflow tracking server does not answer: the task stops before any heavy work, and its retry logs again."""


def require_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, naming the server and the setting, when an http(s) tracking server is down (reliability #27).

    Why fail and not buffer: every stage's outputs are written atomically and a retried task
    finds its MLflow run again, so failing loses nothing and the Airflow retry logs it all later;
    buffered logs would live only as long as the worker process.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except OSError as error:
        raise TrackingUnavailable(f"MLflow tracking server {uri} is unreachable ({error}); start it (make ui) or point mlflow.tracking_uri "
                                  f"elsewhere; the task will be retried, nothing was lost") from None


def _client(settings: Settings):
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow.resolved_uri()
    require_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    if experiment is not None:
        if experiment.tags.get("mlflow.experimentKind") is None:
            for key, value in EXPERIMENT_KIND.items():
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return client, experiment.experiment_id
    location = artifact_location(settings) if uri.startswith("sqlite:") else None
    return client, client.create_experiment(settings.mlflow.experiment, artifact_location=location, tags=EXPERIMENT_KIND)


def experiment_id(settings: Settings) -> str:
    """The project's experiment, created on first use."""
    return _client(settings)[1]


def _find_or_create(client, experiment_id: str, tags: dict[str, str], name: str) -> str:
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    found = client.search_runs([experiment_id], filter_string=query, max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, tags=tags, run_name=name).info.run_id


def parent_run(settings: Settings, pipeline_run: str) -> str:
    """The parent run of a DAG run (created on first use)."""
    client, experiment_id = _client(settings)
    return _find_or_create(client, experiment_id, {PIPELINE_TAG: pipeline_run, STAGE_TAG: "pipeline"}, pipeline_run)


def stage_run(settings: Settings, pipeline_run: str, stage: str) -> str:
    """The child run of ``stage`` within a DAG run's parent run, reused on retry."""
    parent = parent_run(settings, pipeline_run)
    client, experiment_id = _client(settings)
    return _find_or_create(client, experiment_id, {PIPELINE_TAG: pipeline_run, STAGE_TAG: stage, PARENT_TAG: parent}, stage)


def end_pipeline_run(settings: Settings, pipeline_run: str, status: str = "FINISHED") -> str:
    """Close the DAG run's parent run, so the MLflow UI shows it finished (with its duration), not running forever."""
    client, _ = _client(settings)
    parent = parent_run(settings, pipeline_run)
    client.set_terminated(parent, status)
    return parent


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: other characters (``=``, ``@``, brackets) become ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def flatten(stats: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``a.b.c`` → value (lists of dicts keyed by position)."""
    flat: dict[str, float] = {}
    for key, value in stats.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            flat[name] = float(value)
        elif isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            for index, item in enumerate(value):
                label = item.get("lang", index) if isinstance(item, dict) else index
                flat.update(flatten({k: v for k, v in item.items() if k != "lang"}, f"{name}.{label}."))
    return flat


def log_stage(settings: Settings, pipeline_run: str, stage: str, release: str, stats: dict[str, Any], artifacts: Iterable[Path] = ()) -> str:
    """Log a stage's statistics (metrics), release (param) and tables (artifacts); return the run id."""
    from mlflow.entities import Metric, Param, RunTag

    client, _ = _client(settings)
    run_id = stage_run(settings, pipeline_run, stage)
    parent = parent_run(settings, pipeline_run)
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in {"release": release, "stage": stage}.items() if k not in existing]
    client.log_batch(run_id, params=params, tags=[RunTag("prixlm.settings_digest", settings_digest(settings))])
    if "release" not in client.get_run(parent).data.params:
        client.log_batch(parent, params=[Param("release", release)])
    now_ms = int(time.time() * 1000)
    metrics = [Metric(metric_key(key), value, now_ms, 0) for key, value in flatten(stats).items()]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start : start + 900])
    client.log_dict(run_id, stats, "stats.json")
    if stats.get("warnings"):  # shown with the run in the UI, not only buried in stats.json
        text = "\n".join(stats["warnings"])
        client.set_tag(run_id, "prixlm.warnings", text[:5000])
        client.set_tag(run_id, "mlflow.note.content", f"**Warnings**\n\n{text}")
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    log.info("logged %s statistics for %s to MLflow run %s (%d metrics)", stage, release, run_id, len(metrics))
    return run_id


def redact(value: str) -> str:
    """A setting's text without URL credentials (``https://user:secret@host`` -> ``https://***@host``)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", value)


def describe_pipeline_run(settings: Settings, pipeline_run: str, tags: dict[str, str]) -> str:
    """Tag the DAG run's parent run (dag id, run id, release) and log the resolved settings once: as ``config/settings.json`` and as params."""
    import json

    from mlflow.entities import Param

    client, _ = _client(settings)
    parent = parent_run(settings, pipeline_run)
    for key, value in tags.items():
        client.set_tag(parent, key, value)
    resolved = json.loads(redact(settings.model_dump_json()))
    client.log_dict(parent, resolved, "config/settings.json")
    existing = client.get_run(parent).data.params
    flat = {f"{section}.{key}": str(value)[:6000] for section, values in resolved.items() for key, value in values.items()}
    params = [Param(key, value) for key, value in flat.items() if key not in existing]
    for start in range(0, len(params), 100):
        client.log_batch(parent, params=params[start : start + 100])
    return parent


def log_figures(settings: Settings, run_id: str, figures: dict[str, Any]) -> None:
    """Log matplotlib figures as PNG artifacts under ``plots/`` of ``run_id``."""
    client, _ = _client(settings)
    for name, figure in figures.items():
        client.log_figure(run_id, figure, f"plots/{name}.png")


def metric_history(settings: Settings, run_id: str, key: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a logged metric, in step order."""
    client, _ = _client(settings)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def register_model(settings: Settings, name: str, folder: Path, run_id: str, tags: dict[str, str]) -> str:
    """A new version of registered model ``name`` for an exported model folder; returns the version.

    The version's source is the training run's ``model`` artifacts (its card; a tracking server
    accepts no other local path), and its ``model.path`` tag the exported folder: the weights are
    not copied into MLflow's store. A folder already registered (a retried export of the same
    run) gets no second version.
    """
    from mlflow.exceptions import MlflowException

    client, _ = _client(settings)
    try:
        client.create_registered_model(name, description="Prix-LM models exported by the pipeline, one version per training run")
    except MlflowException:
        pass  # it exists
    path = str(folder.resolve())
    for version in client.search_model_versions(f"name = '{name}'"):
        if version.tags.get("model.path") == path:
            return version.version
    card = (folder / "README.md").read_text(encoding="utf-8") if (folder / "README.md").is_file() else ""
    return client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id, tags={**tags, "model.path": path},
                                       description=card[:5000]).version
