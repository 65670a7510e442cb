"""The environment the services run in (Airflow, Spark, MLflow, DeepSpeed), and how Spark jobs are submitted.

Why: the Makefile, the tests and a user's shell must start Airflow and friends identically, with
every state folder under the data root. ``python -m jobs.runtime CMD …`` runs CMD in that
environment; ``python -m jobs.runtime --print`` prints it as shell exports.

The environment carries where things are, not the settings themselves: a DAG run resolves its
settings when it starts (``jobs.params.configure``) and hands its processes that one file, so the
services never hold a stale copy of ``prixlm.toml``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path

from prixlm_model.atomic import replacing
from prixlm_model.config import PROJECT_ROOT, SETTINGS_FILE_VARIABLE, Settings, load_settings, write_settings


def service_environment(settings: Settings, base: dict[str, str] | None = None, carry: Path | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus the project's service variables.

    With ``carry``, ``settings`` are written there as a snapshot that the child process loads as
    its settings (``PRIXLM_SETTINGS_FILE``): how a launcher hands its exact settings to a child.
    """
    env = dict(os.environ if base is None else base)
    root = settings.paths.data_root
    airflow_home = root / "airflow"
    venv_bin = Path(sys.executable).parent
    for folder in (airflow_home, settings.paths.scratch):
        folder.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW_CONFIG": str(PROJECT_ROOT / "airflow.cfg"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(airflow_home / "simple_auth_manager_passwords.json.generated"),
            # A JSON connection: the URI form spark://local[*] silently becomes master "yarn".
            "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps({"conn_type": "spark", "host": settings.spark.master}),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH", "")])),
            "PATH": os.pathsep.join([str(venv_bin), env.get("PATH", "")]),  # spark-submit, deepspeed, airflow
            "TMPDIR": str(settings.paths.scratch),  # MLflow and Spark write lock and scratch files here
            "TORCH_EXTENSIONS_DIR": str(settings.paths.cache_dir / "torch_extensions"),
            "MLFLOW_TRACKING_URI": settings.mlflow.resolved_uri(),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            # Offline by default: no usage telemetry from MLflow (its UI banner and client) or anything honouring DO_NOT_TRACK.
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
        }
    )
    if settings.model.hub_offline:
        env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    if carry is not None:
        env[SETTINGS_FILE_VARIABLE] = str(write_settings(settings, carry))
    return env


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    env = service_environment(load_settings())
    if not argv or argv == ["--print"]:
        for key in sorted(set(env) - set(os.environ) | {k for k in env if env[k] != os.environ.get(k)}):
            print(f"export {key}={shlex.quote(env[key])}")
        return
    os.execvpe(argv[0], argv, env)


if __name__ == "__main__":
    main()


CODE_PACKAGES = ("jobs", "prixlm_model", "sql")


def code_archive(settings: Settings) -> Path:
    """Zip the project's packages for ``--py-files``, so Spark executors on other hosts import them.

    Rewritten only when a source file is newer than the archive; written atomically.
    """
    import zipfile

    target = settings.paths.code_archive
    sources = [p for package in CODE_PACKAGES for p in sorted((PROJECT_ROOT / package).rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    if target.exists() and all(p.stat().st_mtime <= target.stat().st_mtime for p in sources):
        return target
    with replacing(target) as scratch, zipfile.ZipFile(scratch, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sources:
            archive.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    return target


def spark_job_kwargs(settings: Settings, job: str, release: str, dag_run_id: str, settings_file: str) -> dict:
    """Arguments of a ``SparkSubmitOperator`` that runs ``jobs/<job>.py`` through ``spark_default``.

    ``release``, ``dag_run_id`` and ``settings_file`` (the DAG run's resolved settings) may be
    Jinja templates; the master comes from the connection.
    """
    return {
        "application": str(PROJECT_ROOT / "jobs" / f"{job}.py"),
        "conn_id": "spark_default",
        "name": f"prixlm-{job}",
        "py_files": str(settings.paths.code_archive),
        "application_args": ["--release", release, "--dag-run-id", dag_run_id],
        "driver_memory": settings.spark.driver_memory,
        "env_vars": {SETTINGS_FILE_VARIABLE: settings_file},  # the job reads exactly the run's settings
        "conf": {
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.log.level": "WARN",  # the task log keeps the job's own lines, not Spark's INFO chatter
            "spark.sql.shuffle.partitions": str(settings.spark.shuffle_partitions),
        },
    }
