"""Candidate queries for new facts of a language's KB, and the objects Prix-LM proposes for them.

Two kinds of query ``(s, p, ?)`` for a language L (paper, Figure 1: one KB fills another's gaps):

- monolingual: a ``(s, p)`` pair L's KB already has; the model may know more objects for it;
- transferred: ``s`` in L is linked to ``s'`` in L', and L' states ``(s', p', o')`` with ``p'``
  mapped to a relation ``p`` of L. ``p'`` maps by the ontology when it is a ``dbo:`` property
  that L uses too (every chapter shares the ontology's IRIs), else by the relation of L most
  often seen between the same two (linked) entities: ``(s', p', o')`` and ``(s, p, o)`` with
  ``s'``~``s`` and ``o'``~``o``, at least ``min_alignments`` times and for at least
  ``min_share`` of the relations seen between those entities. A fact whose ``p'`` maps to
  nothing is skipped and counted; one whose linked object already completes ``(s, p)`` in L is
  known and skipped. When ``o'`` is linked into L, the query carries that object as ``expected``
  so that the model's answer can be checked against it. A pair that is both kinds is kept once,
  as transferred (the other language's evidence is the more informative provenance).

Objects come from constrained beam search over L's entity trie (``decoding``); an object already
known for ``(s, p)`` is filtered inside the search and never proposed. A trie leaf holds every
entity with that name; a leaf holding a known object is filtered whole (the model cannot tell
homonyms apart), otherwise the proposal is the leaf's first entity in candidate order.

Tables (pyarrow): facts ``s_iri, p_iri, o_iri, s, p, o``; links ``s_iri, s_lang, o_iri, o_lang,
s, o`` (both directions), as ``parsed/<release>/`` holds them.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, XLMRobertaForCausalLM

    from prixlm_model.evaluation import Candidates

MONOLINGUAL = "monolingual"
DBO = "http://dbpedia.org/ontology/"
Pair = tuple[str, str]  # (s_iri, p_iri)


def transferred_from(lang: str) -> str:
    return f"transferred-from-{lang}"


@dataclass(frozen=True)
class Query:
    """One ``(s, p, ?)`` query of a language, with where it came from."""

    s_iri: str
    p_iri: str
    s: str  # names in the query's language: what the model reads
    p: str
    source: str = MONOLINGUAL
    expected: frozenset[str] = frozenset()  # objects in this language linked from the other language's objects


@dataclass(frozen=True)
class Proposal:
    """An object proposed for ``queries[query]``; ``rank`` counts from 1 among the query's proposals."""

    query: int
    o_iri: str
    logprob: float
    rank: int


class LanguageKB:
    """One language's facts, indexed for the lookups candidate generation needs."""

    def __init__(self, lang: str, facts: pa.Table) -> None:
        self.lang = lang
        self.objects: dict[Pair, set[str]] = defaultdict(set)
        self.names: dict[str, str] = {}
        self.relation_names: dict[str, str] = {}
        self.relations_between: dict[Pair, set[str]] = defaultdict(set)  # (s_iri, o_iri) -> relations
        columns = (facts.column(name).to_pylist() for name in ("s_iri", "p_iri", "o_iri", "s", "p", "o"))
        for s_iri, p_iri, o_iri, s, p, o in zip(*columns):
            self.objects[(s_iri, p_iri)].add(o_iri)
            self.relations_between[(s_iri, o_iri)].add(p_iri)
            self.names.setdefault(s_iri, s)
            self.names.setdefault(o_iri, o)
            self.relation_names.setdefault(p_iri, p)

    def facts(self) -> Iterable[tuple[str, str, str]]:
        for (s_iri, p_iri), objects in self.objects.items():
            for o_iri in objects:
                yield s_iri, p_iri, o_iri


