"""evaluate: link prediction per language, Prix-LM against its baselines (the paper's Table 1).

Reads ``split/<release>/`` and the exported model folders, and writes
``reports/<release>/link_prediction.{csv,md,json}`` (each file replaced atomically). For every
evaluated language of the split:

- the same test queries for every model: ``sample_queries`` of the language's test triples,
  capped at ``eval.max_test_queries``;
- Prix-LM (All), and Prix-LM (Single) of that language when given: constrained beam search
  (``evaluate_link_prediction``); with ``eval.filter_in_search`` each is evaluated both ways, and
  the difference is reported as the effect of filtering inside the search;
- TransE and RotatE (``eval.baselines``) trained by PyKEEN on the language's train triples,
  early-stopped on its valid triples, then ranked here over the same candidates (the language's
  ``entities/``) with the same filter (``known/``: every true object but the gold) and the same
  tie policy (realistic) as Prix-LM; PyKEEN's own filtered figures are kept beside them; with
  ``eval.baseline_every_test``, when the queries are capped, they are also ranked on every test
  triple (``every_test_*`` columns: a published benchmark's figures are over the whole test set);
- filtered Hits@k and MRR, the number of queries, how long each model trained, the tie policy and
  the filter hash, so that every row of a language is checkably scored the same way;
- a row per filter of ``eval.filters`` (``filter``: ``train+valid+test``, ours, or ``train``, as
  KEnS's and SS-AGA's code), all from one search per model.

The Airflow task calls ``run(settings, release, default_models(settings, release), dag_run_id)``;
the tables, metrics and plots are shaped by ``jobs.link_prediction_report``.
Run ``python -m jobs.evaluate --release R [--model LABEL=FOLDER] [--single LANG=FOLDER]``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.link_prediction_report import (ModelFolders, every_test_columns, filter_effect, full_rank_columns, log_plots, markdown, mlflow_stats,
                                         split_table_rows, table_row, write_report)
from jobs.stage import read_stats, require_complete, stage_parser, stage_start
from prixlm_model.config import Settings
from prixlm_model.ranking import realistic_rank

log = logging.getLogger(__name__)

ALL, SINGLE = "Prix-LM (All)", "Prix-LM (Single)"


@dataclass(frozen=True)
class LanguageData:
    """One language's evaluation inputs: what every model of its table sees."""

    lang: str
    tables: Any  # evaluation.SplitTables, its test already capped to the shared queries
    train: Any  # pa.Table: the language's train triples (baselines)
    valid: Any  # pa.Table: its valid triples (baselines' early stopping)
    every_test: Any  # pa.Table: every test triple, before the cap (the baselines rank them all: it is cheap for them)

    @property
    def test_triples(self) -> int:
        """Test triples before the cap."""
        return self.every_test.num_rows


def evaluated_languages(split: Path) -> list[str]:
    """The split's evaluated languages (its stats), else every ``test/lang=<xx>`` folder."""
    languages = read_stats(split).get("eval_languages") or []
    return sorted(languages) or sorted(p.name.removeprefix("lang=") for p in (split / "test").glob("lang=*"))


def single_languages(settings: Settings, release: str) -> list[str]:
    """The languages that get a Prix-LM (Single): the split's evaluated ones, when ``eval.single_baseline`` is on."""
    return evaluated_languages(settings.paths.stage_dir("split", release)) if settings.eval.single_baseline else []


def language_data(split: Path, lang: str, max_queries: int) -> LanguageData:
    """Read one language's split and choose its queries (the same for every model)."""
    import pyarrow.dataset as ds

    from prixlm_model.evaluation import SplitTables, read_split, sample_queries

    tables = read_split(split.parents[1], split.name, lang)

    def triples_of(path: Path):
        table = ds.dataset(path, format="parquet", partitioning="hive").to_table(filter=ds.field("lang") == lang)
        return table.select(["s_iri", "p_iri", "o_iri"])

    queries = sample_queries(tables.test, max_queries)
    return LanguageData(
        lang,
        SplitTables(queries, tables.known, tables.entities),
        triples_of(split / "train" / "kind=triple"),
        triples_of(split / "valid"),
        tables.test,
    )


