"""Filtered link-prediction evaluation of Prix-LM: Hits@k and MRR over the test triples of a language.

Why here and how:

- Each test triple ``(s, p, o)`` is the query ``(s, p, ?)``, decoded by
  ``decoding.constrained_beam_search`` over the language's entity trie (its candidates).
- Filtered setting (as in the released ``lp.py``): every known true object of ``(s, p)``
  (train, valid and test, from the split's ``known/``) other than the gold is removed from the
  ranked list. With ``filter_in_search`` it is also removed from the trie while searching, so it
  takes no beam place; that changes which hypotheses survive, and so can change ranks.
- Surface names: entities sharing a name share one trie leaf, which the model cannot tell apart.
  A leaf is one candidate: the gold is found when its leaf is, and a leaf is filtered when it
  holds a known true object and not the gold. (With unique names this is exactly per-entity
  filtering; the released code, which works on names, does the same.)
- Rank: the gold's position among unfiltered leaves by summed NLL; infinite (reciprocal 0, a
  miss for every Hits@k) when the search never completes the gold, or when the gold is not a
  candidate at all (counted apart). Tie policy: realistic (PyKEEN's default, as our baselines),
  ``1 + better + equal / 2`` with ``equal`` the other leaves at exactly the gold's NLL.
- Full rank (``full_rank``): the beam's rank is truncated (a gold outside the beam counts as a
  miss, reciprocal rank 0) while the KGE baselines rank every candidate. So for the first
  ``full_rank_max_queries`` queries the gold's NLL is computed by teacher forcing and every name
  scoring at most as well is found by ``decoding.bounded_search``: the true filtered rank among
  all candidates, same filter and tie rule. A query whose search outgrows its hypothesis budget
  is counted as unresolved, never given a made-up rank. A search error is a query whose gold
  scores better than the beam's best answer although the beam never completed it.
- Filters (``settings.filters``): ``all`` removes every known true object (train, valid and
  test: ours); ``train`` only those of the train split, as KEnS's and SS-AGA's code do (it needs
  ``known`` with a ``split`` column, which ``jobs.import_benchmark`` writes). The beam search does
  not depend on the filter (unless ``filter_in_search``, which uses the first), so one search is
  ranked under every filter: ``metrics`` holds the first filter's figures, ``metrics["by_filter"]``
  each filter's.
- Results carry ``filter_hash``, the SHA-256 of the sorted known triples used, so two tables can
  be checked to use the same filter set.

Inputs are pyarrow tables with the split job's columns: test ``s_iri, p_iri, o_iri, s, p, o,
lang``; known ``s_iri, p_iri, o_iri``; entities ``iri, name``. ``read_split`` loads them from
``<data_root>/split/<release>/``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import torch
from transformers import PreTrainedTokenizerFast, XLMRobertaForCausalLM

from prixlm_model.config import EvalSettings
from prixlm_model.decoding import Ranked, StepTimes, bounded_search, constrained_beam_search, exhaustive_scores
from prixlm_model.ranking import TIE_POLICY, ranking_metrics, realistic_rank
from prixlm_model.tokenization import END, name_ids, query_prefix
from prixlm_model.trie import EntityTrie

FILTER_LABELS = {"all": "train+valid+test", "train": "train"}  # what each filter removes, as the tables name it
TOP_LISTED = 10  # filtered top predictions kept per query in the per-query table
# The bounded search may sum a name's NLL in another order than teacher forcing (about 1e-5 apart):
# searching a little past the gold's teacher-forced NLL makes sure the gold itself is found, and
# its searched NLL is then the one every other name is compared with.
BOUND_SLACK = 1e-3


@dataclass(frozen=True)
class SplitTables:
    """One language's evaluation inputs."""

    test: pa.Table  # s_iri, p_iri, o_iri, s, p, o, lang
    known: pa.Table  # s_iri, p_iri, o_iri (and split: train, valid or test, for the train filter): every true triple
    entities: pa.Table  # iri, name: the candidate objects


