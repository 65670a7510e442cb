"""The figures a reviewer opens in MLflow: training loss, Hits@k per language and model, Table 1.

Why a module of its own: the evaluate job logs them, and the similarity and construct reports
draw the same kind of bar chart. Each function takes plain numbers and returns a matplotlib
``Figure`` (Agg backend: no display), so callers decide where it goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402


def loss_curves(curves: Mapping[str, Sequence[tuple[int, float]]]) -> Figure:
    """Mean object loss by optimizer step, one line per training run (``label -> [(step, loss)]``)."""
    figure = Figure(figsize=(7, 4))
    axes = figure.subplots()
    for label, points in curves.items():
        if points:
            steps, losses = zip(*sorted(points))
            axes.plot(steps, losses, marker="." if len(points) < 50 else None, label=label)
    axes.set(xlabel="optimizer step", ylabel="mean object NLL (nats)", title="Training loss")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def grouped_bars(values: Mapping[str, Mapping[str, float]], ylabel: str, title: str) -> Figure:
    """One group of bars per outer key (a language), one bar per inner key (a model or a count)."""
    groups = list(values)
    series = list(dict.fromkeys(name for group in values.values() for name in group))
    figure = Figure(figsize=(max(6, 1.6 * len(groups) * max(1, len(series)) / 2), 4))
    axes = figure.subplots()
    width = 0.8 / max(1, len(series))
    for index, name in enumerate(series):
        xs = [g + index * width for g in range(len(groups))]
        heights = [values[group].get(name, 0.0) for group in groups]
        bars = axes.bar(xs, heights, width, label=name)
        axes.bar_label(bars, fmt="%.3g", fontsize=7)
    axes.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], groups)
    axes.set(ylabel=ylabel, title=title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def hits_bars(rows: Sequence[Mapping[str, Any]], metric: str) -> Figure:
    """``metric`` (e.g. ``hits@1``) per language and model from the link-prediction rows (filter_in_search off)."""
    values: dict[str, dict[str, float]] = {}
    for row in rows:
        if not row.get("filter_in_search") and row.get(metric) is not None:
            values.setdefault(row["lang"], {})[row["model"]] = float(row[metric])
    return grouped_bars(values, metric, f"Link prediction: {metric} (filtered, realistic ties)")


def table1_bars(table: Sequence[Mapping[str, Any]], columns: Sequence[str] = ("entities", "triples", "train", "test", "dropped_by_length", "leaks_removed")) -> Figure:
    """The split's Table 1 statistics per language."""
    values = {row["lang"]: {column: float(row[column]) for column in columns if column in row} for row in table}
    return grouped_bars(values, "count", "Table 1: the split per language")
