"""The parse's outputs, built from the lines ``classify_lines`` kept: facts, links and rejects.

Input: the classified lines as written once by the parse's scan (``kind`` = fact, link, name or
reject, see ``parse_classify``). Nothing here reads a raw line again.

Names. An entity's name is its ``rdfs:label`` whose language tag is the entity's chapter (the
smallest if there are several), else its local name percent-decoded with ``_`` -> space. Two IRIs
may share a name (``Paris``): the IRI stays the key everywhere; names are only surface text.
A relation's name is the ``rdfs:label`` of a ``http://dbpedia.org/ontology/`` property in the
fact's language from ``parse.ontology`` (read once on the driver with rdflib), else its local name
(after the last ``/`` or ``#``) percent-decoded with ``_`` -> space. Entity names are broadcast to
the fact and link lookups while there are at most ``parse.broadcast_names_max`` of them: the facts
are then shuffled once (deduplication), not once per lookup; above it the lookups are shuffle
joins, so that no executor holds more than its share of the names whatever the release's size.
"""

from __future__ import annotations

import logging
import lzma
from functools import lru_cache
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.parse_grammar import DBO, UNPARSED, diagnose
from jobs.parse_iri import local_name

log = logging.getLogger(__name__)

FACT_COLUMNS = ("s_iri", "p_iri", "o_iri", "s", "p", "o", "lang")
LINK_COLUMNS = ("s_iri", "s_lang", "o_iri", "o_lang", "s", "o")
REJECT_COLUMNS = ("file", "line_no", "line", "reason")


def entity_names(classified: DataFrame) -> DataFrame:
    """``iri, name``: the label in the entity's own chapter language (the smallest if several)."""
    return classified.where(F.col("kind") == "name").groupBy(F.col("s_iri").alias("iri")).agg(F.min("label").alias("name"))


def _named(frame: DataFrame, names: DataFrame, iri: str, out: str, broadcast: bool) -> DataFrame:
    lookup = names.select(F.col("iri").alias(iri), F.col("name").alias(f"_{out}"))
    return frame.join(F.broadcast(lookup) if broadcast else lookup, iri, "left").withColumn(
        out, F.coalesce(F.col(f"_{out}"), local_name(F.col(iri), resource=True))
    ).drop(f"_{out}")


def build_facts(classified: DataFrame, names: DataFrame, relation_labels: DataFrame, broadcast_names: bool = False) -> DataFrame:
    """Distinct facts with surface names: ``s_iri, p_iri, o_iri, s, p, o, lang``."""
    facts = classified.where(F.col("kind") == "fact").select("s_iri", "p_iri", "o_iri", F.col("s_lang").alias("lang"))
    facts = facts.dropDuplicates(["s_iri", "p_iri", "o_iri"])
    facts = _named(_named(facts, names, "s_iri", "s", broadcast_names), names, "o_iri", "o", broadcast_names)
    facts = facts.join(F.broadcast(relation_labels), ["p_iri", "lang"], "left")
    facts = facts.withColumn("p", F.coalesce(F.col("p_label"), local_name(F.col("p_iri"))))
    return facts.select(*FACT_COLUMNS)


def build_links(classified: DataFrame, names: DataFrame, broadcast_names: bool = False) -> DataFrame:
    """Both directions of every inter-chapter sameAs, distinct: ``s_iri, s_lang, o_iri, o_lang, s, o``.

    Also ``stated``: whether the pair was itself a statement (not only the reverse of one); its sum
    is the number of distinct link statements, so no separate distinct count is needed.
    """
    links = classified.where(F.col("kind") == "link").select("s_iri", "s_lang", "o_iri", "o_lang", F.lit(1).alias("stated"))
    reverse = links.select(
        F.col("o_iri").alias("s_iri"), F.col("o_lang").alias("s_lang"), F.col("s_iri").alias("o_iri"), F.col("s_lang").alias("o_lang"),
        F.lit(0).alias("stated"),
    )
    links = links.unionByName(reverse).groupBy("s_iri", "o_iri").agg(
        F.first("s_lang").alias("s_lang"), F.first("o_lang").alias("o_lang"), F.max("stated").alias("stated")
    )
    named = _named(_named(links, names, "s_iri", "s", broadcast_names), names, "o_iri", "o", broadcast_names)
    return named.select(*LINK_COLUMNS, "stated")


def build_rejects(classified: DataFrame, splits: DataFrame) -> DataFrame:
    """``file, line_no, line, reason``; ``splits`` has ``file_path, block_start, before, file`` (``before``: lines of earlier splits)."""
    rejects = classified.where(F.col("kind") == "reject").join(F.broadcast(splits), ["file_path", "block_start"])
    reason = F.when(F.col("reason") == UNPARSED, diagnose(F.col("raw").cast("string"), F.col("quads"))).otherwise(F.col("reason"))
    line_no = F.col("before") + F.col("pos") + 1
    return rejects.select("file", line_no.cast("long").alias("line_no"), F.col("raw").alias("line"), reason.alias("reason"))


@lru_cache(maxsize=4)
def _ontology_rows(path: str, mtime: float) -> tuple[tuple[str, str, str], ...]:
    """``(property IRI, language, label)`` of the ontology's ``dbo:`` properties, one per language; cached per file version."""
    import rdflib
    from rdflib.namespace import RDFS

    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    graph = rdflib.Graph()
    graph.parse(data=data, format="xml")
    rows = set()
    for subject, label in graph.subject_objects(RDFS.label):
        if isinstance(subject, rdflib.URIRef) and str(subject).startswith(DBO) and getattr(label, "language", None):
            rows.add((str(subject), label.language.lower().replace("-", "_"), str(label).replace("_", " ")))
    # One label per (property, language): the smallest, so that the choice is stable.
    best: dict[tuple[str, str], str] = {}
    for iri, lang, text in sorted(rows):
        best.setdefault((iri, lang), text)
    return tuple((iri, lang, text) for (iri, lang), text in sorted(best.items()))


def ontology_labels(ontology: Path) -> dict[tuple[str, str], str]:
    """``(dbo: property IRI, lang) -> rdfs:label``, one per pair; empty, with a warning, without the file."""
    if not ontology.exists():
        log.warning("ontology %s not found: dbo: relations are named by their local name", ontology)
        return {}
    return {(iri, lang): text for iri, lang, text in _ontology_rows(str(ontology), ontology.stat().st_mtime)}


def relation_labels(spark: SparkSession, ontology: Path) -> DataFrame:
    """``p_iri, lang, p_label`` for the ontology's properties (read once per driver process)."""
    schema = T.StructType([T.StructField(n, T.StringType(), False) for n in ("p_iri", "lang", "p_label")])
    rows = [(iri, lang, text) for (iri, lang), text in ontology_labels(ontology).items()]
    return spark.createDataFrame(rows, schema)


