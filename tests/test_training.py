"""Shards, DeepSpeed training, resume and export on the tiny base (reliability #20-24, 32).

The training runs are real processes: one alone, two under the ``deepspeed`` launcher, one
killed with SIGKILL in the middle of a checkpoint save. They share one set of shards and one
uninterrupted reference run.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, Settings, load_settings, read_settings, settings_digest
from prixlm_model.data import ShardLoader, read_manifest, shard_folder, write_shards
from jobs.runtime import service_environment
from prixlm_model.tokenization import encode_links, encode_triples, load_tokenizer
from prixlm_model.training import LATEST, MARKER, WEIGHTS, ResumeRefused, Trainer, safe_checkpoint_engine

RELEASE = "2016.10.01"
STEPS = 6
# Small enough for two CPU cores; dropout 0 so that 1 and 2 processes draw no different masks.
OVERRIDES: dict[str, dict[str, Any]] = {
    "model": {"base": "tiny", "tiny_hidden": 16, "tiny_heads": 2},
    "train": {"global_batch": 16, "micro_batch": 8, "checkpoint_every": 2, "keep_checkpoints": 3, "max_steps": STEPS, "dropout": 0.0},
}


def make_settings(data_root: Path, **train: Any) -> Settings:
    overrides = {
        "paths": {"data_root": str(data_root), "cache_dir": str(PROJECT_ROOT / "var" / "cache")},
        "mlflow": {"tracking_uri": str(data_root / "mlflow.db")},
        "model": OVERRIDES["model"],
        "train": {**OVERRIDES["train"], **train},
    }
    return load_settings(overrides)


def environment(settings: Settings) -> dict[str, str]:
    """The subprocess environment that loads exactly ``settings``."""
    env = service_environment(settings, carry=settings.paths.data_root / "settings.json")
    env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    return env


def train_command(run: str, processes: int = 1) -> list[str]:
    args = ["--module", "prixlm_model.training"] if processes > 1 else ["-m", "prixlm_model.training"]
    launcher = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(processes), "--master_port", str(29500 + os.getpid() % 500)]
    return [*(launcher if processes > 1 else [sys.executable]), *args, "--release", RELEASE, "--run", run, "--no-export"]


def run_training(settings: Settings, run: str, processes: int = 1) -> subprocess.CompletedProcess:
    return subprocess.run(train_command(run, processes), env=environment(settings), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=400)


def sample_rows(tokenizer, n: int) -> list[tuple[list[int], int, str, str]]:
    """Triples in en and fr and links between them, as the shards job would encode them."""
    subjects = [f"Commune {i}" for i in range(n)]
    triples = encode_triples(tokenizer, subjects, ["country" if i % 2 else "région" for i in range(n)], [f"Région {i % 13}" for i in range(n)])
    links = encode_links(tokenizer, subjects[: n // 4], ["fr"] * (n // 4), ["en"] * (n // 4), [f"Town {i}" for i in range(n // 4)])
    rows = [(e.prefix_ids + e.object_ids, len(e.prefix_ids), "triple", "fr" if i % 3 else "en") for i, e in enumerate(triples)]
    return rows + [(e.prefix_ids + e.object_ids, len(e.prefix_ids), "link", "fr") for e in links]


def write_sample_shards(settings: Settings, fingerprint: str = "f00d", n: int = 192) -> Path:
    tokenizer = load_tokenizer(ensure_base_model(settings))
    folder = shard_folder(settings, RELEASE, "train")
    write_shards(folder, sample_rows(tokenizer, n), release=RELEASE, split="train", fingerprint=fingerprint, row_group_size=16)
    return folder


def weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / f"step-{step}" / WEIGHTS)


def marker(run_dir: Path, step: int) -> dict[str, Any]:
    return json.loads((run_dir / "checkpoints" / f"step-{step}" / MARKER).read_text())


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=atol, msg=name)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train") / "var"
    write_sample_shards(make_settings(root))
    return root


@pytest.fixture(scope="module")
def reference(data_root: Path) -> Path:
    """An uninterrupted one-process run of STEPS steps."""
    result = run_training(make_settings(data_root), "one")
    assert result.returncode == 0, result.stderr[-3000:]
    return data_root / "runs" / "one"


@pytest.fixture(scope="module")
def reference_dropout(data_root: Path) -> Path:
    """The same run with the paper's dropout 0.1: its masks come from the RNG a resume must restore."""
    result = run_training(make_settings(data_root, dropout=0.1), "one-dropout")
    assert result.returncode == 0, result.stderr[-3000:]
    return data_root / "runs" / "one-dropout"


