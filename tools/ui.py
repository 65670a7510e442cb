"""ui: the Airflow and MLflow web UIs on loopback, until Ctrl-C.

Airflow runs as ``airflow standalone`` (scheduler, API server, DAG processor, triggerer) on
SQLite; MLflow as ``mlflow server`` on the same tracking store the pipeline writes. Both bind to
127.0.0.1 only. The admin password is generated here, before Airflow starts, into a file of mode
0600 under the data root: left to Airflow, its API server prints a password it generates into
its log (reliability #31), so the password is never printed, only the file's path.

Airflow's components (scheduler, API server, the task runners) sign and check the task-execution
API's tokens with one shared secret. Left unset, each process invents its own and every task
dies with "Invalid auth token" before it starts; so a secret is generated once, kept beside the
password file with mode 0600, and read by Airflow through ``AIRFLOW__API_AUTH__JWT_SECRET_CMD``,
so that it never sits in an environment a task could print.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from prixlm_model.config import PROJECT_ROOT, load_settings
from jobs.runtime import service_environment

log = logging.getLogger("ui")
ADMIN = "admin"  # airflow.cfg: simple_auth_manager_users = admin:admin


def private_file(path: Path, content: str = "") -> Path:
    """Create ``path`` with mode 0600 unless it exists (then only tighten its mode); never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        path.chmod(0o600)
        return path
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
    return path


def airflow_secrets(env: dict[str, str]) -> dict[str, str]:
    """Create the password file and the JWT signing secret (mode 0600) before any service starts; the variables that point Airflow at them."""
    home = Path(env["AIRFLOW_HOME"])
    passwords = private_file(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]), json.dumps({ADMIN: secrets.token_urlsafe(16)}))
    if ADMIN not in json.loads(passwords.read_text() or "{}"):  # an older, empty file: Airflow would generate and print one
        passwords.write_text(json.dumps({ADMIN: secrets.token_urlsafe(16)}))
    jwt = private_file(home / "jwt_secret", secrets.token_urlsafe(48))
    return {"AIRFLOW__API_AUTH__JWT_SECRET_CMD": f"cat {shlex.quote(str(jwt))}"}


def airflow_environment(settings, port: int) -> dict[str, str]:
    """The environment of ``airflow standalone`` and ``mlflow server``: the project's, on loopback, with the shared secrets."""
    env = service_environment(settings)
    url = f"http://127.0.0.1:{port}"
    env.update({"AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": url,
                "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    env.update(airflow_secrets(env))
    return env


def start(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a service in its own process group, so that stopping it stops all its children."""
    sink = log_path.open("a")
    return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)


def wait_until_up(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the service exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


class Services:
    """``airflow standalone`` and ``mlflow server`` on loopback, started together and stopped together.

    Tasks log to MLflow through the server (``mlflow.tracking_uri`` is its URL), so a reviewer and
    the pipeline see one store, and a stopped server is noticed by the tasks (reliability #27).
    ``make ui`` uses this; so do the tests that run the pipeline under the real scheduler.
    """

    def __init__(self, settings, airflow_port: int = 8080, mlflow_port: int = 5000, extra_env: dict[str, str] | None = None) -> None:
        self.settings = settings
        self.airflow_url = f"http://127.0.0.1:{airflow_port}"
        self.mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        self.mlflow_port = mlflow_port
        self.env = airflow_environment(settings, airflow_port)
        self.env.update({"PRIXLM_MLFLOW__TRACKING_URI": self.mlflow_url, "MLFLOW_TRACKING_URI": self.mlflow_url, **(extra_env or {})})
        self.logs = settings.paths.stage_root("reports")
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def password_file(self) -> Path:
        return Path(self.env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])

    def start_mlflow(self) -> None:
        artifacts = self.settings.paths.mlflow_root / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        command = ["mlflow", "server", "--backend-store-uri", self.settings.mlflow.resolved_uri(), "--artifacts-destination", str(artifacts),
                   "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1"]
        self.processes["mlflow"] = start(command, self.env, self.logs / "mlflow-server.log")
        wait_until_up(f"{self.mlflow_url}/health", self.processes["mlflow"])

    def stop_mlflow(self) -> None:
        stop(self.processes.pop("mlflow"))

    def __enter__(self) -> "Services":
        self.logs.mkdir(parents=True, exist_ok=True)
        try:
            self.processes["airflow"] = start(["airflow", "standalone"], self.env, self.logs / "airflow-standalone.log")
            self.start_mlflow()
            wait_until_up(f"{self.airflow_url}/api/v2/monitor/health", self.processes["airflow"], timeout_s=240)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *_) -> None:
        for process in self.processes.values():
            stop(process)
        self.processes.clear()

    def running(self) -> bool:
        return all(process.poll() is None for process in self.processes.values())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain `kill` also stops both services (the with below)
    try:
        with Services(load_settings(), args.airflow_port, args.mlflow_port) as services:
            print(f"Airflow: {services.airflow_url}  (user admin; password in {services.password_file})")
            print(f"MLflow:  {services.mlflow_url}")
            print("Ctrl-C stops both.", flush=True)
            while services.running():
                time.sleep(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
