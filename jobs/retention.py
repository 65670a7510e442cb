"""retention: keep the newest ``paths.keep_releases`` releases of every stage's output, delete the rest (reliability #34).

Why here: a refresh re-runs the pipeline for every new DBpedia release, and each leaves gigabytes
(dumps, Parquet, models). Releases are ordered by date as the source names them (the Databus's
``2016.10.01`` and the classic tree's ``2016-10`` alike), never by string order. A release folder is
first renamed out of the way (an atomic step) and only then deleted, so a reader never sees a half
deleted release: it sees the whole folder or none. The release a run is working on is never
pruned. ``0`` keeps everything (the default).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import uuid
from pathlib import Path

from jobs.databus import version_key
from prixlm_model.config import PathsSettings, Settings, load_settings

log = logging.getLogger(__name__)

RELEASE_STAGES = PathsSettings.STAGES


def prune(settings: Settings, current: str) -> list[Path]:
    """Delete all but the newest ``paths.keep_releases`` releases of each stage (``current`` always kept); return what went."""
    keep = settings.paths.keep_releases
    if not keep:
        return []
    removed = []
    for stage in RELEASE_STAGES:
        folder = settings.paths.data_root / stage
        if not folder.is_dir():
            continue
        releases = [path for path in folder.iterdir() if path.is_dir() and version_key(path.name) is not None]  # other names are not releases
        ordered = sorted(releases, key=lambda path: version_key(path.name), reverse=True)
        for path in ordered[keep:]:
            if path.name == current:
                continue
            doomed = folder / f".deleting-{path.name}-{uuid.uuid4().hex[:8]}"
            path.rename(doomed)  # atomic: from here on no reader finds the release
            shutil.rmtree(doomed)
            removed.append(path)
            log.info("retention: removed %s (paths.keep_releases = %d)", path, keep)
    return removed


def run(settings: Settings, release: str, dag_run_id: str | None = None) -> list[Path]:
    """The DAG's last task: prune older releases, then close the DAG run's MLflow parent run as finished."""
    removed = prune(settings, release)
    if dag_run_id:
        from prixlm_model.tracking import end_pipeline_run

        end_pipeline_run(settings, dag_run_id)
    return removed


def disk_usage(settings: Settings) -> dict[str, int]:
    """Bytes under each top-level folder of the data root."""
    usage = {}
    for folder in sorted(p for p in settings.paths.data_root.iterdir() if p.is_dir()):
        usage[folder.name] = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file() and not path.is_symlink())
    return usage


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--current", required=True, help="the release being worked on: never pruned")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in prune(load_settings(), args.current):
        print(f"removed {path}")


if __name__ == "__main__":
    main()