# The loader


def test_loader_order_is_fixed_by_seed_and_epoch_and_resumable(data_root: Path) -> None:
    manifest = read_manifest(shard_folder(make_settings(data_root), RELEASE, "train"))
    loader = ShardLoader(manifest, 8, seed=3)
    first = [b.input_ids for b in loader.epoch(0)]
    assert all(len(set(b.shape[1] for b in [ids])) == 1 for ids in first)  # one length per batch, no padding
    assert all(torch.equal(a, b) for a, b in zip(first, (b.input_ids for b in ShardLoader(manifest, 8, seed=3).epoch(0))))
    assert [b.shape for b in first] != [b.input_ids.shape for b in loader.epoch(1)] or not all(
        torch.equal(a, b.input_ids) for a, b in zip(first, loader.epoch(1))
    )
    resumed = [b.input_ids for b in loader.epoch(0, start=5)]
    assert all(torch.equal(a, b) for a, b in zip(first[5:], resumed)) and len(resumed) == len(first) - 5
    rows = sorted(tuple(r) for ids in first for r in ids.tolist())
    assert len(rows) == len(set(rows)) > manifest.rows - 8  # each sequence at most once per epoch


def test_loader_ranks_split_what_one_process_accumulates(data_root: Path) -> None:
    manifest = read_manifest(shard_folder(make_settings(data_root), RELEASE, "train"))
    alone = list(ShardLoader(manifest, 8, seed=3, group=2).epoch(0))
    ranks = [list(ShardLoader(manifest, 8, seed=3, rank=r, world_size=2).epoch(0)) for r in range(2)]
    interleaved = [batch for pair in zip(*ranks) for batch in pair]
    assert len(interleaved) == len(alone) and all(torch.equal(a.input_ids, b.input_ids) for a, b in zip(alone, interleaved))


def test_loader_filters_by_kind_and_language(data_root: Path) -> None:
    manifest = read_manifest(shard_folder(make_settings(data_root), RELEASE, "train"))
    loader = ShardLoader(manifest, 4, seed=1, kinds=["triple"], languages=["en"])
    assert loader.rows == 64  # every third of 192 triples
    assert sum(b.input_ids.shape[0] for b in loader.epoch(0)) == 64  # one process, no accumulation: nothing is cut
    with pytest.raises(ValueError, match="no sequences to train on.*languages \\['de'\\]"):
        ShardLoader(manifest, 4, seed=1, kinds=["triple"], languages=["de"])


def test_folder_without_success_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var")
    folder = write_sample_shards(settings, n=16)
    (folder / "_SUCCESS").unlink()
    with pytest.raises(FileNotFoundError, match="_SUCCESS"):
        read_manifest(folder)


# Training


