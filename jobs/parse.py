"""Parse acquired DBpedia dumps into facts, cross-lingual links and rejects (Spark).

Input: ``<data_root>/raw/<release>/<dir>/<file>`` (``.ttl``/``.nt`` N-Triples, ``.tql``/``.nq``
N-Quads; ``.bz2``, ``.gz``, ``.xz`` or plain). Output: ``<data_root>/parsed/<release>/`` with
``facts/lang=<xx>/`` (``s_iri, p_iri, o_iri, s, p, o``), ``links/`` (``s_iri, s_lang, o_iri,
o_lang, s, o``), ``rejects/`` (``file, line_no, line, reason``; Parquet), ``stats.json`` and
``_SUCCESS``.

One pass over the input (why: the cost of a Spark parse is in what it does around the regex, not
in the regex, which runs at 200-300k lines/s per core):
  1. The driver decompresses and counts the lines of every file (``parse_inputs``).
  2. One scan reads every line once, validates and classifies it in one projection
     (``parse_classify``), counts every class as observed metrics of that scan, and writes only
     the lines an output needs (facts, links, own-language labels, rejects: a ``kind`` column,
     written partitioned) as compact Parquet. Nothing is persisted or scanned again: memory per
     executor is one split's rows and the Parquet writers' buffers, whatever the file size.
  3. From those columns (``parse_outputs``): facts deduplicated (the one shuffle of the facts)
     and named; links in both directions; rejects with their reason diagnosed and their line
     number. Row counts are observed metrics of these writes, or the written files' footers.
The driver's line count and the scan's row count must agree, and the classes add up to the lines
read (``ACCOUNTING_KEYS``), or the parse fails before anything is published.

``facts`` and ``links`` count distinct statements; repeats are ``duplicates``. Facts are
deduplicated on (s_iri, p_iri, o_iri); links are the distinct directed pairs of both directions of
every link statement. IRIs are in one normal form (``parse_iri``); grammar and regexes are in
``parse_grammar``.

Atomic and idempotent: everything is written to ``parsed/.<release>.tmp-<id>/``; ``stats.json``
then ``_SUCCESS`` are written last, and the folder is renamed over ``parsed/<release>/`` (the old
one is moved aside first and removed). Readers call ``is_complete``. A re-run replaces it.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow.parquet as pq
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from jobs.parse_classify import KIND_COLUMNS, KIND_SCHEMA, classify_lines
from jobs.parse_grammar import LINE_CLASSES, REJECT_REASONS
from jobs.parse_inputs import (
    ParseError, StagedFile, discover_inputs, lines_before, local_path, one_split_per_partition, read_lines, split_bytes, stage_inputs,
)
from jobs.parse_outputs import build_facts, build_links, build_rejects, entity_names, relation_labels
from jobs.stage import atomic_output, spark_stage_main, write_stats
from prixlm_model.config import ParseSettings, Settings, check_safe_name

log = logging.getLogger(__name__)

# The stats.json keys whose sum is lines_read (docs/reliability.md: every input line is accounted for).
ACCOUNTING_KEYS = (
    "comments", "facts", "links", "labels", "literals_skipped", "foreign_iris_skipped", "unknown_chapter_skipped",
    "cross_chapter_skipped", "blank_nodes_skipped", "rejects", "duplicates",
)


def scan(spark: SparkSession, staged: dict[str, StagedFile], settings: ParseSettings, target: Path) -> dict[str, int]:
    """The one pass over the raw lines: write the lines an output needs to ``target`` by ``kind``; return the count per class.

    ``target`` holds ``kind=fact|link|name|reject/`` with ``KIND_COLUMNS``. Raises ``ParseError``
    when Spark read another number of lines than the driver counted.
    """
    split = split_bytes(staged, spark.sparkContext.defaultParallelism, settings.split_bytes)
    seen = Observation("lines")
    with one_split_per_partition(spark, split):
        classified = classify_lines(read_lines(spark, staged), settings).observe(
            seen, F.count(F.lit(1)).alias("rows"), *[F.count_if(F.col("cls") == name).alias(name) for name in LINE_CLASSES]
        )
        classified.where(F.col("kind").isNotNull()).select(*KIND_COLUMNS).write.partitionBy("kind").parquet(str(target))
    counted = sum(entry.count.lines for entry in staged.values())
    if seen.get["rows"] != counted:
        raise ParseError(f"accounting error: Spark read {seen.get['rows']} lines, the driver counted {counted} in "
                         f"{', '.join(sorted(entry.item.rel for entry in staged.values()))}")
    return {name: seen.get[name] for name in LINE_CLASSES}


def write_outputs(spark: SparkSession, kept: DataFrame, staged: dict[str, StagedFile], settings: ParseSettings, staging: Path,
                  broadcast_names: bool) -> dict[str, Any]:
    """Facts, links and rejects from the scan's kept lines; return their row counts."""
    names = entity_names(kept)
    build_facts(kept, names, relation_labels(spark, settings.ontology), broadcast_names).write.partitionBy("lang").parquet(str(staging / "facts"))
    per_lang = {folder.name.split("=", 1)[1]: sum(pq.ParquetFile(part).metadata.num_rows for part in folder.glob("*.parquet"))
                for folder in sorted((staging / "facts").glob("lang=*"))}
    links_seen = Observation("links")
    build_links(kept, names, broadcast_names).observe(
        links_seen, F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum("stated"), F.lit(0)).alias("stated")
    ).drop("stated").write.parquet(str(staging / "links"))
    # Line numbers: only the splits holding a reject are looked up, each reading at most 1 MiB.
    splits = [(row.file_path, row.block_start) for row in kept.where(F.col("kind") == "reject").select("file_path", "block_start").distinct().collect()]
    offsets = [(path, start, lines_before(staged[local_path(path)], start), staged[local_path(path)].item.rel) for path, start in splits]
    rejects_seen = Observation("rejects")
    build_rejects(kept, spark.createDataFrame(offsets, "file_path string, block_start long, before long, file string")).observe(
        rejects_seen, F.count(F.lit(1)).alias("rows"), *[F.count_if(F.col("reason") == name).alias(name) for name in REJECT_REASONS]
    ).write.parquet(str(staging / "rejects"))
    return {"per_lang": per_lang, "link_rows": links_seen.get["rows"], "links": links_seen.get["stated"],
            "rejects": {name: rejects_seen.get[name] for name in REJECT_REASONS}}


