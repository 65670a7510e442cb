"""sequences: tokenize parsed facts and links into Prix-LM sequences; drop the over-long ones.

Reads ``parsed/<release>/{facts,links}`` and writes ``sequences/<release>/kind=<triple|link>/``
with the IRIs, ``prefix_ids`` (``<s> … [O]``), ``object_ids`` (object tokens + ``[EOS]``) and
``n_tokens`` (the whole sequence, final ``</s>`` included). Sequences of ``prepare.max_tokens``
or more are dropped and counted per kind and language (paper footnote 6).

Tokenization runs in ``mapInArrow`` with the fast tokenizer: a whole Arrow batch per call, and
the tokenizer cached in ``prixlm_model.tokenization`` (an importable module), so each Python
worker loads it once instead of unpickling it with every task.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Iterator

import pyarrow as pa

from jobs.stage import atomic_output, read_stats, require_complete, spark_stage_main, write_stats
from prixlm_model.config import Settings

log = logging.getLogger(__name__)

OWL_SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"
SEQUENCE_SCHEMA = (
    "kind string, lang string, s_lang string, o_lang string, s_iri string, p_iri string, o_iri string, "
    "s string, p string, o string, prefix_ids array<int>, object_ids array<int>, n_tokens int"
)
_ARROW_IDS = pa.list_(pa.int32())


def encode_batches(batches: Iterator[pa.RecordBatch], tokenizer_dir: str, kind: str) -> Iterator[pa.RecordBatch]:
    """Encode Arrow batches of facts (kind ``triple``) or links (kind ``link``) into sequences."""
    from prixlm_model.tokenization import encode_links, encode_triples, load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    for batch in batches:
        rows = batch.to_pydict()
        if kind == "triple":
            encoded = encode_triples(tokenizer, rows["s"], rows["p"], rows["o"])
        else:
            encoded = encode_links(tokenizer, rows["s"], rows["s_lang"], rows["o_lang"], rows["o"])
        yield pa.RecordBatch.from_pydict(
            {
                "kind": [kind] * batch.num_rows,
                "lang": rows["lang"],
                "s_lang": rows["s_lang"],
                "o_lang": rows["o_lang"],
                "s_iri": rows["s_iri"],
                "p_iri": rows["p_iri"],
                "o_iri": rows["o_iri"],
                "s": rows["s"],
                "p": rows["p"],
                "o": rows["o"],
                "prefix_ids": pa.array([e.prefix_ids for e in encoded], _ARROW_IDS),
                "object_ids": pa.array([e.object_ids for e in encoded], _ARROW_IDS),
                "n_tokens": pa.array([e.n_tokens for e in encoded], pa.int32()),
            }
        )


def triple_sequences(facts, tokenizer_dir: str):
    """Facts ``(s_iri, p_iri, o_iri, s, p, o, lang)`` → triple sequences."""
    from pyspark.sql import functions as F

    shaped = facts.select("s_iri", "p_iri", "o_iri", "s", "p", "o", "lang", F.col("lang").alias("s_lang"), F.col("lang").alias("o_lang"))
    return shaped.mapInArrow(partial(encode_batches, tokenizer_dir=tokenizer_dir, kind="triple"), SEQUENCE_SCHEMA)


def link_sequences(links, tokenizer_dir: str):
    """Links ``(s_iri, s_lang, o_iri, o_lang, s, o)`` → link sequences (``[P] [s_lang] [o_lang]``)."""
    from pyspark.sql import functions as F

    shaped = links.select(
        "s_iri", F.lit(OWL_SAME_AS).alias("p_iri"), "o_iri", "s", F.lit("").alias("p"), "o",
        F.col("s_lang").alias("lang"), "s_lang", "o_lang",
    )
    return shaped.mapInArrow(partial(encode_batches, tokenizer_dir=tokenizer_dir, kind="link"), SEQUENCE_SCHEMA)


def length_counts(sequences, max_tokens: int) -> dict[str, dict[str, dict[str, int]]]:
    """``{kind: {lang: {"kept": n, "dropped": n}}}`` for the length filter."""
    from pyspark.sql import functions as F

    rows = (
        sequences.groupBy("kind", "lang")
        .agg(F.sum((F.col("n_tokens") < max_tokens).cast("long")).alias("kept"),
             F.sum((F.col("n_tokens") >= max_tokens).cast("long")).alias("dropped"))
        .collect()
    )
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        counts.setdefault(row.kind, {})[row.lang] = {"kept": int(row.kept), "dropped": int(row.dropped)}
    return counts


def run(spark, settings: Settings, release: str) -> dict:
    """Tokenize ``parsed/<release>`` into ``sequences/<release>`` atomically; return the statistics."""
    from prixlm_model.base_model import ensure_base_model

    parsed = require_complete(settings.paths.stage_dir("parsed", release), "parse")
    tokenizer_dir = str(ensure_base_model(settings))
    max_tokens = settings.prepare.max_tokens
    facts = spark.read.parquet(str(parsed / "facts"))
    links = spark.read.parquet(str(parsed / "links"))
    sequences = triple_sequences(facts, tokenizer_dir).unionByName(link_sequences(links, tokenizer_dir)).cache()
    try:
        counts = length_counts(sequences, max_tokens)
        with atomic_output(settings.paths.stage_dir("sequences", release)) as staging:
            sequences.where(sequences.n_tokens < max_tokens).write.mode("overwrite").partitionBy("kind").parquet(str(staging))
            totals = {kind: {key: sum(c[key] for c in langs.values()) for key in ("kept", "dropped")} for kind, langs in counts.items()}
            dropped = sum(t["dropped"] for t in totals.values())
            seen = sum(t["kept"] + t["dropped"] for t in totals.values())
            stats = {
                "release": release,
                "max_tokens": max_tokens,
                "base_model": settings.model.base,
                "by_kind_and_lang": counts,
                "totals": totals,
                "dropped_by_length": dropped,
                "dropped_share": round(dropped / max(seen, 1), 6),
                "upstream": {"parse": read_stats(parsed).get("lines_read")},
            }
            write_stats(staging, stats)
    finally:
        sequences.unpersist()
    log.info("sequences %s: %s kept, %d dropped (%.2f%%) at >= %d tokens", release,
             {k: v["kept"] for k, v in totals.items()}, dropped, 100 * stats["dropped_share"], max_tokens)
    return stats


def main(argv: list[str] | None = None) -> None:
    spark_stage_main(argv, __doc__, "sequences", "parsed", run, summary=lambda stats: {"dropped_by_length": stats["dropped_by_length"], "totals": stats["totals"]})


if __name__ == "__main__":
    main()
