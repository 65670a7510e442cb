"""ui: the Airflow and MLflow web UIs on loopback, until Ctrl-C.

Airflow runs as ``airflow standalone`` (scheduler, API server, DAG processor, triggerer) on
SQLite; MLflow as ``mlflow server`` on the same tracking store the pipeline writes. Both bind to
127.0.0.1 only. Airflow's generated admin password is printed once by Airflow itself and kept in
a file of mode 0600 under the data root.

Airflow's components (scheduler, API server, the task runners) sign and check the task-execution
API's tokens with one shared secret. Left unset, each process invents its own and every task
dies with "Invalid auth token" before it starts; so a secret is generated once, kept beside the
password file with mode 0600, and read by Airflow through ``AIRFLOW__API_AUTH__JWT_SECRET_CMD``,
so that it never sits in an environment a task could print.
"""

from __future__ import annotations

import argparse
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
from prixlm_model.runtime import service_environment

log = logging.getLogger("ui")


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
    private_file(Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]))  # Airflow fills it on first start
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--airflow-port", type=int, default=8080)
    parser.add_argument("--mlflow-port", type=int, default=5000)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a plain `kill` also stops both services (finally below)
    settings = load_settings()
    env = airflow_environment(settings, args.airflow_port)
    airflow_url = f"http://127.0.0.1:{args.airflow_port}"
    logs = settings.paths.data_root / "reports"
    logs.mkdir(parents=True, exist_ok=True)
    artifacts = settings.paths.data_root / "mlflow" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    services = [
        start(["airflow", "standalone"], env, logs / "airflow-standalone.log"),
        start(["mlflow", "server", "--backend-store-uri", settings.mlflow.resolved_uri(), "--artifacts-destination", str(artifacts),
               "--host", "127.0.0.1", "--port", str(args.mlflow_port), "--workers", "1"], env, logs / "mlflow-server.log"),
    ]
    try:
        wait_until_up(f"{airflow_url}/api/v2/monitor/health", services[0])
        wait_until_up(f"http://127.0.0.1:{args.mlflow_port}/health", services[1])
        passwords = Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
        print(f"Airflow: {airflow_url}  (user admin; password in {passwords})")
        print(f"MLflow:  http://127.0.0.1:{args.mlflow_port}")
        print("Ctrl-C stops both.", flush=True)
        while all(service.poll() is None for service in services):
            time.sleep(2)
    except KeyboardInterrupt:
        pass
    finally:
        for service in services:
            stop(service)


if __name__ == "__main__":
    main()