def model_folder(models: ModelFolders, label: str, lang: str) -> Path | None:
    """The folder of ``label`` for ``lang``: a per-language mapping, or one folder for all."""
    folder = models.get(label)
    if isinstance(folder, dict):
        folder = folder.get(lang)
    return Path(folder) if folder is not None else None


def default_models(settings: Settings, release: str) -> ModelFolders:
    """The exported models that ``settings`` train on a release: All, and Single per language if trained."""
    from prixlm_model.training import run_name

    split = settings.paths.stage_dir("split", release)
    models: ModelFolders = {}
    if (settings.paths.model_dir(release, run_name(settings, release)) / "config.json").is_file():
        models[ALL] = settings.paths.model_dir(release, run_name(settings, release))

    def single(lang: str) -> Path:
        return settings.paths.model_dir(release, run_name(settings.model_copy(update={"train": settings.train.model_copy(update={"single_language": lang})}), release))

    singles = {lang: single(lang) for lang in evaluated_languages(split)}
    singles = {lang: folder for lang, folder in singles.items() if (folder / "config.json").is_file()}
    if singles:
        models[SINGLE] = singles
    return models


def model_training(folder: Path, settings: Settings) -> tuple[float | None, str]:
    """Training seconds (from the run's MLflow times, when found) and a short description."""
    marker_path = folder / "training.json"
    if not marker_path.is_file():
        return None, "not trained (base model)"
    marker = json.loads(marker_path.read_text(encoding="utf-8"))
    described = f"{marker['step']} steps, {marker['data']['rows']} sequences/epoch"
    seconds = None
    if marker.get("mlflow_run_id"):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        try:
            info = MlflowClient(settings.mlflow.resolved_uri()).get_run(marker["mlflow_run_id"]).info
            seconds = (info.end_time - info.start_time) / 1000 if info.end_time else None
        except MlflowException:
            log.warning("%s: training run %s not in this MLflow store; no training time", folder, marker["mlflow_run_id"])
    return seconds, described


def prixlm_rows(label: str, folder: Path, data: LanguageData, settings: Settings) -> list[dict[str, Any]]:
    """Prix-LM's row (two with ``filter_in_search``: without it, then with it)."""
    from prixlm_model.decoding import load_decoder
    from prixlm_model.evaluation import build_candidates, evaluate_link_prediction

    model, tokenizer = load_decoder(folder, settings.model.seed, settings.eval.device)
    candidates = build_candidates(tokenizer, data.tables.entities)
    train_seconds, training = model_training(folder, settings)
    rows = []
    for inside in ([False, True] if settings.eval.filter_in_search else [False]):
        eval_settings = settings.eval.model_copy(update={"filter_in_search": inside})
        metrics = evaluate_link_prediction(model, tokenizer, data.tables, eval_settings, candidates).metrics
        for name, figures in metrics["by_filter"].items():
            rows.append(
                table_row(data.lang, label, figures | {"queries": metrics["queries"]}, settings.eval.hits_at, train_seconds, training, metrics["seconds"], name)
                | {"misses": figures["misses"], "filter_in_search": inside, "filter_hash": figures["filter_hash"]}
                | {key: figures[key] for key in full_rank_columns(settings.eval.hits_at) if key in figures}
            )
            log.info("%s %s (filter %s, filter_in_search=%s): %s", data.lang, label, name, inside, {k: rows[-1][k] for k in ("hits@1", "mrr", "queries")})
    return rows


