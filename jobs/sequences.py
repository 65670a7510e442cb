"""sequences: tokenize parsed facts and links into Prix-LM sequences; drop the over-long ones.

Reads ``parsed/<release>/{facts,links}`` and writes ``sequences/<release>/kind=<triple|link>/``
with the IRIs, ``prefix_ids`` (``<s> … [O]``), ``object_ids`` (object tokens + ``[EOS]``) and
``n_tokens`` (the whole sequence, final ``</s>`` included). Sequences of ``prepare.max_tokens``
or more are dropped and counted per kind and language (paper footnote 6).

The length rule per language. A fixed token count is not fair across scripts: names in CJK
scripts or long transliterations tokenize into many more XLM-R pieces than Latin ones, so the
paper's 30 drops 6.6% of the French sample and tens of percent of some chapters. The paper's rule
stays the default; ``prepare.max_tokens_by_lang`` sets a language's own limit (a link sequence
holds a name in each of its languages and takes the larger of their limits). The share dropped
per language and kind goes to ``stats.json`` (and Table 1), and a language losing more than
``prepare.warn_dropped_share`` is warned about in the task log and, through ``stats["warnings"]``,
in MLflow.

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
from prixlm_model.config import PrepareSettings, Settings

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


def length_limit(settings: PrepareSettings):
    """The token limit of each sequence: its language's (``max_tokens_by_lang``) or ``max_tokens``; a link takes the larger of its two."""
    from pyspark.sql import functions as F

    def limit(lang):
        if not settings.max_tokens_by_lang:
            return F.lit(settings.max_tokens)
        table = F.create_map(*[F.lit(x) for pair in sorted(settings.max_tokens_by_lang.items()) for x in pair])
        return F.coalesce(table[lang], F.lit(settings.max_tokens))

    return F.when(F.col("kind") == "link", F.greatest(limit(F.col("s_lang")), limit(F.col("o_lang")))).otherwise(limit(F.col("lang")))


def length_counts(sequences, limit) -> dict[str, dict[str, dict[str, int]]]:
    """``{kind: {lang: {"kept": n, "dropped": n}}}`` for the length filter (``limit``: a column)."""
    from pyspark.sql import functions as F

    rows = (
        sequences.groupBy("kind", "lang")
        .agg(F.sum((F.col("n_tokens") < limit).cast("long")).alias("kept"),
             F.sum((F.col("n_tokens") >= limit).cast("long")).alias("dropped"))
        .collect()
    )
    counts: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        counts.setdefault(row.kind, {})[row.lang] = {"kept": int(row.kept), "dropped": int(row.dropped)}
    return counts


def dropped_shares(counts: dict[str, dict[str, dict[str, int]]], settings: PrepareSettings) -> tuple[dict[str, dict], list[str]]:
    """Per language: its limit, the share dropped per kind and in all; and a warning per language above ``warn_dropped_share``.

    ``counts`` as ``length_counts`` gives it (a link counts under its subject's language).
    """
    shares: dict[str, dict] = {}
    for lang in sorted({lang for langs in counts.values() for lang in langs}):
        per_kind = {kind: langs[lang] for kind, langs in sorted(counts.items()) if lang in langs}
        kept = sum(c["kept"] for c in per_kind.values())
        dropped = sum(c["dropped"] for c in per_kind.values())
        shares[lang] = {
            "max_tokens": settings.max_tokens_by_lang.get(lang, settings.max_tokens),
            "dropped_share": round(dropped / max(kept + dropped, 1), 6),
            **{f"dropped_share_{kind}": round(c["dropped"] / max(c["kept"] + c["dropped"], 1), 6) for kind, c in per_kind.items()},
        }
    warnings = [
        f"length rule: {lang} loses {100 * info['dropped_share']:.2f}% of its sequences at >= {info['max_tokens']} tokens "
        f"(" + ", ".join(f"{key.rsplit('_', 1)[1]}s {100 * value:.2f}%" for key, value in info.items() if key.startswith("dropped_share_"))
        + f"), more than prepare.warn_dropped_share = {100 * settings.warn_dropped_share:g}%; consider prepare.max_tokens_by_lang"
        for lang, info in shares.items() if info["dropped_share"] > settings.warn_dropped_share
    ]
    return shares, warnings


def run(spark, settings: Settings, release: str) -> dict:
    """Tokenize ``parsed/<release>`` into ``sequences/<release>`` atomically; return the statistics."""
    from pyspark.sql import functions as F

    from prixlm_model.base_model import ensure_base_model

    parsed = require_complete(settings.paths.stage_dir("parsed", release), "parse")
    tokenizer_dir = str(ensure_base_model(settings))
    cfg = settings.prepare
    facts = spark.read.parquet(str(parsed / "facts"))
    links = spark.read.parquet(str(parsed / "links"))
    sequences = triple_sequences(facts, tokenizer_dir).unionByName(link_sequences(links, tokenizer_dir))
    sequences = sequences.withColumn("max_tokens", length_limit(cfg)).cache()
    try:
        counts = length_counts(sequences, F.col("max_tokens"))
        shares, warnings = dropped_shares(counts, cfg)
        for warning in warnings:
            log.warning(warning)
        with atomic_output(settings.paths.stage_dir("sequences", release)) as staging:
            kept = sequences.where(F.col("n_tokens") < F.col("max_tokens")).drop("max_tokens")
            kept.write.mode("overwrite").partitionBy("kind").parquet(str(staging))
            totals = {kind: {key: sum(c[key] for c in langs.values()) for key in ("kept", "dropped")} for kind, langs in counts.items()}
            dropped = sum(t["dropped"] for t in totals.values())
            seen = sum(t["kept"] + t["dropped"] for t in totals.values())
            stats = {
                "release": release,
                "max_tokens": cfg.max_tokens,
                "max_tokens_by_lang": cfg.max_tokens_by_lang,
                "base_model": settings.model.base,
                "by_kind_and_lang": counts,
                "dropped_by_lang": shares,
                "warnings": warnings,
                "totals": totals,
                "dropped_by_length": dropped,
                "dropped_share": round(dropped / max(seen, 1), 6),
                "upstream": {"parse": read_stats(parsed).get("lines_read")},
            }
            write_stats(staging, stats)
    finally:
        sequences.unpersist()
    log.info("sequences %s: %s kept, %d dropped (%.2f%%) at >= %d tokens (per language: %s)", release,
             {k: v["kept"] for k, v in totals.items()}, dropped, 100 * stats["dropped_share"], cfg.max_tokens, cfg.max_tokens_by_lang or "none")
    return stats


def main(argv: list[str] | None = None) -> None:
    spark_stage_main(argv, __doc__, "sequences", "parsed", run, summary=lambda stats: {"dropped_by_length": stats["dropped_by_length"], "totals": stats["totals"]})


if __name__ == "__main__":
    main()
