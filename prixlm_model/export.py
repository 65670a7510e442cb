"""Export a training checkpoint as a Hugging Face model folder with its tokenizer and model card.

Why: evaluation, decoding and users load Prix-LM with ``AutoModelForCausalLM`` and
``AutoTokenizer``, offline, without DeepSpeed. The weights come from the checkpoint's
``model.safetensors`` (full fp32 weights gathered at save time), never from DeepSpeed's pickled
files (reliability #32). The folder is written beside its target and renamed into place, so
``<data_root>/models/<release>/<name>/`` is complete whenever it exists.

The final checkpoint exports to ``<run>/``; a chosen one (the paper evaluates LM-LP at 20k
steps, BLI and XEL at 150k) to ``<run>-step<N>/``.

Run ``python -m prixlm_model.export --release R --run RUN [--step N]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from prixlm_model.atomic import publish_folder
from prixlm_model.checkpoints import MARKER, WEIGHTS, latest_checkpoint, run_folder
from prixlm_model.config import Settings, check_safe_name, load_settings


def export_checkpoint(settings: Settings, release: str, run: str, checkpoint: Path | None = None) -> Path:
    """Export ``checkpoint`` (default: the run's latest complete one) and return the model folder."""
    from safetensors.torch import load_file

    from prixlm_model.model import load_model

    checkpoints = run_folder(settings, run) / "checkpoints"
    checkpoint = checkpoint or latest_checkpoint(checkpoints)
    if checkpoint is None or not (checkpoint / MARKER).is_file() or not (checkpoint / WEIGHTS).is_file():
        raise FileNotFoundError(f"{checkpoint or checkpoints}: no complete checkpoint to export")
    marker = json.loads((checkpoint / MARKER).read_text(encoding="utf-8"))
    if marker["release"] != release:
        raise ValueError(f"{checkpoint} was trained on release {marker['release']}, not {release}")
    final = marker["step"] == marker["data"]["total_steps"]
    name = check_safe_name(run if final else f"{run}-step{marker['step']}", "model name")
    target = settings.paths.model_dir(release, name)

    model, tokenizer = load_model(settings)
    weights = load_file(checkpoint / WEIGHTS)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    loaded = {tensor.data_ptr() for name, tensor in model.state_dict().items() if name in weights}
    untied = [key for key in missing if model.state_dict()[key].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(f"{checkpoint / WEIGHTS} does not fit the model: missing {untied}, unexpected {unexpected}")
    model.config.architectures = [type(model).__name__]

    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=target.parent))
    try:
        model.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        (scratch / "README.md").write_text(model_card(marker, checkpoint), encoding="utf-8")
        (scratch / "training.json").write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        for path in [scratch, *scratch.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        publish_folder(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def model_card(marker: dict[str, Any], checkpoint: Path) -> str:
    """The README: what the model is, what it was trained on and how far, and its last metrics."""
    train = marker["config"]["train"]
    data = marker["data"]
    variant = f"Prix-LM (Single), {train['single_language']} triples only" if train.get("single_language") else "Prix-LM (All)"
    metrics = "\n".join(f"| {key} | {value:.6g} |" for key, value in sorted(marker["metrics"].items()))
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [prix-lm, knowledge-base, xlm-roberta]
---
# {marker['run']} ({variant})

A multilingual knowledge-base language model (Prix-LM, ACL 2022): XLM-R continued as a causal LM on
DBpedia triples and cross-lingual links, `<s> [S] X_s </s> </s> [P] X_p </s> </s> [O] X_o [EOS] </s>`,
with a bidirectional prefix and a causal object. Load it with `AutoModelForCausalLM` and
`AutoTokenizer`; pass XLM-R positions (starting at 2) when generating.

## Training data
| | |
|---|---|
| release | {marker['release']} |
| shard fingerprint | `{marker['fingerprint']}` |
| sequences trained on | {data['rows']} of {data['manifest_rows']} in the shards |
| kinds | {', '.join(train['kinds']) if not train.get('single_language') else 'triple'} |
| steps per epoch | {data['steps_per_epoch']} |

## Training
| | |
|---|---|
| run | `{marker['run']}` (its suffix hashes the training settings and the shards' fingerprint) |
| DAG run | {marker.get('pipeline_run') or 'none (trained outside Airflow)'} |
| base model | {marker['config']['model']['base']} |
| step | {marker['step']} of {data['total_steps']} |
| epochs planned | {train['epochs']} |
| global batch | {train['global_batch']} ({train['micro_batch']} per process, {marker['world_size']} processes) |
| optimizer | AdamW, lr {train['lr']}, betas {tuple(train['betas'])}, eps {train['adam_eps']}, weight decay {train['weight_decay']} |
| schedule | {train['warmup_ratio']:.0%} linear warm-up, linear decay to 0 |
| precision, ZeRO | {train['precision']}, stage {train['zero_stage']} |
| dropout | {train['dropout']} |
| checkpoint | `{checkpoint}` |

## Metrics at this step
| metric | value |
|---|---|
{metrics}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m prixlm_model.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--step", type=int, help="export this step's checkpoint instead of the latest")
    args = parser.parse_args(argv)
    settings = load_settings()
    checkpoint = None
    if args.step is not None:
        checkpoint = run_folder(settings, args.run) / "checkpoints" / f"step-{args.step}"
    print(export_checkpoint(settings, check_safe_name(args.release, "release"), args.run, checkpoint))


if __name__ == "__main__":
    main()
