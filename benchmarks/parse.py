"""Benchmark: the Spark parse job against rdflib, on the same generated DBpedia dump.

``python -m benchmarks.parse [--quick] [--lines N] [--repeats R] [--graph-fraction F]``

The dump: the sample mirror's infobox-properties, labels and interlanguage-links lines (both
chapters of the newest release; the mirror is built under ``<data_root>/tmp`` if absent) repeated
until it has ``--lines`` lines (default 2,000,000; ``--quick`` 100,000), each copy after the first
with fresh IRIs (``_c<k>`` appended to every resource's local name, so that facts, labels and links
of a copy still join with one another and no copy duplicates another). One plain ``.ttl`` file,
framed by DBpedia's ``# started`` / ``# completed`` lines; a ¼-size file the same way.

On that file, in this one process, the same facts table (Parquet, ``s_iri, p_iri, o_iri, s, p, o,
lang``, deduplicated, surface names from same-language labels else the local name) is built by:

(a) the Spark job, ``jobs.parse.run`` (which also writes links, rejects and statistics):
    end to end on a fresh ``local[2]`` session (JVM start-up included), then ``--repeats`` runs
    (default 3) in the same warm session (steady state) and as many on the ¼-size file there; then
    a separate ``local[1]`` session (warmed on the ¼-size file) for the one-core time of the full
    file, ``--repeats`` times. Steady times are the median of their repeats (runs on this shared
    machine vary by a fifth);
(b) rdflib's streaming N-Triples parser (``W3CNTriplesParser``) with a sink that classifies each
    triple, collects labels and facts, and writes them through pyarrow in batches, one Parquet
    file per language: the same work, in one Python thread.

and rdflib's ``Graph().parse`` is timed alone (parsing only, on ``--graph-fraction`` of the lines,
default all: it holds about 1.2 KB a line). It prints lines/s and the ratios against the issue's
targets and writes ``<data_root>/reports/benchmarks/parse.json`` with the machine's load average
(this 2-core machine is shared, so the figures move with it). It exits with an error when Spark's
facts table and rdflib's differ (after writing the JSON): a speed-up that changes the output
does not count.
"""

from __future__ import annotations

import argparse
import bz2
import gc
import json
import os
import platform
import re
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from prixlm_model.config import load_settings

TARGETS = {"steady_vs_rdflib_streaming": 2.0, "end_to_end_vs_graph_parse": 3.0, "local1_to_local2": 1.7, "full_over_quarter_max": 4.4}
RELEASE = "2016.10.01"
SOURCES = ("infobox-properties", "labels", "interlanguage-links")
RESOURCE = re.compile(rb"(dbpedia\.org/resource/[^>]*)>")
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
CHAPTER = re.compile(r"^http://(?:([a-z0-9-]+)\.)?dbpedia\.org/resource/(.+)$")


# --- the dump ----------------------------------------------------------------------------------


def mirror(settings) -> Path:
    """The sample mirror's databus folder, built under ``<data_root>/tmp`` when it is absent."""
    databus = settings.sample.mirror_dir / "databus/dbpedia/generic"
    if databus.is_dir():
        return databus
    from tools.sample_mirror import build

    target = settings.paths.scratch / "benchmarks" / "mirror"
    if not (target / "databus").is_dir():
        build(settings.sample.model_copy(update={"mirror_dir": target}))
    return target / "databus/dbpedia/generic"


def base_lines(databus: Path) -> list[bytes]:
    lines = []
    for source in SOURCES:
        for path in sorted((databus / source / RELEASE).glob("*.ttl.bz2")):
            lines += [line for line in bz2.decompress(path.read_bytes()).split(b"\n") if line and not line.startswith(b"#")]
    return lines


