"""Benchmark: the preparation chain (parse -> sequences -> split -> shards) at 1x, 4x and 16x the sample.

``python -m benchmarks.scale [--scales 1,4,16] [--masters local[1],local[2],cluster] [--quick]``

The input: the sample mirror's six dumps of the newest release (infobox properties, labels and
inter-language links, French and English: DBP15K's real DBpedia data), each repeated ``k``
times, every copy after the first with fresh IRIs (``_c<k>`` appended to every resource's local
name, as ``benchmarks.parse`` does), so that facts, names and links of a copy join with one
another and no copy duplicates another. Plain ``.ttl``: decompression runs on the driver before
Spark and is measured on its own (``bz2_mb_per_s``, the sample's own ``.bz2`` files).

Masters: ``local[1]``, ``local[2]``, and ``cluster``: a standalone master with two workers of one
core each on loopback (``jobs.spark_cluster``), so that every executor is its own JVM.

For every (master, scale, stage) it records the wall seconds, the seconds per million input lines,
the shuffle bytes written, and the peak memory (JVM heap, JVM and Python process-tree RSS per
executor, from Spark's own executor metrics), read from the application's event log. The baseline
each ratio names: the same stage at 1x on the same master (linear growth is 4.0 and 16.0) and on
``local[1]`` at the same scale (speed-up). Writes ``<data_root>/reports/benchmarks/scale.json``
after every configuration (a long run keeps what it measured) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import re
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.parse import mirror
from prixlm_model.config import PROJECT_ROOT, load_settings

RELEASE = "2016.10.01"
SOURCES = ("infobox-properties", "labels", "interlanguage-links")
STAGES = ("parse", "sequences", "split", "shards")
RESOURCE = re.compile(rb"(dbpedia\.org/resource/[^>]*)>")
PEAKS = ("JVMHeapMemory", "ProcessTreeJVMRSSMemory", "ProcessTreePythonRSSMemory")


def write_release(databus: Path, raw: Path, scale: int) -> int:
    """``raw/<lang>/<artifact>_lang=<lang>.ttl``: every sample dump ``scale`` times with fresh IRIs; return the lines written."""
    if (raw / "lines").is_file():
        return int((raw / "lines").read_text())
    shutil.rmtree(raw, ignore_errors=True)
    total = 0
    for source in SOURCES:
        for path in sorted((databus / source / RELEASE).glob("*.ttl.bz2")):
            lang = path.name.split("lang=")[1].split(".")[0]
            lines = bz2.decompress(path.read_bytes()).split(b"\n")
            head, body, tail = lines[0], b"\n".join(line for line in lines[1:] if line and not line.startswith(b"#")) + b"\n", lines[-2]
            (raw / lang).mkdir(parents=True, exist_ok=True)
            with open(raw / lang / path.name[: -len(".bz2")], "wb") as out:
                out.write(head + b"\n")
                for copy in range(scale):
                    out.write(RESOURCE.sub(rb"\1_c%d>" % copy, body) if copy else body)
                out.write(tail + b"\n")
            total += 2 + scale * body.count(b"\n")
    (raw / "lines").write_text(str(total))
    return total


def bz2_rate(databus: Path) -> float:
    """MB/s of Python's bz2 decompression on the sample's dumps (one thread)."""
    paths = sorted(databus.glob(f"*/{RELEASE}/*.ttl.bz2"))
    started, out = time.perf_counter(), 0
    for path in paths:
        out += len(bz2.decompress(path.read_bytes()))
    return out / 1e6 / (time.perf_counter() - started)


def event_metrics(log_dir: Path) -> dict[str, dict]:
    """Per job group (``<scale>x:<stage>``): shuffle bytes written and read, and peak executor memory, from the event logs."""
    groups: dict[str, dict] = defaultdict(lambda: {"shuffle_write_bytes": 0, "shuffle_read_bytes": 0, **{k: 0 for k in PEAKS}})
    for path in log_dir.iterdir():
        stage_group: dict[int, str] = {}
        for line in path.open():
            event = json.loads(line)
            kind = event["Event"]
            if kind == "SparkListenerJobStart":
                group = (event.get("Properties") or {}).get("spark.jobGroup.id")
                for stage in event.get("Stage IDs", []):
                    if group:
                        stage_group[stage] = group
            elif kind == "SparkListenerTaskEnd" and event.get("Stage ID") in stage_group:
                metrics = event.get("Task Metrics") or {}
                entry = groups[stage_group[event["Stage ID"]]]
                entry["shuffle_write_bytes"] += metrics.get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0)
                read = metrics.get("Shuffle Read Metrics", {})
                entry["shuffle_read_bytes"] += read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)
            elif kind == "SparkListenerStageExecutorMetrics" and event.get("Stage ID") in stage_group:
                entry = groups[stage_group[event["Stage ID"]]]
                for key in PEAKS:
                    entry[key] = max(entry[key], event.get("Executor Metrics", {}).get(key, 0))
    return dict(groups)


def run_master(master: str, scales: list[int], databus: Path, work: Path) -> dict:
    """Every scale on one master: stage seconds from the driver, the rest from the event log."""
    from contextlib import nullcontext

    from jobs import parse, sequences, shards, split
    from jobs.spark_cluster import standalone_cluster
    from jobs.stage import spark_session

    name = master.replace("[", "").replace("]", "")
    settings = load_settings({"paths": {"data_root": str(work / name), "cache_dir": str(PROJECT_ROOT / "var" / "cache")},
                              "model": {"base": "tiny"}, "spark": {"shuffle_partitions": 4}})
    log_dir = work / "events" / name
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    # One plain JSON-lines file per application (Spark 4 otherwise rolls and zstd-compresses the log).
    conf = {"spark.eventLog.enabled": "true", "spark.eventLog.dir": log_dir.as_uri(), "spark.eventLog.logStageExecutorMetrics": "true",
            "spark.eventLog.rolling.enabled": "false", "spark.eventLog.compress": "false",
            "spark.executor.processTreeMetrics.enabled": "true", "spark.executor.metrics.pollingInterval": "500ms",
            "spark.executorEnv.PYTHONPATH": str(PROJECT_ROOT)}
    cluster = standalone_cluster(work / "cluster", workers=2, cores=1, memory="2g") if master == "cluster" else nullcontext(master)
    results: dict = {}
    with cluster as url:
        if master == "cluster":
            conf.update({"spark.executor.memory": "1500m", "spark.executor.cores": "1"})
        spark = spark_session(settings, "scale-benchmark", url, conf)
        spark.sparkContext.setLogLevel("ERROR")
        try:
            for scale in scales:
                release = f"scale-{scale}x"
                lines = write_release(databus, settings.paths.stage_dir("raw", release), scale)
                row = {"lines": lines, "stages": {}, "load_before": os.getloadavg()}
                for job, stage in zip((parse, sequences, split, shards), STAGES):
                    spark.sparkContext.setJobGroup(f"{scale}x:{stage}", f"{stage} at {scale}x")
                    started = time.perf_counter()
                    job.run(spark, settings, release)
                    seconds = time.perf_counter() - started
                    row["stages"][stage] = {"seconds": round(seconds, 2), "s_per_m_lines": round(seconds / lines * 1e6, 2)}
                    print(f"{master} {scale}x {stage}: {seconds:.1f} s ({seconds / lines * 1e6:.1f} s per M lines), load {os.getloadavg()[0]:.1f}", flush=True)
                row["load_after"] = os.getloadavg()
                results[f"{scale}x"] = row
        finally:
            spark.stop()
    for group, metrics in event_metrics(log_dir).items():
        scale, stage = group.split(":")
        if scale in results:
            results[scale]["stages"][stage].update(metrics)
    return results


def table(report: dict) -> str:
    """The Markdown table of docs/scale.md: one row per (master, scale, stage)."""
    rows = ["| master | scale | lines | stage | s | s / M lines | shuffle written MB | peak heap MB | peak JVM RSS MB | peak Python RSS MB | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for master, scales in report["masters"].items():
        for scale, row in scales.items():
            for stage, m in row["stages"].items():
                mb = lambda key: f"{m.get(key, 0) / 1e6:,.0f}"  # noqa: E731
                rows.append(f"| {master} | {scale} | {row['lines']:,} | {stage} | {m['seconds']:.1f} | {m['s_per_m_lines']:.1f} | "
                            f"{mb('shuffle_write_bytes')} | {mb('JVMHeapMemory')} | {mb('ProcessTreeJVMRSSMemory')} | "
                            f"{mb('ProcessTreePythonRSSMemory')} | {row['load_before'][0]:.1f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", default="1,4,16", help="copies of the sample (default 1,4,16)")
    parser.add_argument("--masters", default="local[1],local[2],cluster", help="local[N] and/or cluster (default all three)")
    parser.add_argument("--quick", action="store_true", help="1x on local[2] only: a smoke run")
    args = parser.parse_args(argv)
    scales = [1] if args.quick else [int(k) for k in args.scales.split(",")]
    masters = ["local[2]"] if args.quick else args.masters.split(",")
    base = load_settings()
    work = base.paths.scratch / "benchmarks" / "scale"
    databus = mirror(base)
    out = base.paths.benchmark_report("scale-quick" if args.quick else "scale")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"cpus": os.cpu_count(), "bz2_mb_per_s": round(bz2_rate(databus), 1), "masters": {}}
    for master in masters:
        report["masters"][master] = run_master(master, scales, databus, work)
        out.write_text(json.dumps(report, indent=1))
    ratios = {}
    for master, by_scale in report["masters"].items():
        for scale, row in by_scale.items():
            total = sum(m["seconds"] for m in row["stages"].values())
            first = sum(m["seconds"] for m in by_scale["1x"]["stages"].values()) if "1x" in by_scale else None
            one_core = report["masters"].get("local[1]", {}).get(scale)
            ratios[f"{master} {scale}"] = {
                "vs_1x_same_master": round(total / first, 2) if first else None,
                "speedup_vs_local1": round(sum(m["seconds"] for m in one_core["stages"].values()) / total, 2) if one_core else None,
            }
    report["ratios"] = ratios
    out.write_text(json.dumps(report, indent=1))
    print(table(report))
    print(json.dumps(ratios, indent=1))
    print(f"decompression (bz2, one thread): {report['bz2_mb_per_s']} MB/s; wrote {out}")
    return report


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
