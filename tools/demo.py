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

from tools.mirror_server import MirrorServer
from tools.sample_mirror import build
from prixlm_model.config import PROJECT_ROOT, load_settings
from jobs.runtime import service_environment

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
    reports = settings.paths.stage_root("reports")
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
    """Say what the run produced, stage by stage, from the stages' own statistics files."""
    raw = settings.paths.stage_root("raw")
    manifests = sorted(raw.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not manifests:
        sys.exit("the DAG ran but no manifest was written")
    manifest = json.loads(manifests[-1].read_text())
    release = manifest["release"]
    stage = lambda name: settings.paths.stage_dir(name, release)  # noqa: E731
    print(f"\nprix_lm_full finished in {seconds:.0f}s for release {release}.")
    print(f"acquire:   {len(manifest['files'])} files verified by sha256 into {manifests[-1].parent}")
    parsed = json.loads((stage("parsed") / "stats.json").read_text())
    print(f"parse:     {parsed['lines_read']:,} lines → {parsed['facts']:,} facts, {parsed['links']:,} links, "
          f"{parsed['rejects']:,} rejects (quarantined in {stage('parsed') / 'rejects'})")
    sequences = json.loads((stage("sequences") / "stats.json").read_text())
    print(f"sequences: {sequences['dropped_by_length']:,} of {sequences['dropped_by_length'] + sum(t['kept'] for t in sequences['totals'].values()):,} "
          f"dropped at ≥ {sequences['max_tokens']} tokens ({100 * sequences['dropped_share']:.2f}%)")
    print(f"split:     {stage('split') / 'stats.md'}\n")
    print((stage("split") / "stats.md").read_text())
    shards = json.loads((stage("shards") / "stats.json").read_text())
    rows = ", ".join(f"{split} {info['rows']:,} rows" for split, info in shards["splits"].items())
    print(f"shards:    {rows} in {stage('shards')}")
    for model in sorted(stage("models").glob("*/config.json")):
        print(f"model:     {model.parent} (model card: README.md)")
    report = stage("reports") / "link_prediction.md"
    if report.exists():
        print(f"\nlink prediction ({report}):\n")
        print(report.read_text())
    print(f"MLflow: {settings.mlflow.resolved_uri()}  (make ui to browse)")
    from jobs.retention import disk_usage

    usage = disk_usage(settings)
    print(f"disk under {settings.paths.data_root}: {sum(usage.values()) / 2**30:.2f} GiB ("
          + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sorted(usage.items(), key=lambda item: -item[1]) if size >= 2**20) + ")")


if __name__ == "__main__":
    main()