def run(spark: SparkSession, settings: Settings, release: str) -> dict[str, Any]:
    """Parse ``raw/<release>`` into ``parsed/<release>`` atomically; return the statistics."""
    started = time.time()
    release = check_safe_name(release, "release")
    cfg = settings.parse
    inputs = discover_inputs(settings.paths.stage_dir("raw", release))
    with atomic_output(settings.paths.stage_dir("parsed", release)) as staging:
        staged = stage_inputs(inputs, staging / "_input", cfg.decompress_workers, settings.acquire.max_expansion)
        decompressed_s = time.time() - started
        files = {entry.item.rel: {"lines": entry.count.lines, "started": entry.started, "completed": entry.completed} for entry in staged.values()}
        unframed = sorted(rel for rel, info in files.items() if not (info["started"] and info["completed"]))
        if cfg.require_framing and unframed:
            raise ParseError(f"{unframed[0]}: not framed by '# started' / '# completed' lines (parse.require_framing)")
        by_class = scan(spark, staged, cfg, staging / "_lines")
        scanned_s = time.time() - started
        log.info("decompressed and counted in %.1f s, scanned in %.1f s", decompressed_s, scanned_s - decompressed_s)
        kept = spark.read.schema(KIND_SCHEMA).parquet(str(staging / "_lines"))
        out = write_outputs(spark, kept, staged, cfg, staging, broadcast_names=by_class["label"] <= cfg.broadcast_names_max)
        lines = sum(info["lines"] for info in files.values())
        facts = sum(out["per_lang"].values())
        stats = {
            "release": release,
            "lines_read": lines,
            "comments": by_class["comment"],
            "facts": facts,
            "links": out["links"],
            "labels": by_class["label"],
            "literals_skipped": by_class["literal"],
            "foreign_iris_skipped": by_class["foreign_iri"],
            "unknown_chapter_skipped": by_class["unknown_chapter"],
            "cross_chapter_skipped": by_class["cross_chapter"],
            "blank_nodes_skipped": by_class["blank_node"],
            "rejects": by_class["reject"],
            "duplicates": by_class["fact"] - facts + by_class["link"] - out["links"],
            "rejects_by_reason": out["rejects"],
            "line_classes": by_class,
            "fact_rows_by_lang": out["per_lang"],
            "link_rows": out["link_rows"],
            "files": files,
            "unframed_files": unframed,
            "decompress_seconds": round(decompressed_s, 3),
            "scan_seconds": round(scanned_s - decompressed_s, 3),
            "seconds": round(time.time() - started, 3),
        }
        stats["lines_per_second"] = round(lines / max(stats["seconds"], 1e-9), 1)
        accounted = sum(stats[key] for key in ACCOUNTING_KEYS)
        if accounted != lines or sum(out["rejects"].values()) != stats["rejects"]:
            raise ParseError(f"accounting error: {accounted} lines accounted for, {lines} read; "
                             f"{sum(out['rejects'].values())} rejects written, {stats['rejects']} classified")
        shutil.rmtree(staging / "_input", ignore_errors=True)
        shutil.rmtree(staging / "_lines", ignore_errors=True)
        write_stats(staging, stats)
    log.info("parsed %s: %d lines, %d facts, %d link rows, %d rejects in %.1f s", release, lines, facts, out["link_rows"],
             stats["rejects"], stats["seconds"])
    return stats


def main(argv: list[str] | None = None) -> None:
    spark_stage_main(argv, __doc__, "parse", "raw", run, output="parsed",
                     summary=lambda stats: {key: stats[key] for key in ("lines_read", "facts", "links", "rejects", "seconds")})


if __name__ == "__main__":
    main()
