"""Constrained beam search: the batched, KV-cached search returns what Algorithm 1 as published
returns, and with K at least the number of candidates, what exhaustive scoring returns.

Real queries: DBP15K French facts (subject and relation names) against a candidate set of real
object names, on the tiny model (random weights: the check is exactness, not quality).
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import lzma
from urllib.parse import unquote

import pytest
import torch

from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.decoding import (
    Ranked,
    StepTimes,
    algorithm1_reference,
    bounded_search,
    constrained_beam_search,
    exhaustive_scores,
    load_decoder,
    resolve_device,
)
from prixlm_model.tokenization import END, name_ids, query_prefix
from prixlm_model.trie import EntityTrie

DBP15K = PROJECT_ROOT.parent / "shared" / "data" / "dbp15k-jape" / "fr_en"


def read(name: str) -> list[list[str]]:
    with lzma.open(DBP15K / f"{name}.xz", "rt", encoding="utf-8") as lines:
        return [line.rstrip("\n").split("\t") for line in lines]


def local_name(iri: str) -> str:
    return unquote(iri.rsplit("/", 1)[1]).replace("_", " ")


@pytest.fixture(scope="module")
def setup():
    settings = load_settings({"paths": {"cache_dir": str(PROJECT_ROOT / "var" / "cache")}, "model": {"base": "tiny"}})
    model, tokenizer = load_decoder(ensure_base_model(settings))
    entities = {int(i): local_name(iri) for i, iri in read("ent_ids_1")}
    relations = {int(i): local_name(iri) for i, iri in read("rel_ids_1")}
    facts = [tuple(map(int, fact)) for fact in read("triples_1")[:400]]
    objects = sorted({entities[o] for _, _, o in facts})[:30]
    trie = EntityTrie.build(name_ids(tokenizer, objects), END)
    queries = [query_prefix(tokenizer, entities[s], relations[p]) for s, p, _ in facts[:3]]
    return model, trie, queries


def assert_same(fast: Ranked, reference: Ranked, tolerance: float = 1e-4) -> None:
    assert [leaf for leaf, _ in fast] == [leaf for leaf, _ in reference]
    assert all(abs(a - b) <= tolerance for (_, a), (_, b) in zip(fast, reference))


@pytest.mark.slow
def test_large_k_equals_exhaustive_scoring(setup) -> None:
    model, trie, queries = setup
    fast = constrained_beam_search(model, trie, queries, k=trie.leaf_count, queries_per_batch=2)
    for query, ranked in zip(queries, fast):
        assert len(ranked) == trie.leaf_count  # no pruning: every candidate completed
        assert_same(ranked, exhaustive_scores(model, trie, query))


@pytest.mark.slow
def test_batched_search_equals_published_algorithm(setup) -> None:
    model, trie, queries = setup
    times = StepTimes()
    fast = constrained_beam_search(model, trie, queries, k=3, queries_per_batch=3, head_rows=2, times=times)
    assert times.steps > 0 and all(seconds >= 0 for seconds in times.seconds.values())
    for query, ranked in zip(queries, fast):
        reference = algorithm1_reference(model, trie, query, k=3)
        assert 0 < len(reference) < trie.leaf_count  # the beam did prune
        assert_same(ranked, reference)


@pytest.mark.slow
def test_filtering_inside_the_search_equals_published_algorithm(setup) -> None:
    model, trie, queries = setup
    banned = [int(leaf) for leaf, _ in constrained_beam_search(model, trie, queries[:1], k=3)[0][:2]]
    dead = trie.dead_nodes(banned)
    fast = constrained_beam_search(model, trie, queries[:1], k=3, dead_nodes=[dead])[0]
    assert not {leaf for leaf, _ in fast} & set(banned)
    assert_same(fast, algorithm1_reference(model, trie, queries[0], k=3, dead_nodes=dead))


def test_no_reachable_candidate_gives_empty_result(setup) -> None:
    model, trie, queries = setup
    everything = trie.dead_nodes(trie.leaves.tolist())
    assert constrained_beam_search(model, trie, queries[:2], k=3, dead_nodes=[everything, torch.empty(0, dtype=torch.long)])[0] == []


def test_bf16_mode_returns_candidates(setup) -> None:
    model, trie, queries = setup
    ranked = constrained_beam_search(model, trie, queries[:1], k=3, precision="bf16")[0]
    assert ranked and {leaf for leaf, _ in ranked} <= set(trie.leaves.tolist())
    with pytest.raises(ValueError, match="precision"):
        constrained_beam_search(model, trie, queries[:1], k=3, precision="fp16")


@pytest.mark.slow
def test_bounded_search_returns_exactly_the_names_under_the_bound(setup) -> None:
    """The full-rank search: every leaf whose exhaustive NLL is under the bound, none above, with the same scores."""
    model, trie, queries = setup
    exhaustive = [exhaustive_scores(model, trie, query) for query in queries]
    bounds = [ranked[len(ranked) // 3][1] + 1e-9 for ranked in exhaustive]  # about a third of the candidates
    found = bounded_search(model, trie, queries, bounds, max_hypotheses=10_000, queries_per_batch=2)
    for ranked, reference, bound in zip(found, exhaustive, bounds):
        expected = [(leaf, nll) for leaf, nll in reference if nll <= bound - 1e-4]
        assert ranked is not None and 0 < len(expected) < trie.leaf_count
        assert {leaf for leaf, _ in expected} <= {leaf for leaf, _ in ranked}
        assert all(nll <= bound for _, nll in ranked)
        assert_same([item for item in ranked if item[0] in dict(expected)], expected)
    assert bounded_search(model, trie, queries[:1], [bounds[0]], max_hypotheses=1)[0] is None  # over budget: unresolved, not a wrong rank


def test_unavailable_device_is_a_clear_error() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"eval\.device = 'cuda' but this machine has no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="only 'auto', 'cpu' and 'cuda'"):
        resolve_device("meta")
