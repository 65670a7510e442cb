"""similarity: entity linking (XEL) and lexicon induction (BLI), base + Mirror vs Prix-LM + Mirror.

Each model (the configured base, and Prix-LM (All) of the release when exported) is tuned with
Mirror-BERT (``prixlm_model.mirror``) on the same words with the same settings, then:

- XEL on the split's held-out links (``links_test/``), every direction, Hits@1/10 and MRR;
  XL-BEL against ``similarity.xlbel_dictionary`` when one is configured (skipped, and said so,
  when not);
- BLI on every configured pair of the shipped dictionaries: VecMap + CSLS and Procrustes + cosine.

Writes ``reports/<release>/similarity_{xel,bli}.{csv,md,png}`` and ``similarity.json``, and
``predictions/<release>/sameas-<src>-<tgt>.{parquet,nt}``: new owl:sameAs links proposed by the
last model (Prix-LM + Mirror when there is one) above the threshold calibrated on held-out links.

The Airflow task calls ``run(settings, release, compared_models(settings, release), dag_run_id)``.
Run ``python -m jobs.similarity --release R``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from jobs.evaluate import ALL, default_models
from jobs.link_prediction_report import slug
from jobs.reports import bar_chart, pivot, report_main, write_report
from jobs.stage import require_complete
from prixlm_model.config import Settings

log = logging.getLogger(__name__)

BASE, PRIXLM = "Base + Mirror", "Prix-LM + Mirror"


def compared_models(settings: Settings, release: str) -> dict[str, Path]:
    """The configured base and, when exported, the release's Prix-LM (All), by their table labels."""
    from prixlm_model.base_model import ensure_base_model

    models = {BASE: ensure_base_model(settings)}
    if ALL in (exported := default_models(settings, release)):
        models[PRIXLM] = Path(exported[ALL])
    return models


def read_table(folder: Path, lang: str | None = None):
    """A Parquet folder of the split (hive partitions), optionally one language's rows."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(folder, format="parquet", partitioning="hive")
    return dataset.to_table(filter=ds.field("lang") == lang) if lang else dataset.to_table()


def entity_pairs(split: Path, lang: str) -> list[tuple[str, str]]:
    table = read_table(split / "entities", lang)
    return list(zip(table.column("iri").to_pylist(), table.column("name").to_pylist()))


def xel_rows(embed, label: str, split: Path, settings: Settings) -> tuple[list[dict[str, Any]], dict[tuple[str, str], Any]]:
    """XEL rows of one model for every direction of ``links_test``, and each direction's calibration."""
    from prixlm_model.xel import calibrate_threshold, evaluate_links, link_queries

    links = read_table(split / "links_test")
    directions = sorted(set(zip(links.column("s_lang").to_pylist(), links.column("o_lang").to_pylist())))
    rows, thresholds = [], {}
    for src, tgt in directions:
        queries = link_queries(links, src, tgt)[: settings.similarity.xel_max_queries or None]
        result = evaluate_links(embed, queries, entity_pairs(split, tgt), settings.similarity.search_block)
        thresholds[(src, tgt)] = calibrate_threshold(result["top_score"], result["correct"], settings.similarity.sameas_precision)
        rows.append({"task": "links_test", "direction": f"{src}-{tgt}", "model": label, **result["metrics"], "sameas_threshold": thresholds[(src, tgt)]})
        log.info("XEL %s %s->%s: %s", label, src, tgt, result["metrics"])
    return rows, thresholds


def xlbel_rows(embed, label: str, settings: Settings) -> list[dict[str, Any]]:
    """XL-BEL rows per configured language; none (and a log line) without a target dictionary."""
    from prixlm_model.xel import evaluate_xlbel, xlbel_queries

    sim = settings.similarity
    if sim.xlbel_dictionary is None:
        return []
    rows = []
    for lang in sim.xlbel_languages:
        metrics = evaluate_xlbel(embed, xlbel_queries(sim.xlbel_dir, lang), sim.xlbel_dictionary, sim.search_block)
        rows.append({"task": "xl-bel", "direction": lang, "model": label, **metrics})
    return rows


