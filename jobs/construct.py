"""construct: propose new facts for every evaluated language's KB, calibrated, with provenance.

Reads ``parsed/<release>/{facts,links}`` (every language's facts and the cross-lingual links),
``split/<release>/`` (valid and test triples, candidates) and the release's Prix-LM (All) model
(``jobs.evaluate.default_models``), and writes ``predictions/<release>/`` whole (a re-run replaces
it):

- ``<lang>.parquet``: ``s_iri, p_iri, o_iri, s, p, o, logprob, probability, rank, status,
  source, link_confirmed, model, model_run_id, run_id``: the proposed facts at or above the
  review threshold (``status`` accept | review), never one already in the language's KB;
- ``<lang>.nt`` (the facts) and ``<lang>.nq`` (their scores and provenance in the run's named
  graph, ``prixlm_model.rdf``), both loaded into the embedded store ``store/`` (pyoxigraph),
  whose SPARQL answer is checked against the Parquet rows in ``triplestore.json``;
- ``calibration.json``: per language, the map log-probability -> probability fitted on the
  validation split's held-out facts (``jobs.predict`` uses it);
- ``report_<lang>.html`` and ``<lang>_*.png``: the review report, with quality measured on the
  test split (never trained on): precision and recall at both thresholds, precision@k, ECE and
  the reliability diagram, and the share of transferred facts the other language's link confirms;
- ``stats.json``: the counts, also logged to the DAG run's MLflow run with the report.

Held-out measurement: a valid or test ``(s, p)`` is decoded with every fact of the language
filtered except the held-out ones (valid and test), and a proposal is true when it is one of
them; recall is over the test facts of the decoded pairs. Languages without a test split (not
evaluated) have nothing to calibrate on and are skipped.

Run ``python -m jobs.construct --release R [--model FOLDER]``. Not done: combining Prix-LM with
the Single and KGE models (the issue's optional re-ranking); only Prix-LM (All) proposes.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.evaluate import ALL, ModelFolders, default_models, evaluated_languages, model_folder
from jobs.stage import atomic_output, require_complete, stage_parser, stage_start, write_stats
from prixlm_model.config import Settings

if TYPE_CHECKING:
    import pyarrow as pa

    from prixlm_model.construct import LanguageKB
    from prixlm_model.held_out import Measured

log = logging.getLogger(__name__)

TYPES = {"logprob": "float64", "probability": "float64", "rank": "int32", "link_confirmed": "bool"}  # the rest: strings
COLUMNS = ["s_iri", "p_iri", "o_iri", "s", "p", "o", "logprob", "probability", "rank", "status", "source",
           "link_confirmed", "model", "model_run_id", "run_id"]


@dataclass(frozen=True)
class Inputs:
    """What every language's construction reads."""

    release: str
    kbs: dict[str, LanguageKB]  # every chapter's facts (the transfer sources too)
    links: pa.Table  # cross-lingual links, both directions
    split: Path  # split/<release>
    run_id: str | None  # the construct stage's MLflow run, when run under a DAG run


class ModelReleaseError(ValueError):
    """The model folder was not trained on the release whose facts are being completed."""


def checked_model(folder: Path | None, release: str) -> tuple[Path, dict[str, Any]]:
    """The model folder and its training marker, refused unless it was trained on ``release``."""
    if folder is None:
        raise ModelReleaseError(f"no trained Prix-LM (All) model for release {release}; run the pretrain task first")
    marker_path = folder / "training.json"
    if not marker_path.is_file():
        raise ModelReleaseError(f"{folder}: not an exported Prix-LM model (no training.json), so its release cannot be checked")
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    if marker.get("release") != release:
        raise ModelReleaseError(f"{folder} was trained on release {marker.get('release')!r}, not {release!r}: "
                                f"its facts would be completed by a model that has not seen them; train on {release} first")
    return folder, marker


def read_table(path: Path, lang: str | None = None):
    """A Parquet folder (hive partitions) as a pyarrow table, optionally one language's rows."""
    import pyarrow.dataset as ds

    dataset = ds.dataset(path, format="parquet", partitioning="hive")
    return dataset.to_table(filter=ds.field("lang") == lang) if lang else dataset.to_table()


