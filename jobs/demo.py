"""demo: run ``prix_lm_full`` end to end on the bundled real-data sample, offline.

Builds the DBpedia sample mirror (once), serves it over HTTP on loopback as a stand-in for the
Databus, runs the DAG with ``airflow dags test`` (SQLite-backed Airflow, local Spark, CPU) and
says what it did and where the outputs are.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

from jobs.mirror_server import MirrorServer
from jobs.sample_mirror import build
from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.runtime import service_environment

log = logging.getLogger("demo")


def airflow(env: dict[str, str], *args: str, log_path=None) -> None:
    """Run an Airflow CLI command; on failure show the end of its output and stop."""
    with open(log_path or "/dev/null", "a") as sink:
        result = subprocess.run(["airflow", *args], env=env, cwd=PROJECT_ROOT, stdout=sink if log_path else subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    if result.returncode:
        tail = open(log_path).read()[-4000:] if log_path else result.stdout[-4000:]
        sys.exit(f"airflow {' '.join(args)} failed (exit {result.returncode}):\n{tail}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    mirror = settings.sample.mirror_dir
    if not (mirror / "databus").is_dir():
        log.info("building the sample DBpedia mirror from %s", settings.sample.dbp15k_dir)
        build(settings.sample)
    reports = settings.paths.data_root / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    log_path = reports / f"demo-{time.strftime('%Y%m%d-%H%M%S')}.log"
    with MirrorServer(mirror) as server:
        mirror_url = f"{server.url}/databus/dbpedia/generic"
        log.info("serving the sample mirror at %s", mirror_url)
        env = service_environment(settings)
        env["PRIXLM_ACQUIRE__MIRROR_URL"] = mirror_url
        airflow(env, "db", "migrate", log_path=log_path)
        airflow(env, "dags", "reserialize", log_path=log_path)
        log.info("running prix_lm_full under `airflow dags test` (log: %s)", log_path)
        started = time.monotonic()
        airflow(env, "dags", "test", "prix_lm_full", "-c", json.dumps({"source": "mirror", "mirror_url": mirror_url}), log_path=log_path)
    summarise(settings, time.monotonic() - started)


def summarise(settings, seconds: float) -> None:
    """Say what the run produced, stage by stage, from the stages' own stats files."""
    raw = settings.paths.data_root / "raw"
    manifests = sorted(raw.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        sys.exit("the DAG ran but no manifest was written")
    manifest = json.loads(manifests[-1].read_text())
    print(f"\nprix_lm_full finished in {seconds:.0f}s for release {manifest['release']}.")
    print(f"acquire: {len(manifest['files'])} files verified by sha256 into {manifests[-1].parent}")
    for entry in manifest["files"]:
        print(f"  {entry['path']:60} {entry['bytes']:>10,} B  sha256 {entry['sha256'][:16]}…")


if __name__ == "__main__":
    main()