def kge_ranks(result: dict[str, Any], queries, filters: Sequence[dict[tuple[str, str], set[str]]], candidate_iris: Sequence[str],
              batch_size: int = 16) -> list[list[float]]:
    """Realistic filtered tail ranks of a trained PyKEEN model over ``candidate_iris``, one list per filter.

    Each filter maps (subject, relation) to its known true objects; as in ``evaluation.filtered_rank``
    every one other than the gold is removed, and ties follow ``ranking.realistic_rank`` (a gold
    outside the candidates is a miss). The scores are computed once for all filters: scoring every
    candidate is the cost (PyKEEN's RotatE scores about 0.3 M (query, entity) pairs a second here).
    """
    import torch

    entity, relation = result["entity_to_id"], result["relation_to_id"]
    candidates = torch.zeros(len(entity), dtype=torch.bool)
    candidates[[entity[iri] for iri in candidate_iris if iri in entity]] = True
    rows = list(zip(*(queries.column(name).to_pylist() for name in ("s_iri", "p_iri", "o_iri"))))
    ranks: list[list[float]] = [[] for _ in filters]
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):  # RotatE scores hold batch x entities x dim floats
            chunk = rows[start : start + batch_size]
            scores = result["kge_model"].score_t(torch.tensor([[entity[s], relation[p]] for s, p, _ in chunk]))
            for row, (s, p, o) in enumerate(chunk):
                gold = entity.get(o)
                for out, truths in zip(ranks, filters):
                    if gold is None or not candidates[gold]:
                        out.append(math.inf)
                        continue
                    others = candidates.clone()
                    others[[entity[true] for true in truths.get((s, p), set()) | {o} if true in entity]] = False
                    better = int((scores[row][others] > scores[row, gold]).sum())
                    out.append(realistic_rank(better, int((scores[row][others] == scores[row, gold]).sum())))
    return ranks


def baseline_rows(name: str, data: LanguageData, settings: Settings, scratch: Path) -> list[dict[str, Any]]:
    """Train ``name`` on the language's train triples and score it like Prix-LM: a row per filter of ``eval.filters``."""
    from prixlm_model.baselines import labeled_triples, train_and_evaluate
    from prixlm_model.evaluation import filter_hash, filter_known, full_rank_queries, known_objects
    from prixlm_model.ranking import ranking_metrics

    started = time.perf_counter()
    candidate_iris = data.tables.entities.column("iri").to_pylist()
    every_test = settings.eval.baseline_every_test and data.test_triples > data.tables.test.num_rows
    result = train_and_evaluate(
        name,
        labeled_triples(data.train),
        labeled_triples(data.valid),
        labeled_triples(data.tables.test),
        settings.eval,
        checkpoint_dir=scratch,
        extra_entities=candidate_iris,
        extra_triples=labeled_triples(data.every_test) if every_test else None,  # numbered, so that every test triple can be ranked
    )
    stopped = "early stop" if result["stopped_early"] else "epoch cap"
    training = f"{result['epochs']} epochs ({stopped}), best epoch {result['best_epoch']}"
    pykeen = {f"pykeen_{key}": result[key] for key in ("mrr", *(f"hits@{k}" for k in settings.eval.hits_at))}
    known_by_filter = [filter_known(data.tables.known, filter_name) for filter_name in settings.eval.filters]
    truths = [known_objects(known) for known in known_by_filter]
    batch = settings.eval.baseline_eval_batch_size
    ranks_by_filter = kge_ranks(result, data.tables.test, truths, candidate_iris, batch)
    # The capped queries are a sample: rank the whole test set as well (a published benchmark's figures cover all of it).
    every_by_filter = kge_ranks(result, data.every_test, truths, candidate_iris, batch) if every_test else None
    rows = []
    for index, (filter_name, known) in enumerate(zip(settings.eval.filters, known_by_filter)):
        ranks = ranks_by_filter[index]
        metrics = {**ranking_metrics(ranks, settings.eval.hits_at), "queries": len(ranks)}
        if settings.eval.full_rank:  # KGE ranks are full ranks already: the same queries Prix-LM's full rank uses
            candidates = set(candidate_iris)
            chosen = full_rank_queries([o in candidates for o in data.tables.test.column("o_iri").to_pylist()], settings.eval.full_rank_max_queries)
            full = {f"full_rank_{key}": value for key, value in ranking_metrics([ranks[q] for q in chosen], settings.eval.hits_at).items()}
            metrics |= full | {"full_rank_queries": len(chosen), "full_rank_unresolved": 0}
        if every_by_filter is not None:
            every = every_by_filter[index]
            metrics |= {f"every_test_{key}": value for key, value in ranking_metrics(every, settings.eval.hits_at).items()}
            metrics["every_test_queries"] = len(every)
        row = table_row(data.lang, name, metrics, settings.eval.hits_at, result["train_seconds"], training, time.perf_counter() - started, filter_name)
        log.info("%s %s (filter %s): %s", data.lang, name, filter_name, {k: row[k] for k in ("hits@1", "mrr", "queries", "train_seconds")})
        full = {key: metrics[key] for key in [*full_rank_columns(settings.eval.hits_at), *every_test_columns(settings.eval.hits_at)] if key in metrics}
        rows.append(row | {"misses": sum(math.isinf(r) for r in ranks), "filter_in_search": False, "filter_hash": filter_hash(known), **full, **pykeen})
    return rows


