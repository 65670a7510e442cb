"""Prix-LM pretraining with DeepSpeed, from the typed config, resumable to the exact batch.

Why these pieces:

- One code path for a laptop and a cluster: ``deepspeed --num_gpus N --module
  prixlm_model.training --release R`` (or a hostfile) starts the processes; on a CPU
  (``DS_ACCELERATOR=cpu``) they talk over gloo, on GPUs over NCCL. Run alone, the module sets
  up a one-process group itself.
- The optimizer (AdamW, betas (0.9, 0.98)) and the schedule (6% warm-up, linear decay to 0) are
  built here and handed to ``deepspeed.initialize``, which saves them in its checkpoints and
  needs no JIT-compiled fused Adam.
- DeepSpeed saves neither the data position nor the RNG states, so they travel in
  ``client_state`` (reliability #20). A checkpoint counts only once our marker ``prixlm.json`` is in
  it and the ``latest`` pointer, written last and atomically, names it; a save killed half-way
  is never chosen and is deleted on resume (reliability #21). A resume against other shards, another
  config or another world size is refused with what differs (reliability #23, 24).
- Every checkpoint also holds the full fp32 weights as ``model.safetensors``, so the export never
  unpickles anything, and DeepSpeed's own files are read with ``weights_only=True`` (reliability #32).
- A NaN or infinite loss stops the run at that step, naming the step and the batch, before any
  export (reliability #22), or, when configured, skips that batch and counts it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import random
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from prixlm_model.atomic import write_file
from prixlm_model.checkpoints import LATEST, MARKER, WEIGHTS, complete_checkpoints, latest_checkpoint, run_folder
from prixlm_model.config import Settings, check_safe_name, load_settings, settings_digest
from prixlm_model.data import Batch, Manifest, ShardLoader, read_manifest, shard_folder
from prixlm_model.model import load_model, object_loss
from prixlm_model.progress import Progress

log = logging.getLogger(__name__)

# Settings that may change between a run and its resume: they do not change what is trained.
RESUMABLE_CHANGES = frozenset({"checkpoint_every", "keep_checkpoints", "keep_finished_checkpoints", "device"})


class NonFiniteLoss(RuntimeError):
    """The loss was NaN or infinite; the message names the step, the epoch and the batch."""


class ResumeRefused(RuntimeError):
    """A checkpoint exists but does not belong to this data, config or world size."""


@dataclass
class Position:
    """Where the data stream stands: the next global batch to read, and the optimizer step."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    skipped: int = 0


def run_name(settings: Settings, release: str) -> str:
    """``prixlm-<release>[-single-<lang>]-<identity>``: the run that ``settings`` train on the release's shards.

    The identity is a hash of what a checkpoint is bound to (the training config and the shards'
    fingerprint), so a retried task resumes its own run, while a run with other training settings
    or rebuilt shards trains a model of its own instead of being refused by, or overwriting, an
    older run of the same release.
    """
    fingerprint = read_manifest(shard_folder(settings, release, "train")).fingerprint
    identity = json.dumps({"config": training_config(settings, release), "shards": fingerprint}, sort_keys=True)
    single = settings.train.single_language
    name = f"prixlm-{release}" + (f"-single-{single}" if single else "") + "-" + hashlib.sha256(identity.encode()).hexdigest()[:8]
    return check_safe_name(name, "run")


def training_config(settings: Settings, release: str) -> dict[str, Any]:
    """The settings a checkpoint is bound to: a resume must see the same ones."""
    train = settings.train.model_dump(mode="json", exclude=set(RESUMABLE_CHANGES))
    return {"release": release, "train": train, "model": {"base": settings.model.base, "seed": settings.model.seed}}