@pytest.mark.slow
def test_two_processes_give_the_loss_of_one(data_root: Path, reference: Path) -> None:
    result = run_training(make_settings(data_root), "two", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    two = data_root / "runs" / "two"
    for step in (2, 4, 6):
        assert marker(two, step)["world_size"] == 2
        assert marker(two, step)["metrics"]["loss"] == pytest.approx(marker(reference, step)["metrics"]["loss"], abs=1e-4)
    assert_same_weights(weights(two, STEPS), weights(reference, STEPS), atol=1e-5)


@pytest.mark.slow
def test_sigkill_during_a_save_then_resume_matches_an_uninterrupted_run(data_root: Path, reference: Path, reference_dropout: Path) -> None:
    """reliability #20/21 with dropout on: the resumed run draws the masks the uninterrupted one drew."""
    settings = make_settings(data_root, dropout=0.1)
    run_dir = data_root / "runs" / "killed"
    process = subprocess.Popen(train_command("killed"), env=environment(settings), cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    saving = run_dir / "checkpoints" / "step-4"
    deadline = time.monotonic() + 300
    while not saving.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)  # mid-training, inside the save of step 4
    process.wait()
    assert not (saving / MARKER).exists(), "the kill came after the save finished"
    assert (run_dir / "checkpoints" / LATEST).read_text() == "step-2"

    result = run_training(settings, "killed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert marker(run_dir, 4)["position"] == marker(reference_dropout, 4)["position"]
    for step in (4, 6):
        assert marker(run_dir, step)["metrics"]["loss"] == marker(reference_dropout, step)["metrics"]["loss"]
        # dropout really acted in training: the same batches without it give another loss
        assert marker(run_dir, step)["metrics"]["loss"] != marker(reference, step)["metrics"]["loss"]
    assert_same_weights(weights(run_dir, STEPS), weights(reference_dropout, STEPS))


@pytest.mark.slow
def test_nan_loss_stops_naming_step_and_batch_and_exports_nothing(data_root: Path) -> None:
    settings = make_settings(data_root, lr=1e30, gradient_clipping=0.0)
    result = subprocess.run(
        [sys.executable, "-m", "prixlm_model.training", "--release", RELEASE, "--run", "diverges"],
        env=environment(settings), cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode != 0
    assert "NonFiniteLoss" in result.stderr and "at step 2, epoch 0, batch" in result.stderr
    assert not (data_root / "models").exists()


@pytest.mark.slow
def test_resume_with_other_shards_config_or_world_size_is_refused(tmp_path: Path, reference: Path) -> None:
    settings = make_settings(tmp_path / "var")
    write_sample_shards(settings, fingerprint="beef")
    saved = settings.paths.data_root / "runs" / "one" / "checkpoints" / f"step-{STEPS}"
    saved.mkdir(parents=True)
    (saved / MARKER).write_text((reference / "checkpoints" / f"step-{STEPS}" / MARKER).read_text())
    with pytest.raises(ResumeRefused, match="fingerprint f00d, the shards now have beef"):
        Trainer(settings, RELEASE, "one")
    write_sample_shards(settings, fingerprint="f00d")
    with pytest.raises(ResumeRefused, match=r"train\.lr \(5e-05 -> 0\.001\)"):
        Trainer(make_settings(tmp_path / "var", lr=1e-3), RELEASE, "one")
    os.environ["WORLD_SIZE"] = "2"
    try:
        with pytest.raises(ResumeRefused, match="written by 1 processes, this run has 2"):
            Trainer(settings, RELEASE, "one")
    finally:
        del os.environ["WORLD_SIZE"]
    Trainer(settings, RELEASE, "one")  # same data, config and world size: accepted


def test_empty_shards_and_a_language_without_triples_are_clear_errors(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "var")
    write_shards(shard_folder(settings, RELEASE, "train"), [], release=RELEASE, split="train", fingerprint="0")
    with pytest.raises(ValueError, match="no sequences to train on"):
        Trainer(settings, RELEASE, "empty")
    write_sample_shards(settings, n=32)
    with pytest.raises(ValueError, match=r"no sequences to train on \(kinds \['triple'\], languages \['ja'\]"):
        Trainer(make_settings(tmp_path / "var", single_language="ja"), RELEASE, "single")
    with pytest.raises(ValueError, match="fewer than one optimizer step"):
        Trainer(make_settings(tmp_path / "var", global_batch=4096), RELEASE, "big")


def test_missing_gpus_are_a_clear_error_naming_the_setting(tmp_path: Path) -> None:
    from prixlm_model.training import accelerator

    settings = make_settings(tmp_path / "var", device="cpu", processes=2)
    assert accelerator(settings.train) == "cpu"
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the error cases need a machine without it")
    assert accelerator(make_settings(tmp_path / "var", device="auto").train) == "cpu"
    with pytest.raises(ValueError, match=r"train\.device = 'cuda' but this machine has no CUDA device \(train\.processes = 2\)"):
        accelerator(make_settings(tmp_path / "var", device="cuda", processes=2).train)


def test_checkpoint_files_are_never_unpickled(tmp_path: Path) -> None:
    """reliability #32: a pickle with a side effect in a checkpoint is refused, its side effect never runs."""
    class SideEffect:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    torch.save({"state": SideEffect()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported global"):
        safe_checkpoint_engine(None).load(str(tmp_path / "evil.pt"))
    assert not (tmp_path / "pwned").exists()


@pytest.mark.slow
def test_exported_folder_loads_offline(data_root: Path, reference: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prixlm_model.export import export_checkpoint

    folder = export_checkpoint(make_settings(data_root), RELEASE, "one")
    assert folder == data_root / "models" / RELEASE / "one"
    model = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    assert type(model).__name__ == "XLMRobertaForCausalLM" and model.config.is_decoder
    assert tokenizer.convert_tokens_to_ids(["[S]", "[EOS]", "[en]"]) == [250002, 250005, 250021]
    trained = weights(reference, STEPS)
    state = model.state_dict()
    assert all(torch.equal(state[name], tensor) for name, tensor in trained.items())
    card = (folder / "README.md").read_text()
    assert "f00d" in card and f"step | {STEPS} of {STEPS}" in card and "| loss |" in card
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pt"))


def test_launch_refuses_an_older_export_when_the_resume_is_refused(data_root: Path, reference: Path) -> None:
    """A run whose resume is refused (a checkpoint of another config under its name) exits 1; its older export must not pass as the new model."""
    from prixlm_model.export import export_checkpoint
    from jobs.pretrain import run as launch
    from prixlm_model.training import run_name

    settings = make_settings(data_root, lr=1e-3)
    run = run_name(settings, RELEASE)
    shutil.copytree(reference, data_root / "runs" / run)  # trained with lr 5e-5
    export_checkpoint(settings, RELEASE, run)
    with pytest.raises(RuntimeError, match=rf"training {run} exited with 1 and did not export; .* an older run's model"):
        launch(settings, RELEASE)


@pytest.mark.slow
def test_a_launch_with_other_training_settings_trains_its_own_model(data_root: Path, reference: Path) -> None:
    """A new DAG run of a release with a changed training Param: a second model beside the first, each named by its run.

    Also: the training child resolves exactly the launcher's settings (one settings file, not the environment).
    """""
    from jobs.pretrain import run as launch
    from prixlm_model.training import run_name

    from prixlm_model.export import export_checkpoint

    first = make_settings(data_root)
    shutil.copytree(reference, data_root / "runs" / run_name(first, RELEASE))  # the earlier run, complete and exported
    older = export_checkpoint(first, RELEASE, run_name(first, RELEASE))
    older_weights = load_file(older / "model.safetensors")
    second = make_settings(data_root, max_steps=STEPS - 2)
    # The training processes get the launcher's settings file, not the environment (which here says otherwise).
    newer = launch(second, RELEASE, dag_run_id="manual__second", env={**os.environ, "PRIXLM_TRAIN__MAX_STEPS": "1", "PRIXLM_TRAIN__LR": "0.5"})
    assert older != newer and older.parent == newer.parent
    marker = json.loads((newer / "training.json").read_text())
    assert marker["step"] == STEPS - 2 and marker["settings_digest"] == settings_digest(second)
    assert read_settings(data_root / "runs" / newer.name / "settings.json") == second
    assert "manual__second" in (newer / "README.md").read_text() and newer.name in (newer / "README.md").read_text()
    assert all(torch.equal(t, load_file(older / "model.safetensors")[k]) for k, t in older_weights.items())  # untouched
