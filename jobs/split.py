"""split: the link-prediction split (paper §3.2): 10% of each evaluated language's triples for test.

Reads ``sequences/<release>`` (and ``parsed/<release>/facts`` for the filter and candidate sets)
and writes ``split/<release>/``:

- ``test/lang=<xx>/`` and ``valid/``: held-out triples; ``train/kind=<triple|link>/``: the rest,
  plus every link not held out for entity linking (``links_test/``);
- ``known/``: every true ``(lang, s_iri, p_iri, o_iri)``, for the filtered setting. It holds all
  parsed facts, not only train, valid and test: a true fact dropped for its length is still true
  and must not count against the model;
- ``entities/lang=<xx>/``: the candidate objects (``iri``, ``name``) of each language;
- ``stats.json``, ``stats.csv`` and ``stats.md``: the paper's Table 1 columns per language, with
  the length rule's limit and the share it dropped of the language's triples and links (and the
  sequences stage's warnings about it).

Which triple is held out depends only on (seed, release, IRIs), so a re-run gives the same split.
Inverse leaks: a held-out ``(e1, r1, e2)`` is dropped when any ``(e2, r2, e1)`` is in train.
Link pairs are held out together in both directions.
"""

from __future__ import annotations

import csv
import io
import logging

from jobs.stage import atomic_output, read_stats, require_complete, spark_stage_main, write_stats
from prixlm_model.config import Settings

log = logging.getLogger(__name__)

HASH_BUCKETS = 1_000_000


def unit_hash(seed: int, release: str, *columns):
    """A number in [0, 1) fixed by (seed, release, columns): a deterministic coin per row."""
    from pyspark.sql import functions as F

    return F.pmod(F.xxhash64(F.lit(seed), F.lit(release), *columns), F.lit(HASH_BUCKETS)) / HASH_BUCKETS


def assign_triples(triples, eval_languages: list[str], seed: int, release: str, test_share: float, valid_share: float):
    """Add ``split`` ∈ {test, valid, train}: test and valid only for the evaluated languages."""
    from pyspark.sql import functions as F

    coin = unit_hash(seed, release, F.col("s_iri"), F.col("p_iri"), F.col("o_iri"))
    evaluated = F.col("lang").isin(eval_languages)
    valid_upper = test_share + valid_share * (1 - test_share)
    split = (
        F.when(evaluated & (coin < test_share), "test")
        .when(evaluated & (coin < valid_upper), "valid")
        .otherwise("train")
    )
    return triples.withColumn("split", split)


def drop_inverse_leaks(assigned):
    """Mark held-out ``(e1, r1, e2)`` as ``leak`` when some ``(e2, r2, e1)`` of its language is in train."""
    from pyspark.sql import functions as F

    inverse_in_train = (
        assigned.where(F.col("split") == "train")
        .select(F.col("lang").alias("_lang"), F.col("o_iri").alias("_s"), F.col("s_iri").alias("_o"))
        .distinct()
        .withColumn("_leak", F.lit(True))
    )
    joined = assigned.join(
        inverse_in_train,
        (assigned.lang == inverse_in_train._lang) & (assigned.s_iri == inverse_in_train._s) & (assigned.o_iri == inverse_in_train._o),
        "left",
    )
    held_out = F.col("split").isin("test", "valid")
    return joined.withColumn("split", F.when(held_out & F.col("_leak").isNotNull(), "leak").otherwise(F.col("split"))).drop(
        "_lang", "_s", "_o", "_leak"
    )


def assign_links(links, seed: int, release: str, test_share: float):
    """Add ``split`` ∈ {test, train} per unordered link pair, so both directions go together."""
    from pyspark.sql import functions as F

    coin = unit_hash(seed, release, F.least("s_iri", "o_iri"), F.greatest("s_iri", "o_iri"))
    return links.withColumn("split", F.when(coin < test_share, "test").otherwise("train"))


def entity_candidates(facts):
    """Every entity of each language's facts, subject or object, with its surface name."""
    from pyspark.sql import functions as F

    ends = facts.select("lang", F.col("s_iri").alias("iri"), F.col("s").alias("name")).unionByName(
        facts.select("lang", F.col("o_iri").alias("iri"), F.col("o").alias("name"))
    )
    return ends.groupBy("lang", "iri").agg(F.min("name").alias("name"))