def deepspeed_config(settings: Settings, accumulation: int) -> dict[str, Any]:
    """The DeepSpeed config for the typed settings (the optimizer and schedule are passed as objects)."""
    train = settings.train
    return {
        "train_batch_size": train.global_batch,
        "train_micro_batch_size_per_gpu": train.micro_batch,
        "gradient_accumulation_steps": accumulation,
        "gradient_clipping": train.gradient_clipping,
        "zero_optimization": {"stage": train.zero_stage},
        "bf16": {"enabled": train.precision == "bf16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }


def build_optimizer(model: torch.nn.Module, settings: Settings) -> torch.optim.Optimizer:
    """AdamW with the paper's betas; biases and LayerNorm weights get no weight decay."""
    train = settings.train
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim < 2 or "LayerNorm" in name else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=train.lr, betas=train.betas, eps=train.adam_eps, foreach=True)


def warmup_linear(total_steps: int, warmup_ratio: float):
    """The lr factor at a step: linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0."""
    warmup = max(1, math.ceil(total_steps * warmup_ratio)) if warmup_ratio else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


class ObjectLossModule(torch.nn.Module):
    """The model with its loss as ``forward``, the form ``deepspeed.initialize`` wraps."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, object_start: torch.Tensor) -> torch.Tensor:
        return object_loss(self.model, input_ids, object_start)


def init_process_group() -> tuple[int, int]:
    """Join the launcher's process group, or make a one-process group when run alone."""
    import deepspeed

    if "RANK" not in os.environ:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    # On a CPU, DeepSpeed's communication backend compiles a shared-memory all-reduce op
    # (`deepspeed_shm_comm`: about a minute on two cores, on every fresh machine) that only its
    # inference kernels call; training reduces its gradients through torch.distributed (gloo)
    # either way. DeepSpeed keeps the probed op table in one module dict and honours edits to it.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed()
    return dist.get_rank(), dist.get_world_size()


def rng_state() -> dict[str, Any]:
    """This process's RNG states as plain values and tensors (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``rng_state`` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def check_resumable(marker: dict[str, Any], fingerprint: str, config: dict[str, Any], world_size: int, tag: Path) -> None:
    """Refuse a checkpoint made from other shards, another config or another world size."""
    if marker["fingerprint"] != fingerprint:
        raise ResumeRefused(
            f"{tag} was trained on shards with fingerprint {marker['fingerprint']}, the shards now have {fingerprint}: "
            "the data changed; start a new run (another --run name) or restore the shards"
        )
    if marker["config"] != config:
        differences = sorted(_differences(marker["config"], config))
        raise ResumeRefused(f"{tag} was trained with another config; differing settings: {', '.join(differences)}")
    if marker["world_size"] != world_size:
        raise ResumeRefused(
            f"{tag} was written by {marker['world_size']} processes, this run has {world_size}: the ZeRO optimizer "
            f"partitions and per-rank RNG states need the same world size; relaunch with {marker['world_size']} processes"
        )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in old.keys() | new.keys() for d in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')} ({old!r} -> {new!r})"]


def safe_checkpoint_engine(config: Any):
    """DeepSpeed's torch checkpoint engine, reading with ``weights_only=True`` (no arbitrary unpickling).

    Only three plain DeepSpeed record classes that its ZeRO optimizer states hold are allowed
    besides tensors and builtins.
    """
    from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    allowed = [LossScaler, ZeroStageEnum, fragment_address]

    class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
        def load(self, path: str, map_location=None):
            with torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location=map_location, weights_only=True)

    return WeightsOnlyCheckpointEngine(config)


def full_fp32_state(engine: Any) -> dict[str, torch.Tensor]:
    """The model's full fp32 weights, gathered from the ZeRO partitions (a collective: every rank calls it)."""
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, parameter in engine.module.model.named_parameters():
        full = safe_get_full_fp32_param(parameter)
        state[name] = (parameter if full is None else full).detach().float().cpu().contiguous()
    return state


class Trainer:
    """One training run: its data, its DeepSpeed engine, its checkpoints and its MLflow run."""

    def __init__(self, settings: Settings, release: str, run: str, pipeline_run: str | None = None) -> None:
        self.settings, self.release, self.run, self.pipeline_run = settings, release, run, pipeline_run
        train = settings.train
        self.folder = run_folder(settings, run)
        self.checkpoints = self.folder / "checkpoints"
        self.rank = int(os.environ.get("RANK", 0))
        self.world_size = int(os.environ.get("WORLD_SIZE", 1))
        self.accumulation = train.accumulation(self.world_size)
        self.manifest: Manifest = read_manifest(shard_folder(settings, release, "train"))
        kinds, languages = (["triple"], [train.single_language]) if train.single_language else (train.kinds, None)
        self.loader = ShardLoader(
            self.manifest,
            train.micro_batch,
            seed=train.seed,
            rank=self.rank,
            world_size=self.world_size,
            group=self.accumulation,
            kinds=kinds,
            languages=languages,
        )
        planned = train.epochs * self.loader.steps_per_epoch
        self.total_steps = min(planned, train.max_steps) if train.max_steps else planned
        self.config = training_config(settings, release)
        self.resume_from = latest_checkpoint(self.checkpoints)
        self.marker: dict[str, Any] = {}
        if self.resume_from is not None:
            self.marker = json.loads((self.resume_from / MARKER).read_text(encoding="utf-8"))
            check_resumable(self.marker, self.manifest.fingerprint, self.config, self.world_size, self.resume_from)
        self.mlflow_run_id: str | None = self.marker.get("mlflow_run_id")

    def setup(self) -> None:
        """Start the process group, build the engine and restore the checkpoint if there is one."""
        import deepspeed

        rank, world = init_process_group()
        if (rank, world) != (self.rank, self.world_size):
            raise RuntimeError(f"process group says rank {rank} of {world}, the environment said {self.rank} of {self.world_size}")
        train = self.settings.train
        model, self.tokenizer = load_model(self.settings)
        model.train()  # from_pretrained returns eval mode: without this, train.dropout never acts
        self.device = torch.device(deepspeed.get_accelerator().device_name(int(os.environ.get("LOCAL_RANK", 0))))
        random.seed(train.seed + rank)
        np.random.seed(train.seed + rank)
        torch.manual_seed(train.seed + rank)
        module = ObjectLossModule(model)
        optimizer = build_optimizer(module, self.settings)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(self.total_steps, train.warmup_ratio))
        self.engine, _, _, self.schedule = deepspeed.initialize(
            model=module, optimizer=optimizer, lr_scheduler=schedule, config=deepspeed_config(self.settings, self.accumulation)
        )
        self.engine.checkpoint_engine = safe_checkpoint_engine(self.engine._config)
        self.position = Position()
        if self.resume_from is not None:
            self.restore(self.resume_from)
        elif rank == 0 and self.checkpoints.exists():
            shutil.rmtree(self.checkpoints)  # only incomplete saves can be here
        dist.barrier()

    def restore(self, tag: Path) -> None:
        """Load a complete checkpoint: weights, optimizer, schedule, data position and RNG."""
        _, client = self.engine.load_checkpoint(str(self.checkpoints), tag.name, load_optimizer_states=True, load_lr_scheduler_states=True)
        if client is None:
            raise RuntimeError(f"{tag}: DeepSpeed could not load this checkpoint")
        self.position = Position(**client["position"])
        set_rng_state(client["rng"][self.rank])
        if self.rank == 0:  # saves killed after this checkpoint are never complete: drop them
            for stale in self.checkpoints.glob("step-*"):
                if int(stale.name.split("-")[1]) > self.position.step:
                    shutil.rmtree(stale)

    def batches(self) -> Iterator[Batch]:
        """This rank's batches from the current position to the end of the last epoch."""
        epoch, start = self.position.epoch, self.position.batch
        while epoch < self.settings.train.epochs:
            yield from self.loader.epoch(epoch, start)
            epoch, start = epoch + 1, 0

    def advance(self, batch: Batch) -> None:
        """Move the position past the global batches of this round (one per rank)."""
        following = batch.index - self.rank + self.world_size
        if following >= self.loader.batches_per_epoch:
            self.position.epoch, self.position.batch = batch.epoch + 1, 0
        else:
            self.position.epoch, self.position.batch = batch.epoch, following

    def fit(self) -> dict[str, float]:
        """Train to ``total_steps``; return the final metrics."""
        train = self.settings.train
        stream = self.batches()
        metrics: dict[str, float] = {}
        progress = Progress(f"training {self.run}", self.total_steps, "steps", log, done=self.position.step) if self.rank == 0 else None
        while self.position.step < self.total_steps:
            step = self.position.step
            lr = self.schedule.get_last_lr()[0]
            started = time.perf_counter()
            totals = torch.zeros(3, dtype=torch.float64)
            done = 0
            while done < self.accumulation:
                batch = next(stream, None)
                if batch is None:
                    return metrics
                loss = self.engine(batch.input_ids.to(self.device), batch.object_start.to(self.device))
                stats = torch.tensor([loss.item(), batch.input_ids.shape[0], batch.tokens], dtype=torch.float64)
                dist.all_reduce(stats)
                self.advance(batch)
                if not math.isfinite(stats[0]):
                    where = f"step {step + 1}, epoch {batch.epoch}, batch {batch.index} (rank {self.rank}, length {batch.input_ids.shape[1]})"
                    self.position.skipped += 1
                    if train.nonfinite == "stop" or self.position.skipped > train.max_skipped:
                        raise NonFiniteLoss(f"loss is {stats[0].item()} at {where}; nothing was exported; lower train.lr or check the batch")
                    print(f"skipping batch with a non-finite loss at {where} ({self.position.skipped} skipped)", flush=True)
                    continue
                self.engine.backward(loss)
                self.engine.step()
                totals += stats
                done += 1
            self.position.step += 1
            seconds = time.perf_counter() - started
            metrics = {
                "loss": totals[0].item() / (self.accumulation * self.world_size),
                "lr": lr,
                "sequences_per_s": totals[1].item() / seconds,
                "tokens_per_s": totals[2].item() / seconds,
                "epoch": float(self.position.epoch),
                "skipped_batches": float(self.position.skipped),
            }
            self.log_metrics(metrics, self.position.step)
            if progress and progress.update(self.position.step):
                log.info("loss %.4f, %.1f sequences/s", metrics["loss"], metrics["sequences_per_s"])
            if self.position.step % train.checkpoint_every == 0 or self.position.step == self.total_steps:
                self.save(metrics)
        return metrics

    def save(self, metrics: dict[str, float]) -> Path:
        """Save a checkpoint; it becomes resumable only once the marker and then the pointer are written."""
        tag = self.checkpoints / f"step-{self.position.step}"
        states = [None] * self.world_size
        dist.all_gather_object(states, rng_state())
        client = {"position": vars(self.position).copy(), "rng": states, "fingerprint": self.manifest.fingerprint, "config": self.config}
        self.engine.save_checkpoint(str(self.checkpoints), tag.name, client_state=client, save_latest=False)
        weights = full_fp32_state(self.engine)
        if self.rank == 0:
            from safetensors.torch import save_file

            save_file(weights, str(tag / WEIGHTS), metadata={"format": "pt"})
            marker = {
                "step": self.position.step,
                "position": vars(self.position).copy(),
                "fingerprint": self.manifest.fingerprint,
                "config": self.config,
                "world_size": self.world_size,
                "release": self.release,
                "run": self.run,
                "metrics": metrics,
                "data": {"rows": self.loader.rows, "manifest_rows": self.manifest.rows, "steps_per_epoch": self.loader.steps_per_epoch, "total_steps": self.total_steps},
                "mlflow_run_id": self.mlflow_run_id,
                "pipeline_run": self.pipeline_run,
                "settings_digest": settings_digest(self.settings),  # the launcher's, when it carried its settings
            }
            write_file(tag / MARKER, json.dumps(marker, indent=2) + "\n", durable=True)
            write_file(self.checkpoints / LATEST, tag.name, durable=True)
            for old in complete_checkpoints(self.checkpoints)[: -self.settings.train.keep_checkpoints]:
                shutil.rmtree(old)
            self.log_tags({"checkpoint.latest": str(tag)})
            self.log_metrics({"checkpoint_step": float(self.position.step)}, self.position.step)
        dist.barrier()
        return tag

    def start_tracking(self) -> None:
        """Open (or, on resume, reopen) the MLflow run on rank 0, with params and the DAG run tag."""
        if self.rank:
            return
        import mlflow

        from prixlm_model import tracking

        mlflow.set_tracking_uri(self.settings.mlflow.resolved_uri())
        mlflow.set_experiment(experiment_id=tracking.experiment_id(self.settings))
        if self.mlflow_run_id is None and self.pipeline_run:
            # Under Airflow the run is a child of the DAG run's pipeline run, found again on retry.
            self.mlflow_run_id = tracking.stage_run(self.settings, self.pipeline_run, f"train/{self.run}")
        active = mlflow.start_run(run_id=self.mlflow_run_id, run_name=None if self.mlflow_run_id else self.run)
        self.mlflow_run_id = active.info.run_id
        if self.resume_from is None:
            params = {f"train.{key}": value for key, value in self.config["train"].items()}
            params.update(
                {
                    "release": self.release,
                    "model.base": self.settings.model.base,
                    "world_size": self.world_size,
                    "gradient_accumulation": self.accumulation,
                    "total_steps": self.total_steps,
                    "shards.fingerprint": self.manifest.fingerprint,
                    "shards.rows": self.loader.rows,
                }
            )
            mlflow.log_params(params)
        tags = {"prixlm.run": self.run, "prixlm.release": self.release, "prixlm.checkpoints": str(self.checkpoints),
                "prixlm.settings_digest": settings_digest(self.settings)}
        if self.pipeline_run:
            tags["prixlm.pipeline_run"] = self.pipeline_run
        mlflow.set_tags(tags)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.rank == 0:
            import mlflow

            mlflow.log_metrics(metrics, step=step)

    def log_tags(self, tags: dict[str, str]) -> None:
        if self.rank == 0:
            import mlflow

            mlflow.set_tags(tags)

    def end_tracking(self, status: str) -> None:
        if self.rank == 0 and self.mlflow_run_id:
            import mlflow

            mlflow.end_run(status=status)


