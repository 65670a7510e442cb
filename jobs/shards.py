"""shards: token-id Parquet shards for training, bucketed by exact sequence length.

Reads ``split/<release>/{train,valid}`` and writes ``shards/<release>/<split>/length=<L>/*.parquet``
with ``input_ids`` (``<s> … [O] object… [EOS]``, the final ``</s>`` left out: it is neither a
target nor seen by one), ``object_start`` (index of the first object token), ``length``, ``kind``
and ``lang``. One length per folder means a batch drawn from one folder has no padding at all.
Rows are sorted within each file, so a re-run writes the same bytes in the same order and the
loader's order depends only on its seed and epoch.

``manifest.json`` lists every file with its row count and length, and a fingerprint of the
inputs and settings that training checks before it resumes (reliability #23).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from jobs.stage import atomic_output, require_complete, spark_stage_main, write_stats
from prixlm_model.config import Settings

log = logging.getLogger(__name__)

SPLITS = ("train", "valid")
ROWS_PER_FILE = 1_000_000


def token_rows(sequences):
    """Sequences → ``input_ids, object_start, length, kind, lang`` (plus IRIs as a sort key)."""
    from pyspark.sql import functions as F

    input_ids = F.concat("prefix_ids", "object_ids")
    return sequences.select(
        input_ids.alias("input_ids"),
        F.size("prefix_ids").cast("int").alias("object_start"),
        F.size(input_ids).cast("int").alias("length"),
        "kind",
        "lang",
        "s_iri",
        "p_iri",
        "o_iri",
    )


def write_buckets(rows, folder: Path, partitions: int) -> None:
    """One folder per exact length, rows sorted so that the bytes are the same on every run."""
    from pyspark.sql import functions as F

    (
        rows.withColumn("bucket", F.col("length"))
        .repartition(partitions, "bucket")
        .sortWithinPartitions("bucket", "kind", "lang", "s_iri", "p_iri", "o_iri")
        .drop("s_iri", "p_iri", "o_iri")
        .write.option("maxRecordsPerFile", ROWS_PER_FILE)
        .partitionBy("bucket")
        .parquet(str(folder))
    )
    for bucket in sorted(folder.glob("bucket=*")):
        bucket.rename(folder / bucket.name.replace("bucket=", "length="))


def file_list(folder: Path) -> list[dict]:
    """Every shard file with its rows and length, in a fixed order."""
    import pyarrow.parquet as pq

    files = []
    for path in sorted(folder.glob("length=*/*.parquet")):
        files.append({"path": str(path.relative_to(folder)), "rows": pq.ParquetFile(path).metadata.num_rows,
                      "length": int(path.parent.name.split("=", 1)[1])})
    return files


def fingerprint(split_dir: Path, settings: Settings) -> str:
    """A hash of what the shards were made from: the split's statistics and the settings that shape them."""
    digest = hashlib.sha256()
    digest.update((split_dir / "stats.json").read_bytes())
    digest.update(json.dumps({"prepare": settings.prepare.model_dump(mode="json"), "base": settings.model.base}, sort_keys=True).encode())
    return digest.hexdigest()


def run(spark, settings: Settings, release: str) -> dict:
    """Write ``shards/<release>/{train,valid}`` atomically; return the statistics."""
    split_dir = require_complete(settings.paths.stage_dir("split", release), "split")
    shard_fingerprint = fingerprint(split_dir, settings)
    stats: dict = {"release": release, "fingerprint": shard_fingerprint, "splits": {}}
    with atomic_output(settings.paths.stage_dir("shards", release)) as staging:
        for split in SPLITS:
            target = staging / split
            write_buckets(token_rows(spark.read.parquet(str(split_dir / split))), target, settings.spark.shuffle_partitions)
            files = file_list(target)
            rows = sum(f["rows"] for f in files)
            manifest = {"release": release, "split": split, "fingerprint": shard_fingerprint, "rows": rows, "files": files,
                        "config": {"max_tokens": settings.prepare.max_tokens, "base": settings.model.base}}
            (target / "manifest.json").write_text(json.dumps(manifest, indent=1))
            (target / "_SUCCESS").write_text("")
            tokens = sum(f["rows"] * f["length"] for f in files)
            stats["splits"][split] = {"rows": rows, "files": len(files), "tokens": tokens,
                                      "lengths": {str(f["length"]): f["rows"] for f in files}}
        write_stats(staging, stats)
    log.info("shards %s: %s", release, {k: v["rows"] for k, v in stats["splits"].items()})
    return stats


def main(argv: list[str] | None = None) -> None:
    spark_stage_main(argv, __doc__, "shards", "split", run, summary=lambda stats: {"rows": {k: v["rows"] for k, v in stats["splits"].items()}})


if __name__ == "__main__":
    main()
