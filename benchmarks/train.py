"""Training throughput: our DeepSpeed step against a plain Hugging Face baseline, same data and objective.

Why: the object-only LM head, bf16 and length-bucketed batches are what make pretraining
affordable; this shows by how much, on this machine, against the obvious way to write it.

- ours: ``prixlm_model.training``'s pieces (``ObjectLossModule`` under ``deepspeed.initialize``,
  our AdamW and schedule, the configured precision and ZeRO stage), batches from the
  ``ShardLoader`` (one exact length per batch, no padding).
- baseline: ``XLMRobertaForCausalLM`` in fp32 with labels -100 outside the object (its loss
  applies the LM head at every position), ``torch.optim.AdamW``, and the same sequences in
  random order padded to the longest of each batch. It gets the same 4D mask, so both minimise
  exactly the same loss.

Both take an optimizer step every ``--accumulation`` micro-batches of ``train.micro_batch``
sequences. Each side runs in its own process, so its peak memory (max RSS) is its own.

``python -m benchmarks.train [--quick] [--release R]`` prints the ratio and writes
``<data_root>/reports/benchmarks/train.json``. Without shards for the release, it builds sample
shards from the DBP15K triples under the cache folder.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prixlm_model.dbp15k import local_name, read_chapter
from prixlm_model.config import PROJECT_ROOT, Settings, load_settings

SAMPLE_RELEASE = "benchmark-sample"
MAX_TOKENS = 30  # the paper drops sequences of 30 tokens or more


def sample_shards(settings: Settings, limit: int) -> Path:
    """Shards of DBP15K fr/en triples (names from the IRIs), built once under the cache folder."""
    from prixlm_model.base_model import ensure_base_model
    from prixlm_model.data import SUCCESS, write_shards
    from prixlm_model.tokenization import encode_triples, load_tokenizer

    folder = settings.paths.cache_dir / "benchmarks" / f"shards-{limit}" / "train"
    if (folder / SUCCESS).is_file():
        return folder
    source = settings.sample.dbp15k_dir
    tokenizer = load_tokenizer(ensure_base_model(settings))
    rows = []
    for side in (1, 2):
        chapter = read_chapter(source, side)
        lang, entities, relations, triples = chapter.lang, chapter.entities, chapter.relations, chapter.triples[: limit // 2]
        encoded = encode_triples(
            tokenizer,
            [local_name(entities[s]) for s, _, _ in triples],
            [local_name(relations[p]) for _, p, _ in triples],
            [local_name(entities[o]) for _, _, o in triples],
        )
        rows += [(e.prefix_ids + e.object_ids, len(e.prefix_ids), "triple", lang) for e in encoded if e.n_tokens < MAX_TOKENS]
    write_shards(folder, rows, release=SAMPLE_RELEASE, split="train", fingerprint=f"dbp15k-{limit}", row_group_size=4096)
    return folder


def measure(variant: str, folder: Path, settings: Settings, steps: int, accumulation: int) -> dict[str, Any]:
    """Time ``steps`` optimizer steps (after one warm-up step) of one variant, in this process."""
    import torch

    from prixlm_model.data import ShardLoader, read_manifest

    micro = settings.train.micro_batch
    loader = ShardLoader(read_manifest(folder), micro, seed=settings.train.seed)
    batches = [b for _, b in zip(range((steps + 1) * accumulation), loader.epoch(0))]
    if len(batches) < (steps + 1) * accumulation:
        raise ValueError(f"{folder} holds too few batches for {steps + 1} steps of {accumulation} x {micro}")
    step = run_ours(batches, settings, accumulation) if variant == "ours" else run_baseline(batches, settings, accumulation)
    next(step)  # warm-up step
    started = time.perf_counter()
    for _ in range(steps):
        next(step)
    seconds = time.perf_counter() - started
    measured = batches[accumulation:]
    return {
        "variant": variant,
        "sequences_per_s": sum(b.input_ids.shape[0] for b in measured) / seconds,
        "tokens_per_s": sum(b.tokens for b in measured) / seconds,
        "seconds_per_step": seconds / steps,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
    }


def run_ours(batches, settings: Settings, accumulation: int):
    """Our training step: DeepSpeed engine over the object-only loss, bucketed batches."""
    import deepspeed
    import torch

    from prixlm_model.model import load_model
    from prixlm_model.training import ObjectLossModule, build_optimizer, deepspeed_config, init_process_group, warmup_linear

    init_process_group()
    model, _ = load_model(settings)
    model.train()  # dropout on, as in the baseline and in real training
    module = ObjectLossModule(model)
    optimizer = build_optimizer(module, settings)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear(1000, settings.train.warmup_ratio))
    config = deepspeed_config(settings, accumulation)
    config["train_batch_size"] = settings.train.micro_batch * accumulation
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, lr_scheduler=schedule, config=config)
    for start in range(0, len(batches), accumulation):
        for batch in batches[start : start + accumulation]:
            loss = engine(batch.input_ids.to(engine.device), batch.object_start.to(engine.device))
            engine.backward(loss)
            engine.step()
        yield loss.item()


def run_baseline(batches, settings: Settings, accumulation: int):
    """The plain way: HF causal-LM loss over padded, unbucketed batches, fp32, torch AdamW."""
    import random

    import torch

    from prixlm_model.masking import prefix_object_mask
    from prixlm_model.model import load_model

    device = torch.device("cuda" if torch.cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu" else "cpu")
    model, _ = load_model(settings)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.train.lr, betas=settings.train.betas, eps=settings.train.adam_eps)
    rows = [(ids, int(start)) for b in batches for ids, start in zip(b.input_ids, b.object_start)]
    random.Random(settings.train.seed).shuffle(rows)
    micro = settings.train.micro_batch
    for first in range(0, len(rows), micro * accumulation):
        for offset in range(first, first + micro * accumulation, micro):
            chunk = rows[offset : offset + micro]
            lengths = torch.tensor([len(ids) for ids, _ in chunk])
            starts = torch.tensor([start for _, start in chunk])
            input_ids = torch.ones(len(chunk), int(lengths.max()), dtype=torch.long)
            for i, (ids, _) in enumerate(chunk):
                input_ids[i, : len(ids)] = ids
            positions = torch.arange(input_ids.shape[1])
            labels = torch.where((positions >= starts[:, None]) & (positions < lengths[:, None]), input_ids, -100)
            mask = prefix_object_mask(starts, lengths, input_ids.shape[1])
            loss = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), labels=labels.to(device)).loss / accumulation
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        yield loss.item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 measured steps of 2 micro-batches (a couple of minutes)")
    parser.add_argument("--release", help="use this release's train shards (default: sample shards from DBP15K)")
    parser.add_argument("--steps", type=int, help="measured optimizer steps (default 3, quick 2)")
    parser.add_argument("--accumulation", type=int, help="micro-batches per optimizer step (default 4, quick 2)")
    parser.add_argument("--variant", choices=["ours", "baseline"], help=argparse.SUPPRESS)  # one side, in a child process
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both variants train (cuda: one GPU; the goal there is >= 5x and >= 20,000 seq/s)")
    args = parser.parse_args(argv)
    settings = load_settings()
    steps = args.steps or (2 if args.quick else 3)
    accumulation = args.accumulation or (2 if args.quick else 4)
    if args.variant:
        print(json.dumps(measure(args.variant, Path(args.shards), settings, steps, accumulation)))
        return

    from prixlm_model.data import shard_folder
    from jobs.runtime import service_environment

    folder = shard_folder(settings, args.release, "train") if args.release else sample_shards(settings, 8000)
    env = service_environment(settings, carry=settings.paths.scratch / "benchmarks" / "train-settings.json")
    if args.device == "cuda" and not _has_gpu():
        raise SystemExit("--device cuda: this machine has no CUDA device")
    if args.device == "cpu":
        env["DS_ACCELERATOR"] = "cpu"
    else:
        env.pop("DS_ACCELERATOR", None)
    results = {}
    for variant in ("baseline", "ours"):
        command = [sys.executable, "-m", "benchmarks.train", "--variant", variant, "--shards", str(folder), "--steps", str(steps), "--accumulation", str(accumulation)]
        done = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, check=False)
        if done.returncode:
            raise RuntimeError(f"{variant} failed:\n{done.stderr[-3000:]}")
        results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = results["ours"]["sequences_per_s"] / results["baseline"]["sequences_per_s"]
    report = {
        "benchmark": "train",
        "base": settings.model.base,
        "shards": str(folder),
        "micro_batch": settings.train.micro_batch,
        "accumulation": accumulation,
        "measured_steps": steps,
        "precision": settings.train.precision,
        "zero_stage": settings.train.zero_stage,
        "device": args.device,
        "dropout": settings.train.dropout,
        "results": results,
        "ratio_sequences_per_s": ratio,
        "target_ratio": 5.0,
    }
    out = settings.paths.benchmark_report("train")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for variant, result in results.items():
        print(f"{variant:9s} {result['sequences_per_s']:8.1f} seq/s {result['tokens_per_s']:9.0f} tok/s  peak RSS {result['peak_rss_mb']:7.0f} MB")
    print(f"ratio (ours / baseline, sequences/s): {ratio:.2f}x (target 5x); written to {out}")


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
