"""Cross-lingual entity linking (paper section 3.3) by nearest neighbour, and new owl:sameAs links.

- Held-out links: each source-language name of ``split/<release>/links_test/`` (never trained
  on) is linked to the target language's entity set (``entities/lang=<tgt>``, plus the golds)
  by cosine over Mirror-tuned embeddings; Hits@k and MRR with realistic ties.
- Calibration: the held-out top-1 links, sorted by score, give the lowest score above which the
  share of right links is still at least ``sameas_precision``; proposals use that threshold.
- Proposals: source entities with no link to the target language, searched among target
  entities with no link from the source language (links between two chapters are one to one),
  kept when their top-1 score reaches the threshold.
- XL-BEL: ``CUI||mention`` queries scored against a ``CUI||name`` dictionary; a concept's score
  is the best of its names'.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from prixlm_model.ranking import ranking_metrics
from prixlm_model.retrieval import Scorer, rank_golds

OWL_SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"
HITS_AT = (1, 10)
Embed = Callable[[Sequence[str]], torch.Tensor]  # strings -> (N, H) unit-length rows


@dataclass(frozen=True)
class Candidates:
    """Target entities: IRIs and names, one row each."""

    iris: list[str]
    names: list[str]

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> "Candidates":
        unique = dict(pairs)  # one name per IRI
        return cls(list(unique), list(unique.values()))


def link_metrics(ranks: np.ndarray) -> dict[str, float | int]:
    """Hits@1, Hits@10, MRR and the query count of realistic ranks (``inf``: a miss)."""
    metrics = ranking_metrics(ranks.tolist(), HITS_AT)
    return {**{key: round(value, 6) for key, value in metrics.items()}, "queries": int(len(ranks))}


def link_queries(links: pa.Table, src: str, tgt: str) -> list[tuple[str, str, str, str]]:
    """``(s_iri, s, o_iri, o)`` of the links from ``src`` to ``tgt``, one per source entity.

    Ordered by a hash of the source IRI, so a prefix is a fixed sample whatever the file order.
    """
    rows = zip(*(links.column(name).to_pylist() for name in ("s_lang", "o_lang", "s_iri", "s", "o_iri", "o")))
    chosen = {s_iri: (s_iri, s, o_iri, o) for s_lang, o_lang, s_iri, s, o_iri, o in rows if (s_lang, o_lang) == (src, tgt)}
    return [chosen[iri] for iri in sorted(chosen, key=lambda iri: hashlib.sha1(iri.encode()).digest())]


def evaluate_links(embed: Embed, queries: Sequence[tuple[str, str, str, str]], entities: Sequence[tuple[str, str]], block: int) -> dict:
    """Link each query's source name to the candidates (``entities`` plus every gold).

    Returns the metrics and, per query, ``top_score`` and ``correct`` (for calibration). The
    metrics carry ``identical_names``, the share of queries whose gold has the source's exact
    name: on DBpedia chapters that share a script most links are such, and even a random
    encoder gets them right, so it is the floor to read Hits@1 against.
    """
    candidates = Candidates.from_pairs([*entities, *((o_iri, o) for _, _, o_iri, o in queries)])
    number = {iri: i for i, iri in enumerate(candidates.iris)}
    scorer = Scorer(embed([s for _, s, _, _ in queries]), embed(candidates.names), block=block)
    golds = [[number[o_iri]] for _, _, o_iri, _ in queries]
    ranked = rank_golds(scorer, golds)
    correct = ranked["top"] == np.array([gold[0] for gold in golds])
    identical = sum(s == o for _, s, _, o in queries) / max(len(queries), 1)
    metrics = {**link_metrics(ranked["rank"]), "candidates": len(candidates.iris), "identical_names": round(identical, 6)}
    return {"metrics": metrics, "top_score": ranked["top_score"], "correct": correct}


def calibrate_threshold(top_scores: np.ndarray, correct: np.ndarray, precision: float) -> float | None:
    """The lowest top-1 score s such that links scoring >= s are right at least ``precision`` of the time.

    ``None`` when not even the best-scored link reaches it: then nothing is proposed.
    """
    order = np.argsort(-top_scores, kind="stable")
    running = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    reached = np.flatnonzero(running >= precision)
    return float(top_scores[order][reached[-1]]) if reached.size else None


def propose_links(embed: Embed, sources: Sequence[tuple[str, str]], targets: Sequence[tuple[str, str]], threshold: float | None, block: int) -> pa.Table:
    """Top-1 target of every source ``(iri, name)`` whose score reaches ``threshold``.

    Returns ``s_iri, s, o_iri, o, score`` sorted by score, highest first.
    """
    names = ("s_iri", "s", "o_iri", "o")
    if threshold is None or not sources or not targets:
        return pa.table({**{name: pa.array([], pa.string()) for name in names}, "score": pa.array([], pa.float32())})
    target = Candidates.from_pairs(targets)
    scorer = Scorer(embed([name for _, name in sources]), embed(target.names), block=block)
    top = rank_golds(scorer, [[] for _ in sources])
    keep = np.flatnonzero(top["top_score"] >= threshold)
    keep = keep[np.argsort(-top["top_score"][keep], kind="stable")]
    return pa.table({
        "s_iri": [sources[i][0] for i in keep],
        "s": [sources[i][1] for i in keep],
        "o_iri": [target.iris[top["top"][i]] for i in keep],
        "o": [target.names[top["top"][i]] for i in keep],
        "score": pa.array(top["top_score"][keep], pa.float32()),
    })


def n_triples(proposals: pa.Table) -> str:
    """owl:sameAs N-Triples, each line ending in a comment with its score."""
    rows = zip(*(proposals.column(name).to_pylist() for name in ("s_iri", "o_iri", "score")))
    return "".join(f"<{s}> <{OWL_SAME_AS}> <{o}> . # score={score:.6f}\n" for s, o, score in rows)


def read_pipe_file(path: Path, what: str) -> list[list[str]]:
    """``||``-separated lines of ``path``; missing or empty fails naming the file and its role."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    rows = [line.split("||") for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: {what} is empty")
    return rows


def xlbel_queries(folder: Path, lang: str) -> list[tuple[str, str]]:
    """``(cui, mention)`` of XL-BEL's ``<lang>_1k_test_query.txt`` (the v0.0 layout)."""
    return [(row[0], row[1]) for row in read_pipe_file(folder / f"{lang}_1k_test_query.txt", f"XL-BEL queries for {lang!r}")]


def evaluate_xlbel(embed: Embed, queries: Sequence[tuple[str, str]], dictionary: Path, block: int) -> dict[str, float | int]:
    """Accuracy (Hits@1) and MRR of linking mentions to the concepts of a ``CUI||name`` dictionary.

    A mention whose CUI the dictionary lacks is a miss, not dropped.
    """
    entries = [(row[0], row[1]) for row in read_pipe_file(dictionary, "XL-BEL target dictionary (similarity.xlbel_dictionary)")]
    concept = {cui: i for i, cui in enumerate(dict.fromkeys(cui for cui, _ in entries))}
    keys = embed([name for _, name in entries])
    groups = torch.tensor([concept[cui] for cui, _ in entries], device=keys.device)
    scorer = Scorer(embed([mention for _, mention in queries]), keys, block=block, key_groups=groups)
    ranked = rank_golds(scorer, [[concept[cui]] if cui in concept else [] for cui, _ in queries])
    return {**link_metrics(ranked["rank"]), "concepts": len(concept), "names": len(entries)}
