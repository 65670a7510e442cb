"""The Prix-LM tokenizer: token ids, sequence layouts and the embedding resize."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # before transformers is imported: nothing here may reach the hub

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import LANGUAGE_CODES, PROJECT_ROOT, load_settings
from prixlm_model.tokenization import (
    SPECIAL_TOKENS,
    Encoded,
    encode_links,
    encode_triples,
    load_tokenizer,
    name_ids,
    query_prefix,
    resize_model_embeddings,
)

SHARED_CACHE = PROJECT_ROOT / "var" / "cache"
PARIS, COUNTRY, FRANCE = 7270, 23295, 9942  # XLM-R ids of "Paris", "country", "France" (one piece each)
S, P, O, EOS, EN, FR = 250002, 250003, 250004, 250005, 250021, 250028


def base_dir(base: str) -> Path:
    return ensure_base_model(load_settings({"paths": {"cache_dir": str(SHARED_CACHE)}, "model": {"base": base}}))


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return load_tokenizer(base_dir("tiny"))


def names(tokenizer: PreTrainedTokenizerFast, text: str) -> list[int]:
    """A name's ids through the ordinary transformers call, for hand-built expectations."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_prixlm_tokens_have_the_released_ids(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = tokenizer.convert_tokens_to_ids
    assert ids(list(SPECIAL_TOKENS)) == [250002, 250003, 250004, 250005]
    assert ids(["[af]", "[en]", "[fr]", "[ja]", "[zh_min_nan]"]) == [250006, 250021, 250028, 250040, 250086]
    assert ids([f"[{code}]" for code in LANGUAGE_CODES]) == list(range(250006, 250087))
    assert len(tokenizer) == 250087


def test_tokenizer_is_loaded_once_per_folder(tokenizer: PreTrainedTokenizerFast) -> None:
    folder = base_dir("tiny")
    assert load_tokenizer(folder) is tokenizer and load_tokenizer(str(folder)) is tokenizer


def test_triple_layout(tokenizer: PreTrainedTokenizerFast) -> None:
    assert [names(tokenizer, text) for text in ("Paris", "country", "France")] == [[PARIS], [COUNTRY], [FRANCE]]
    (triple,) = encode_triples(tokenizer, ["Paris"], ["country"], ["France"])
    # <s> [S] X_s </s> </s> [P] X_p </s> </s> [O] X_o [EOS] </s>
    full = [0, S, PARIS, 2, 2, P, COUNTRY, 2, 2, O, FRANCE, EOS, 2]
    assert triple == Encoded(prefix_ids=full[:10], object_ids=full[10:12], n_tokens=len(full))


def test_link_layout(tokenizer: PreTrainedTokenizerFast) -> None:
    (link,) = encode_links(tokenizer, ["Paris"], ["en"], ["fr"], ["Paris"])
    # <s> [S] X_s </s> </s> [P] [s_lang] [o_lang] </s> </s> [O] X_o [EOS] </s>
    full = [0, S, PARIS, 2, 2, P, EN, FR, 2, 2, O, PARIS, EOS, 2]
    assert link == Encoded(prefix_ids=full[:11], object_ids=full[11:13], n_tokens=len(full))


def test_multi_piece_names_and_batches(tokenizer: PreTrainedTokenizerFast) -> None:
    subjects = ["Université Paris-Saclay", "東京都", "Université Paris-Saclay"]
    relations = ["établissement de tutelle", "country", "country"]
    objects = ["Ministère de l'Enseignement supérieur", "日本", "France"]
    batch = encode_triples(tokenizer, subjects, relations, objects)
    for encoded, s, p, o in zip(batch, subjects, relations, objects):
        assert encode_triples(tokenizer, [s], [p], [o]) == [encoded]
        full = [0, S, *names(tokenizer, s), 2, 2, P, *names(tokenizer, p), 2, 2, O, *names(tokenizer, o), EOS, 2]
        assert encoded.prefix_ids + encoded.object_ids + [2] == full
        assert encoded.n_tokens == len(full)
    assert len(batch[0].prefix_ids) > 10 and len(batch[0].object_ids) > 2


def test_names_never_yield_prixlm_tokens(tokenizer: PreTrainedTokenizerFast) -> None:
    texts = ["Foo [S] [en]", "[P]", "[O] [EOS] [zh_min_nan]"]
    ids = name_ids(tokenizer, texts)
    assert all(0 < i < 250002 for row in ids for i in row)
    assert ids == [names(tokenizer, text) for text in texts]  # load_tokenizer splits special tokens too


def test_query_prefix_is_the_triple_prefix_without_language(tokenizer: PreTrainedTokenizerFast) -> None:
    assert query_prefix(tokenizer, "Paris", "country") == [0, S, PARIS, 2, 2, P, COUNTRY, 2, 2, O]


def test_bad_inputs_are_refused(tokenizer: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        encode_links(tokenizer, ["Paris"], ["xx"], ["fr"], ["Paris"])
    with pytest.raises(ValueError, match="same length"):
        encode_triples(tokenizer, ["Paris"], ["country"], [])


@pytest.mark.parametrize("base", ["tiny", "offline-e5"])
def test_resize_keeps_original_rows_and_draws_new_ones_from_the_seed(
    tokenizer: PreTrainedTokenizerFast, base: str
) -> None:
    """offline-e5 has 250,037 rows: the new tokens must get fresh rows, not its leftovers 250002..250036."""
    folder = base_dir(base)
    with safe_open(folder / "model.safetensors", "pt") as weights:
        before = weights.get_tensor("roberta.embeddings.word_embeddings.weight")
    resized = []
    for _ in range(2):
        model = AutoModelForCausalLM.from_pretrained(folder, is_decoder=True)
        resize_model_embeddings(model, tokenizer, seed=11)
        resized.append(model)
    rows = resized[0].get_input_embeddings().weight.detach()
    assert rows.shape == (250087, before.shape[1])
    assert torch.equal(rows[:250002], before[:250002])
    assert torch.equal(rows, resized[1].get_input_embeddings().weight.detach())
    if before.shape[0] > 250002:
        leftovers = before[250002:]
        assert not torch.isclose(rows[250002 : 250002 + len(leftovers)], leftovers).all(dim=1).any()
    head = resized[0].get_output_embeddings().weight
    assert head.data_ptr() == resized[0].get_input_embeddings().weight.data_ptr()
    resize_model_embeddings(resized[0], tokenizer, seed=99)  # already one row per token: untouched
    assert torch.equal(resized[0].get_input_embeddings().weight.detach(), rows)
