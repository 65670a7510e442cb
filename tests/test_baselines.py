"""PyKEEN baselines: trained with early stopping, scored tail-only, filtered, realistic rank.

The metrics are checked against ranks recomputed here from the trained model's scores, so the
filter set (train + valid + test) and the tie policy are what the module says they are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prixlm_model.baselines import labeled_triples, train_and_evaluate
from prixlm_model.config import PROJECT_ROOT, EvalSettings

NATIONS = PROJECT_ROOT.parent / "shared" / "data" / "pykeen-small-kgs" / "nations"


def read(name: str) -> np.ndarray:
    return np.loadtxt(NATIONS / name, dtype=str, delimiter="\t")


@pytest.mark.parametrize("model", ["TransE", "RotatE"])
def test_baseline_metrics_are_filtered_tail_realistic_ranks(model: str, tmp_path: Path) -> None:
    train, valid, test = read("train.txt"), read("valid.txt"), read("test.txt")
    # Early stopping scores a sample of 50 validation triples; the test ranks are still filtered with every one (checked below).
    settings = EvalSettings(baseline_dim=16, baseline_max_epochs=4, baseline_eval_every=2, baseline_patience=1, baseline_batch_size=256,
                            baseline_valid_max=50)
    result = train_and_evaluate(model, train, valid, test, settings, checkpoint_dir=tmp_path)

    assert result["epochs"] == 4 and result["train_seconds"] > 0 and result["test_triples"] == len(test)
    assert result["tie_policy"] == "realistic" and result["filtered_with"] == "train+valid+test"
    assert result["valid_triples_scored"] == 50 < len(valid)

    entity, relation = result["entity_to_id"], result["relation_to_id"]
    known: dict[tuple[int, int], set[int]] = {}
    for s, p, o in np.concatenate([train, valid, test]):
        known.setdefault((entity[s], relation[p]), set()).add(entity[o])
    heads_relations = torch.tensor([[entity[s], relation[p]] for s, p, _ in test])
    with torch.inference_mode():
        scores = result["kge_model"].score_t(heads_relations)
    ranks = []
    for row, (s, p, o) in enumerate(test):
        gold = entity[o]
        others = torch.ones(len(entity), dtype=torch.bool)
        others[list(known[(entity[s], relation[p])])] = False  # filtered, gold included (counted apart)
        better = int((scores[row][others] > scores[row, gold]).sum())
        equal = int((scores[row][others] == scores[row, gold]).sum())
        ranks.append(1 + better + equal / 2)
    ranks = np.array(ranks)
    assert result["mrr"] == pytest.approx(float(np.mean(1 / ranks)), abs=1e-4)
    for k in (1, 3, 10):
        assert result[f"hits@{k}"] == pytest.approx(float(np.mean(ranks <= k)), abs=1e-6)


def test_labeled_triples_reads_split_columns() -> None:
    import pyarrow as pa

    table = pa.table({"s_iri": ["a", "b"], "p_iri": ["r", "r"], "o_iri": ["b", "c"], "lang": ["fr", "fr"]})
    assert labeled_triples(table).tolist() == [["a", "r", "b"], ["b", "r", "c"]]