@dataclass(frozen=True)
class Candidates:
    """A language's candidate entities: the trie over their names, and entity number <-> IRI."""

    trie: EntityTrie
    iris: list[str]
    number: dict[str, int]

    def leaf_of(self, iri: str) -> int | None:
        entity = self.number.get(iri)
        return None if entity is None else int(self.trie.entity_leaf[entity])


@dataclass
class LinkPredictionResult:
    metrics: dict[str, float | int | str | bool]
    per_query: pa.Table  # s_iri, p_iri, o_iri, rank, gold_nll, top (filtered, first IRI of each leaf)
    times: StepTimes = field(default_factory=StepTimes)


def read_split(data_root: str | Path, release: str, lang: str) -> SplitTables:
    """Read ``split/<release>/{test/lang=<lang>, known, entities/lang=<lang>}`` (Parquet, hive partitions)."""
    root = Path(data_root) / "split" / release

    def read(path: Path) -> pa.Table:
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: the split job has not written it")
        return ds.dataset(path, format="parquet", partitioning="hive").to_table()

    known = read(root / "known")
    if "lang" in known.column_names:
        known = known.filter(ds.field("lang") == lang)
    return SplitTables(read(root / "test" / f"lang={lang}"), known, read(root / "entities" / f"lang={lang}"))


def build_candidates(tokenizer: PreTrainedTokenizerFast, entities: pa.Table) -> Candidates:
    """The candidate trie of an ``iri, name`` table (an IRI listed twice counts once)."""
    iris, names = [], []
    number: dict[str, int] = {}
    for iri, name in zip(entities.column("iri").to_pylist(), entities.column("name").to_pylist()):
        if iri not in number:
            number[iri] = len(iris)
            iris.append(iri)
            names.append(name)
    return Candidates(EntityTrie.build(name_ids(tokenizer, names), END), iris, number)


def known_objects(known: pa.Table) -> dict[tuple[str, str], set[str]]:
    """Every true object per ``(s_iri, p_iri)``."""
    objects: dict[tuple[str, str], set[str]] = defaultdict(set)
    for s, p, o in zip(*(known.column(name).to_pylist() for name in ("s_iri", "p_iri", "o_iri"))):
        objects[(s, p)].add(o)
    return objects


def filter_known(known: pa.Table, name: str) -> pa.Table:
    """The known triples filter ``name`` removes: all of them (``all``), or the train split's (``train``)."""
    if name == "all":
        return known
    if "split" not in known.column_names:
        raise ValueError("the 'train' filter needs known/ with a split column (jobs.import_benchmark writes one); this split's known/ has none")
    return known.filter(pc.equal(known["split"], "train"))


def filter_hash(known: pa.Table) -> str:
    """SHA-256 of the sorted, distinct known triples: identifies the filter set of a result."""
    lines = sorted({"\t".join(row) for row in zip(*(known.column(name).to_pylist() for name in ("s_iri", "p_iri", "o_iri")))})
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def sample_queries(test: pa.Table, cap: int) -> pa.Table:
    """At most ``cap`` test triples (0: all), chosen by a hash of the triple: the same sample
    whatever the row order, and nested (a larger cap keeps the smaller cap's triples)."""
    if cap == 0 or test.num_rows <= cap:
        return test
    keys = [hashlib.sha1(f"{s}\t{p}\t{o}".encode()).digest() for s, p, o in zip(*(test.column(n).to_pylist() for n in ("s_iri", "p_iri", "o_iri")))]
    chosen = sorted(range(test.num_rows), key=keys.__getitem__)[:cap]
    return test.take(sorted(chosen))


def filtered_rank(ranked: Ranked, gold_leaf: int | None, filtered_leaves: set[int]) -> float:
    """The gold's realistic rank among unfiltered leaves of ``ranked``; ``inf`` if it is absent."""
    gold_nll = next((nll for leaf, nll in ranked if leaf == gold_leaf), None)
    if gold_nll is None:
        return math.inf
    others = [nll for leaf, nll in ranked if leaf != gold_leaf and leaf not in filtered_leaves]
    return realistic_rank(sum(nll < gold_nll for nll in others), sum(nll == gold_nll for nll in others))


