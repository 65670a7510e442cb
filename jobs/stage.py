"""What every stage shares: its Spark session, its release, and its atomic output folder.

Why: each stage reads the previous stage's output for one release and writes its own, so that a
re-run replaces (never duplicates) and a reader never sees half an output. The contract is one
folder per stage and release, written under a hidden staging name and renamed into place with a
``_SUCCESS`` marker and a ``stats.json``; readers call ``require_complete``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from prixlm_model.atomic import publish_folder
from prixlm_model.config import Settings, check_safe_name, load_settings

log = logging.getLogger(__name__)


class StageInputError(RuntimeError):
    """A stage's input is missing or incomplete; the message names the folder."""


def is_complete(folder: Path) -> bool:
    """Whether a stage output folder was written to the end."""
    return (folder / "_SUCCESS").is_file() and (folder / "stats.json").is_file()


def require_complete(folder: Path, producer: str) -> Path:
    """Return ``folder`` if complete, else fail naming it and the job that makes it."""
    if not is_complete(folder):
        raise StageInputError(f"{folder}: missing or incomplete (no _SUCCESS); run `python -m jobs.{producer}` first")
    return folder


def read_stats(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "stats.json").read_text())


def last_acquired_release(settings: Settings) -> str | None:
    """The newest release whose manifest says it is complete, or None when none is."""
    from jobs.databus import version_key

    raw = settings.paths.stage_root("raw")
    complete = []
    for manifest in raw.glob("*/manifest.json") if raw.exists() else []:
        try:
            if json.loads(manifest.read_text()).get("complete") and version_key(manifest.parent.name):
                complete.append(manifest.parent.name)
        except json.JSONDecodeError:
            log.warning("%s is not valid JSON; ignored", manifest)
    return max(complete, key=version_key) if complete else None


def latest_release(settings: Settings, stage: str) -> str:
    """The release of the newest complete output of ``stage`` (what "latest" means downstream).

    For ``raw`` that is the newest release whose acquire manifest says it is complete.
    """
    from jobs.databus import version_key

    root = settings.paths.data_root / stage
    if stage == "raw":
        done = [release] if (release := last_acquired_release(settings)) else []
    else:
        done = [p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_complete(p)] if root.is_dir() else []
    if not done:
        raise StageInputError(f"no complete release under {root}")
    return max(done, key=lambda name: (version_key(name) is not None, version_key(name) or (), name))


def resolve_release(settings: Settings, release: str | None, upstream: str) -> str:
    """The release to work on: as given, or for ``latest``/None the newest complete ``upstream`` one."""
    release = release or settings.acquire.release
    if release == "latest":
        return latest_release(settings, upstream)
    return check_safe_name(release, "release")


@contextmanager
def atomic_output(target: Path) -> Iterator[Path]:
    """Yield a staging folder next to ``target``; on success it replaces ``target`` whole.

    The caller writes ``stats.json`` into it; ``_SUCCESS`` is written here, last. A failure
    leaves ``target`` as it was and removes the staging folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.tmp-*"):  # left by a run that was killed
        shutil.rmtree(stale, ignore_errors=True)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        yield staging
        if not (staging / "stats.json").is_file():
            raise RuntimeError(f"{target}: the stage wrote no stats.json")
        (staging / "_SUCCESS").write_text("")
        publish_folder(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_stats(folder: Path, stats: dict[str, Any]) -> None:
    (folder / "stats.json").write_text(json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False))


def spark_session(settings: Settings, app: str, master: str | None = None, conf: dict[str, str] | None = None):
    """The job's session; under spark-submit (Airflow's operator) the submitted master wins.

    ``conf``: further Spark settings (a benchmark's event log, say), applied last.
    """
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.appName(f"prixlm-{app}")
    if master or "PYSPARK_GATEWAY_PORT" not in os.environ:
        builder = (
            builder.master(master or settings.spark.master)
            .config("spark.driver.memory", settings.spark.driver_memory)
            .config("spark.driver.host", "127.0.0.1")
            .config("spark.driver.bindAddress", "127.0.0.1")
            .config("spark.ui.enabled", "false")
        )
    # Python workers must run this interpreter (the venv's), whoever started the job.
    builder = builder.config("spark.ui.showConsoleProgress", "false").config("spark.pyspark.python", sys.executable)
    builder = builder.config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
    # Partitioned writes (facts by language) through one open writer per partition value instead of
    # a sort of every row by the partition column first: the planned write always adds that sort.
    builder = builder.config("spark.sql.optimizer.plannedWrite.enabled", "false").config(
        "spark.sql.maxConcurrentOutputFileWriters", "64"
    )
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def stage_parser(doc: str, upstream: str = "split", dag_run: str | None = None) -> argparse.ArgumentParser:
    """A job's command line with what every stage shares: ``--release`` and, when ``dag_run`` says what goes there, ``--dag-run-id``."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--release", help=f"release (default: acquire.release; 'latest' = newest complete {upstream}/)")
    if dag_run:
        parser.add_argument("--dag-run-id", help=f"Airflow DAG run id: {dag_run}")
    return parser


def stage_start(args: argparse.Namespace, upstream: str = "split", level: int = logging.INFO) -> tuple[Settings, str]:
    """After the arguments: logging configured, the settings loaded, ``--release`` resolved against ``upstream``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    return settings, resolve_release(settings, args.release, upstream)


def spark_stage_main(argv: list[str] | None, doc: str, stage: str, upstream: str, run: Callable, output: str | None = None,
                     artifacts: tuple[str, ...] = (), summary: Callable[[dict], dict] = lambda stats: stats) -> dict:
    """The command line every Spark job shares: pick the release, run, log the statistics to MLflow.

    ``run(spark, settings, release) -> stats``; ``artifacts`` are files of the stage's output
    folder (``output``, default ``stage``) logged with the statistics when a DAG run id is given.
    """
    parser = stage_parser(doc, upstream, dag_run="the statistics go to its MLflow run")
    parser.add_argument("--master", help="Spark master when not run by spark-submit (default: spark.master)")
    args = parser.parse_args(argv)
    settings, release = stage_start(args, upstream)
    if args.dag_run_id:  # before the heavy work, not after it (reliability #27)
        from prixlm_model.tracking import require_reachable

        require_reachable(settings.mlflow.resolved_uri())
    spark = spark_session(settings, stage, args.master)
    try:
        stats = run(spark, settings, release)
    finally:
        spark.stop()
    if args.dag_run_id:
        from prixlm_model.tracking import log_stage

        folder = settings.paths.stage_dir(output or stage, release)
        log_stage(settings, args.dag_run_id, stage, release, stats, artifacts=[folder / name for name in artifacts])
    print(json.dumps({"release": release, **summary(stats)}, ensure_ascii=False))
    return stats
