"""
### DBpedia refresh

Once a day, ask the configured source for its newest release. When it is newer than the newest
release acquired so far, start `prix_lm_full` for it; otherwise, or when the source cannot be
reached, start nothing and say why in the log. The next schedule tries again.
"""

from __future__ import annotations

from pathlib import Path

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import dag, task


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["prix-lm"],
)
def dbpedia_refresh():
    @task.short_circuit
    def new_release() -> str | None:
        """#### New release?
        The newest published release if it is newer than the last acquired one, else nothing
        (which skips the trigger)."""
        from jobs.refresh import newer_release
        from prixlm_model.config import load_settings

        return newer_release(load_settings())

    release = new_release()
    start_pipeline = TriggerDagRunOperator(
        task_id="start_prix_lm_full",
        trigger_dag_id="prix_lm_full",
        trigger_run_id="refresh__{{ ti.xcom_pull(task_ids='new_release') }}",
        conf={"release": "{{ ti.xcom_pull(task_ids='new_release') }}"},
        skip_when_already_exists=True,  # one pipeline run per release, however often we look
    )
    release >> start_pipeline


dbpedia_refresh()
