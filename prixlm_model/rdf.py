"""Proposed facts as RDF: N-Triples, a scores-and-provenance sidecar in N-Quads, and a triple store.

Why these shapes: the ``.nt`` holds only the new facts with the chapter's IRIs, so that a KB
engineer loads it next to the dump as it is. Scores and provenance go to a sidecar, one named
graph per construct run and language: each fact is an ``rdf:Statement`` (plain reification, which
every RDF tool reads) with its log-probability, probability, rank, status and source, and
``prov:wasGeneratedBy`` the run, which names the model, its training run and the release. A
SPARQL query joins the two: the facts of the default graph with their statements' scores.

pyoxigraph writes both files (its serializer escapes what N-Triples needs and keeps non-ASCII IRIs
and percent-escapes as they are) and is the embedded store they are loaded into. An IRI that is not
a valid RFC 3987 IRI (a space, a quote) cannot be written: its fact is skipped and counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyoxigraph as ox

RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
XSD = "http://www.w3.org/2001/XMLSchema#"
PROV = "http://www.w3.org/ns/prov#"
VOCAB = "urn:prixlm:vocab:"  # our properties: probability, logprob, rank, status, source, model, ...

SCORED_FACTS = f"""
PREFIX rdf: <{RDF}>
PREFIX px: <{VOCAB}>
SELECT ?s ?p ?o ?probability ?logprob ?status ?source ?graph WHERE {{
  ?s ?p ?o .
  GRAPH ?graph {{ ?statement rdf:subject ?s ; rdf:predicate ?p ; rdf:object ?o ;
                  px:probability ?probability ; px:logprob ?logprob ; px:status ?status ; px:source ?source }}
}} ORDER BY DESC(?probability) ?s ?p ?o
"""


def run_graph(release: str, lang: str, model: str, run_id: str | None) -> str:
    """The named graph of one construct run for one language (stable across re-runs of that run)."""
    return f"urn:prixlm:construct:{release}:{lang}:{model}" + (f":{run_id}" if run_id else "")


def valid_iri(iri: str) -> bool:
    try:
        ox.NamedNode(iri)
    except ValueError:
        return False
    return True


def statement_iri(s: str, p: str, o: str) -> str:
    return "urn:prixlm:fact:" + hashlib.sha256(f"{s}\t{p}\t{o}".encode()).hexdigest()[:32]


def _double(value: float) -> ox.Literal:
    return ox.Literal(repr(float(value)), datatype=ox.NamedNode(f"{XSD}double"))


def write_facts(rows: list[dict[str, Any]], nt_path: Path, nq_path: Path, graph: str, run: Mapping[str, str]) -> int:
    """Write ``rows`` (``s_iri, p_iri, o_iri, logprob, probability, rank, status, source``) to
    ``nt_path`` and their scores to ``nq_path`` in ``graph``; ``run`` (name -> text) describes the
    run. Rows must have valid IRIs (``valid_iri``). Returns the number of facts written."""
    triples = [ox.Triple(ox.NamedNode(r["s_iri"]), ox.NamedNode(r["p_iri"]), ox.NamedNode(r["o_iri"])) for r in rows]
    ox.serialize(triples, str(nt_path), ox.RdfFormat.N_TRIPLES)
    ox.serialize(list(_score_quads(rows, ox.NamedNode(graph), run)), str(nq_path), ox.RdfFormat.N_QUADS)
    return len(triples)


def _score_quads(rows: Iterable[dict[str, Any]], graph: ox.NamedNode, run: Mapping[str, str]) -> Iterable[ox.Quad]:
    def px(name: str) -> ox.NamedNode:
        return ox.NamedNode(VOCAB + name)

    yield ox.Quad(graph, ox.NamedNode(f"{RDF}type"), ox.NamedNode(f"{PROV}Activity"), graph)
    for name, value in run.items():
        yield ox.Quad(graph, px(name), ox.Literal(str(value)), graph)
    for row in rows:
        statement = ox.NamedNode(statement_iri(row["s_iri"], row["p_iri"], row["o_iri"]))
        values = {
            f"{RDF}type": ox.NamedNode(f"{RDF}Statement"),
            f"{RDF}subject": ox.NamedNode(row["s_iri"]),
            f"{RDF}predicate": ox.NamedNode(row["p_iri"]),
            f"{RDF}object": ox.NamedNode(row["o_iri"]),
            VOCAB + "logprob": _double(row["logprob"]),
            VOCAB + "probability": _double(row["probability"]),
            VOCAB + "rank": ox.Literal(str(int(row["rank"])), datatype=ox.NamedNode(f"{XSD}integer")),
            VOCAB + "status": ox.Literal(row["status"]),
            VOCAB + "source": ox.Literal(row["source"]),
            f"{PROV}wasGeneratedBy": graph,
        }
        for predicate, value in values.items():
            yield ox.Quad(statement, ox.NamedNode(predicate), value, graph)


def load_store(folder: Path | None, files: Iterable[Path]) -> ox.Store:
    """A store (on disk in ``folder``, else in memory) holding ``files``: ``.nt`` into the default
    graph, ``.nq`` into their named graphs."""
    store = ox.Store(str(folder)) if folder is not None else ox.Store()
    for path in files:
        fmt = ox.RdfFormat.N_QUADS if path.suffix == ".nq" else ox.RdfFormat.N_TRIPLES
        store.bulk_load(path=str(path), format=fmt, to_graph=None if fmt == ox.RdfFormat.N_QUADS else ox.DefaultGraph())
    store.flush()
    return store


def scored_facts(store: ox.Store) -> list[dict[str, Any]]:
    """Every fact of the default graph with its scores from the sidecar graphs (``SCORED_FACTS``), best first."""
    rows = []
    for solution in store.query(SCORED_FACTS):
        rows.append({
            "s_iri": solution["s"].value, "p_iri": solution["p"].value, "o_iri": solution["o"].value,
            "probability": float(solution["probability"].value), "logprob": float(solution["logprob"].value),
            "status": solution["status"].value, "source": solution["source"].value, "graph": solution["graph"].value,
        })
    return rows
