"""Filtered link-prediction evaluation: ranks, filtering on a hand-made known set, misses,
the query cap, the filter hash and reading the split's Parquet folders."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, EvalSettings, load_settings
from prixlm_model.decoding import constrained_beam_search, load_decoder
from prixlm_model.evaluation import (
    SplitTables,
    build_candidates,
    evaluate_link_prediction,
    filter_hash,
    filtered_rank,
    read_split,
    sample_queries,
)
from prixlm_model.ranking import ranking_metrics
from prixlm_model.tokenization import query_prefix

FR = "http://fr.dbpedia.org/resource/"
# Real DBpedia (DBP15K fr) names; "Paris" is a prefix of "Paris Saint-Germain".
NAMES = ["Paris", "Paris Saint-Germain", "Lyon", "Marseille", "Toulouse", "Bordeaux", "Nantes", "Lille"]


def iri(name: str) -> str:
    return FR + name.replace(" ", "_")


def triples(rows: list[tuple[str, str, str]]) -> pa.Table:
    return pa.table(
        {
            "s_iri": [iri(s) for s, _, _ in rows],
            "p_iri": [f"http://fr.dbpedia.org/property/{p}" for _, p, _ in rows],
            "o_iri": [iri(o) for _, _, o in rows],
            "s": [s for s, _, _ in rows],
            "p": [p for _, p, _ in rows],
            "o": [o for _, _, o in rows],
            "lang": ["fr"] * len(rows),
        }
    )


@pytest.fixture(scope="module")
def decoder():
    settings = load_settings({"paths": {"cache_dir": str(PROJECT_ROOT / "var" / "cache")}, "model": {"base": "tiny"}})
    return load_decoder(ensure_base_model(settings))


def test_filtered_rank_realistic_ties_and_misses() -> None:
    ranked = [(4, 0.5), (0, 1.0), (1, 2.0), (2, 3.0), (3, 3.0)]
    assert filtered_rank(ranked, 2, filtered_leaves={4}) == 1 + 2 + 0.5  # leaves 0, 1 better; 3 tied
    assert filtered_rank(ranked, 2, filtered_leaves={0, 1, 3, 4}) == 1
    assert filtered_rank(ranked, 7, set()) == math.inf and filtered_rank([], None, set()) == math.inf
    metrics = ranking_metrics([1, 2.5, math.inf, 11], [1, 3, 10])
    assert metrics == {"hits@1": 0.25, "hits@3": 0.5, "hits@10": 0.5, "mrr": pytest.approx((1 + 1 / 2.5 + 0 + 1 / 11) / 4)}


def test_filtering_on_a_hand_made_known_set(decoder) -> None:
    model, tokenizer = decoder
    entities = pa.table({"iri": [iri(name) for name in NAMES], "name": NAMES})
    candidates = build_candidates(tokenizer, entities)
    settings = EvalSettings(beam_size=len(NAMES), max_test_queries=0)
    prefix = query_prefix(tokenizer, "Olympique de Marseille", "ville")
    (raw,) = constrained_beam_search(model, candidates.trie, [prefix], k=len(NAMES))
    order = [candidates.iris[candidates.trie.entities_of_leaf(leaf)[0]] for leaf, _ in raw]
    gold = order[3]  # the fourth best: three names rank above it
    known_true = order[:2]  # two of them are true too, so filtering lifts the gold to rank 2
    test = triples([("Olympique de Marseille", "ville", gold.removeprefix(FR).replace("_", " "))])
    known = pa.concat_tables([test.select(["s_iri", "p_iri", "o_iri"])] + [
        pa.table({"s_iri": test["s_iri"], "p_iri": test["p_iri"], "o_iri": [true]}) for true in known_true
    ])
    result = evaluate_link_prediction(model, tokenizer, SplitTables(test, known, entities), settings, candidates)
    assert result.per_query["rank"].to_pylist() == [2.0]
    assert result.metrics["hits@1"] == 0 and result.metrics["hits@3"] == 1 and result.metrics["mrr"] == 0.5
    assert result.per_query["top"].to_pylist()[0][:2] == [order[2], gold]  # filtered names are gone
    assert result.metrics["tie_policy"] == "realistic" and result.metrics["filter_hash"] == filter_hash(known)

    inside = evaluate_link_prediction(model, tokenizer, SplitTables(test, known, entities), settings.model_copy(update={"filter_in_search": True}), candidates)
    assert inside.per_query["rank"].to_pylist() == [2.0]  # K covers every name: searching filtered changes nothing


def test_unreachable_gold_is_a_miss_not_a_crash(decoder) -> None:
    model, tokenizer = decoder
    entities = pa.table({"iri": [iri(name) for name in NAMES[:3]], "name": NAMES[:3]})
    rows = [("Lille OSC", "ville", "Lille"), ("Olympique lyonnais", "ville", "Lyon")]
    test = triples(rows)
    # Every candidate is a known object of the first query, and its gold (Lille) is no candidate:
    # filtering inside the search leaves its beam nothing to reach.
    known = pa.concat_tables([test.select(["s_iri", "p_iri", "o_iri"]), pa.table({
        "s_iri": [iri("Lille OSC")] * 3, "p_iri": [test["p_iri"][0].as_py()] * 3, "o_iri": entities["iri"],
    })])
    settings = EvalSettings(beam_size=2, filter_in_search=True, max_test_queries=0)
    result = evaluate_link_prediction(model, tokenizer, SplitTables(test, known, entities), settings)
    ranks = result.per_query["rank"].to_pylist()
    assert math.isinf(ranks[0]) and result.per_query["top"].to_pylist()[0] == []
    assert result.metrics["misses"] >= 1 and result.metrics["gold_not_candidate"] == 1 and result.metrics["queries"] == 2


def test_query_cap_and_filter_hash_ignore_row_order() -> None:
    test = triples([(f"S{i}", "p", NAMES[i % len(NAMES)]) for i in range(20)])
    reversed_test = test.take(list(range(19, -1, -1)))
    assert sorted(sample_queries(test, 5)["s"].to_pylist()) == sorted(sample_queries(reversed_test, 5)["s"].to_pylist())
    assert set(sample_queries(test, 5)["s"].to_pylist()) <= set(sample_queries(test, 8)["s"].to_pylist())
    assert sample_queries(test, 0).num_rows == 20
    known = test.select(["s_iri", "p_iri", "o_iri"])
    assert filter_hash(known) == filter_hash(known.take(list(range(19, -1, -1))))
    assert filter_hash(known) != filter_hash(known.slice(1))


def test_read_split_reads_the_split_jobs_folders(tmp_path: Path) -> None:
    split = tmp_path / "split" / "2016.10.01"
    test = triples([("Lille OSC", "ville", "Lille")])
    for lang, rows in (("fr", test), ("en", test)):
        (split / "test" / f"lang={lang}").mkdir(parents=True)
        pq.write_table(rows.drop(["lang"]), split / "test" / f"lang={lang}" / "part-0.parquet")
        (split / "entities" / f"lang={lang}").mkdir(parents=True)
        pq.write_table(pa.table({"iri": [iri("Lille")], "name": ["Lille"]}), split / "entities" / f"lang={lang}" / "part-0.parquet")
        (split / "known" / f"lang={lang}").mkdir(parents=True)
        pq.write_table(test.select(["s_iri", "p_iri", "o_iri"]), split / "known" / f"lang={lang}" / "part-0.parquet")
    tables = read_split(tmp_path, "2016.10.01", "fr")
    assert tables.test["o"].to_pylist() == ["Lille"] and tables.entities["name"].to_pylist() == ["Lille"]
    assert tables.known.num_rows == 1
    with pytest.raises(FileNotFoundError, match="split job"):
        read_split(tmp_path, "2016.04.01", "fr")


def test_full_rank_is_the_rank_among_every_candidate_and_counts_search_errors(decoder) -> None:
    """K = 1 misses most golds; the full rank still equals the rank from scoring every candidate (same filter, same ties)."""
    from prixlm_model.decoding import exhaustive_scores

    model, tokenizer = decoder
    entities = pa.table({"iri": [iri(name) for name in NAMES], "name": NAMES})
    candidates = build_candidates(tokenizer, entities)
    rows = [("Olympique de Marseille", "ville", name) for name in NAMES[:6]]
    test = triples(rows)
    known = pa.concat_tables([test.select(["s_iri", "p_iri", "o_iri"])])
    settings = EvalSettings(beam_size=1, max_test_queries=0, full_rank_max_queries=5)
    result = evaluate_link_prediction(model, tokenizer, SplitTables(test, known, entities), settings, candidates)
    scores = exhaustive_scores(model, candidates.trie, query_prefix(tokenizer, "Olympique de Marseille", "ville"))
    full, beam = result.per_query["full_rank"].to_pylist(), result.per_query["rank"].to_pylist()
    for q, (_, _, gold) in enumerate(rows):
        gold_leaf = candidates.leaf_of(iri(gold))
        others = {candidates.leaf_of(iri(name)) for _, _, name in rows} - {gold_leaf}  # the other golds are known true: filtered
        expected = filtered_rank(scores, gold_leaf, others)
        assert full[q] == expected if q < 5 else full[q] is None  # the cap: the sixth query gets no full rank
        if not math.isinf(beam[q]):
            assert beam[q] == full[q]  # where the beam reaches the gold, both ranks agree
    assert result.metrics["full_rank_queries"] == 5 and result.metrics["full_rank_unresolved"] == 0
    assert result.metrics["full_rank_mrr"] == pytest.approx(sum(1 / r for r in full[:5]) / 5)
    (beam_ranked,) = constrained_beam_search(model, candidates.trie, [query_prefix(tokenizer, "Olympique de Marseille", "ville")], k=1)
    nll = dict(scores)
    errors = 0
    for q, (_, _, gold) in enumerate(rows[:5]):
        gold_leaf = candidates.leaf_of(iri(gold))
        others = {candidates.leaf_of(iri(name)) for _, _, name in rows} - {gold_leaf}
        best = min((value for leaf, value in beam_ranked if leaf not in others), default=math.inf)
        errors += math.isinf(beam[q]) and nll[gold_leaf] < best - 1e-6
    assert result.metrics["search_errors"] == errors and result.metrics["misses"] > 0