def table_one(counts: dict, sequences_stats: dict, parse_stats: dict | None, languages: list[str]) -> list[dict]:
    """Rows of the paper's Table 1 for each language."""
    rows = []
    for lang in languages:
        c = counts.get(lang, {})
        shares = sequences_stats.get("dropped_by_lang", {}).get(lang, {})
        rows.append(
            {
                "lang": lang,
                "entities": c.get("entities", 0),
                "triples": c.get("triples", 0),
                "links": c.get("links", 0),
                "train": c.get("train", 0),
                "valid": c.get("valid", 0),
                "test": c.get("test", 0),
                "leaks_removed": c.get("leak", 0),
                "dropped_by_length": sum(
                    kinds.get(lang, {}).get("dropped", 0) for kinds in sequences_stats["by_kind_and_lang"].values()
                ),
                # The length rule's limit and the share it dropped of this language's triples and links.
                "max_tokens": shares.get("max_tokens", sequences_stats["max_tokens"]),
                "dropped_share_triple": shares.get("dropped_share_triple", 0.0),
                "dropped_share_link": shares.get("dropped_share_link", 0.0),
                "rejects": (parse_stats or {}).get("rejects", 0),
            }
        )
    return rows


def as_markdown(rows: list[dict]) -> str:
    header = list(rows[0]) if rows else []
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[key]) for key in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def as_csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def run(spark, settings: Settings, release: str) -> dict:
    """Split ``sequences/<release>`` into ``split/<release>`` atomically; return the statistics."""
    from pyspark.sql import functions as F

    cfg = settings.prepare
    sequences_dir = require_complete(settings.paths.stage_dir("sequences", release), "sequences")
    parsed = require_complete(settings.paths.stage_dir("parsed", release), "parse")
    sequences = spark.read.parquet(str(sequences_dir))
    facts = spark.read.parquet(str(parsed / "facts"))
    triple_langs = sorted(r.lang for r in sequences.where(F.col("kind") == "triple").select("lang").distinct().collect())
    eval_languages = cfg.eval_languages or triple_langs
    missing = sorted(set(eval_languages) - set(triple_langs))
    if missing:
        raise ValueError(f"prepare.eval_languages: no triples for {missing} in {sequences_dir}")

    triples = assign_triples(sequences.where(F.col("kind") == "triple"), eval_languages, cfg.seed, release, cfg.test_share, cfg.valid_share)
    triples = drop_inverse_leaks(triples).cache()
    links = assign_links(sequences.where(F.col("kind") == "link"), cfg.seed, release, cfg.link_test_share).cache()
    try:
        with atomic_output(settings.paths.stage_dir("split", release)) as staging:
            train = triples.where(F.col("split") == "train").unionByName(links.where(F.col("split") == "train"))
            train.drop("split").write.partitionBy("kind").parquet(str(staging / "train"))
            triples.where(F.col("split") == "valid").drop("split").write.parquet(str(staging / "valid"))
            triples.where(F.col("split") == "test").drop("split").write.partitionBy("lang").parquet(str(staging / "test"))
            links.where(F.col("split") == "test").drop("split").write.parquet(str(staging / "links_test"))
            facts.select("lang", "s_iri", "p_iri", "o_iri").distinct().write.parquet(str(staging / "known"))
            entity_candidates(facts).write.partitionBy("lang").parquet(str(staging / "entities"))

            counts: dict[str, dict[str, int]] = {}
            for row in triples.groupBy("lang", "split").count().collect():
                counts.setdefault(row.lang, {})[row.split] = row["count"]
            for lang, per in counts.items():
                per["triples"] = sum(per.get(key, 0) for key in ("train", "valid", "test", "leak"))
            for row in links.groupBy("lang").count().collect():
                counts.setdefault(row.lang, {})["links"] = row["count"]
            for row in spark.read.parquet(str(staging / "entities")).groupBy("lang").count().collect():
                counts.setdefault(row.lang, {})["entities"] = row["count"]
            languages = sorted(counts)
            rows = table_one(counts, read_stats(sequences_dir), read_stats(parsed), languages)
            stats = {
                "release": release,
                "seed": cfg.seed,
                "test_share": cfg.test_share,
                "valid_share": cfg.valid_share,
                "link_test_share": cfg.link_test_share,
                "eval_languages": eval_languages,
                "table": rows,
                "links_held_out": links.where(F.col("split") == "test").count(),
                "leaks_removed": sum(row["leaks_removed"] for row in rows),
                "warnings": read_stats(sequences_dir).get("warnings", []),
            }
            write_stats(staging, stats)
            (staging / "stats.md").write_text(as_markdown(rows))
            (staging / "stats.csv").write_text(as_csv(rows))
    finally:
        triples.unpersist()
        links.unpersist()
    log.info("split %s:\n%s", release, as_markdown(rows))
    return stats


def main(argv: list[str] | None = None) -> None:
    spark_stage_main(argv, __doc__, "split", "sequences", run, artifacts=("stats.md", "stats.csv"), summary=lambda stats: {"table": stats["table"]})


if __name__ == "__main__":
    main()
