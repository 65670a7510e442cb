"""The review report of one language's proposed facts: plots and a self-contained HTML page.

Why self-contained: the page is opened from the predictions folder and from MLflow's artifact
view, so the plots are embedded (base64 PNG) instead of linked; the PNGs are written beside it
too, for MLflow's image view. matplotlib runs headless (Agg).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(5, 3.6), dpi=100)


def _save(plt, fig, ax, path: Path, title: str) -> Path:
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_precision_at_k(curve: np.ndarray, path: Path, title: str) -> Path:
    """``curve``: (N,) precision of the k most probable held-out proposals, k = 1..N."""
    plt, fig, ax = _figure()
    ax.plot(np.arange(1, len(curve) + 1), curve, color="tab:blue")
    ax.set_xlabel("k (proposals by probability)")
    ax.set_ylabel("precision@k")
    ax.set_ylim(0, 1.02)
    return _save(plt, fig, ax, path, title)


def plot_reliability(curve: Mapping[str, Sequence[float]], path: Path, title: str) -> Path:
    """``curve``: ``predicted``, ``observed``, ``count`` per non-empty bin (``calibration.reliability``)."""
    plt, fig, ax = _figure()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    sizes = 20 + 180 * np.sqrt(np.asarray(curve["count"], dtype=float) / max(1, max(curve["count"], default=1)))
    ax.plot(curve["predicted"], curve["observed"], color="tab:orange")
    ax.scatter(curve["predicted"], curve["observed"], s=sizes, color="tab:orange", label="bins (size: proposals)")
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed share true")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="upper left")
    return _save(plt, fig, ax, path, title)


def plot_scores(held_out: np.ndarray, correct: np.ndarray, proposed: np.ndarray, thresholds: Sequence[float], path: Path, title: str) -> Path:
    """Histogram of probabilities: held-out proposals (true, false) and the new facts proposed."""
    plt, fig, ax = _figure()
    bins = np.linspace(0, 1, 21)
    ax.hist([held_out[correct], held_out[~correct], proposed], bins=bins, label=["held-out, true", "held-out, false", "proposed"],
            color=["tab:green", "tab:red", "tab:blue"], log=True)
    for threshold in thresholds:
        ax.axvline(threshold, color="black", linestyle=":")
    ax.set_xlabel("calibrated probability")
    ax.set_ylabel("facts")
    ax.legend(fontsize=8)
    return _save(plt, fig, ax, path, title)


def _table(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>none</p>"
    header = list(rows[0])
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(_text(row[key]))}</td>" for key in header) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{html.escape(key)}</th>' for key in header)}</tr>{cells}</table>"


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def html_page(title: str, intro: str, summary: Sequence[Mapping[str, Any]], plots: Sequence[Path], examples: Sequence[Mapping[str, Any]]) -> str:
    """The page: a summary table, the plots (embedded) and the example facts."""
    images = "".join(
        f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">' for path in plots
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:75em}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:90%}} img{{margin:.5em}}</style></head>
<body><h1>{html.escape(title)}</h1><p>{html.escape(intro)}</p>
<h2>Summary</h2>{_table(summary)}
<h2>Quality on held-out facts</h2>{images}
<h2>Confident new facts</h2>{_table(examples)}
</body></html>
"""
