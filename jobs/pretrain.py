"""pretrain: train Prix-LM (All, or Single for one language) through the ``deepspeed`` launcher and export it.

The DAG's ``pretrain`` and ``pretrain_single`` tasks call ``run``; ``python -m jobs.pretrain``
does the same from a shell. The launcher starts ``train.processes`` processes of
``prixlm_model.training`` (CPU with gloo, one per GPU with NCCL, or the hosts of
``train.hostfile``); rank 0 exports the final checkpoint to ``models/<release>/<run>/``.

The launcher writes its resolved settings into the run's folder and hands every training
process that one file, so the processes train with exactly the settings this task resolved.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

from jobs.runtime import service_environment
from prixlm_model.config import PROJECT_ROOT, Settings, check_safe_name, load_settings
from prixlm_model.data import read_manifest, shard_folder
from prixlm_model.training import accelerator, run_name, training_config

log = logging.getLogger(__name__)


def finished_export(folder: Path, settings: Settings, release: str) -> bool:
    """Whether ``folder`` holds the final export of a run with exactly these settings and shards (a re-run need not train)."""
    marker_path = folder / "training.json"
    if not (folder / "config.json").is_file() or not marker_path.is_file():
        return False
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    fingerprint = read_manifest(shard_folder(settings, release, "train")).fingerprint
    return (marker["step"] == marker["data"]["total_steps"] and marker["config"] == training_config(settings, release)
            and marker["fingerprint"] == fingerprint)


def _export_stamp(folder: Path) -> int | None:
    """When the export in ``folder`` was written (its ``config.json``), or None when there is none."""
    config = folder / "config.json"
    return config.stat().st_mtime_ns if config.is_file() else None


def run(settings: Settings, release: str, dag_run_id: str | None = None, env: dict[str, str] | None = None) -> Path:
    """Train through the ``deepspeed`` launcher (``train.processes`` here, or ``train.hostfile``); return the model folder.

    The exit code alone is not trusted (the launcher has been seen to die at exit after a good
    run): success means the exported folder of the final checkpoint exists, and after a non-zero
    exit that this launch wrote it (an older export, e.g. of a run whose resume was refused for
    another config, is not this run's model).
    """
    train_cfg, name = settings.train, run_name(settings, release)
    folder = settings.paths.model_dir(release, name)
    if finished_export(folder, settings, release):
        log.info("%s is this run's finished model (same settings and shards): nothing to train", folder)
        return folder
    env = service_environment(settings, env, carry=settings.paths.run_dir(name) / "settings.json")
    if accelerator(train_cfg) == "cpu":
        env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // train_cfg.processes))})
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    placement = ["--hostfile", train_cfg.hostfile] if train_cfg.hostfile else ["--num_gpus", str(train_cfg.processes)]
    command = [str(Path(sys.executable).parent / "deepspeed"), *placement, "--master_port", str(port),
               "--module", "prixlm_model.training", "--release", release, "--run", name]
    if dag_run_id:
        command += ["--pipeline-run", dag_run_id]
    exported_before = _export_stamp(folder)
    log.info("launching: %s", " ".join(command))
    result = subprocess.run(command, env=env, cwd=PROJECT_ROOT)
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"training {name} exited with {result.returncode} and exported no model to {folder}")
    if result.returncode and _export_stamp(folder) == exported_before:
        raise RuntimeError(f"training {name} exited with {result.returncode} and did not export; {folder} is an older run's model")
    if result.returncode:
        log.warning("the launcher exited with %d after exporting %s; the model is complete", result.returncode, folder)
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobs.pretrain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True, help="the release whose shards to train on")
    parser.add_argument("--single", metavar="LANG", help="Prix-LM (Single): only this language's triples (train.single_language)")
    parser.add_argument("--dag-run-id", help="the DAG run whose MLflow parent run the training joins")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings({"train": {"single_language": args.single}} if args.single else None)
    print(run(settings, check_safe_name(args.release, "release"), args.dag_run_id))


if __name__ == "__main__":
    main()
