"""Constrained beam search for link prediction (paper section 2.3, Algorithm 1), three ways.

Why three: ``constrained_beam_search`` is the one the pipeline runs; ``algorithm1_reference``
(one full forward per hypothesis per step, as published) and ``exhaustive_scores`` (the object
loss of every candidate) exist so that tests and ``benchmarks.decode`` can show that the fast one
returns the same answers.

The algorithm, as in the released ``decode.py``: start from the query prefix
``<s> [S] s </s> </s> [P] p </s> </s> [O]`` (no language token). At each step every hypothesis
gets the full-vocabulary log-softmax; its children allowed by the entity trie are scored with
summed NLL. A child that completes a name (its token is ``[EOS]``) is recorded as a result
whatever its rank; the other children compete for the K places of the next step's beam (per
query, lowest summed NLL first, ties in order of generation: parent's beam order, then token).
Completed names are ranked by summed NLL (ties by leaf id). Results are trie leaves (node ids):
one leaf holds every entity with that surface name.

Why the fast version is exact: under the paper's mask a prefix token attends to prefix tokens
only and an object token to the prefix and the object tokens before it, so the keys and values
of the prefix and of earlier object tokens never change when a token is appended. They are
computed once (prefix: one bidirectional pass with ``use_cache=True``), and each step feeds only
the newest token of every hypothesis of several queries in one batch, with position ids
``prefix_len + 2 + t`` (XLM-R counts positions from 2). The LM head is the cost that remains:
one 250k-row product per hypothesis per step, done in chunks of ``head_rows`` hypotheses.
Floating-point results differ from the reference only by summation order (about 1e-5).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, XLMRobertaForCausalLM

from prixlm_model.progress import Progress
from prixlm_model.tokenization import load_tokenizer, resize_model_embeddings
from prixlm_model.trie import EntityTrie

log = logging.getLogger(__name__)
PAD = 1  # XLM-R's <pad>
POSITION_OFFSET = 2  # XLM-R's first position id (padding_idx + 1)
Ranked = list[tuple[int, float]]  # (trie leaf, summed NLL), best first


class StepTimes:
    """Seconds spent per part of the search (encoder, head, trie, bookkeeping), summed over steps."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {"encoder": 0.0, "head": 0.0, "trie": 0.0, "bookkeeping": 0.0}
        self.steps = 0
        self.hypotheses = 0

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - start


def load_decoder(model_dir: str | Path, seed: int = 1234, device: str = "cpu") -> tuple[XLMRobertaForCausalLM, PreTrainedTokenizerFast]:
    """A model folder as ``XLMRobertaForCausalLM`` (``is_decoder=True``, needed for the KV cache), in eval mode, on ``device``.

    A base model without the Prix-LM tokens gets its new rows from ``seed`` (see
    ``resize_model_embeddings``); an exported Prix-LM model is used as it is. Weights stay fp32
    on every device: bf16 is an autocast at search time, so the fp32 reference is one flag away.
    """
    target = resolve_device(device)
    tokenizer = load_tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, is_decoder=True, attn_implementation="sdpa")
    resize_model_embeddings(model, tokenizer, seed)
    return model.eval().to(target), tokenizer


def resolve_device(name: str, setting: str = "eval.device") -> torch.device:
    """``auto`` (CUDA when there is one, else the CPU), ``cpu`` or ``cuda[:n]``; a clear error when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{setting} = {name!r} but this machine has no CUDA device (torch {torch.__version__}); use 'cpu' or 'auto'")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"{setting} = {name!r}: only 'auto', 'cpu' and 'cuda' are supported")
    return device


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def precision_context(precision: str, device: torch.device | None = None) -> torch.autocast | nullcontext:
    """fp32 runs as is (exact); bf16 autocasts the encoder and head on the model's device (log-sum-exp stays fp32)."""
    if precision == "bf16":
        return torch.autocast((device or torch.device("cpu")).type, dtype=torch.bfloat16)
    if precision != "fp32":
        raise ValueError(f"precision must be 'fp32' or 'bf16', not {precision!r}")
    return nullcontext()


