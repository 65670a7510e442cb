"""probe: mLAMA-style knowledge probing per language, the base model vs Prix-LM (the paper's Table 5).

Each model is read as a masked LM (bidirectional, its LM head at the mask); the same queries
(``prixlm_model.probing``) go to both. The offline base (e5-small) has no pretrained LM head:
its head is fresh, so its accuracy is expected near the random baseline, which the table shows.

Writes ``reports/<release>/probing.{csv,md,png,json}`` and logs them to MLflow.
The Airflow task calls ``run(settings, release, probed_models(settings, release), dag_run_id)``.
Run ``python -m jobs.probe --release R``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from jobs.link_prediction_report import slug
from jobs.reports import bar_chart, pivot, report_main, write_report
from jobs.similarity import BASE, PRIXLM, compared_models
from prixlm_model.config import Settings

log = logging.getLogger(__name__)

LABELS = {BASE: "Base", PRIXLM: "Prix-LM"}  # no Mirror-BERT here: probing reads the LM head


def probed_models(settings: Settings, release: str) -> dict[str, Path]:
    """The configured base and, when exported, the release's Prix-LM (All)."""
    return {LABELS[label]: folder for label, folder in compared_models(settings, release).items()}


def load_masked_lm(folder: Path, settings: Settings):
    """A checkpoint as ``XLMRobertaForMaskedLM`` (not a decoder: the template is read both ways)."""
    from transformers import AutoModelForMaskedLM

    from prixlm_model.mirror import resolve_device

    model = AutoModelForMaskedLM.from_pretrained(folder, is_decoder=False, use_safetensors=True, attn_implementation="sdpa")
    return model.to(resolve_device(settings.similarity.device)).eval()


def language_queries(tokenizer, settings: Settings) -> dict[str, tuple[list, dict[str, int]]]:
    """The (capped) queries of every probed language and what was left out; the same for every model."""
    from prixlm_model.probing import build_queries, read_facts, read_objects, read_templates, spread

    sim = settings.similarity
    queries = {}
    for lang in sim.probe_languages:
        templates = read_templates(sim.probe_dir, lang, sim.probe_templates)
        facts = {relation: read_facts(sim.probe_dir, lang, relation) for relation in templates}
        built, counts = build_queries(tokenizer, templates, facts, read_objects(sim.probe_objects, lang), lang)
        queries[lang] = (spread(built, sim.probe_max_facts), {**counts, "single_token_queries": len(built), "relations": len(templates)})
    return queries


def run(settings: Settings, release: str, models: dict[str, Path], dag_run_id: str | None = None) -> dict[str, Any]:
    """Probe every model in every language; write and log the Table 5-like report."""
    from prixlm_model.probing import probe
    from prixlm_model.tokenization import load_tokenizer

    started = time.perf_counter()
    queries = language_queries(load_tokenizer(next(iter(models.values()))), settings)  # one tokenizer: XLM-R's
    rows = []
    for label, folder in models.items():
        model = load_masked_lm(folder, settings)
        for lang, (asked, _) in queries.items():
            tick = time.perf_counter()
            metrics = probe(model, asked, settings.similarity.probe_batch)
            rows.append({"lang": lang, "model": label, **metrics, "seconds": round(time.perf_counter() - tick, 1)})
            log.info("probing %s %s: %s", label, lang, metrics)
    report = {"release": release, "models": {k: str(v) for k, v in models.items()}, "rows": rows,
              "left_out": {lang: counts for lang, (_, counts) in queries.items()},
              "settings": settings.similarity.model_dump(mode="json", include={"probe_templates", "probe_max_facts", "probe_languages"}),
              "seconds": round(time.perf_counter() - started, 1)}
    folder = settings.paths.stage_dir("reports", release)
    text = (f"# mLAMA-style probing, release {release}\n\nSingle-token objects, candidates from mLAMA's object sets (punctuation, "
            f"stop words and incomplete pieces removed); {settings.similarity.probe_templates} template(s) per relation; "
            f"at most {settings.similarity.probe_max_facts or 'all'} queries per language.\n\n## Accuracy\n\n"
            + pivot(rows, "model", ("lang",), "accuracy") + "\n## Random baseline (mean 1 / candidates)\n\n"
            + pivot(rows, "model", ("lang",), "random") + "\n## Queries\n\n"
            + "\n".join(f"- {lang}: {counts}" for lang, counts in report["left_out"].items()) + "\n")
    paths = write_report(folder, "probing", rows, text)
    paths.append(bar_chart(folder / "probing.png", rows, ("lang",), "accuracy", "mLAMA-style probing accuracy"))
    paths += write_report(folder, "probing", None, json.dumps(report, indent=1) + "\n", suffix="json")
    if dag_run_id:
        from prixlm_model.tracking import log_stage

        stats = {"seconds": report["seconds"], "probing": {row["lang"]: {} for row in rows}}
        for row in rows:
            stats["probing"][row["lang"]][slug(row["model"])] = {key: row[key] for key in ("accuracy", "random", "queries")}
        report["mlflow_run_id"] = log_stage(settings, dag_run_id, "probe", release, stats, artifacts=paths)
    return report


def main(argv: list[str] | None = None) -> None:
    report_main(argv, __doc__, run, probed_models, ("probing",))


if __name__ == "__main__":
    main()
