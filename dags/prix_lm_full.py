"""
### Prix-LM: the full pipeline for one DBpedia release

Acquire the dumps (Databus, classic tree or mirror), then prepare, pretrain, evaluate and
construct. Trigger it from the UI with the form below, or let `dbpedia_refresh` start it when a
new release appears. Every task writes its own folder for the release under the data root, so a
re-run replaces its outputs instead of duplicating them.
"""

from __future__ import annotations

from pathlib import Path

from airflow.sdk import Param, dag, get_current_context, task

from prixlm_model.config import param_schemas


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,  # two runs of one release never interleave writes (FAULTS 26)
    params={name: Param(**schema) for name, schema in param_schemas().items()},
    tags=["prix-lm"],
)
def prix_lm_full():
    @task
    def acquire() -> str:
        """#### Acquire
        Download the release's dumps for the chosen languages, verify each against its sha256,
        and write `raw/<release>/manifest.json`. Returns the resolved release."""
        from jobs.acquire import acquire as run_acquire
        from prixlm_model.config import load_settings, overrides_from_params

        settings = load_settings(overrides_from_params(get_current_context()["params"]))
        return run_acquire(settings)["release"]

    acquire()


prix_lm_full()
