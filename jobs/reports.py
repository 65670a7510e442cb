"""Report files of the similarity and probing jobs: tables as Markdown and CSV, one bar chart per task.

Why here: both jobs write the same kinds of files under ``reports/<release>/``, each replaced
atomically so a reader (MLflow's artifact upload, a person) never sees half a table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from jobs.split import as_csv, as_markdown
from prixlm_model.atomic import replacing


def write_report(folder: Path, name: str, rows: list[dict[str, Any]] | None, text: str, suffix: str = "md") -> list[Path]:
    """``<name>.csv`` from ``rows`` (when given) and ``<name>.<suffix>`` from ``text``; their paths."""
    from prixlm_model.atomic import write_file

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    if rows is not None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        write_file(folder / f"{name}.csv", as_csv([{key: row.get(key) for key in columns} for row in rows]))
        paths.append(folder / f"{name}.csv")
    write_file(folder / f"{name}.{suffix}", text)
    return [*paths, folder / f"{name}.{suffix}"]


def column_label(row: dict[str, Any], columns: Sequence[str]) -> str:
    return " ".join(str(row[key]) for key in columns)


def pivot(rows: list[dict[str, Any]], row_key: str, columns: Sequence[str], *values: str) -> str:
    """A Markdown table with one line per ``row_key`` and one column per (``columns``, value).

    Several ``values`` give "a / b" cells (the paper's Acc / MRR); percentages, one decimal.
    """
    headers = list(dict.fromkeys(column_label(row, columns) for row in rows))
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        cells = [row.get(value) for value in values]
        text = " / ".join("" if cell is None else f"{100 * cell:.1f}" for cell in cells)
        table.setdefault(row[row_key], {row_key: row[row_key]})[column_label(row, columns)] = text
    lines = [{row_key: label, **{header: cells.get(header, "") for header in headers}} for label, cells in table.items()]
    return as_markdown(lines) if lines else "(no rows)\n"


def bar_chart(path: Path, rows: list[dict[str, Any]], columns: Sequence[str], value: str, title: str) -> Path:
    """Grouped bars: one group per (``columns``), one bar per model; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a worker
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(column_label(row, columns) for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    width = 0.8 / max(len(models), 1)
    figure, axes = plt.subplots(figsize=(max(4, 1.2 * len(groups) + 2), 3.5))
    for index, model in enumerate(models):
        heights = {column_label(row, columns): row[value] for row in rows if row["model"] == model}
        axes.bar([g + index * width for g in range(len(groups))], [100 * heights.get(group, 0) for group in groups], width, label=model)
    axes.set_xticks([g + width * (len(models) - 1) / 2 for g in range(len(groups))], groups, rotation=30, ha="right")
    axes.set_ylabel(f"{value} (%)")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    with replacing(path) as scratch:
        figure.savefig(scratch, dpi=100, format="png")
    plt.close(figure)
    return path


def report_main(argv: list[str] | None, doc: str, run: Callable, default_models: Callable, tables: Sequence[str]) -> None:
    """The command line of a report job: pick the release and models, run, print the Markdown tables.

    ``run(settings, release, models, dag_run_id)``; ``default_models(settings, release)``.
    """
    from jobs.stage import stage_parser, stage_start

    parser = stage_parser(doc, dag_run="the tables go to its MLflow run")
    parser.add_argument("--model", action="append", default=[], metavar="LABEL=FOLDER", help="a model to compare (default: the base and the release's Prix-LM (All))")
    args = parser.parse_args(argv)
    settings, release = stage_start(args)
    models = {label: Path(folder) for label, _, folder in (value.partition("=") for value in args.model)} or default_models(settings, release)
    run(settings, release, models, args.dag_run_id)
    for name in tables:
        print((settings.paths.stage_dir("reports", release) / f"{name}.md").read_text())
