"""The Prix-LM network on the tiny base: mask semantics in the real model, and the object-only loss."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
import torch
import torch.nn.functional as F

from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.model import encode, load_model, object_loss
from prixlm_model.tokenization import END, OBJECT, encode_triples


def settings(attention: str = "sdpa"):
    return load_settings(
        {"paths": {"cache_dir": str(PROJECT_ROOT / "var" / "cache")}, "model": {"base": "tiny"}, "train": {"attention": attention}}
    )


@pytest.fixture(scope="module")
def loaded():
    model, tokenizer = load_model(settings())
    return model.eval(), tokenizer


def triple(tokenizer, subject: str, relation: str, obj: str) -> tuple[torch.Tensor, torch.Tensor]:
    (encoded,) = encode_triples(tokenizer, [subject], [relation], [obj])
    return torch.tensor([encoded.prefix_ids + encoded.object_ids]), torch.tensor([len(encoded.prefix_ids)])


def test_loaded_as_a_decoder_with_a_tied_head(loaded) -> None:
    model, tokenizer = loaded
    assert type(model).__name__ == "XLMRobertaForCausalLM" and model.config.is_decoder
    assert model.get_input_embeddings().num_embeddings == len(tokenizer) == 250087
    assert model.lm_head.decoder.weight is model.get_input_embeddings().weight


@torch.no_grad()
@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_dropout_acts_in_train_mode_only(dropout: float) -> None:
    """train.dropout changes the forward pass in train mode (as the trainer runs it) and never in eval mode."""
    overrides = {"paths": {"cache_dir": str(PROJECT_ROOT / "var" / "cache")}, "model": {"base": "tiny"}, "train": {"dropout": dropout}}
    model, tokenizer = load_model(load_settings(overrides))
    ids, start = triple(tokenizer, "Paris", "pays", "France")
    assert not model.training  # from_pretrained gives eval mode: the trainer must switch
    torch.testing.assert_close(object_loss(model, ids, start), object_loss(model, ids, start), rtol=0, atol=0)
    model.train()
    first, second = object_loss(model, ids, start), object_loss(model, ids, start)
    assert (first != second) if dropout else torch.equal(first, second)


@torch.no_grad()
def test_changing_an_object_token_changes_no_prefix_state_and_no_earlier_logit(loaded) -> None:
    model, tokenizer = loaded
    ids, start = triple(tokenizer, "Université Paris-Saclay", "tutelle", "Ministère de l'Enseignement supérieur")
    s = int(start)
    assert ids[0, s - 1] == OBJECT and ids[0, -1] == END and ids.shape[1] - s >= 4
    changed = ids.clone()
    k = s + 2  # the third object token
    changed[0, k] = 7270  # "Paris"
    before, after = encode(model, ids, start), encode(model, changed, start)
    torch.testing.assert_close(after[:, :s], before[:, :s], rtol=0, atol=1e-6)  # the whole prefix
    logits_before, logits_after = model.lm_head(before), model.lm_head(after)
    torch.testing.assert_close(logits_after[:, :k], logits_before[:, :k], rtol=0, atol=1e-5)  # positions before k
    assert not torch.allclose(logits_after[:, k:], logits_before[:, k:])  # and the change is seen from k on


@torch.no_grad()
def test_prefix_is_bidirectional(loaded) -> None:
    model, tokenizer = loaded
    ids, start = triple(tokenizer, "Paris", "country", "France")
    changed = ids.clone()
    changed[0, 6] = 9942  # the relation token, after the subject
    assert not torch.allclose(encode(model, ids, start)[:, 2], encode(model, changed, start)[:, 2])  # the subject sees it


@torch.no_grad()
def test_loss_equals_a_hand_computation(loaded) -> None:
    model, tokenizer = loaded
    ids, start = triple(tokenizer, "Tokyo", "country", "Japon")
    hidden = encode(model, ids, start)
    log_probs = F.log_softmax(model.lm_head(hidden)[0].float(), dim=-1)
    s, n = int(start), ids.shape[1]
    # position t predicts token t + 1, for every object token and [EOS]: t = s - 1 .. n - 2
    expected = -sum(log_probs[t, ids[0, t + 1]] for t in range(s - 1, n - 1)) / (n - s)
    torch.testing.assert_close(object_loss(model, ids, start), expected, rtol=1e-5, atol=1e-5)
    labels = torch.where(torch.arange(n) >= s, ids, -100)  # the HF causal-LM loss with the same mask agrees
    mask = torch.ones(1, 1, n, n, dtype=torch.bool)
    mask[0, 0, :s, s:] = False
    mask[0, 0, s:, s:] = torch.tril(torch.ones(n - s, n - s, dtype=torch.bool))
    torch.testing.assert_close(model(input_ids=ids, attention_mask=mask, labels=labels).loss, expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_padded_batch_is_the_token_mean_of_its_rows(loaded) -> None:
    model, tokenizer = loaded
    (a_ids, a_start), (b_ids, b_start) = triple(tokenizer, "Paris", "country", "France"), triple(tokenizer, "Lyon", "région", "Auvergne-Rhône-Alpes")
    width = max(a_ids.shape[1], b_ids.shape[1])
    batch = torch.ones(2, width, dtype=torch.long)  # <pad> = 1
    batch[0, : a_ids.shape[1]], batch[1, : b_ids.shape[1]] = a_ids[0], b_ids[0]
    lengths = torch.tensor([a_ids.shape[1], b_ids.shape[1]])
    targets = lengths - torch.cat([a_start, b_start])
    each = torch.stack([object_loss(model, a_ids, a_start), object_loss(model, b_ids, b_start)])
    expected = (each * targets).sum() / targets.sum()
    torch.testing.assert_close(object_loss(model, batch, torch.cat([a_start, b_start]), lengths), expected, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_eager_attention_gives_the_same_loss(loaded) -> None:
    model, tokenizer = loaded
    eager, _ = load_model(settings("eager"))
    ids, start = triple(tokenizer, "Paris", "country", "France")
    torch.testing.assert_close(object_loss(eager.eval(), ids, start), object_loss(model, ids, start), rtol=1e-5, atol=1e-5)