def edge_nll(model: XLMRobertaForCausalLM, hidden: torch.Tensor, rows: torch.Tensor, tokens: torch.Tensor, head_rows: int) -> torch.Tensor:
    """``-log P(token | hypothesis)`` under the full-vocabulary softmax, for each edge.

    ``hidden``: (H, D) last hidden state per hypothesis; ``rows``/``tokens``: (E,), rows
    ascending. Returns (E,) float64. The head runs on ``head_rows`` hypotheses at a time, so the
    (rows, 250k) logits stay bounded in memory.
    """
    nll = torch.empty(len(rows), dtype=torch.float64, device=hidden.device)
    bounds = torch.searchsorted(rows, torch.arange(0, len(hidden) + head_rows, head_rows, device=rows.device)).tolist()
    for chunk, start in enumerate(range(0, len(hidden), head_rows)):
        lo, hi = bounds[chunk], bounds[chunk + 1]
        if lo == hi:
            continue
        logits = model.lm_head(hidden[start : start + head_rows]).float()
        local = rows[lo:hi] - start
        nll[lo:hi] = (torch.logsumexp(logits, -1)[local] - logits[local, tokens[lo:hi]]).double()
    return nll


def paper_mask(prefix_len: int, length: int) -> torch.Tensor:
    """The paper's mask (True = attend), (length, length): prefix rows see the prefix, object rows see the prefix and earlier objects."""
    positions = torch.arange(length)
    causal = positions[None, :] <= positions[:, None]
    in_prefix = positions < prefix_len
    return torch.where(in_prefix[:, None], in_prefix[None, :].expand(length, length), causal)


def constrained_beam_search(
    model: XLMRobertaForCausalLM,
    trie: EntityTrie,
    prefixes: Sequence[Sequence[int]],
    k: int = 50,
    dead_nodes: Sequence[torch.Tensor] | None = None,
    queries_per_batch: int = 8,
    head_rows: int = 128,
    precision: str = "fp32",
    times: StepTimes | None = None,
) -> list[Ranked]:
    """Algorithm 1 for every query prefix, batched and KV-cached; one ranked leaf list per query.

    ``dead_nodes[q]`` (optional, from ``EntityTrie.dead_nodes``) are trie nodes query ``q`` may
    not enter: filtering inside the search. A query whose beam completes no name gets ``[]``.
    Runs on the model's device: the trie's arrays and every tensor of the search move there.
    """
    searched = _search(model, trie, prefixes, k, dead_nodes, None, None, queries_per_batch, head_rows, precision, times)
    return [ranked for ranked, _ in searched]


def bounded_search(
    model: XLMRobertaForCausalLM,
    trie: EntityTrie,
    prefixes: Sequence[Sequence[int]],
    bounds: Sequence[float],
    max_hypotheses: int,
    queries_per_batch: int = 8,
    head_rows: int = 128,
    precision: str = "fp32",
    times: StepTimes | None = None,
) -> list[Ranked | None]:
    """Every leaf whose summed NLL is at most ``bounds[q]``, per query: a beam without width, pruned by the bound.

    Exact, because an edge's NLL is never negative: a prefix already over the bound cannot
    complete under it. This is what makes a full-rank evaluation affordable: to rank the gold
    among all candidates only the names scoring at least as well need to be visited. A query
    whose live hypotheses exceed ``max_hypotheses`` at some step gets ``None`` (unresolved).
    """
    searched = _search(model, trie, prefixes, None, None, bounds, max_hypotheses, queries_per_batch, head_rows, precision, times)
    return [None if overflowed else ranked for ranked, overflowed in searched]


def _search(model, trie, prefixes, k, dead_nodes, bounds, max_hypotheses, queries_per_batch, head_rows, precision, times) -> list[tuple[Ranked, bool]]:
    """Batches of queries through ``_search_batch`` on the model's device."""
    times = times or StepTimes()
    device = model_device(model)
    trie = trie.to(device)
    results: list[tuple[Ranked, bool]] = []
    progress = Progress("beam search" if bounds is None else "full-rank search", len(prefixes), "queries", log)
    with torch.inference_mode(), precision_context(precision, device):
        for start in range(0, len(prefixes), queries_per_batch):
            batch = range(start, min(start + queries_per_batch, len(prefixes)))
            dead = [dead_nodes[q].to(device) for q in batch] if dead_nodes is not None else None
            bound = torch.tensor([bounds[q] for q in batch], dtype=torch.float64, device=device) if bounds is not None else None
            results += _search_batch(model, trie, [prefixes[q] for q in batch], k, dead, head_rows, times, bound, max_hypotheses)
            progress.update(len(results))
    return results


