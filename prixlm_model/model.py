"""The Prix-LM network: XLM-R as a decoder with a tied LM head, and the object-only loss.

Why not ``XLMRobertaForCausalLM(labels=...)``: it computes logits over the whole 250k vocabulary
at every position and then throws most of them away. The loss only needs the positions that
predict an object token or ``[EOS]`` (paper section 2.2), so ``object_loss`` runs the encoder
with the paper's mask, gathers the hidden states at those positions and applies the LM head
there only: the same objective at a fraction of the cost (6.5 -> 19.5 sequences/s on 2 CPU cores, `benchmarks/train.py`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerFast

from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import Settings
from prixlm_model.masking import prefix_object_mask
from prixlm_model.tokenization import load_tokenizer, resize_model_embeddings


def load_model(settings: Settings, source: str | Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Load ``source`` (default: the configured base) as a Prix-LM decoder, and its tokenizer.

    The model is ``XLMRobertaForCausalLM`` with ``is_decoder=True``, the configured dropout on
    hidden states and attention weights, one embedding row per Prix-LM token (new rows drawn
    from ``model.seed``) and the LM head tied to the input embeddings. Weights load from
    safetensors only: a pickled ``.bin`` is never unpickled (reliability #32).
    """
    folder = Path(source) if source is not None else ensure_base_model(settings)
    tokenizer = load_tokenizer(folder)
    dropout = settings.train.dropout
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        is_decoder=True,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        attn_implementation=settings.train.attention,
        tie_word_embeddings=True,
        use_safetensors=True,
    )
    resize_model_embeddings(model, tokenizer, settings.model.seed)
    model.tie_weights()
    if model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
        raise RuntimeError(f"{folder}: the LM head is not tied to the input embeddings")
    return model, tokenizer


def attention_mask(model: PreTrainedModel, object_start: torch.Tensor, lengths: torch.Tensor, max_length: int, causal: bool = False) -> torch.Tensor:
    """The paper's mask in the form the model's attention kernel needs (bool for sdpa, additive for eager)."""
    dtype = torch.bool if model.config._attn_implementation == "sdpa" else model.dtype
    return prefix_object_mask(object_start, lengths, max_length, causal=causal, dtype=dtype)


def full_lengths(input_ids: torch.Tensor) -> torch.Tensor:
    """Every row's length in an unpadded (length-bucketed) batch."""
    return torch.full((input_ids.shape[0],), input_ids.shape[1], dtype=torch.long, device=input_ids.device)


def encode(
    model: PreTrainedModel, input_ids: torch.Tensor, object_start: torch.Tensor, lengths: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """Last hidden states ``(B, L, H)`` under the paper's mask; padding (id 1) beyond ``lengths``."""
    lengths = full_lengths(input_ids) if lengths is None else lengths
    mask = attention_mask(model, object_start, lengths, input_ids.shape[1], causal)
    return model.roberta(input_ids=input_ids, attention_mask=mask).last_hidden_state


def loss_positions(object_start: torch.Tensor, lengths: torch.Tensor, max_length: int) -> torch.Tensor:
    """``(B, L - 1)`` bool: True at the positions t whose next token t + 1 is an object token or ``[EOS]``.

    The object occupies ``object_start .. length - 1`` (the stored sequence ends with ``[EOS]``;
    the final ``</s>`` is never a target), so the predicting positions are
    ``object_start - 1 .. length - 2``: ``[O]`` predicts the first object token.
    """
    t = torch.arange(max_length - 1, device=lengths.device).view(1, -1)
    return (t >= object_start.view(-1, 1) - 1) & (t < lengths.view(-1, 1) - 1)


def object_loss(
    model: PreTrainedModel, input_ids: torch.Tensor, object_start: torch.Tensor, lengths: torch.Tensor | None = None, causal: bool = False
) -> torch.Tensor:
    """Mean NLL over the object tokens and ``[EOS]`` of the batch, the LM head applied only there.

    ``input_ids`` is ``(B, L)``; rows shorter than L are padded with ``<pad>`` (1) and named by
    ``lengths``. The mean is over all target tokens of the batch, as HF's causal-LM loss with
    labels -100 outside the object.
    """
    lengths = full_lengths(input_ids) if lengths is None else lengths
    hidden = encode(model, input_ids, object_start, lengths, causal)
    where = loss_positions(object_start, lengths, input_ids.shape[1])
    logits = model.lm_head(hidden[:, :-1][where])
    return F.cross_entropy(logits.float(), input_ids[:, 1:][where])