def bli_rows(embed, label: str, settings: Settings) -> list[dict[str, Any]]:
    """BLI rows (one per pair and variant) of one model."""
    from prixlm_model.bli import available_pairs, evaluate_pair, read_pair

    sim = settings.similarity
    rows = []
    for pair in sim.bli_pairs or available_pairs(sim.bli_dir):
        result = evaluate_pair(embed, read_pair(sim.bli_dir, pair, sim.bli_train), sim.csls_k, sim.search_block)
        vocabulary = result.pop("vocabulary")
        rows += [{"pair": pair, "model": label, "variant": variant, **metrics, **vocabulary} for variant, metrics in result.items()]
        log.info("BLI %s %s: %s", label, pair, result)
    return rows


def write_proposals(settings: Settings, release: str, label: str, embed, split: Path, thresholds: dict, dag_run_id: str | None) -> dict[str, int]:
    """Propose owl:sameAs links per direction; write Parquet and N-Triples under ``predictions/<release>/``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prixlm_model.atomic import write_file
    from prixlm_model.xel import n_triples, propose_links

    known = read_table(require_complete(settings.paths.stage_dir("parsed", release), "parse") / "links")
    known_pairs = list(zip(*(known.column(name).to_pylist() for name in ("s_lang", "o_lang", "s_iri", "o_iri"))))
    folder = settings.paths.stage_dir("predictions", release)
    folder.mkdir(parents=True, exist_ok=True)
    counts = {}
    for (src, tgt), threshold in thresholds.items():
        linked_sources = {s for a, b, s, _ in known_pairs if (a, b) == (src, tgt)}
        linked_targets = {o for a, b, _, o in known_pairs if (a, b) == (src, tgt)}
        sources = [pair for pair in entity_pairs(split, src) if pair[0] not in linked_sources]
        if settings.similarity.sameas_max_sources:
            sources = sources[: settings.similarity.sameas_max_sources]
        targets = [pair for pair in entity_pairs(split, tgt) if pair[0] not in linked_targets]
        table = propose_links(embed, sources, targets, threshold, settings.similarity.search_block)
        extra = {"s_lang": src, "o_lang": tgt, "threshold": threshold, "model": label, "source": "xel-mirror", "run_id": dag_run_id}
        for name, value in extra.items():
            table = table.append_column(name, pa.array([value] * table.num_rows, pa.float32() if name == "threshold" else pa.string()))
        stem = folder / f"sameas-{src}-{tgt}"
        pq.write_table(table, stem.with_name(f".{stem.name}.parquet.tmp"))
        stem.with_name(f".{stem.name}.parquet.tmp").replace(stem.with_suffix(".parquet"))
        write_file(stem.with_suffix(".nt"), n_triples(table))
        counts[f"{src}-{tgt}"] = table.num_rows
        log.info("sameAs %s->%s: %d proposed of %d unlinked sources (threshold %s)", src, tgt, table.num_rows, len(sources), threshold)
    return counts


def run(settings: Settings, release: str, models: dict[str, Path], dag_run_id: str | None = None) -> dict[str, Any]:
    """Tune each model with Mirror-BERT, score XEL and BLI, propose links; write and log the report."""
    from prixlm_model.mirror import Embedder, load_encoder, mirror_tune, read_words

    started = time.perf_counter()
    sim = settings.similarity
    split = require_complete(settings.paths.stage_dir("split", release), "split")
    words = read_words(sim.mirror_words, sim.mirror_max_words)
    xel, bli, mirror, thresholds, embed = [], [], {}, {}, None
    for label, folder in models.items():
        model, tokenizer = load_encoder(folder, sim)
        mirror[label] = mirror_tune(model, tokenizer, words, sim).summary()
        embed = Embedder(model, tokenizer, sim)
        rows, thresholds = xel_rows(embed, label, split, settings)
        xel += rows + xlbel_rows(embed, label, settings)
        bli += bli_rows(embed, label, settings)
        mirror[label]["encode_seconds"] = round(embed.seconds, 1)
    proposals = write_proposals(settings, release, label, embed, split, thresholds, dag_run_id) if embed else {}
    skipped = None if sim.xlbel_dictionary else "XL-BEL skipped: similarity.xlbel_dictionary is not set (its UMLS target dictionary is licence-restricted and not shipped)"
    if skipped:
        log.warning(skipped)
    report = {"release": release, "models": {k: str(v) for k, v in models.items()}, "mirror": mirror, "xel": xel, "bli": bli,
              "xlbel": skipped or "scored", "sameas_proposed": proposals, "proposed_by": label,
              "settings": sim.model_dump(mode="json"), "seconds": round(time.perf_counter() - started, 1)}
    paths = write_outputs(settings.paths.stage_dir("reports", release), report)
    if dag_run_id:
        from prixlm_model.tracking import log_stage

        report["mlflow_run_id"] = log_stage(settings, dag_run_id, "similarity", release, mlflow_stats(report), artifacts=paths)
    return report


def write_outputs(folder: Path, report: dict[str, Any]) -> list[Path]:
    """Tables like the paper's Tables 2-4 (Markdown, CSV), a bar chart per task, and the JSON."""
    budget = f"Mirror-BERT: {json.dumps(report['mirror'])}"
    # the share of links whose two names are the same string: what any encoder gets right
    floor = [{**row, "model": "(exact-name floor)", "hits@1": row["identical_names"]} for row in report["xel"] if "identical_names" in row]
    xel_md = (f"# Cross-lingual entity linking, release {report['release']}\n\nNearest neighbour by cosine over Mirror-tuned "
              f"embeddings (pooling: {report['settings']['pooling']}); realistic ties. {report['xlbel']}.\n\n{budget}\n\n"
              f"## Hits@1 (accuracy)\n\n" + pivot(report["xel"] + floor, "model", ("task", "direction"), "hits@1")
              + "\n## MRR\n\n" + pivot(report["xel"], "model", ("task", "direction"), "mrr")

              + f"\nProposed owl:sameAs links (by {report['proposed_by']}): {report['sameas_proposed']}\n")
    bli_md = (f"# Bilingual lexicon induction, release {report['release']}\n\n{report['settings']['bli_train']} training pairs, "
              f"2k test pairs, CSLS k = {report['settings']['csls_k']} over the pair's target vocabulary.\n\n{budget}\n\n")
    for variant in ("vecmap_csls", "procrustes_cosine"):
        rows = [row for row in report["bli"] if row["variant"] == variant]
        bli_md += f"## {variant}: P@1 / MRR\n\n" + pivot(rows, "model", ("pair",), "p@1", "mrr") + "\n"
    paths = write_report(folder, "similarity_xel", report["xel"], xel_md)
    paths += write_report(folder, "similarity_bli", report["bli"], bli_md)
    paths.append(bar_chart(folder / "similarity_xel.png", report["xel"], ("task", "direction"), "hits@1", "XEL Hits@1"))
    paths.append(bar_chart(folder / "similarity_bli.png", [r for r in report["bli"] if r["variant"] == "vecmap_csls"], ("pair",), "p@1", "BLI P@1 (VecMap + CSLS)"))
    paths += write_report(folder, "similarity", None, json.dumps(report, indent=1, default=str) + "\n", suffix="json")
    return paths


def mlflow_stats(report: dict[str, Any]) -> dict[str, Any]:
    """``xel.<task>.<direction>.<model>.<metric>``, ``bli.<pair>.<variant>.<model>.<metric>``, Mirror's budget."""
    stats: dict[str, Any] = {"seconds": report["seconds"], "mirror": {slug(k): v for k, v in report["mirror"].items()}}
    for row in report["xel"]:
        stats.setdefault("xel", {}).setdefault(row["task"], {}).setdefault(row["direction"], {})[slug(row["model"])] = {
            slug(key): row[key] for key in ("hits@1", "hits@10", "mrr", "queries")}
    for row in report["bli"]:
        stats.setdefault("bli", {}).setdefault(row["pair"], {}).setdefault(row["variant"], {})[slug(row["model"])] = {
            slug(key): row[key] for key in ("p@1", "mrr", "queries")}
    stats["sameas_proposed"] = report["sameas_proposed"]
    return stats


def main(argv: list[str] | None = None) -> None:
    report_main(argv, __doc__, run, compared_models, ("similarity_xel", "similarity_bli"))


if __name__ == "__main__":
    main()
