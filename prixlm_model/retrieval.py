"""Nearest-neighbour retrieval over unit-length embeddings: cosine and CSLS, ranks of the gold.

Why blocked matrix products: a query block of ``block`` rows is scored against every key in
one product (``block x keys`` floats in memory), on whatever device the tensors are; no Python
loop runs per query or per key. ``benchmarks.similarity`` compares this with a per-query loop.

CSLS (Lample et al., 2018), for a mapped source x and a target y:
``CSLS(x, y) = 2 cos(x, y) - r_T(x) - r_S(y)``, where ``r_T(x)`` is the mean cosine of x to its
k nearest targets and ``r_S(y)`` the mean cosine of y to its k nearest (mapped) sources. It
penalises hubs, targets that are near everything.

Ranks follow the project's tie policy (realistic, as ``evaluation.filtered_rank``): with several
gold keys the best-scored one counts, and ``rank = 1 + better + equal / 2`` over the non-gold keys.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prixlm_model.ranking import realistic_rank


def mean_topk_similarity(queries: torch.Tensor, keys: torch.Tensor, k: int, block: int = 1024) -> torch.Tensor:
    """(Q, H), (N, H) -> (Q,): the mean cosine of each query to its ``k`` nearest keys."""
    k = min(k, keys.shape[0])
    out = torch.empty(queries.shape[0], device=queries.device)
    for start in range(0, queries.shape[0], block):
        out[start : start + block] = (queries[start : start + block] @ keys.T).topk(k, dim=1).values.mean(1)
    return out


class Scorer:
    """Scores query blocks against every key: cosine, or CSLS with neighbourhood ``csls_k``.

    ``key_groups`` (N,) maps keys to candidates (several names of one concept): a candidate's
    score is the best of its keys', giving (block, groups) scores.
    """

    def __init__(self, queries: torch.Tensor, keys: torch.Tensor, csls_k: int = 0, block: int = 1024,
                 key_groups: torch.Tensor | None = None, csls_sources: torch.Tensor | None = None) -> None:
        self.queries, self.keys, self.csls_k, self.block = queries, keys, csls_k, block
        self.key_groups = key_groups
        self.groups = int(key_groups.max()) + 1 if key_groups is not None else keys.shape[0]
        if csls_k:
            # r_S of every key over the whole source vocabulary (csls_sources, default: the queries)
            self.key_penalty = mean_topk_similarity(keys, csls_sources if csls_sources is not None else queries, csls_k, block)

    def block_scores(self, start: int) -> torch.Tensor:
        """Scores of queries ``start .. start + block`` against every candidate: (b, groups)."""
        chunk = self.queries[start : start + self.block]
        scores = chunk @ self.keys.T
        if self.csls_k:
            query_penalty = scores.topk(min(self.csls_k, scores.shape[1]), dim=1).values.mean(1)
            scores = 2 * scores - query_penalty[:, None] - self.key_penalty[None, :]
        if self.key_groups is None:
            return scores
        grouped = scores.new_full((scores.shape[0], self.groups), float("-inf"))
        return grouped.scatter_reduce_(1, self.key_groups.expand(scores.shape[0], -1), scores, "amax")

    def blocks(self):
        for start in range(0, self.queries.shape[0], self.block):
            yield start, self.block_scores(start)


def gold_mask(golds: Sequence[Sequence[int]], start: int, rows: int, columns: int, device: torch.device) -> torch.Tensor:
    """(rows, columns) bool: True at the gold candidates of queries ``start .. start + rows``."""
    mask = torch.zeros(rows, columns, dtype=torch.bool, device=device)
    row_ids = [row for row in range(rows) for _ in golds[start + row]]
    col_ids = [gold for row in range(rows) for gold in golds[start + row]]
    if row_ids:
        mask[torch.tensor(row_ids, device=device), torch.tensor(col_ids, device=device)] = True
    return mask


def rank_golds(scorer: Scorer, golds: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Realistic rank of each query's best gold, and its top-1 candidate and score.

    ``golds[i]`` lists the candidate numbers that are right for query i; a query without one
    gets rank ``inf`` (a miss). Returns ``rank`` (Q,) float, ``top`` (Q,) int, ``top_score`` (Q,).
    """
    ranks, tops, top_scores = [], [], []
    for start, scores in scorer.blocks():
        mask = gold_mask(golds, start, scores.shape[0], scores.shape[1], scores.device)
        best_gold = scores.masked_fill(~mask, float("-inf")).max(1).values
        others = scores.masked_fill(mask, float("-inf"))
        better = (others > best_gold[:, None]).sum(1)
        equal = (others == best_gold[:, None]).sum(1)
        rank = realistic_rank(better, equal).float()
        ranks.append(torch.where(mask.any(1), rank, torch.full_like(rank, float("inf"))).cpu())
        top = scores.max(1)
        tops.append(top.indices.cpu())
        top_scores.append(top.values.cpu())
    return {"rank": torch.cat(ranks).numpy(), "top": torch.cat(tops).numpy(), "top_score": torch.cat(top_scores).numpy()}


def naive_top1(queries: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The baseline of ``benchmarks.similarity``: one product and argmax per query, in Python."""
    return np.array([int(np.argmax(keys @ query)) for query in queries])
