"""Bilingual lexicon induction (paper section 3.4) on Glavas et al.'s (2019) dictionaries.

For a pair ``xx-yy``: the source vocabulary is every source word of its training and test
dictionaries, the target vocabulary every target word. Both are embedded by the (Mirror-tuned)
encoder; a mapping is learnt from the training pairs, and each distinct test source word is
ranked against the whole target vocabulary. Right answers are all its test translations (the
best-ranked one counts). Two variants are reported apart:

- ``vecmap_csls``: VecMap's supervised recipe, CSLS retrieval (k = ``csls_k``);
- ``procrustes_cosine``: plain orthogonal Procrustes, cosine retrieval.

Files: ``<root>/<xx>-<yy>/yacle.train.freq.<size>.<xx>-<yy>.tsv`` and
``yacle.test.freq.2k.<xx>-<yy>.tsv`` (``source<TAB>target``). A pair only stored the other way
round (``it-en`` as ``en-it``) is read with its columns swapped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from prixlm_model.retrieval import Scorer, rank_golds
from prixlm_model.vecmap import procrustes, vecmap_supervised
from prixlm_model.xel import link_metrics

Pairs = list[tuple[str, str]]


@dataclass(frozen=True)
class Dictionaries:
    """One language pair's training and test translation pairs."""

    pair: str
    train: Pairs
    test: Pairs

    def vocabulary(self, side: int) -> list[str]:
        """Distinct words of one side (0: source, 1: target) of both dictionaries, in file order."""
        return list(dict.fromkeys(pair[side] for pair in [*self.train, *self.test]))


def available_pairs(root: Path) -> list[str]:
    """Every ``xx-yy`` folder under ``root``."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: BLI dictionaries not found (similarity.bli_dir)")
    return sorted(path.name for path in root.iterdir() if path.is_dir() and len(path.name) == 5 and path.name[2] == "-")


def read_tsv(path: Path) -> Pairs:
    """``source<TAB>target`` lines; a missing or empty file fails naming it."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: BLI dictionary not found")
    pairs = [tuple(line.split("\t")[:2]) for line in path.read_text(encoding="utf-8").splitlines() if "\t" in line]
    if not pairs:
        raise ValueError(f"{path}: BLI dictionary is empty")
    return pairs  # type: ignore[return-value]


def read_pair(root: Path, pair: str, train_size: str) -> Dictionaries:
    """The dictionaries of ``pair`` (``src-tgt``), from its folder or, swapped, from ``tgt-src``'s."""
    source, target = pair.split("-")
    for folder, name, swap in ((root / pair, pair, False), (root / f"{target}-{source}", f"{target}-{source}", True)):
        if folder.is_dir():
            train = read_tsv(folder / f"yacle.train.freq.{train_size}.{name}.tsv")
            test = read_tsv(folder / f"yacle.test.freq.2k.{name}.tsv")
            if swap:
                train, test = [(t, s) for s, t in train], [(t, s) for s, t in test]
            return Dictionaries(pair, train, test)
    raise FileNotFoundError(f"{root / pair}: no BLI dictionaries for {pair!r} (nor {target}-{source}); available: {' '.join(available_pairs(root))}")


def evaluate_pair(embed: Callable[[Sequence[str]], torch.Tensor], dictionaries: Dictionaries, csls_k: int, block: int) -> dict[str, dict]:
    """P@1 (Hits@1) and MRR of both variants on the test pairs; (N, H) embeddings from ``embed``."""
    source_words, target_words = dictionaries.vocabulary(0), dictionaries.vocabulary(1)
    source_row = {word: i for i, word in enumerate(source_words)}
    target_row = {word: i for i, word in enumerate(target_words)}
    x, z = embed(source_words), embed(target_words)
    device = x.device
    train_src = torch.tensor([source_row[s] for s, _ in dictionaries.train], device=device)
    train_trg = torch.tensor([target_row[t] for _, t in dictionaries.train], device=device)
    answers: dict[str, list[int]] = {}
    for s, t in dictionaries.test:
        answers.setdefault(s, []).append(target_row[t])
    queries = torch.tensor([source_row[s] for s in answers], device=device)
    golds = list(answers.values())
    results = {}
    for variant, (mapper, csls) in {"vecmap_csls": (vecmap_supervised, csls_k), "procrustes_cosine": (procrustes, 0)}.items():
        xw, zw = mapper(x, z, train_src, train_trg)
        # CSLS's source-side penalty r_S(y) is taken over the whole mapped source vocabulary
        scorer = Scorer(xw[queries], zw, csls_k=csls, block=block, csls_sources=xw)
        metrics = link_metrics(rank_golds(scorer, golds)["rank"])
        results[variant] = {"p@1": metrics["hits@1"], "mrr": metrics["mrr"], "queries": metrics["queries"]}
    results["vocabulary"] = {"source": len(source_words), "target": len(target_words), "train_pairs": len(dictionaries.train), "test_pairs": len(dictionaries.test)}
    return results
