"""The link-prediction report: its rows, the Markdown and CSV tables, the MLflow metrics and the plots.

``jobs.evaluate`` computes the ranks and the rows' numbers; this module only shapes and writes
them: ``reports/<release>/link_prediction.{csv,md,json}`` (each replaced atomically), metrics under
MLflow-safe names, and the bar charts and loss curves on the evaluate run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jobs.split import as_csv, as_markdown
from jobs.stage import read_stats
from prixlm_model.atomic import write_file
from prixlm_model.config import Settings
from prixlm_model.evaluation import FILTER_LABELS
from prixlm_model.ranking import TIE_POLICY

REPORT = "link_prediction"
ModelFolders = dict[str, "Path | dict[str, Path]"]  # label -> one folder, or language -> folder (Single)


def full_rank_columns(hits_at: Sequence[int]) -> list[str]:
    """The full-rank columns of a row (the gold ranked among all candidates), beside the beam's."""
    return [*(f"full_rank_hits@{k}" for k in hits_at), "full_rank_mrr", "full_rank_queries", "full_rank_unresolved", "search_errors"]


def every_test_columns(hits_at: Sequence[int]) -> list[str]:
    """A KGE baseline's figures on every test triple of the language, when the shared queries are a sample of them."""
    return [*(f"every_test_hits@{k}" for k in hits_at), "every_test_mrr", "every_test_queries"]


def table_row(lang: str, model: str, metrics: dict, hits_at: Sequence[int], train_seconds: float | None, training: str, seconds: float,
              filter_name: str) -> dict[str, Any]:
    """One model's row under one filter of ``eval.filters``: the metric columns first, then how it was obtained."""
    return {
        "lang": lang,
        "model": model,
        "filter": FILTER_LABELS[filter_name],
        **{f"hits@{k}": round(float(metrics[f"hits@{k}"]), 6) for k in hits_at},
        "mrr": round(float(metrics["mrr"]), 6),
        "queries": int(metrics["queries"]),
        "train_seconds": None if train_seconds is None else round(train_seconds, 1),
        "training": training,
        "eval_seconds": round(seconds, 1),
        "tie_policy": TIE_POLICY,
    }


def filter_effect(rows: list[dict[str, Any]], hits_at: Sequence[int]) -> dict[str, dict[str, dict[str, float]]]:
    """Per language and model, (with filter_in_search) - (without) for each metric, under the first filter."""
    metrics = [*(f"hits@{k}" for k in hits_at), "mrr"]
    by_key = {(row["lang"], row["model"], row["filter_in_search"]): row for row in first_filter(rows)}
    effect: dict[str, dict[str, dict[str, float]]] = {}
    for (lang, model, inside), row in by_key.items():
        if inside and (lang, model, False) in by_key:
            base = by_key[(lang, model, False)]
            effect.setdefault(lang, {})[model] = {m: round(row[m] - base[m], 6) for m in metrics}
    return effect