def _search_batch(
    model: XLMRobertaForCausalLM,
    trie: EntityTrie,
    prefixes: list[Sequence[int]],
    k: int | None,
    dead: list[torch.Tensor] | None,
    head_rows: int,
    times: StepTimes,
    bound: torch.Tensor | None = None,
    max_hypotheses: int | None = None,
) -> list[tuple[Ranked, bool]]:
    """One batch of queries: the prefix pass, then one forward per step for all hypotheses.

    ``k``: beam width per query (None: unlimited); ``bound``: (Q,) NLL above which a child is
    dropped; ``max_hypotheses``: a query with more live hypotheses is abandoned (flagged True).
    """
    queries = len(prefixes)
    device = trie.device
    with times.part("bookkeeping"):
        lengths = torch.tensor([len(prefix) for prefix in prefixes], device=device)
        width = int(lengths.max())
        input_ids = torch.full((queries, width), PAD, device=device)
        for q, prefix in enumerate(prefixes):
            input_ids[q, : len(prefix)] = torch.tensor(prefix, device=device)
        key_valid = torch.arange(width, device=device)[None, :] < lengths[:, None]  # (H, keys): padding slots never attended
        dead_keys = None
        if dead is not None:  # (query, node) pairs as one sortable integer each
            dead_keys = torch.cat([q * trie.node_count + nodes for q, nodes in enumerate(dead)]).sort().values
    with times.part("encoder"):
        out = model.roberta(
            input_ids,
            attention_mask=key_valid[:, None, None, :].expand(queries, 1, width, width),
            position_ids=(torch.arange(width, device=device) + POSITION_OFFSET).expand(queries, width),
            use_cache=True,
        )
        cache = out.past_key_values
        hidden = out.last_hidden_state[torch.arange(queries, device=device), lengths - 1]

    hyp_query = torch.arange(queries, device=device)
    hyp_node = torch.zeros(queries, dtype=torch.long, device=device)
    hyp_nll = torch.zeros(queries, dtype=torch.float64, device=device)
    found: list[list[tuple[int, float]]] = [[] for _ in range(queries)]
    overflowed = [False] * queries
    step = 0
    while len(hyp_query):
        times.steps += 1
        times.hypotheses += len(hyp_query)
        with times.part("trie"):
            rows, tokens, children = trie.allowed(hyp_node)
            if dead_keys is not None and len(dead_keys):
                alive = ~torch.isin(hyp_query[rows] * trie.node_count + children, dead_keys)
                rows, tokens, children = rows[alive], tokens[alive], children[alive]
        with times.part("head"):
            child_nll = hyp_nll[rows] + edge_nll(model, hidden, rows, tokens, head_rows)
        with times.part("bookkeeping"):
            child_query = hyp_query[rows]
            if bound is not None:
                within = child_nll <= bound[child_query]
                rows, tokens, children, child_nll, child_query = rows[within], tokens[within], children[within], child_nll[within], child_query[within]
            complete = trie.is_leaf(children)
            for q, leaf, nll in zip(child_query[complete].tolist(), children[complete].tolist(), child_nll[complete].tolist()):
                found[q].append((leaf, nll))
            keep = _top_k_per_query(child_query, child_nll, ~complete, k if k is not None else len(child_nll))
            if max_hypotheses is not None and len(keep):
                over = torch.bincount(child_query[keep], minlength=queries) > max_hypotheses
                for q in over.nonzero().squeeze(1).tolist():
                    overflowed[q] = True
                keep = keep[~over[child_query[keep]]]
            if not len(keep):
                break
            parents = rows[keep]
            hyp_query, hyp_node, hyp_nll = child_query[keep], children[keep], child_nll[keep]
            cache.reorder_cache(parents)
            key_valid = torch.cat([key_valid[parents], torch.ones(len(keep), 1, dtype=torch.bool, device=device)], 1)
            positions = lengths[hyp_query] + step + POSITION_OFFSET
        with times.part("encoder"):
            out = model.roberta(
                tokens[keep][:, None],
                attention_mask=key_valid[:, None, None, :],
                position_ids=positions[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            hidden = out.last_hidden_state[:, 0]
        step += 1
    return [(sorted(ranked, key=lambda item: (item[1], item[0])), flag) for ranked, flag in zip(found, overflowed)]


def _top_k_per_query(query: torch.Tensor, nll: torch.Tensor, eligible: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the at most ``k`` eligible entries with the lowest NLL per query, grouped by
    query and best first; ties keep their order (both sorts are stable)."""
    candidates = eligible.nonzero().squeeze(1)
    by_nll = candidates[torch.argsort(nll[candidates], stable=True)]
    ordered = by_nll[torch.argsort(query[by_nll], stable=True)]
    grouped = query[ordered]
    rank = torch.arange(len(ordered), device=ordered.device) - torch.searchsorted(grouped, grouped)
    return ordered[rank < k]


def algorithm1_reference(
    model: XLMRobertaForCausalLM,
    trie: EntityTrie,
    prefix: Sequence[int],
    k: int = 50,
    dead_nodes: torch.Tensor | None = None,
    precision: str = "fp32",
    times: StepTimes | None = None,
) -> Ranked:
    """Algorithm 1 as published: every hypothesis re-encodes its whole sequence, one forward each.

    The forward uses the paper's mask (the training mask), a hypothesis at a time; the LM head
    runs on its last position only, as in the released ``decode.py``.
    """
    times = times or StepTimes()
    dead = set() if dead_nodes is None else set(dead_nodes.tolist())
    beam: list[tuple[float, int, list[int]]] = [(0.0, 0, [])]
    found: Ranked = []
    with torch.inference_mode(), precision_context(precision):
        while beam:
            times.steps += 1
            times.hypotheses += len(beam)
            pool: list[tuple[float, int, list[int]]] = []
            for nll, node, tokens in beam:
                with times.part("encoder"):
                    sequence = torch.tensor([*prefix, *tokens])[None, :]
                    length = sequence.shape[1]
                    hidden = model.roberta(
                        sequence,
                        attention_mask=paper_mask(len(prefix), length)[None, None],
                        position_ids=torch.arange(length)[None, :] + POSITION_OFFSET,
                        use_cache=False,
                    ).last_hidden_state[:, -1]
                with times.part("trie"):
                    _, child_tokens, children = trie.allowed(torch.tensor([node]))
                    allowed = [i for i, child in enumerate(children.tolist()) if child not in dead]
                    child_tokens, children = child_tokens[allowed], children[allowed]
                    complete = trie.is_leaf(children).tolist()
                with times.part("head"):
                    step_nll = edge_nll(model, hidden, torch.zeros(len(children), dtype=torch.long), child_tokens, 1).tolist()
                with times.part("bookkeeping"):
                    for token, child, done, added in zip(child_tokens.tolist(), children.tolist(), complete, step_nll):
                        if done:
                            found.append((child, nll + added))
                        else:
                            pool.append((nll + added, child, [*tokens, token]))
            beam = sorted(pool, key=lambda item: item[0])[:k]
    return sorted(found, key=lambda item: (item[1], item[0]))


def exhaustive_scores(
    model: XLMRobertaForCausalLM, trie: EntityTrie, prefix: Sequence[int], batch_size: int = 32, leaves: Sequence[int] | None = None
) -> Ranked:
    """Every leaf of ``trie`` (or only ``leaves``) ranked by its object loss: summed NLL of its
    tokens and ``[EOS]`` after ``prefix`` by teacher forcing (the paper's "straightforward
    approach"; summed, as the beam scores, not averaged as in training)."""
    leaves = trie.leaves.tolist() if leaves is None else list(leaves)
    names = [trie.leaf_tokens(leaf) for leaf in leaves]
    device = model_device(model)
    scored: Ranked = []
    with torch.inference_mode():
        for start in range(0, len(names), batch_size):
            batch = names[start : start + batch_size]
            length = len(prefix) + max(map(len, batch)) - 1  # the last token ([EOS]) is only predicted
            input_ids = torch.full((len(batch), length), PAD)
            mask = paper_mask(len(prefix), length).repeat(len(batch), 1, 1)
            for row, name in enumerate(batch):
                sequence = [*prefix, *name[:-1]]
                input_ids[row, : len(sequence)] = torch.tensor(sequence)
                mask[row, :, len(sequence) :] = False
            hidden = model.roberta(
                input_ids.to(device),
                attention_mask=mask[:, None].to(device),
                position_ids=(torch.arange(length, device=device) + POSITION_OFFSET).expand(len(batch), length),
                use_cache=False,
            ).last_hidden_state
            for row, name in enumerate(batch):
                positions = hidden[row, len(prefix) - 1 : len(prefix) - 1 + len(name)]
                per_token = edge_nll(model, positions, torch.arange(len(name), device=device), torch.tensor(name, device=device), len(name))
                total = 0.0
                for value in per_token.tolist():  # summed in generation order, as the beam does
                    total += value
                scored.append((leaves[start + row], total))
    return sorted(scored, key=lambda item: (item[1], item[0]))