def write_dump(path: Path, base: list[bytes], n_lines: int) -> None:
    """``n_lines`` lines: the frame, then copies of ``base`` with fresh IRIs (the last one cut)."""
    if path.is_file() and path.with_suffix(".lines").is_file() and path.with_suffix(".lines").read_text() == str(n_lines):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    body, copy = n_lines - 2, 0
    with open(path, "wb") as out:
        out.write(b"# started 2016-10-01T00:00:00Z\n")
        while body > 0:
            chunk = base[:body]
            text = b"\n".join(chunk) + b"\n"
            if copy:
                text = RESOURCE.sub(rb"\1_c%d>" % copy, text)
            out.write(text)
            body -= len(chunk)
            copy += 1
        out.write(b"# completed 2016-10-01T00:00:00Z\n")
    path.with_suffix(".lines").write_text(str(n_lines))


# --- rdflib -------------------------------------------------------------------------------------


def _normalize(iri: str) -> str:
    """The job's IRI normal form for what this dump holds: https/en. hosts, percent-escapes."""
    if iri.startswith("https://") or iri.startswith("http://en."):
        iri = re.sub(r"^https?://(?:en\.)?((?:[A-Za-z0-9-]+\.)?)dbpedia\.org/", r"http://\1dbpedia.org/", iri)
    if "%" in iri and not re.search(r"%(?![0-9A-Fa-f]{2})", iri):
        iri = re.sub(r"%(?=[01][0-9A-Fa-f]|2[0235Ff]|3[CcEeFf]|5[CcEe]|60|7[BbCcDdFf])", "%25", iri)
        try:
            iri = unquote(iri, errors="strict")
        except UnicodeDecodeError:
            pass
    return iri


class FactSink:
    """rdflib sink: facts (same-chapter entity triples, deduplicated) and same-language labels."""

    def __init__(self, languages: set[str], relation_labels: dict[tuple[str, str], str]):
        from rdflib import Literal

        self.literal = Literal
        self.languages = languages
        self.relation_labels = relation_labels
        self.facts: dict[tuple[str, str, str], str] = {}
        self.names: dict[str, str] = {}
        self.lines = 0

    def chapter(self, iri: str) -> str | None:
        match = CHAPTER.match(iri)
        if not match:
            return None
        code = (match.group(1) or "en").replace("-", "_")
        return code if code in self.languages else None

    def triple(self, s, p, o) -> None:
        self.lines += 1
        if isinstance(o, self.literal):
            if str(p) == RDFS_LABEL and o.language:
                s_iri = _normalize(str(s))
                if self.chapter(s_iri) == o.language.lower().replace("-", "_"):
                    text = str(o)
                    old = self.names.get(s_iri)
                    self.names[s_iri] = text if old is None else min(old, text)
            return
        s_iri, o_iri = _normalize(str(s)), _normalize(str(o))
        lang = self.chapter(s_iri)
        if lang is not None and lang == self.chapter(o_iri):
            self.facts.setdefault((s_iri, _normalize(str(p)), o_iri), lang)

    def name(self, iri: str) -> str:
        found = self.names.get(iri)
        return found if found is not None else unquote(iri.split("/resource/", 1)[1]).replace("_", " ")

    def relation(self, iri: str, lang: str) -> str:
        found = self.relation_labels.get((iri, lang))
        return found if found is not None else unquote(iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1]).replace("_", " ")

    def write(self, out: Path, batch: int = 100_000) -> int:
        """The facts table as Parquet, one file per language, written ``batch`` rows at a time."""
        schema = pa.schema([(name, pa.string()) for name in ("s_iri", "p_iri", "o_iri", "s", "p", "o", "lang")])
        writers: dict[str, pq.ParquetWriter] = {}
        rows: dict[str, list[tuple]] = {}

        def flush(lang: str) -> None:
            columns = list(zip(*rows.pop(lang)))
            if lang not in writers:
                (out / f"lang={lang}").mkdir(parents=True, exist_ok=True)
                writers[lang] = pq.ParquetWriter(out / f"lang={lang}" / "part-0.parquet", schema)
            writers[lang].write_table(pa.Table.from_arrays([pa.array(c, pa.string()) for c in columns], schema=schema))

        for (s, p, o), lang in self.facts.items():
            bucket = rows.setdefault(lang, [])
            bucket.append((s, p, o, self.name(s), self.relation(p, lang), self.name(o), lang))
            if len(bucket) >= batch:
                flush(lang)
        for lang in list(rows):
            flush(lang)
        for writer in writers.values():
            writer.close()
        return len(self.facts)