def evaluate_link_prediction(
    model: XLMRobertaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    tables: SplitTables,
    settings: EvalSettings,
    candidates: Candidates | None = None,
) -> LinkPredictionResult:
    """Decode the (capped) test queries and score them in the filtered setting.

    Without ``filter_in_search`` a query ``(s, p)`` is decoded once however many test triples
    share it; with it, once per triple, since each gold leaves a different set filtered.
    """
    started = time.perf_counter()
    candidates = candidates or build_candidates(tokenizer, tables.entities)
    test = sample_queries(tables.test, settings.max_test_queries)
    known_by_filter = {name: filter_known(tables.known, name) for name in settings.filters}
    rows = list(zip(*(test.column(name).to_pylist() for name in ("s_iri", "p_iri", "o_iri", "s", "p"))))

    gold_leaves = [candidates.leaf_of(o_iri) for _, _, o_iri, _, _ in rows]
    filtered_by: dict[str, list[set[int]]] = {}  # filter -> per query, the leaves it removes
    for name, known in known_by_filter.items():
        truths = known_objects(known)
        filtered_by[name] = []
        for (s_iri, p_iri, o_iri, _, _), gold_leaf in zip(rows, gold_leaves):
            leaves = {candidates.leaf_of(o) for o in truths.get((s_iri, p_iri), set()) - {o_iri}}
            filtered_by[name].append({leaf for leaf in leaves if leaf is not None and leaf != gold_leaf})
    first = settings.filters[0]

    names = [(s, p) for _, _, _, s, p in rows]
    if settings.filter_in_search:
        decoded = list(range(len(rows)))
        prefixes = [query_prefix(tokenizer, s, p) for s, p in names]
        dead: list[torch.Tensor] | None = [candidates.trie.dead_nodes(sorted(leaves)) for leaves in filtered_by[first]]
    else:
        distinct = list(dict.fromkeys(names))
        where = {pair: index for index, pair in enumerate(distinct)}
        decoded = [where[pair] for pair in names]
        prefixes = [query_prefix(tokenizer, s, p) for s, p in distinct]
        dead = None
    times = StepTimes()
    results = constrained_beam_search(
        model,
        candidates.trie,
        prefixes,
        k=settings.beam_size,
        dead_nodes=dead,
        queries_per_batch=settings.queries_per_batch,
        head_rows=settings.head_rows,
        precision=settings.precision,
        times=times,
    )

    ranks_by = {name: [filtered_rank(results[decoded[q]], gold_leaf, filtered[q]) for q, gold_leaf in enumerate(gold_leaves)]
                for name, filtered in filtered_by.items()}
    gold_nlls, tops, best_nlls = [], [], []
    for index, gold_leaf in enumerate(gold_leaves):
        ranked = results[decoded[index]]
        gold_nlls.append(next((nll for leaf, nll in ranked if leaf == gold_leaf), None))
        unfiltered = [(leaf, nll) for leaf, nll in ranked if leaf not in filtered_by[first][index]]
        best_nlls.append(unfiltered[0][1] if unfiltered else math.inf)
        tops.append([candidates.iris[candidates.trie.entities_of_leaf(leaf)[0]] for leaf, _ in unfiltered[:TOP_LISTED]])
    full = full_ranks(model, tokenizer, candidates, names, gold_leaves, filtered_by, ranks_by[first], best_nlls, settings) if settings.full_rank else {}

    by_filter = {
        name: {
            **ranking_metrics(ranks, settings.hits_at),
            "misses": sum(math.isinf(rank) for rank in ranks),
            "filter_hash": filter_hash(known_by_filter[name]),
            **full.get(name, {}).get("metrics", {}),
        }
        for name, ranks in ranks_by.items()
    }
    metrics: dict[str, float | int | str | bool | dict] = {
        **by_filter[first],
        "filter": first,
        "queries": len(rows),
        "decoded_prefixes": len(prefixes),
        "gold_not_candidate": sum(leaf is None for leaf in gold_leaves),
        "candidates": len(candidates.iris),
        "candidate_names": candidates.trie.leaf_count,
        "beam_size": settings.beam_size,
        "filter_in_search": settings.filter_in_search,
        "precision": settings.precision,
        "tie_policy": TIE_POLICY,
        "by_filter": by_filter,
        "seconds": time.perf_counter() - started,
    }
    per_query = pa.table(
        {
            "s_iri": [row[0] for row in rows],
            "p_iri": [row[1] for row in rows],
            "o_iri": [row[2] for row in rows],
            "rank": pa.array(ranks_by[first], pa.float64()),
            **{f"rank_{name}": pa.array(ranks, pa.float64()) for name, ranks in ranks_by.items()},
            "gold_nll": pa.array(gold_nlls, pa.float64()),
            "full_rank": pa.array(full.get(first, {}).get("ranks", [None] * len(rows)), pa.float64()),
            "top": pa.array(tops, pa.list_(pa.string())),
        }
    )
    return LinkPredictionResult(metrics, per_query, times)