def first_filter(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows under the first filter of ``eval.filters`` (the one the search used): one row per model and setting."""
    return [row for row in rows if row["filter"] == rows[0]["filter"]] if rows else []


def slug(label: str) -> str:
    """An MLflow-safe metric name part: "Prix-LM (All)" -> "prix_lm_all", "hits@1" -> "hits_at_1"."""
    return re.sub(r"[^a-z0-9]+", "_", label.lower().replace("@", "_at_")).strip("_")


def mlflow_stats(report: dict[str, Any]) -> dict[str, Any]:
    """The report's numbers under MLflow-safe names: ``<lang>.<model>[_fis][_filter_train].<metric>``."""
    metrics = [*(f"hits@{k}" for k in report["settings"]["hits_at"]), "mrr", "queries", "train_seconds", "eval_seconds",
               *full_rank_columns(report["settings"]["hits_at"])]
    stats: dict[str, Any] = {}
    for row in report["rows"]:
        model = slug(row["model"]) + ("_fis" if row["filter_in_search"] else "")
        model += "" if row["filter"] == FILTER_LABELS["all"] else f"_filter_{slug(row['filter'])}"
        stats.setdefault(row["lang"], {})[model] = {slug(m): row[m] for m in metrics if row.get(m) is not None}
    for lang, split in report["split"].items():
        stats.setdefault(lang, {})["split"] = split
    return {"link_prediction": stats, "seconds": report["seconds"]}


def markdown(report: dict[str, Any]) -> str:
    """A Table 1-like table per language, with what every figure depends on."""
    hits_at = report["settings"]["hits_at"]
    shown = ["filter", *(f"hits@{k}" for k in hits_at), "mrr", "queries", "misses", *full_rank_columns(hits_at), *every_test_columns(hits_at),
             "train_seconds", "training", "filter_in_search"]
    parts = [f"# Link prediction, release {report['release']}\n",
             f"Tail prediction, filtered (the filter column): train+valid+test removes every known true object but the gold (ours), "
             f"train only the train split's (KEnS's and SS-AGA's code); "
             f"tie policy: realistic (1 + better + equal/2). For Prix-LM, hits@k and mrr are beam-truncated: a gold the beam never "
             f"reaches is a miss (reciprocal rank 0); the full_rank_* columns rank the gold among all candidates (exact, on the first "
             f"full_rank_queries queries whose gold is a candidate, the same queries for every model; unresolved: over the search budget), "
             f"comparable with TransE/RotatE, which always rank every candidate; search_errors: golds better than the beam's best answer "
             f"that the beam never reached; every_test_*: TransE/RotatE on every test triple of the language, not only the shared queries. "
             f"Beam size K = {report['settings']['beam_size']}, precision {report['settings']['precision']}.\n"]
    for lang in report["languages"]:
        rows = [row for row in report["rows"] if row["lang"] == lang]
        split = report["split"][lang]
        parts.append(f"## {lang}\n")
        parts.append(f"{split['queries']} queries of {split['test_triples']} test triples ({split['leaks_removed']} inverse leaks removed by the split); "
                     f"{split['candidates']} candidate entities; filter hashes " +
                     ", ".join(f"{name} `{digest[:16]}`" for name, digest in dict.fromkeys((row["filter"], row["filter_hash"]) for row in rows)) + ".\n")
        parts.append(as_markdown([{"model": row["model"], **{key: fmt(row.get(key)) for key in shown}} for row in rows]))
        for model, delta in report["filter_in_search_effect"].get(lang, {}).items():
            parts.append(f"Effect of filter_in_search on {model}: " + ", ".join(f"{m} {d:+.4f}" for m, d in delta.items()) + "\n")
    return "\n".join(parts)


def fmt(value: Any) -> str:
    if isinstance(value, float) and not isinstance(value, bool):
        return f"{value:.4f}" if value <= 1 else f"{value:.1f}"
    return "" if value is None else str(value)


def write_report(folder: Path, report: dict[str, Any]) -> list[Path]:
    """Write CSV, Markdown and JSON, each by a rename: a reader sees the old file or the new one."""
    folder.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in report["rows"] for key in row))
    contents = {
        "csv": as_csv([{key: row.get(key) for key in columns} for row in report["rows"]]),
        "md": markdown(report),
        "json": json.dumps(report, indent=1, ensure_ascii=False, default=str) + "\n",
    }
    paths = []
    for suffix, text in contents.items():
        target = folder / f"{REPORT}.{suffix}"
        paths.append(write_file(target, text))
    return paths


def split_table_rows(split: Path) -> list[dict[str, Any]]:
    """The split's Table 1 rows (one per language)."""
    return read_stats(split).get("table", [])


def log_plots(settings: Settings, report: dict[str, Any], table1: list[dict[str, Any]], models: ModelFolders) -> None:
    """Hits@k and full-rank MRR bar charts, Table 1, and the training loss curves of the evaluated models, on the evaluate run."""
    from prixlm_model import plots, tracking

    curves = {}
    for label, value in models.items():
        for lang, folder in (value.items() if isinstance(value, dict) else [("", value)]):
            marker = Path(folder) / "training.json"
            run_id = json.loads(marker.read_text())["mlflow_run_id"] if marker.is_file() else None
            if run_id:
                curves[f"{label} {lang}".strip()] = tracking.metric_history(settings, run_id, "loss")
    hits_at = report["settings"]["hits_at"]
    figures = {f"link_prediction_{slug(m)}": plots.hits_bars(first_filter(report["rows"]), m) for m in [*(f"hits@{k}" for k in hits_at), "full_rank_mrr"]}
    figures["table1"] = plots.table1_bars(table1)
    if curves:
        figures["training_loss"] = plots.loss_curves(curves)
    tracking.log_figures(settings, report["mlflow_run_id"], figures)