def rdflib_streaming(path: Path, out: Path, settings) -> dict:
    from rdflib.plugins.parsers.ntriples import W3CNTriplesParser

    from jobs.parse_outputs import ontology_labels

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    ontology = settings.parse.ontology
    labels = ontology_labels(ontology)
    sink = FactSink(set(settings.parse.languages) - set(settings.parse.foreign_hosts), labels)
    with open(path, "rb") as handle:
        W3CNTriplesParser(sink=sink).parse(handle)
    parsed = time.perf_counter() - started
    facts = sink.write(out)
    return {"seconds": time.perf_counter() - started, "parse_seconds": parsed, "facts": facts, "triples": sink.lines}


def graph_parse(path: Path, fraction: float) -> dict:
    import rdflib

    lines = path.read_bytes().rstrip(b"\n").split(b"\n")
    keep = max(1, int(len(lines) * fraction))
    data = b"\n".join(lines[:keep]) + b"\n"
    del lines
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    graph = rdflib.Graph()
    graph.parse(data=data, format="nt")
    seconds = time.perf_counter() - started
    result = {"seconds": seconds, "lines": keep, "fraction": fraction, "triples": len(graph),
              "max_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) // 1024}
    del graph
    gc.collect()
    return result


# --- Spark --------------------------------------------------------------------------------------


def spark_run(spark, settings, release: str) -> dict:
    from jobs import parse

    started = time.perf_counter()
    stats = parse.run(spark, settings, release)
    return {"seconds": time.perf_counter() - started, "lines": stats["lines_read"], "facts": stats["facts"], "load": os.getloadavg()[0]}


def spark_runs(spark, settings, release: str, repeats: int) -> dict:
    """``repeats`` warm runs: each one's figures, and the median seconds."""
    runs = [spark_run(spark, settings, release) for _ in range(repeats)]
    return {"seconds": statistics.median(run["seconds"] for run in runs), "runs": runs}


def session(settings, master: str):
    from jobs.stage import spark_session

    spark = spark_session(settings, "parse-benchmark", master)
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="100,000 lines: a smoke run")
    parser.add_argument("--lines", type=int, help="lines in the dump (default 2,000,000; --quick 100,000)")
    parser.add_argument("--repeats", type=int, default=3, help="warm Spark runs per configuration; their median counts (default 3)")
    parser.add_argument("--graph-fraction", type=float, default=1.0, help="share of the lines Graph().parse gets (default 1)")
    args = parser.parse_args(argv)
    n_lines = args.lines or (100_000 if args.quick else 2_000_000)

    base_settings = load_settings()
    work = base_settings.paths.scratch / "benchmarks" / "parse"
    settings = load_settings({"paths": {"data_root": str(work)}})
    base = base_lines(mirror(base_settings))
    full, quarter = "bench-full", "bench-quarter"
    dump = work / "raw" / full / "dump_fr.ttl"
    write_dump(dump, base, n_lines)
    write_dump(work / "raw" / quarter / "dump_fr.ttl", base, n_lines // 4)
    load = {"before": os.getloadavg()}
    print(f"dump: {n_lines:,} lines, {dump.stat().st_size / 1e6:.0f} MB ({len(base):,} sample lines per copy); load {load['before']}")

    report: dict = {"lines": n_lines, "quarter_lines": n_lines // 4, "bytes": dump.stat().st_size, "cpus": os.cpu_count(),
                    "machine": platform.platform(), "python": platform.python_version()}

    # (a) Spark: a cold local[2] session, end to end, then warm runs.
    started = time.perf_counter()
    spark = session(settings, "local[2]")
    startup = time.perf_counter() - started
    first = spark_run(spark, settings, full)
    report["spark_local2"] = {"startup_seconds": startup, "first": first, "end_to_end_seconds": startup + first["seconds"]}
    report["spark_local2"]["steady"] = spark_runs(spark, settings, full, args.repeats)
    report["spark_local2"]["quarter"] = spark_runs(spark, settings, quarter, args.repeats)
    spark.stop()
    print(f"spark local[2]: start {startup:.1f} s, first run {first['seconds']:.1f} s, steady {report['spark_local2']['steady']['seconds']:.1f} s, "
          f"quarter {report['spark_local2']['quarter']['seconds']:.1f} s (medians of {args.repeats})")
    spark = session(settings, "local[1]")
    spark_run(spark, settings, quarter)  # warm-up
    report["spark_local1"] = {"steady": spark_runs(spark, settings, full, args.repeats)}
    spark.stop()
    print(f"spark local[1]: steady {report['spark_local1']['steady']['seconds']:.1f} s")
    load["after_spark"] = os.getloadavg()

    # (b) rdflib streaming into pyarrow, then Graph().parse.
    report["rdflib_streaming"] = rdflib_streaming(dump, work / "rdflib_facts", settings)
    print(f"rdflib streaming: {report['rdflib_streaming']['seconds']:.1f} s, {report['rdflib_streaming']['facts']:,} facts")
    report["graph_parse"] = graph_parse(dump, args.graph_fraction)
    print(f"Graph().parse: {report['graph_parse']['seconds']:.1f} s on {report['graph_parse']['lines']:,} lines")
    load["after"] = os.getloadavg()
    report["load_average"] = load

    # Both sides built the same facts table.
    import pyarrow.dataset as ds

    def fact_set(folder: Path) -> set:
        table = ds.dataset(folder, format="parquet", partitioning="hive").to_table(columns=["s_iri", "p_iri", "o_iri", "s", "p", "o"])
        return set(zip(*(table.column(c).to_pylist() for c in table.column_names)))

    spark_facts = fact_set(settings.paths.stage_dir("parsed", full) / "facts")
    rdflib_facts = fact_set(work / "rdflib_facts")
    report["same_facts"] = spark_facts == rdflib_facts
    report["facts"] = len(spark_facts)

    rate = lambda lines, seconds: lines / seconds  # noqa: E731
    spark2 = report["spark_local2"]
    rates = {
        "spark_end_to_end": rate(n_lines, spark2["end_to_end_seconds"]),
        "spark_steady_local2": rate(n_lines, spark2["steady"]["seconds"]),
        "spark_steady_local1": rate(n_lines, report["spark_local1"]["steady"]["seconds"]),
        "spark_quarter_local2": rate(n_lines // 4, spark2["quarter"]["seconds"]),
        "rdflib_streaming": rate(n_lines, report["rdflib_streaming"]["seconds"]),
        "graph_parse": rate(report["graph_parse"]["lines"], report["graph_parse"]["seconds"]),
    }
    ratios = {
        "steady_vs_rdflib_streaming": rates["spark_steady_local2"] / rates["rdflib_streaming"],
        "end_to_end_vs_rdflib_streaming": rates["spark_end_to_end"] / rates["rdflib_streaming"],
        "end_to_end_vs_graph_parse": rates["spark_end_to_end"] / rates["graph_parse"],
        "local1_to_local2": rates["spark_steady_local2"] / rates["spark_steady_local1"],
        "full_over_quarter_max": spark2["steady"]["seconds"] / spark2["quarter"]["seconds"],
    }
    met = {key: (ratios[key] <= target if key.endswith("_max") else ratios[key] >= target) for key, target in TARGETS.items()}
    report.update(lines_per_second=rates, ratios=ratios, targets=TARGETS, met=met)

    print("\nlines/s: " + ", ".join(f"{k} {v:,.0f}" for k, v in rates.items()))
    for key, value in ratios.items():
        target = TARGETS.get(key)
        verdict = "" if target is None else f"  (target {'<=' if key.endswith('_max') else '>='} {target}: {'met' if met[key] else 'NOT met'})"
        print(f"{key:32s} {value:6.2f}{verdict}")
    print(f"same facts table: {report['same_facts']} ({report['facts']:,} facts); load average {load}")
    out = base_settings.paths.benchmark_report("parse-quick" if args.quick else "parse")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    if not report["same_facts"]:
        sys.exit(f"FAILED: Spark's facts table differs from rdflib's ({len(spark_facts):,} against {len(rdflib_facts):,} rows)")
    return report


if __name__ == "__main__":
    main()