def full_rank_queries(gold_is_candidate: Sequence[bool], cap: int) -> list[int]:
    """The queries given a full rank: the first ``cap`` (0: all) whose gold is a candidate; the same for every model."""
    return [q for q, known in enumerate(gold_is_candidate) if known][: cap or len(gold_is_candidate)]


def full_ranks(
    model: XLMRobertaForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    candidates: Candidates,
    names: Sequence[tuple[str, str]],
    gold_leaves: Sequence[int | None],
    filtered_by: dict[str, Sequence[set[int]]],
    beam_ranks: Sequence[float],
    best_nlls: Sequence[float],
    settings: EvalSettings,
) -> dict[str, dict]:
    """The true filtered rank of the gold among all candidates, for the first ``full_rank_max_queries`` queries.

    One search per query finds every name scoring at most the gold's NLL, whatever the filter; it
    is then ranked under each filter of ``filtered_by`` (filter -> per query, the leaves removed).
    Returns, per filter, ``ranks`` (one per query; None where not computed or unresolved) and
    ``metrics``: ``full_rank_<hits@k, mrr>`` over the resolved queries, their count, the
    unresolved count, and the search errors (gold better than the beam's best answer under the
    first filter, never reached by the beam: ``beam_ranks`` and ``best_nlls`` are that filter's).
    """
    chosen = full_rank_queries([leaf is not None for leaf in gold_leaves], settings.full_rank_max_queries)
    prefixes = [query_prefix(tokenizer, *names[q]) for q in chosen]
    gold_nll = [exhaustive_scores(model, candidates.trie, prefix, leaves=[gold_leaves[q]])[0][1] for q, prefix in zip(chosen, prefixes)]
    found = bounded_search(model, candidates.trie, prefixes, [nll + BOUND_SLACK for nll in gold_nll], settings.full_rank_max_hypotheses,
                           settings.queries_per_batch, settings.head_rows, settings.precision)
    errors = 0
    for q, ranked in zip(chosen, found):
        if ranked is not None:
            searched_gold = next((nll for leaf, nll in ranked if leaf == gold_leaves[q]), math.inf)
            errors += math.isinf(beam_ranks[q]) and searched_gold < best_nlls[q]
    out = {}
    for name, filtered in filtered_by.items():
        ranks: list[float | None] = [None] * len(names)
        for q, ranked in zip(chosen, found):
            if ranked is not None:
                ranks[q] = filtered_rank(ranked, gold_leaves[q], filtered[q])
        resolved = [rank for rank in ranks if rank is not None]
        metrics = {f"full_rank_{key}": value for key, value in ranking_metrics(resolved, settings.hits_at).items()}
        metrics.update({"full_rank_queries": len(resolved), "full_rank_unresolved": len(chosen) - len(resolved), "search_errors": errors,
                        "search_error_rate": errors / len(resolved) if resolved else 0.0})
        out[name] = {"ranks": ranks, "metrics": metrics}
    return out