def fact_rows(queries, proposals, probability, status, names: dict[str, str], provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """The written facts: proposals with a status (at or above the review threshold) whose IRIs
    RDF can hold, best first, with names, scores, the link check and provenance."""
    from prixlm_model.held_out import confirmed_by_link
    from prixlm_model.rdf import valid_iri

    rows = []
    for proposal, p, tier in zip(proposals, probability, status):
        query = queries[proposal.query]
        if not tier or not all(map(valid_iri, (query.s_iri, query.p_iri, proposal.o_iri))):
            continue
        rows.append({"s_iri": query.s_iri, "p_iri": query.p_iri, "o_iri": proposal.o_iri, "s": query.s, "p": query.p,
                     "o": names.get(proposal.o_iri, ""), "logprob": proposal.logprob, "probability": float(p), "rank": proposal.rank,
                     "status": tier, "source": query.source, "link_confirmed": confirmed_by_link([query.expected], [proposal.o_iri])[0],
                     **provenance})
    return sorted(rows, key=lambda row: (-row["probability"], -row["logprob"], row["s_iri"], row["p_iri"], row["o_iri"]))


def write_report(lang: str, release: str, stats: dict[str, Any], rows: list[dict[str, Any]], measured: Measured,
                 thresholds: dict[str, float], examples: int, folder: Path) -> str:
    """The review page and its plots in ``folder``; returns the page's file name."""
    import numpy as np

    from prixlm_model.report import html_page, plot_precision_at_k, plot_reliability, plot_scores

    quality, calibrator, test = stats["quality"], measured.calibrator, measured.measured_on
    plots = [
        plot_precision_at_k(measured.precision_at_k, folder / f"{lang}_precision_at_k.png", f"{lang}: precision@k on test (held out)"),
        plot_reliability(measured.reliability, folder / f"{lang}_reliability.png", f"{lang}: reliability on test, ECE {quality['ece']:.3f}"),
        plot_scores(calibrator(test.logprob), test.correct, np.array([row["probability"] for row in rows]),
                    list(thresholds.values()), folder / f"{lang}_scores.png", f"{lang}: calibrated probabilities"),
    ]
    summary = [
        {"measure": "new facts written (accept / review)", "value": f"{stats['status']['accept']} / {stats['status']['review']}"},
        {"measure": "queries decoded by source", "value": ", ".join(f"{k}: {v}" for k, v in stats["decoded"].items())},
        *({"measure": f"test precision / recall at {tier} ({thresholds[tier]:.2f})",
           "value": f"{quality[tier]['precision']:.3f} / {quality[tier]['recall']:.3f} ({quality[tier]['proposed']} proposed)"} for tier in thresholds),
        {"measure": "test precision@k", "value": ", ".join(f"@{k}: {v:.3f}" for k, v in quality["precision_at"].items())},
        {"measure": "expected calibration error (test)", "value": f"{quality['ece']:.4f}"},
        {"measure": "calibration fitted on (valid proposals, true)",
         "value": f"{measured.fitted_on.correct.size}, {int(measured.fitted_on.correct.sum())}"
                  + (" — too few of either kind to fit: every probability is the observed share" if calibrator.degenerate else "")},
        {"measure": "transferred queries whose top answer is the linked object",
         "value": f"{stats['transfer']['top1_confirmed']} of {stats['transfer']['queries_with_linked_object']}"},
    ]
    shown = [{"subject": row["s"], "relation": row["p"], "object": row["o"], "probability": row["probability"], "status": row["status"],
              "source": row["source"], "linked object agrees": row["link_confirmed"]} for row in rows[:examples]]
    intro = (f"Release {release}, model {stats['model']}. Facts already in the {lang} KB are never proposed. Probabilities are "
             f"calibrated ({calibrator.method}) on the validation split; every quality figure is measured on the test split, never trained on.")
    page = folder / f"report_{lang}.html"
    page.write_text(html_page(f"New facts for {lang} — review", intro, summary, plots, shown), encoding="utf-8")
    return page.name

def construct_language(settings: Settings, inputs: Inputs, lang: str, model: tuple[Path, dict[str, Any]], staging: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """One language: calibrate on valid, measure on test, propose, write; return (stats, calibrator)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from prixlm_model.calibration import fit_calibrator
    from prixlm_model.construct import Decoding, candidate_queries, hash_sample, propose
    from prixlm_model.decoding import load_decoder
    from prixlm_model.evaluation import build_candidates, read_split
    from prixlm_model.held_out import measure, objects_of, score_held_out, statuses
    from prixlm_model.rdf import run_graph, write_facts

    cfg, started = settings.construct, time.perf_counter()
    release, kb, (folder, marker), run_id = inputs.release, inputs.kbs[lang], model, inputs.run_id
    tables = read_split(settings.paths.data_root, release, lang)
    valid = read_table(inputs.split / "valid", lang)
    model, tokenizer = load_decoder(folder, settings.model.seed)
    decoding = Decoding(model, tokenizer, build_candidates(tokenizer, tables.entities), cfg.beam_size, cfg.objects_per_query,
                        settings.eval.queries_per_batch, settings.eval.head_rows, settings.eval.precision)
    hidden = objects_of(valid, tables.test)
    fitted_on = score_held_out(decoding, valid, kb.objects, hidden, cfg.calibration_queries)
    calibrator = fit_calibrator(fitted_on.logprob, fitted_on.correct, cfg.calibration)
    thresholds = {"accept": cfg.accept_threshold, "review": cfg.review_threshold}
    measured = measure(fitted_on, score_held_out(decoding, tables.test, kb.objects, hidden, cfg.quality_queries), calibrator, thresholds)

    others = [other for code, other in inputs.kbs.items() if code != lang]
    candidates, counts = candidate_queries(kb, others, inputs.links, cfg.min_alignments, cfg.min_alignment_share)
    queries = hash_sample(candidates, cfg.max_queries)
    proposals = propose(decoding, queries, kb.objects)
    probability = calibrator([p.logprob for p in proposals])
    status = statuses(probability, thresholds)
    names = dict(zip(tables.entities.column("iri").to_pylist(), tables.entities.column("name").to_pylist()))
    provenance = {"model": folder.name, "model_run_id": marker.get("mlflow_run_id"), "run_id": run_id}
    rows = fact_rows(queries, proposals, probability, status, names | kb.names, provenance)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([(name, TYPES.get(name, "string")) for name in COLUMNS])), staging / f"{lang}.parquet")
    graph = run_graph(release, lang, folder.name, run_id)
    write_facts(rows, staging / f"{lang}.nt", staging / f"{lang}.nq", graph,
                {"release": release, "language": lang, "model": folder.name, "modelRun": marker.get("mlflow_run_id") or "",
                 "constructRun": run_id or ""})

    transferred = [index for index, query in enumerate(queries) if query.expected]
    top = {p.query: p.o_iri for p in proposals if p.rank == 1}
    stats = {
        "model": folder.name,
        "candidates": counts,
        "decoded": {source: sum(q.source == source for q in queries) for source in sorted({q.source for q in queries})},
        "proposals": len(proposals),
        "status": {tier: sum(s == tier for s in status) for tier in ("accept", "review")},
        "below_review": sum(s is None for s in status),
        "invalid_iri": sum(bool(s) for s in status) - len(rows),
        "written": len(rows),
        "transfer": {
            "queries_with_linked_object": len(transferred),
            "top1_confirmed": sum(top.get(index) in queries[index].expected for index in transferred),
            "written_with_linked_object": sum(row["link_confirmed"] is not None for row in rows),
            "written_confirmed": sum(bool(row["link_confirmed"]) for row in rows),
        },
        "calibration": {key: value for key, value in calibrator.to_dict().items() if key in ("examples", "positives", "degenerate")},
        "quality": measured.measures,
    }
    stats["transfer"]["top1_confirmed_share"] = stats["transfer"]["top1_confirmed"] / len(transferred) if transferred else 0.0
    stats["report"] = write_report(lang, release, stats, rows, measured, thresholds, cfg.examples, staging)
    stats["seconds"] = {"decoding": round(decoding.seconds, 1), "total": round(time.perf_counter() - started, 1)}
    log.info("%s: %d queries, %d proposals, %s", lang, len(queries), len(proposals), stats["status"])
    return stats, calibrator.to_dict()

def run(settings: Settings, release: str, models: ModelFolders | None = None, dag_run_id: str | None = None) -> dict[str, Any]:
    """Propose, score, write and check the new facts of every evaluated language; log to MLflow."""
    from prixlm_model.construct import LanguageKB
    from prixlm_model.rdf import load_store, scored_facts

    started = time.perf_counter()
    split = require_complete(settings.paths.stage_dir("split", release), "split")
    parsed = require_complete(settings.paths.stage_dir("parsed", release), "parse")
    models = models if models is not None else default_models(settings, release)
    languages = evaluated_languages(split)
    checked = {lang: checked_model(model_folder(models, ALL, lang), release) for lang in languages}
    chapters = sorted(path.name.removeprefix("lang=") for path in (parsed / "facts").glob("lang=*"))
    run_id = None
    if dag_run_id:
        from prixlm_model.tracking import stage_run

        run_id = stage_run(settings, dag_run_id, "construct")  # the rows name the run that logs them
    inputs = Inputs(release, {lang: LanguageKB(lang, read_table(parsed / "facts", lang)) for lang in chapters},
                    read_table(parsed / "links"), split, run_id)

    target = settings.paths.stage_dir("predictions", release)
    stats: dict[str, Any] = {"release": release, "languages": languages, "run_id": run_id, "settings": settings.construct.model_dump()}
    with atomic_output(target) as staging:
        calibrations = {}
        for lang in languages:
            stats[lang], calibrations[lang] = construct_language(settings, inputs, lang, checked[lang], staging)
        (staging / "calibration.json").write_text(json.dumps(calibrations, indent=1) + "\n", encoding="utf-8")
        store = load_store(staging / "store", sorted([*staging.glob("*.nt"), *staging.glob("*.nq")]))
        answered = scored_facts(store)
        del store  # closes the on-disk store before its folder is renamed into place
        written = sum(stats[lang]["written"] for lang in languages)
        check = {"sparql_rows": len(answered), "parquet_rows": written, "ok": len(answered) == written,
                 "best": answered[:5], "query": "prixlm_model.rdf.SCORED_FACTS"}
        (staging / "triplestore.json").write_text(json.dumps(check, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        if not check["ok"]:
            raise RuntimeError(f"the triple store returned {len(answered)} scored facts for {written} written: {staging}")
        stats["triplestore"] = {key: check[key] for key in ("sparql_rows", "parquet_rows")}
        stats["seconds"] = round(time.perf_counter() - started, 1)
        write_stats(staging, stats)
    if dag_run_id:
        from prixlm_model.tracking import log_stage

        artifacts = sorted([*target.glob("report_*.html"), *target.glob("*.png"), target / "calibration.json", target / "triplestore.json"])
        log_stage(settings, dag_run_id, "construct", release, stats, artifacts=artifacts)
    log.info("construct %s: %s in %s", release, {lang: stats[lang]["status"] for lang in languages}, target)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, dag_run="the counts and report go to its MLflow run")
    parser.add_argument("--model", type=Path, help="a Prix-LM (All) model folder (default: the release's exported model)")
    parser.add_argument("--max-queries", type=int, help="override construct.max_queries")
    args = parser.parse_args(argv)
    settings, release = stage_start(args)
    if args.max_queries is not None:
        settings.construct.max_queries = args.max_queries
    stats = run(settings, release, {ALL: args.model} if args.model else None, args.dag_run_id)
    folder = settings.paths.stage_dir("predictions", release)
    for lang in stats["languages"]:
        quality = stats[lang]["quality"]
        print(f"{lang}: {stats[lang]['status']} | held-out precision/recall at accept "
              f"{quality['accept']['precision']:.3f}/{quality['accept']['recall']:.3f}, ECE {quality['ece']:.3f} | {folder / f'report_{lang}.html'}")


if __name__ == "__main__":
    main()
