"""A Spark standalone master and workers on loopback, started from the pyspark install (tests, benchmarks).

Why: the cluster path (``spark_default`` -> ``spark://host:7077``) must be exercised for real, with
executors in their own JVMs, on a laptop. The pip package has no ``start-master.sh``, so the
daemons are started with ``spark-class``; each runs in its own process group, stopped with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


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


@contextmanager
def standalone_cluster(work_dir: Path, workers: int = 1, cores: int = 2, memory: str = "2g", timeout_s: float = 90) -> Iterator[str]:
    """Yield the master URL of a master and ``workers`` workers (``cores`` and ``memory`` each); stop them all after.

    Logs go to ``work_dir/master.log`` and ``worker-<i>.log``.
    """
    import pyspark

    spark_home = Path(pyspark.__file__).parent
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": str(spark_home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_DAEMON_MEMORY": "512m",
           "SPARK_WORKER_DIR": str(work_dir / "work"), "PYSPARK_PYTHON": sys.executable}
    spark_class = str(spark_home / "bin" / "spark-class")
    port = free_port()
    processes, logs = [], []

    def start(name: str, args: list[str]) -> subprocess.Popen:
        logs.append((work_dir / f"{name}.log").open("w"))
        process = subprocess.Popen([spark_class, *args], env=env, stdout=logs[-1], stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        return process

    try:
        master = start("master", ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                                  "--webui-port", str(free_port())])
        wait_for_port(port, master, timeout_s)
        for index in range(workers):
            start(f"worker-{index}", ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", str(cores),
                                      "--memory", memory, "--webui-port", str(free_port()), f"spark://127.0.0.1:{port}"])
        deadline = time.monotonic() + timeout_s
        for index in range(workers):
            log = work_dir / f"worker-{index}.log"
            while "Successfully registered with master" not in log.read_text():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"worker {index} did not register: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                process.wait(timeout=30)
        for handle in logs:
            handle.close()