def counterparts(links: pa.Table, from_lang: str, to_lang: str) -> tuple[dict[str, set[str]], dict[str, str]]:
    """Entities of ``from_lang`` -> their linked entities in ``to_lang``, and the latter's names."""
    linked: dict[str, set[str]] = defaultdict(set)
    names: dict[str, str] = {}
    columns = (links.column(name).to_pylist() for name in ("s_iri", "s_lang", "o_iri", "o_lang", "o"))
    for s_iri, s_lang, o_iri, o_lang, o in zip(*columns):
        if s_lang == from_lang and o_lang == to_lang:
            linked[s_iri].add(o_iri)
            names.setdefault(o_iri, o)
    return linked, names


def relation_mapping(target: LanguageKB, source: LanguageKB, to_target: Mapping[str, set[str]],
                     min_alignments: int, min_share: float = 0.0) -> dict[str, tuple[str, str]]:
    """Relations of ``source`` -> (relation of ``target``, how: ``ontology`` | ``aligned``).

    An aligned mapping needs ``min_alignments`` aligned facts and ``min_share`` of all the target
    relations seen between the aligned ends: a relation that only sometimes co-occurs (a "note"
    beside a "writer") is not a translation of it.
    """
    aligned: dict[str, Counter[str]] = defaultdict(Counter)
    for s_src, p_src, o_src in source.facts():
        for s in to_target.get(s_src, ()):
            for o in to_target.get(o_src, ()):
                aligned[p_src].update(target.relations_between.get((s, o), ()))
    mapping: dict[str, tuple[str, str]] = {}
    for p_src in source.relation_names:
        if p_src.startswith(DBO) and p_src in target.relation_names:
            mapping[p_src] = (p_src, "ontology")
        elif aligned[p_src]:
            # Most aligned facts first, then the IRI, so that a tie is broken the same way on every run.
            p, count = min(aligned[p_src].items(), key=lambda item: (-item[1], item[0]))
            if count >= min_alignments and count >= min_share * sum(aligned[p_src].values()):
                mapping[p_src] = (p, "aligned")
    return mapping


def transferred_queries(target: LanguageKB, source: LanguageKB, links: pa.Table, min_alignments: int,
                        min_share: float = 0.0) -> tuple[dict[Pair, Query], dict[str, int]]:
    """Queries of ``target`` carried over from ``source``'s facts about linked subjects, and their counts."""
    to_target, linked_names = counterparts(links, source.lang, target.lang)
    mapping = relation_mapping(target, source, to_target, min_alignments, min_share)
    counts = Counter({"mapped_ontology": sum(how == "ontology" for _, how in mapping.values()),
                      "mapped_aligned": sum(how == "aligned" for _, how in mapping.values()),
                      "relations": len(source.relation_names)})
    expected: dict[Pair, set[str]] = defaultdict(set)
    for s_src, p_src, o_src in source.facts():
        subjects = to_target.get(s_src)
        if not subjects:
            continue
        counts["linked_facts"] += 1
        if p_src not in mapping:
            counts["unmapped_facts"] += 1
            continue
        p = mapping[p_src][0]
        objects = to_target.get(o_src, set())
        for s in subjects:
            if objects & target.objects.get((s, p), set()):
                counts["already_known"] += 1
                continue
            counts["candidate_facts"] += 1
            expected[(s, p)].update(objects)
    counts["unmapped_relations"] = len(source.relation_names) - len(mapping)
    queries = {
        (s, p): Query(s, p, target.names.get(s) or linked_names[s], target.relation_names[p], transferred_from(source.lang), frozenset(objects))
        for (s, p), objects in sorted(expected.items())
    }
    return queries, dict(counts)


