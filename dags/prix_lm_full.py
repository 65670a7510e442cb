"""
### Prix-LM: the full pipeline for one DBpedia release

Acquire the dumps (Databus, classic tree or mirror), then prepare them on Spark: parse into
facts and cross-lingual links, tokenize into Prix-LM sequences, split for link prediction, and
write length-bucketed training shards. Pretrain Prix-LM with DeepSpeed (and Prix-LM Single per
language), then evaluate link prediction against TransE and RotatE, construct new facts for every
language's KB (calibrated, with an accept and a review tier from the form, loaded into a triple store and
reviewed in a report per language), and compare the base model with Prix-LM on entity linking, lexicon
induction (Mirror-BERT embeddings) and knowledge probing. Trigger it from the UI with the form below, or let
`dbpedia_refresh` start it when a new release appears. Every task writes its own folder for the
release under the data root, so a re-run replaces its outputs instead of duplicating them; every
stage's statistics go to this run's MLflow run.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, get_current_context, task

from jobs.params import param_schemas, run_settings
from jobs.runtime import spark_job_kwargs
from prixlm_model.config import load_settings

RELEASE = "{{ ti.xcom_pull(task_ids='acquire') }}"
SETTINGS_FILE = "{{ ti.xcom_pull(task_ids='configure') }}"
TASKS = load_settings().tasks


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,  # two runs of one release never interleave writes (docs/reliability.md #26)
    default_args={  # a retried task resumes: outputs are written atomically, training continues from its checkpoint
        "retries": TASKS.retries,
        "retry_delay": timedelta(seconds=TASKS.retry_delay_s),
        "retry_exponential_backoff": TASKS.retry_backoff,
        "max_retry_delay": timedelta(seconds=TASKS.max_retry_delay_s),
    },
    params={name: Param(**schema) for name, schema in param_schemas().items()},
    tags=["prix-lm"],
)
def prix_lm_full():
    @task
    def configure() -> str:
        """#### Configure
        Resolve this run's settings once (`prixlm.toml`, the environment, the form's Params) and
        write them to `pipeline_runs/<run>/settings.json`; every later task, Spark job and training
        process of the run reads that file."""
        from jobs.params import configure

        context = get_current_context()
        return str(configure(context["params"], context["run_id"]))

    @task
    def acquire(settings_file: str) -> str:
        """#### Acquire
        Download the release's dumps for the chosen languages, verify each against its sha256,
        and write `raw/<release>/manifest.json`. Returns the resolved release."""
        from jobs.acquire import run

        context = get_current_context()
        return run(run_settings(settings_file), context["run_id"], context["dag"].dag_id)

    @task
    def package_code(settings_file: str) -> str:
        """#### Package code
        Zip `jobs/` and `prixlm_model/` for Spark's `--py-files`, so executors on a cluster can import them."""
        from jobs.runtime import code_archive

        return str(code_archive(run_settings(settings_file)))

    @task
    def pretrain(settings_file: str, release: str) -> str:
        """#### Pretrain
        Train Prix-LM on the release's shards through the `deepspeed` launcher (CPU processes
        with gloo here, GPUs and nodes with a hostfile elsewhere), checkpointing as it goes and
        resuming from the last checkpoint on retry; export the model in Hugging Face form."""
        from jobs.pretrain import run

        return str(run(run_settings(settings_file), release, get_current_context()["run_id"]))

    @task
    def single_languages(settings_file: str, release: str) -> list[str]:
        """#### Languages for Prix-LM (Single)
        The evaluated languages of the split, when `eval.single_baseline` is on."""
        from jobs.evaluate import single_languages

        return single_languages(run_settings(settings_file), release)

    @task(max_active_tis_per_dag=1)  # one training at a time: each uses every core
    def pretrain_single(settings_file: str, release: str, language: str) -> str:
        """#### Pretrain Prix-LM (Single)
        The same training on one language's triples only: the ablation of the paper's Table 1."""
        from jobs.pretrain import run

        settings = run_settings(settings_file)
        single = settings.model_copy(update={"train": settings.train.model_copy(update={"single_language": language})})
        return str(run(single, release, get_current_context()["run_id"]))

    @task(trigger_rule="none_failed")  # also when no Single model was asked for (the mapped task is then skipped)
    def evaluate(settings_file: str, release: str) -> str:
        """#### Evaluate link prediction
        Constrained beam search (K from the form) with filtered Hits@1/3/10 and MRR for Prix-LM
        (All and Single) against TransE and RotatE on the same test queries; the Table 1-style
        report goes to `reports/<release>/` and MLflow."""
        from jobs.evaluate import default_models, run

        settings = run_settings(settings_file)
        run(settings, release, default_models(settings, release), get_current_context()["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    @task
    def construct(settings_file: str, release: str) -> str:
        """#### Construct new facts
        Propose new facts for every evaluated language (its own pairs, and facts carried over the
        cross-lingual links), never one already in its KB; calibrate on the validation split, tier them by
        the accept and review thresholds from the form, write `predictions/<release>/` (Parquet, N-Triples,
        an N-Quads sidecar with scores and provenance, a pyoxigraph store checked by SPARQL, a review page
        per language) and log the counts and plots to this run's MLflow run."""
        from jobs.construct import run

        settings = run_settings(settings_file)
        run(settings, release, dag_run_id=get_current_context()["run_id"])
        return str(settings.paths.stage_dir("predictions", release))

    # none_failed: they still run when no Prix-LM (Single) was asked for (an empty expansion is "skipped")
    @task(max_active_tis_per_dag=1, trigger_rule="none_failed")
    def similarity(settings_file: str, release: str) -> str:
        """#### Similarity: XEL and BLI
        Tune the base and Prix-LM with Mirror-BERT (the same words and budget), link the split's
        held-out cross-lingual links by nearest neighbour (Hits@1, MRR), induce bilingual lexicons
        (VecMap + CSLS, Procrustes + cosine), and propose new `owl:sameAs` links above the
        calibrated threshold under `predictions/<release>/`; tables and charts to `reports/<release>/`."""
        from jobs.similarity import compared_models, run

        settings = run_settings(settings_file)
        run(settings, release, compared_models(settings, release), get_current_context()["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    @task(max_active_tis_per_dag=1, trigger_rule="none_failed")
    def probe(settings_file: str, release: str) -> str:
        """#### Knowledge probing
        mLAMA-style cloze queries per language (mpararel templates and facts, mLAMA candidates),
        the base model against Prix-LM; accuracy per language to `reports/<release>/`."""
        from jobs.probe import probed_models, run

        settings = run_settings(settings_file)
        run(settings, release, probed_models(settings, release), get_current_context()["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    @task  # only after a successful run (a trailing "all_done" task would also turn a failed run green)
    def retention(settings_file: str, release: str) -> list[str]:
        """#### Retention
        Keep each stage's outputs of only the newest `paths.keep_releases` releases (0: all); the
        run's own release is never removed. Then mark this run's MLflow parent run finished."""
        from jobs.retention import run

        return [str(path) for path in run(run_settings(settings_file), release, get_current_context()["run_id"])]

    settings = load_settings()
    spark_jobs = [
        SparkSubmitOperator(task_id=job, doc_md=f"#### {job}\nSee `jobs/{job}.py`.",
                            **spark_job_kwargs(settings, job, RELEASE, "{{ run_id }}", SETTINGS_FILE))
        for job in ("parse", "sequences", "split", "shards")
    ]
    config = configure()
    release = acquire(config)
    [release, package_code(config)] >> spark_jobs[0]
    for upstream, downstream in zip(spark_jobs, spark_jobs[1:]):
        upstream >> downstream
    trained = pretrain(config, release)
    spark_jobs[-1] >> trained
    languages = single_languages(config, release)
    spark_jobs[-1] >> languages  # the language list reads the split
    singles = pretrain_single.partial(settings_file=config, release=release).expand(language=languages)
    evaluated, constructed = evaluate(config, release), construct(config, release)
    similar, probed = similarity(config, release), probe(config, release)
    # one after the other: on a laptop each of them uses every core
    trained >> singles >> evaluated >> constructed >> similar >> probed >> retention(config, release)


prix_lm_full()