def train(settings: Settings, release: str, run: str | None = None, pipeline_run: str | None = None, export: bool = True) -> Path:
    """Train (or resume) a run; on rank 0 export the final checkpoint. Returns the final checkpoint folder.

    Every process of the launcher calls this. Problems found before training starts (missing or
    empty shards, a language with no triples, a checkpoint of other data, config or world size)
    raise before the process group exists.
    """
    run = run or run_name(settings, release)
    trainer = Trainer(settings, release, run, pipeline_run)
    status = "FAILED"
    try:
        trainer.start_tracking()
        trainer.setup()
        trainer.fit()
        final = latest_checkpoint(trainer.checkpoints)
        if final is None or json.loads((final / MARKER).read_text())["step"] != trainer.position.step:
            raise RuntimeError(f"{trainer.checkpoints}: no complete checkpoint for the final step {trainer.position.step}")
        if export and trainer.rank == 0:
            from prixlm_model.export import export_checkpoint

            folder = export_checkpoint(settings, release, run, final)
            trainer.log_tags({"model.path": str(folder)})
            import mlflow

            from prixlm_model import tracking

            if not settings.train.keep_finished_checkpoints:  # the export is the run's product; 1.8 GB per checkpoint is not
                shutil.rmtree(trainer.checkpoints)
            mlflow.log_artifact(str(folder / "README.md"), artifact_path="model")
            name = "prix-lm" + (f"-single-{settings.train.single_language}" if settings.train.single_language else "")
            version = tracking.register_model(settings, name, folder, trainer.mlflow_run_id, {"release": release, "run": run, "pipeline_run": pipeline_run or ""})
            trainer.log_tags({"model.registered": f"{name}/{version}"})
        status = "FINISHED"
        return final
    finally:
        trainer.end_tracking(status)
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def accelerator(train: Any) -> str:
    """``cuda`` or ``cpu`` for ``train.device`` on this machine; a clear error when the GPUs asked for are not there.

    With a hostfile the GPUs are on other hosts, so only ``train.device`` is checked here.
    """
    import torch

    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if train.device == "auto":
        return "cuda" if available else "cpu"
    if train.device == "cuda" and not available:
        raise ValueError(f"train.device = 'cuda' but this machine has no CUDA device (train.processes = {train.processes}); use 'cpu' or 'auto'")
    if train.device == "cuda" and not train.hostfile and train.processes > available:
        raise ValueError(f"train.processes = {train.processes} GPUs, but this machine has {available}; lower train.processes or give train.hostfile")
    return train.device


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prixlm_model.training", description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True, help="the release whose shards to train on")
    parser.add_argument("--max-steps", type=int, help="override train.max_steps")
    parser.add_argument("--single", metavar="LANG", help="Prix-LM (Single): only this language's triples (train.single_language)")
    parser.add_argument("--run", help="run name (default: prixlm-<release>[-single-<lang>]-<hash of the training settings and shards>); the same name resumes")
    parser.add_argument("--pipeline-run", help="the pipeline run whose MLflow parent run this training's run joins")
    parser.add_argument("--no-export", action="store_true", help="do not export the final checkpoint")
    parser.add_argument("--local_rank", type=int, help=argparse.SUPPRESS)  # passed by the deepspeed launcher; LOCAL_RANK wins
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides: dict[str, Any] = {}
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    if args.single:
        overrides["single_language"] = args.single
    settings = load_settings()
    if overrides:
        settings = load_settings({"train": {**settings.train.model_dump(), **overrides}})
    final = train(settings, check_safe_name(args.release, "release"), args.run, args.pipeline_run, export=not args.no_export)
    if int(os.environ.get("RANK", 0)) == 0:
        print(f"final checkpoint: {final}", flush=True)


if __name__ == "__main__":
    main()