def candidate_queries(target: LanguageKB, others: Sequence[LanguageKB], links: pa.Table, min_alignments: int,
                      min_share: float = 0.0) -> tuple[list[Query], dict[str, dict[str, int]]]:
    """Every query of ``target``: transferred from each other language (first language wins a shared
    pair), then its own ``(s, p)`` pairs not already among them. Counts per source."""
    queries: dict[Pair, Query] = {}
    counts: dict[str, dict[str, int]] = {}
    for source in sorted(others, key=lambda kb: kb.lang):
        carried, counts[transferred_from(source.lang)] = transferred_queries(target, source, links, min_alignments, min_share)
        for pair, query in carried.items():
            queries.setdefault(pair, query)
    monolingual = 0
    for s_iri, p_iri in sorted(target.objects):
        if (s_iri, p_iri) not in queries:
            queries[(s_iri, p_iri)] = Query(s_iri, p_iri, target.names[s_iri], target.relation_names[p_iri])
            monolingual += 1
    counts[MONOLINGUAL] = {"candidate_pairs": monolingual}
    return list(queries.values()), counts


def hash_sample(queries: Sequence[Query], cap: int) -> list[Query]:
    """At most ``cap`` queries (0: all) per source, chosen by a hash of ``(s, p)``: the same sample
    whatever the input order, and nested (a larger cap keeps a smaller cap's queries)."""
    by_source: dict[str, list[Query]] = defaultdict(list)
    for query in queries:
        by_source[query.source].append(query)
    chosen: list[Query] = []
    for source in sorted(by_source):
        ordered = sorted(by_source[source], key=lambda q: hashlib.sha1(f"{q.s_iri}\t{q.p_iri}".encode()).digest())
        chosen += ordered[:cap] if cap else ordered
    return chosen


def held_out_queries(held_out: pa.Table, cap: int) -> list[Query]:
    """The distinct ``(s, p)`` of held-out triples (``s_iri, p_iri, s, p``), hash-sampled to ``cap``."""
    columns = (held_out.column(name).to_pylist() for name in ("s_iri", "p_iri", "s", "p"))
    distinct = {(s_iri, p_iri): Query(s_iri, p_iri, s, p) for s_iri, p_iri, s, p in zip(*columns)}
    return hash_sample(list(distinct.values()), cap)


@dataclass
class Decoding:
    """What ``propose`` needs to decode: the model, its tokenizer, the language's candidates and the search knobs."""

    model: XLMRobertaForCausalLM
    tokenizer: PreTrainedTokenizerFast
    candidates: Candidates
    beam_size: int
    objects_per_query: int
    queries_per_batch: int = 8
    head_rows: int = 128
    precision: str = "fp32"
    seconds: float = 0.0  # spent in propose, summed over calls


def propose(decoding: Decoding, queries: Sequence[Query], excluded: Mapping[Pair, set[str]]) -> list[Proposal]:
    """The ``objects_per_query`` best objects of each query that are not in ``excluded[(s, p)]``.

    Excluded objects are removed from the trie for that query (they take no beam place) and
    from the ranked list; the subject itself is never its own object.
    """
    from prixlm_model.decoding import constrained_beam_search
    from prixlm_model.tokenization import query_prefix

    started = time.perf_counter()
    candidates = decoding.candidates
    trie = candidates.trie
    banned: list[set[int]] = []
    for query in queries:
        leaves = {candidates.leaf_of(o) for o in excluded.get((query.s_iri, query.p_iri), ())}
        banned.append({leaf for leaf in leaves if leaf is not None})
    results = constrained_beam_search(
        decoding.model, trie, [query_prefix(decoding.tokenizer, q.s, q.p) for q in queries], k=decoding.beam_size,
        dead_nodes=[trie.dead_nodes(sorted(leaves)) for leaves in banned], queries_per_batch=decoding.queries_per_batch,
        head_rows=decoding.head_rows, precision=decoding.precision,
    )
    proposals: list[Proposal] = []
    for index, (query, ranked) in enumerate(zip(queries, results)):
        rank = 0
        for leaf, nll in ranked:
            if rank == decoding.objects_per_query:
                break
            o_iri = candidates.iris[trie.entities_of_leaf(leaf)[0]]
            if leaf in banned[index] or o_iri == query.s_iri:
                continue
            rank += 1
            proposals.append(Proposal(index, o_iri, -nll, rank))
    decoding.seconds += time.perf_counter() - started
    return proposals
