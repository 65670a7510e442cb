"""Proposals on held-out facts: what calibration is fitted on (valid) and quality is measured on (test).

Why this way: a held-out ``(s, p)`` is decoded as if its held-out objects were missing from the
KB, exactly as a new-fact query is decoded with the KB's facts filtered: every fact of the
language is excluded except the held-out ones (valid and test), and a proposal is true when it is
one of them. The same model, search and filter as the new facts, so the fitted probabilities and
the measured precision speak about the facts the construct step writes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from prixlm_model.calibration import Calibrator, expected_calibration_error, precision_at_k, precision_recall_at, reliability
from prixlm_model.construct import Decoding, Pair, held_out_queries, propose

PRECISION_AT = (1, 10, 50, 100)  # the k reported as numbers (the plot has every k)


@dataclass(frozen=True)
class HeldOut:
    """Scored proposals for held-out queries: (N,) log-probabilities and truth, and the held-out
    facts of the decoded pairs (the recall denominator)."""

    logprob: np.ndarray
    correct: np.ndarray
    relevant: int
    queries: int


def objects_of(*tables: pa.Table) -> dict[Pair, set[str]]:
    """``(s_iri, p_iri) -> objects`` over the triples of ``tables``."""
    objects: dict[Pair, set[str]] = defaultdict(set)
    for table in tables:
        for s, p, o in zip(*(table.column(name).to_pylist() for name in ("s_iri", "p_iri", "o_iri"))):
            objects[(s, p)].add(o)
    return objects


def score_held_out(decoding: Decoding, held: pa.Table, known: Mapping[Pair, set[str]], hidden: Mapping[Pair, set[str]], cap: int) -> HeldOut:
    """Decode the (capped) distinct ``(s, p)`` of ``held`` with ``known`` minus ``hidden`` filtered;
    a proposal is correct when it is in ``hidden``."""
    queries = held_out_queries(held, cap)
    pairs = [(q.s_iri, q.p_iri) for q in queries]
    visible = {pair: known.get(pair, set()) - hidden.get(pair, set()) for pair in pairs}
    proposals = propose(decoding, queries, visible)
    correct = [p.o_iri in hidden.get(pairs[p.query], ()) for p in proposals]
    targets = objects_of(held)
    return HeldOut(np.array([p.logprob for p in proposals], dtype=np.float64), np.array(correct, dtype=bool),
                   sum(len(targets.get(pair, ())) for pair in set(pairs)), len(queries))


@dataclass(frozen=True)
class Measured:
    """A calibration fitted on one held-out set and measured on another, with the curves to plot."""

    fitted_on: HeldOut  # valid
    measured_on: HeldOut  # test
    calibrator: Calibrator
    measures: dict  # queries, proposals, true_proposals, held_out_facts, <tier>: precision/recall, precision_at, ece
    precision_at_k: np.ndarray  # (N,) for k = 1..N proposals of measured_on
    reliability: dict[str, list[float]]  # calibration.reliability of measured_on


def measure(fitted_on: HeldOut, measured_on: HeldOut, calibrator: Calibrator, thresholds: Mapping[str, float]) -> Measured:
    """Precision and recall at each threshold, precision@k and ECE of ``measured_on`` under ``calibrator``."""
    probability = calibrator(measured_on.logprob)
    curve = precision_at_k(probability, measured_on.correct)
    measures = {
        "queries": measured_on.queries,
        "proposals": int(len(probability)),
        "true_proposals": int(measured_on.correct.sum()),
        "held_out_facts": measured_on.relevant,
        **{tier: precision_recall_at(probability, measured_on.correct, threshold, measured_on.relevant) for tier, threshold in thresholds.items()},
        "precision_at": {str(k): float(curve[k - 1]) for k in PRECISION_AT if k <= len(curve)},
        "ece": expected_calibration_error(probability, measured_on.correct),
    }
    return Measured(fitted_on, measured_on, calibrator, measures, curve, reliability(probability, measured_on.correct))


def statuses(probability: np.ndarray, thresholds: Mapping[str, float]) -> list[str | None]:
    """``accept`` at or above the accept threshold, ``review`` at or above the review one, else None."""
    return ["accept" if p >= thresholds["accept"] else "review" if p >= thresholds["review"] else None for p in probability]


def confirmed_by_link(expected: Sequence[frozenset[str]], objects: Sequence[str]) -> list[bool | None]:
    """Per proposal: is it the object linked from the other language (None: nothing to compare with)?"""
    return [None if not linked else obj in linked for linked, obj in zip(expected, objects)]