def run(settings: Settings, release: str, models: ModelFolders, dag_run_id: str | None = None) -> dict[str, Any]:
    """Evaluate every model on every evaluated language of the split; write and log the report."""
    started = time.perf_counter()
    if dag_run_id:  # before the heavy work, not after it (reliability #27)
        from prixlm_model.tracking import require_reachable

        require_reachable(settings.mlflow.resolved_uri())
    split = require_complete(settings.paths.stage_dir("split", release), "split")
    languages = evaluated_languages(split)
    split_table = {row["lang"]: row for row in read_stats(split).get("table", [])}
    rows: list[dict[str, Any]] = []
    split_info: dict[str, dict[str, int]] = {}
    scratch_root = settings.paths.scratch
    scratch_root.mkdir(parents=True, exist_ok=True)
    for lang in languages:
        data = language_data(split, lang, settings.eval.max_test_queries)
        split_info[lang] = {
            "test_triples": data.test_triples,
            "queries": data.tables.test.num_rows,
            "leaks_removed": split_table.get(lang, {}).get("leaks_removed", 0),
            "train_triples": data.train.num_rows,
            "candidates": data.tables.entities.num_rows,
        }
        for label in models:
            folder = model_folder(models, label, lang)
            if folder is not None:
                rows += prixlm_rows(label, folder, data, settings)
        with tempfile.TemporaryDirectory(dir=scratch_root) as scratch:
            for name in settings.eval.baselines:
                rows += baseline_rows(name, data, settings, Path(scratch))
    report = {
        "release": release,
        "languages": languages,
        "rows": rows,
        "filter_in_search_effect": filter_effect(rows, settings.eval.hits_at),
        "split": split_info,
        "models": {label: {k: str(v) for k, v in f.items()} if isinstance(f, dict) else str(f) for label, f in models.items()},
        "settings": settings.eval.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    paths = write_report(settings.paths.stage_dir("reports", release), report)
    if dag_run_id:
        from prixlm_model.tracking import log_stage

        report["mlflow_run_id"] = log_stage(settings, dag_run_id, "evaluate", release, mlflow_stats(report), artifacts=paths)
        log_plots(settings, report, split_table_rows(split), models)
    log.info("link prediction %s: %d rows for %s in %s", release, len(rows), ", ".join(languages), paths[1])
    return report


def parse_models(values: Sequence[str], singles: Sequence[str]) -> ModelFolders:
    """``LABEL=FOLDER`` and ``LANG=FOLDER`` (Single) arguments as a model mapping."""
    models: ModelFolders = {}
    for value in values:
        label, _, folder = value.partition("=")
        models[label] = Path(folder)
    for value in singles:
        lang, _, folder = value.partition("=")
        models.setdefault(SINGLE, {})[lang] = Path(folder)  # type: ignore[index]
    return models


def main(argv: list[str] | None = None) -> None:
    parser = stage_parser(__doc__, dag_run="the table goes to its MLflow run")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=FOLDER", help=f"a model for every language, e.g. '{ALL}=var/models/R/prixlm-R' (default: the release's exported models)")
    parser.add_argument("--single", action="append", default=[], metavar="LANG=FOLDER", help=f"the {SINGLE} model of one language")
    parser.add_argument("--max-test-queries", type=int, help="override eval.max_test_queries")
    args = parser.parse_args(argv)
    settings, release = stage_start(args)
    if args.max_test_queries is not None:
        settings.eval.max_test_queries = args.max_test_queries
    models = parse_models(args.model, args.single) or default_models(settings, release)
    report = run(settings, release, models, args.dag_run_id)
    print(markdown(report))


if __name__ == "__main__":
    main()
