"""The evaluate job on a small real split (DBP15K FR-EN facts): every model and language in the
Table 1-style report, sound metrics, the three files, replacement on re-run, and MLflow."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pyarrow as pa
import pytest

from benchmarks.lp_quality import dbp15k_split
from jobs.evaluate import ALL, SINGLE, default_models, kge_ranks, run
from jobs.link_prediction_report import slug
from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, load_settings

RELEASE = "dbp15k-test"
LANGS = ["en", "fr"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    settings = load_settings({
        "paths": {"data_root": str(tmp_path_factory.mktemp("evaluate") / "var"), "cache_dir": str(PROJECT_ROOT / "var" / "cache")},
        "model": {"base": "tiny"},
        # Full ranks on a few queries with a small search budget: their exactness is tests/test_evaluation.py's subject.
        "eval": {"beam_size": 4, "max_test_queries": 8, "filter_in_search": True, "baseline_dim": 8, "baseline_max_epochs": 4,
                 "baseline_eval_every": 2, "baseline_patience": 1, "baseline_batch_size": 256,
                 "full_rank_max_queries": 3, "full_rank_max_hypotheses": 128, "baseline_every_test": True},
    })
    dbp15k_split(settings, RELEASE, triples_per_lang=300)
    base = ensure_base_model(settings)
    return settings, {ALL: base, SINGLE: {lang: base for lang in LANGS}}


@pytest.mark.slow
def test_report_has_every_model_and_language_and_reaches_mlflow(setup) -> None:
    """reliability #34 (re-run): evaluating again replaces the report and reuses the stage's MLflow run, no duplicate."""
    from mlflow.tracking import MlflowClient

    settings, models = setup
    report = run(settings, RELEASE, models, dag_run_id="test-evaluate")
    names = [ALL, SINGLE, "TransE", "RotatE"]
    rows = [row for row in report["rows"] if not row["filter_in_search"]]
    assert sorted((row["lang"], row["model"]) for row in rows) == sorted((lang, name) for lang in LANGS for name in names)
    for row in report["rows"]:
        assert all(0 <= row[m] <= 1 for m in ("hits@1", "hits@3", "hits@10", "mrr")), row
        assert row["hits@1"] <= row["hits@3"] <= row["hits@10"], row
        assert row["mrr"] >= row["hits@1"] and row["tie_policy"] == "realistic"
        assert row["queries"] == report["split"][row["lang"]]["queries"] == 8
    for lang in LANGS:  # one filter set per language, the same for every model
        assert len({row["filter_hash"] for row in report["rows"] if row["lang"] == lang}) == 1
        assert set(report["filter_in_search_effect"][lang]) == {ALL, SINGLE}
    trained = [row for row in rows if row["model"] in ("TransE", "RotatE")]
    assert all(row["train_seconds"] > 0 and "epochs" in row["training"] for row in trained)
    for row in trained:  # the 8 queries are a sample: the baselines are ranked on every test triple as well
        assert row["every_test_queries"] == report["split"][row["lang"]]["test_triples"] > 8
        assert 0 <= row["every_test_hits@1"] <= row["every_test_hits@10"] <= 1 and row["every_test_mrr"] >= row["every_test_hits@1"]
    assert not any("every_test_queries" in row for row in report["rows"] if row["model"] in (ALL, SINGLE))  # a beam search per triple: not here

    folder = settings.paths.stage_dir("reports", RELEASE)
    with open(folder / "link_prediction.csv", encoding="utf-8") as table:
        assert len(list(csv.DictReader(table))) == len(report["rows"])
    markdown = (folder / "link_prediction.md").read_text(encoding="utf-8")
    assert all(f"## {lang}" in markdown for lang in LANGS) and all(name in markdown for name in names)
    assert json.loads((folder / "link_prediction.json").read_text())["rows"] == report["rows"]

    run_info = MlflowClient(settings.mlflow.resolved_uri()).get_run(report["mlflow_run_id"])
    assert run_info.data.tags["prixlm.stage"] == "evaluate" and "mlflow.parentRunId" in run_info.data.tags
    rotate_fr = next(row for row in rows if row["lang"] == "fr" and row["model"] == "RotatE")
    assert run_info.data.metrics[f"link_prediction.fr.{slug('RotatE')}.hits_at_1"] == pytest.approx(rotate_fr["hits@1"])
    assert f"link_prediction.en.{slug(ALL)}_fis.mrr" in run_info.data.metrics
    artifacts = {item.path for item in MlflowClient(settings.mlflow.resolved_uri()).list_artifacts(report["mlflow_run_id"])}
    assert {"link_prediction.csv", "link_prediction.md"} <= artifacts

    # A re-run (other settings) replaces the files whole and reuses the same MLflow child run.
    smaller = settings.model_copy(update={"eval": settings.eval.model_copy(update={"max_test_queries": 3, "filter_in_search": False, "baselines": ["TransE"],
                                                                                  "baseline_every_test": False})})
    again = run(smaller, RELEASE, {ALL: models[ALL]}, dag_run_id="test-evaluate")
    assert again["mlflow_run_id"] == report["mlflow_run_id"]
    written = json.loads((folder / "link_prediction.json").read_text())
    assert {(row["model"], row["queries"]) for row in written["rows"]} == {(ALL, 3), ("TransE", 3)}
    assert not any("every_test_queries" in row for row in written["rows"])  # off: the capped queries only
    with open(folder / "link_prediction.csv", encoding="utf-8") as table:
        assert len(list(csv.DictReader(table))) == 4
    assert sorted(p.name for p in folder.iterdir()) == ["link_prediction.csv", "link_prediction.json", "link_prediction.md"]


