"""The cluster path: a real Spark standalone master and worker on loopback, a job through spark-submit."""

from __future__ import annotations

import bz2
import json
import subprocess
from pathlib import Path

import pytest

from jobs import spark_cluster
from prixlm_model.config import PROJECT_ROOT, load_settings
from jobs.runtime import code_archive, service_environment

pytestmark = pytest.mark.slow
RELEASE = "2016.10.01"


@pytest.fixture
def standalone_cluster(tmp_path: Path):
    """A Spark master and one 2-core worker, started from the pyspark install, stopped at teardown."""
    with spark_cluster.standalone_cluster(tmp_path, workers=1, cores=2, memory="2g") as master:
        yield master


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
