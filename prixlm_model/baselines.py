"""Knowledge-graph-embedding baselines (TransE, RotatE) through PyKEEN, on Prix-LM's own split.

Why: the paper's Table 1 compares Prix-LM with TransE and RotatE. To compare fairly they see the
same train split, are scored on the same test triples, and are measured the same way as
``prixlm_model.evaluation``:

- tail prediction only (the object given subject and relation);
- filtered with train, valid and test (PyKEEN always filters the training triples and the
  evaluated ones; ``filter_validation_when_testing`` adds validation);
- realistic rank for ties (PyKEEN's default; Prix-LM's evaluation uses the same);
- trained to convergence: early stopping on validation tail MRR, with the training time and the
  number of epochs reported (a time-capped baseline understates them).

Entities and relations are numbered over train, valid and test together, so every test triple
can be scored; an entity seen only in test keeps its random initial embedding, as it would in
any transductive model. PyKEEN is imported inside the functions: it is slow to import.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from prixlm_model.config import EvalSettings
from prixlm_model.ranking import TIE_POLICY


def labeled_triples(table: pa.Table) -> np.ndarray:
    """An ``s_iri, p_iri, o_iri`` table as PyKEEN's (n, 3) array of labels."""
    columns = [np.asarray(table.column(name).to_pylist(), dtype=str) for name in ("s_iri", "p_iri", "o_iri")]
    return np.stack(columns, axis=1) if table.num_rows else np.empty((0, 3), dtype=str)


def train_and_evaluate(
    model: str,
    train: np.ndarray,
    valid: np.ndarray,
    test: np.ndarray,
    settings: EvalSettings,
    checkpoint_dir: str | Path | None = None,
    extra_entities: Sequence[str] = (),
    extra_triples: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train ``model`` ("TransE" or "RotatE") on ``train`` with early stopping on ``valid``; score ``test``.

    Returns Hits@k and MRR (tail, filtered, realistic), the training seconds, epochs run, the
    best validation epoch and MRR, the settings used, and the trained model with its label
    numbering (``kge_model``, ``entity_to_id``, ``relation_to_id``: not for JSON).

    ``extra_entities`` are numbered too (for example every candidate of the language, so that
    the model ranks the same candidate set as Prix-LM); those in no triple keep random embeddings.
    So are the entities and relations of ``extra_triples`` (for example every test triple when
    ``test`` is a sample of them), which the caller may then rank with the returned model.
    """
    from pykeen.pipeline import pipeline
    from pykeen.triples import TriplesFactory

    if len(valid) == 0 or len(test) == 0:
        raise ValueError("baselines need validation triples (early stopping) and test triples")
    every = np.concatenate([train, valid, test, *([] if extra_triples is None else [extra_triples])])
    entity_to_id = {label: index for index, label in enumerate(sorted({*every[:, 0], *every[:, 2], *extra_entities}))}
    relation_to_id = {label: index for index, label in enumerate(sorted(set(every[:, 1])))}

    def factory(triples: np.ndarray) -> TriplesFactory:
        return TriplesFactory.from_labeled_triples(triples, entity_to_id=entity_to_id, relation_to_id=relation_to_id)

    stopping = valid_sample(valid, settings.baseline_valid_max, settings.seed)

    with tempfile.TemporaryDirectory(dir=checkpoint_dir) as scratch:
        result = pipeline(
            training=factory(train),
            validation=factory(stopping),
            testing=factory(test),
            model=model,
            model_kwargs={"embedding_dim": settings.baseline_dim},
            optimizer="Adam",
            optimizer_kwargs={"lr": settings.baseline_lr},
            negative_sampler="basic",
            negative_sampler_kwargs={"num_negs_per_pos": settings.baseline_negatives},
            training_kwargs={"num_epochs": settings.baseline_max_epochs, "batch_size": settings.baseline_batch_size},
            stopper="early",
            stopper_kwargs={
                "frequency": settings.baseline_eval_every,
                "patience": settings.baseline_patience,
                "relative_delta": settings.baseline_min_delta,
                "metric": f"tail.{TIE_POLICY}.inverse_harmonic_mean_rank",
                "best_model_path": Path(scratch) / "best.pt",
                "evaluation_batch_size": settings.baseline_eval_batch_size,
            },
            evaluator="rankbased",
            evaluator_kwargs={"filtered": True},
            # The test ranks are filtered with every validation triple, not only the stopper's sample.
            evaluation_kwargs={"targets": ("tail",), "batch_size": settings.baseline_eval_batch_size,
                               "additional_filter_triples": [factory(valid).mapped_triples]},
            filter_validation_when_testing=True,
            random_seed=settings.seed,
            device="cpu",
            use_tqdm=False,
        )
    return {
        "model": model,
        "kge_model": result.model,
        "entity_to_id": entity_to_id,
        "relation_to_id": relation_to_id,
        **tail_metrics(result.metric_results, settings.hits_at),
        "train_seconds": result.train_seconds,
        "epochs": len(result.losses),
        "best_epoch": result.stopper.best_epoch,
        "best_valid_mrr": result.stopper.best_metric,
        "stopped_early": result.stopper.stopped,
        "train_triples": len(train),
        "valid_triples_scored": len(stopping),
        "test_triples": len(test),
        "entities": len(entity_to_id),
        "tie_policy": TIE_POLICY,
        "filtered_with": "train+valid+test",
        "settings": {key: value for key, value in settings.model_dump().items() if key.startswith("baseline_") or key == "seed"},
    }


def valid_sample(valid: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """At most ``limit`` validation triples (0: all), a fixed random choice kept in file order."""
    if not limit or len(valid) <= limit:
        return valid
    return valid[np.sort(np.random.default_rng(seed).choice(len(valid), limit, replace=False))]


def tail_metrics(metric_results: Any, hits_at: Sequence[int]) -> dict[str, float]:
    """Hits@k and MRR for tail prediction, realistic rank, from PyKEEN's ``MetricResults``."""
    metrics = {f"hits@{k}": float(metric_results.get_metric(f"tail.{TIE_POLICY}.hits_at_{k}")) for k in hits_at}
    metrics["mrr"] = float(metric_results.get_metric(f"tail.{TIE_POLICY}.inverse_harmonic_mean_rank"))
    return metrics
