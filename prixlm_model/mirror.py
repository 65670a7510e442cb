"""String encoders for similarity-based inference (paper section 2.3), and Mirror-BERT tuning.

Why: out of the box neither XLM-R nor Prix-LM gives entity or word embeddings good enough for
nearest-neighbour search; Mirror-BERT (Liu et al., 2021a) turns a checkpoint into a lexical
encoder without labels. Each string of a batch goes through the encoder twice with dropout on,
so the two views differ only by dropout; InfoNCE (NT-Xent) pulls the two views of a string
together and pushes away the other ``2B - 2`` views of the batch. The same procedure, settings
and word list tune every model, so base + Mirror and Prix-LM + Mirror are compared fairly.

The encoder is the checkpoint's bidirectional encoder (``AutoModel``, no LM head, not a
decoder): a Prix-LM model reads its prefix both ways, and a plain string is such a prefix.
Embeddings are L2-normalised float32 rows, so inner products are cosines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerFast

from prixlm_model.config import SimilaritySettings
from prixlm_model.tokenization import load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class MirrorResult:
    """What one Mirror-BERT run did: the loss of every step, and its budget."""

    losses: list[float] = field(default_factory=list)
    words: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float | int]:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (float("nan"), float("nan"))
        return {"steps": len(self.losses), "words": self.words, "first_loss": round(first, 4), "last_loss": round(last, 4), "seconds": round(self.seconds, 1)}


def resolve_device(name: str) -> torch.device:
    """``auto``: the GPU when there is one; otherwise as named."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_encoder(folder: str | Path, settings: SimilaritySettings) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """The checkpoint in ``folder`` as an XLM-R encoder (no pooler, not a decoder), in eval mode.

    Dropout is set to ``mirror_dropout`` for tuning; ``eval()`` switches it off for embedding.
    """
    dropout = settings.mirror_dropout
    model = AutoModel.from_pretrained(
        folder, is_decoder=False, add_pooling_layer=False, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, use_safetensors=True, attn_implementation="sdpa",
    )
    return model.to(resolve_device(settings.device)).eval(), load_tokenizer(folder)


def read_words(path: Path, limit: int = 0) -> list[str]:
    """The distinct non-empty lines of a word list, in file order (the first ``limit``; 0: all)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Mirror-BERT word list not found (similarity.mirror_words)")
    words = list(dict.fromkeys(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()))
    if not words:
        raise ValueError(f"{path}: the Mirror-BERT word list is empty (similarity.mirror_words)")
    return words[:limit] if limit else words


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, L, H) states and (B, L) mask -> (B, H): the <s> state, or the mean over real tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


def forward_strings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], settings: SimilaritySettings) -> torch.Tensor:
    """(N,) strings -> (N, H) pooled states (not normalised), with gradients if enabled."""
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=settings.max_length, return_tensors="pt").to(model.device)
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return pool(hidden, batch["attention_mask"], settings.pooling)


@torch.inference_mode()
def embed(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, texts: Sequence[str], settings: SimilaritySettings) -> torch.Tensor:
    """(N,) strings -> (N, H) unit-length float32 embeddings on the model's device, dropout off.

    Each distinct string is encoded once, in order of length so that a batch carries little
    padding; rows come back in the order of ``texts``.
    """
    was_training = model.training
    model.eval()
    distinct = sorted(set(texts), key=len)
    out = torch.empty(len(distinct), model.config.hidden_size, device=model.device)
    for start in range(0, len(distinct), settings.encode_batch):
        chunk = distinct[start : start + settings.encode_batch]
        out[start : start + len(chunk)] = F.normalize(forward_strings(model, tokenizer, chunk, settings).float(), dim=-1)
    model.train(was_training)
    row = {text: i for i, text in enumerate(distinct)}
    return out[torch.tensor([row[text] for text in texts], dtype=torch.long, device=out.device)]


class Embedder:
    """A tuned encoder with a memory of what it embedded: tasks sharing names encode them once."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, settings: SimilaritySettings) -> None:
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.rows: dict[str, int] = {}
        self.table = torch.empty(0, model.config.hidden_size, device=model.device)
        self.seconds = 0.0

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """(N,) strings -> (N, H) unit-length embeddings."""
        new = [text for text in dict.fromkeys(texts) if text not in self.rows]
        if new:
            started = time.perf_counter()
            self.rows.update({text: len(self.rows) + i for i, text in enumerate(new)})
            self.table = torch.cat([self.table, embed(self.model, self.tokenizer, new, self.settings)])
            self.seconds += time.perf_counter() - started
        return self.table[torch.tensor([self.rows[text] for text in texts], dtype=torch.long, device=self.table.device)]


def info_nce(first: torch.Tensor, second: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent over two (B, H) views: row i of ``first`` matches row i of ``second``.

    Each of the 2B views has one positive (its mirror) and 2B - 2 in-batch negatives.
    """
    views = F.normalize(torch.cat([first, second]), dim=-1)
    logits = views @ views.T / temperature
    logits.fill_diagonal_(float("-inf"))  # a view is not its own negative
    size = first.shape[0]
    targets = torch.cat([torch.arange(size, 2 * size), torch.arange(size)]).to(logits.device)
    return F.cross_entropy(logits, targets)


def mirror_tune(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, words: Sequence[str], settings: SimilaritySettings) -> MirrorResult:
    """Tune ``model`` in place with Mirror-BERT on ``words``; return the loss of every step.

    ``mirror_epochs`` passes in an order drawn from ``seed``, ``mirror_batch`` words a step,
    stopped after ``mirror_max_steps`` steps when set (0: the model is left as it is).
    """
    result = MirrorResult(words=len(words))
    cap = settings.mirror_max_steps
    if cap == 0:
        return result
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.mirror_lr)
    generator = torch.Generator().manual_seed(settings.seed)
    model.train()
    with torch.random.fork_rng(devices=[model.device] if model.device.type == "cuda" else []):
        torch.manual_seed(settings.seed)  # the dropout masks
        for _epoch in range(settings.mirror_epochs):
            order = torch.randperm(len(words), generator=generator).tolist()
            for start in range(0, len(order) - 1, settings.mirror_batch):
                batch = [words[i] for i in order[start : start + settings.mirror_batch]]
                if len(batch) < 2:  # a lone word has no negative
                    continue
                loss = info_nce(forward_strings(model, tokenizer, batch, settings), forward_strings(model, tokenizer, batch, settings), settings.mirror_temperature)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                result.losses.append(float(loss.detach()))
                if cap is not None and len(result.losses) >= cap:
                    break
            if cap is not None and len(result.losses) >= cap:
                break
    model.eval()
    result.seconds = time.perf_counter() - started
    log.info("Mirror-BERT: %s", result.summary())
    return result
