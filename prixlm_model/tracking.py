"""MLflow bookkeeping: one parent run per Airflow DAG run, one child run per stage.

Why: users review every pipeline run in MLflow. A stage finds its child run again by tags
(DAG run id and stage) instead of creating another, so an Airflow retry or a re-run of the same
DAG run adds no duplicate runs (FAULTS 25, 34). mlflow is imported here, lazily, so that a DAG
parse never pays for it.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any, Iterable

from prixlm_model.config import Settings

log = logging.getLogger(__name__)

DAG_RUN_TAG = "airflow.dag_run_id"
STAGE_TAG = "prixlm.stage"
PARENT_TAG = "mlflow.parentRunId"


def artifact_location(settings: Settings) -> str:
    """Where a database-backed store keeps artifacts: under the data root, not ./mlruns of the task's folder."""
    return (settings.paths.data_root / "mlflow" / "artifacts").as_uri()


def _client(settings: Settings):
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow.resolved_uri()
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    if experiment is not None:
        return client, experiment.experiment_id
    location = artifact_location(settings) if uri.startswith("sqlite:") else None
    return client, client.create_experiment(settings.mlflow.experiment, artifact_location=location)


def experiment_id(settings: Settings) -> str:
    """The project's experiment, created on first use."""
    return _client(settings)[1]


def _find_or_create(client, experiment_id: str, tags: dict[str, str], name: str) -> str:
    query = " and ".join(f"tags.`{key}` = '{value}'" for key, value in tags.items())
    found = client.search_runs([experiment_id], filter_string=query, max_results=1, order_by=["attributes.start_time ASC"])
    if found:
        return found[0].info.run_id
    return client.create_run(experiment_id, tags=tags, run_name=name).info.run_id


def pipeline_run(settings: Settings, dag_run_id: str) -> str:
    """The parent run of a DAG run (created on first use)."""
    client, experiment_id = _client(settings)
    return _find_or_create(client, experiment_id, {DAG_RUN_TAG: dag_run_id, STAGE_TAG: "pipeline"}, dag_run_id)


def stage_run(settings: Settings, dag_run_id: str, stage: str) -> str:
    """The child run of ``stage`` within a DAG run's parent run, reused on retry."""
    parent = pipeline_run(settings, dag_run_id)
    client, experiment_id = _client(settings)
    return _find_or_create(client, experiment_id, {DAG_RUN_TAG: dag_run_id, STAGE_TAG: stage, PARENT_TAG: parent}, stage)


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


def log_stage(settings: Settings, dag_run_id: str, stage: str, release: str, stats: dict[str, Any], artifacts: Iterable[Path] = ()) -> str:
    """Log a stage's statistics (metrics), release (param) and tables (artifacts); return the run id."""
    from mlflow.entities import Metric, Param

    client, _ = _client(settings)
    run_id = stage_run(settings, dag_run_id, stage)
    parent = pipeline_run(settings, dag_run_id)
    existing = client.get_run(run_id).data.params
    params = [Param(k, v) for k, v in {"release": release, "stage": stage}.items() if k not in existing]
    client.log_batch(run_id, params=params)
    if "release" not in client.get_run(parent).data.params:
        client.log_batch(parent, params=[Param("release", release)])
    now_ms = int(time.time() * 1000)
    metrics = [Metric(metric_key(key), value, now_ms, 0) for key, value in flatten(stats).items()]
    for start in range(0, len(metrics), 900):
        client.log_batch(run_id, metrics=metrics[start : start + 900])
    client.log_dict(run_id, stats, "stats.json")
    for path in artifacts:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
    log.info("logged %s statistics for %s to MLflow run %s (%d metrics)", stage, release, run_id, len(metrics))
    return run_id
