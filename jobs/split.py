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
Link pairs are held out together in both directions. The rules are the named queries of ``sql/``
(``split_triples``, ``inverse_leaks``, ``split_links``, ``known_triples``, ``entity_candidates``,
``table_one_counts``).
"""

from __future__ import annotations

import csv
import io
import logging

from jobs.named_sql import run_sql
from jobs.stage import atomic_output, read_stats, require_complete, spark_stage_main, write_stats
from prixlm_model.config import Settings

log = logging.getLogger(__name__)


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

    triples = run_sql(spark, "split_triples", {"triples": sequences.where(F.col("kind") == "triple")}, seed=cfg.seed, release=release,
                      eval_languages=eval_languages, test_share=cfg.test_share,
                      valid_upper=cfg.test_share + cfg.valid_share * (1 - cfg.test_share))
    triples = run_sql(spark, "inverse_leaks", {"assigned": triples}).cache()
    links = run_sql(spark, "split_links", {"links": sequences.where(F.col("kind") == "link")}, seed=cfg.seed, release=release,
                    test_share=cfg.link_test_share).cache()
    try:
        with atomic_output(settings.paths.stage_dir("split", release)) as staging:
            train = triples.where(F.col("split") == "train").unionByName(links.where(F.col("split") == "train"))
            train.drop("split").write.partitionBy("kind").parquet(str(staging / "train"))
            triples.where(F.col("split") == "valid").drop("split").write.parquet(str(staging / "valid"))
            triples.where(F.col("split") == "test").drop("split").write.partitionBy("lang").parquet(str(staging / "test"))
            links.where(F.col("split") == "test").drop("split").write.parquet(str(staging / "links_test"))
            run_sql(spark, "known_triples", {"facts": facts}).write.parquet(str(staging / "known"))
            run_sql(spark, "entity_candidates", {"facts": facts}).write.partitionBy("lang").parquet(str(staging / "entities"))

            counts: dict[str, dict[str, int]] = {}
            views = {"split_triples": triples, "split_links": links, "candidates": spark.read.parquet(str(staging / "entities"))}
            for row in run_sql(spark, "table_one_counts", views).collect():
                counts.setdefault(row.lang, {})[row.what] = row.n
            for lang, per in counts.items():
                per["triples"] = sum(per.get(key, 0) for key in ("train", "valid", "test", "leak"))
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