def test_default_models_finds_the_runs_these_settings_train(setup, tmp_path: Path) -> None:
    """Models are found by the run identity of the settings: another config's models are not picked up."""
    from prixlm_model.data import shard_folder, write_shards
    from prixlm_model.training import run_name

    settings, _ = setup
    write_shards(shard_folder(settings, RELEASE, "train"), [([0, 5, 2], 1, "triple", "fr")], release=RELEASE, split="train", fingerprint="ab12")
    single = settings.model_copy(update={"train": settings.train.model_copy(update={"single_language": "fr"})})
    other = settings.model_copy(update={"train": settings.train.model_copy(update={"lr": 1e-3})})
    names = [run_name(s, RELEASE) for s in (settings, single, other)]
    assert len(set(names)) == 3 and names[1].startswith(f"prixlm-{RELEASE}-single-fr-")
    root = settings.paths.stage_dir("models", RELEASE)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "config.json").write_text("{}")
    assert default_models(settings, RELEASE) == {ALL: root / names[0], SINGLE: {"fr": root / names[1]}}
    assert default_models(other, RELEASE)[ALL] == root / names[2]


class _Scores:
    """A stand-in KGE model whose tail scores are given."""

    def __init__(self, scores: list[list[float]]) -> None:
        import torch

        self.scores = torch.tensor(scores)

    def score_t(self, heads_relations):
        return self.scores[: len(heads_relations)]


def test_kge_ranks_filter_like_prixlm() -> None:
    entity = {name: index for index, name in enumerate("abcdest")}
    scores = [0.9, 0.8, 0.5, 0.5, 0.1, 0.0, 0.0]
    result = {"entity_to_id": entity, "relation_to_id": {"r": 0}, "kge_model": _Scores([scores, scores])}
    queries = pa.table({"s_iri": ["s", "t"], "p_iri": ["r", "r"], "o_iri": ["c", "e"]})
    truths = {("s", "r"): {"a", "c"}}  # a is true too: filtered; d ties with c: half
    ranks, unfiltered = kge_ranks(result, queries, [truths, {}], candidate_iris=["a", "b", "c", "d"])
    assert ranks[0] == 1 + 1 + 0.5  # b better, d tied, a filtered
    assert unfiltered[0] == 1 + 2 + 0.5  # the same scores under another filter: a counts
    assert math.isinf(ranks[1]) and math.isinf(unfiltered[1])  # gold e is not a candidate: a miss, as for Prix-LM
