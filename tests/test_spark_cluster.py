"""The cluster path: a real Spark standalone master and worker on loopback, a job through spark-submit."""

from __future__ import annotations

import bz2
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import pyspark
from prixlm_model.config import PROJECT_ROOT, load_settings
from jobs.runtime import code_archive, service_environment

pytestmark = pytest.mark.slow
RELEASE = "2016.10.01"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"port {port} not open after {timeout_s}s")


@pytest.fixture
def standalone_cluster(tmp_path: Path):
    """A Spark master and one 2-core worker, started from the pyspark install, stopped at teardown."""
    spark_home = Path(pyspark.__file__).parent
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "512m",
           "SPARK_WORKER_DIR": str(tmp_path / "work"), "PYSPARK_PYTHON": sys.executable}
    port, ui_port, worker_ui = free_port(), free_port(), free_port()
    spark_class = str(spark_home / "bin" / "spark-class")
    logs = [(tmp_path / name).open("w") for name in ("master.log", "worker.log")]
    master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                               "--webui-port", str(ui_port)], env=env, stdout=logs[0], stderr=subprocess.STDOUT, start_new_session=True)
    processes = [master]
    try:
        wait_for_port(port, master)
        worker = subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "2",
                                   "--memory", "2g", "--webui-port", str(worker_ui), f"spark://127.0.0.1:{port}"],
                                  env=env, stdout=logs[1], stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(worker)
        deadline = time.monotonic() + 60
        while "Successfully registered with master" not in (tmp_path / "worker.log").read_text():
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-2000:]
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        for handle in logs:
            handle.close()


def test_parse_runs_on_a_standalone_cluster(tmp_path, sample_mirror, standalone_cluster):
    data_root = tmp_path / "var"
    settings = load_settings({"paths": {"data_root": str(data_root)}})
    for lang in ("fr", "en"):
        source = sample_mirror / f"databus/dbpedia/generic/infobox-properties/{RELEASE}/infobox-properties_lang={lang}.ttl.bz2"
        lines = bz2.decompress(source.read_bytes()).decode().splitlines()
        target = settings.paths.stage_dir("raw", RELEASE) / lang / f"infobox-properties_lang={lang}.ttl"
        target.parent.mkdir(parents=True)
        target.write_text("\n".join(lines[:2001] + lines[-1:]) + "\n")
    env = service_environment(settings, carry=data_root / "settings.json")
    command = ["spark-submit", "--master", standalone_cluster, "--py-files", str(code_archive(settings)),
               "--conf", "spark.executor.memory=1g", "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
               str(PROJECT_ROOT / "jobs/parse.py"), "--release", RELEASE]
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert standalone_cluster in result.stderr or "StandaloneSchedulerBackend" in result.stderr, "the job did not use the cluster"
    stats = json.loads((settings.paths.stage_dir("parsed", RELEASE) / "stats.json").read_text())
    assert stats["lines_read"] == 2 * 2002 and stats["facts"] == 2 * 2000 - stats["duplicates"]
