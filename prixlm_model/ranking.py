"""The one rank rule of the project, and the metrics over ranks.

Every model (Prix-LM's beam and full ranks, TransE and RotatE, the XEL and BLI retrieval) ranks a
gold the same way: ``1 + better + equal / 2``, with ``better`` the (unfiltered) candidates scored
strictly better than the gold and ``equal`` those tied with it. This is the *realistic* rank,
PyKEEN's default, so our baselines' own evaluation follows the same rule. A gold that is not
among the candidates has rank ``inf``: a miss that counts 0 in every metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

TIE_POLICY = "realistic"  # PyKEEN's name for the rule below

Count = TypeVar("Count")  # an int, or a tensor of counts (one per query)


def realistic_rank(better: Count, equal: Count) -> Count:
    """``1 + better + equal / 2``: ties with the gold count half (ints or tensors of counts)."""
    return 1 + better + equal / 2


def ranking_metrics(ranks: Sequence[float], hits_at: Sequence[int]) -> dict[str, float]:
    """Hits@k (share of ranks <= k) and MRR (mean of 1/rank, 0 for an infinite rank)."""
    if not ranks:
        return {**{f"hits@{k}": 0.0 for k in hits_at}, "mrr": 0.0}
    metrics = {f"hits@{k}": sum(rank <= k for rank in ranks) / len(ranks) for k in hits_at}
    metrics["mrr"] = sum(1 / rank for rank in ranks) / len(ranks)  # 1 / inf == 0.0
    return metrics
