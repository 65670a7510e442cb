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

With `start` = `dbp-5l` the run starts from a published split instead: `import_benchmark` writes
KEnS's DBP-5L as the release `dbp-5l` in the split's contract (acquire, parse, sequences and split
are skipped), and `published` sets the evaluation beside the Hits@1 that KEnS and SS-AGA published.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import Param, dag, get_current_context, task

from prixlm_model.config import load_settings, param_schemas
from prixlm_model.runtime import spark_job_kwargs

RELEASE = "{{ ti.xcom_pull(task_ids='acquire') }}"
RUN_RELEASE = "{{ ti.xcom_pull(task_ids='release') }}"  # acquired or imported: what shards and later tasks work on
TASKS = load_settings().tasks


@dag(
    dag_id=Path(__file__).stem,
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,  # two runs of one release never interleave writes (FAULTS 26)
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
    def acquire() -> str:
        """#### Acquire
        Download the release's dumps for the chosen languages, verify each against its sha256,
        and write `raw/<release>/manifest.json`. Returns the resolved release."""
        from jobs.acquire import run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        return run(load_settings(overrides_from_params(context["params"])), context["run_id"], context["dag"].dag_id)

    @task.branch
    def choose_start() -> str:
        """#### Start
        From DBpedia's dumps (`acquire`), or from a published split (`import_benchmark`), by the `start` Param."""
        from prixlm_model.config import overrides_from_params

        start = load_settings(overrides_from_params(get_current_context()["params"])).benchmark.start
        return "acquire" if start == "dbpedia" else "import_benchmark"

    @task
    def import_benchmark() -> str:
        """#### Import a published split
        Write the published split named by `start` as a release in the split's contract
        (`jobs/import_benchmark.py`). Returns the release."""
        from jobs.import_benchmark import run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        return run(settings, settings.benchmark.start, context["run_id"])

    @task(trigger_rule="none_failed_min_one_success")
    def release() -> str:
        """#### Release
        The release this run works on: the one acquired, or the published split imported."""
        ti = get_current_context()["ti"]
        return ti.xcom_pull(task_ids="import_benchmark") or ti.xcom_pull(task_ids="acquire")

    @task
    def package_code() -> str:
        """#### Package code
        Zip `jobs/` and `prixlm_model/` for Spark's `--py-files`, so executors on a cluster can import them."""
        from prixlm_model.runtime import code_archive

        return str(code_archive(load_settings()))

    @task
    def pretrain(release: str) -> str:
        """#### Pretrain
        Train Prix-LM on the release's shards through the `deepspeed` launcher (CPU processes
        with gloo here, GPUs and nodes with a hostfile elsewhere), checkpointing as it goes and
        resuming from the last checkpoint on retry; export the model in Hugging Face form."""
        from prixlm_model.config import overrides_from_params
        from prixlm_model.training import launch

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        return str(launch(settings, release, context["run_id"]))

    @task
    def single_languages(release: str) -> list[str]:
        """#### Languages for Prix-LM (Single)
        The evaluated languages of the split, when `eval.single_baseline` is on."""
        from jobs.evaluate import evaluated_languages
        from prixlm_model.config import overrides_from_params

        settings = load_settings(overrides_from_params(get_current_context()["params"]))
        return evaluated_languages(settings.paths.stage_dir("split", release)) if settings.eval.single_baseline else []

    @task(max_active_tis_per_dag=1)  # one training at a time: each uses every core
    def pretrain_single(release: str, language: str) -> str:
        """#### Pretrain Prix-LM (Single)
        The same training on one language's triples only: the ablation of the paper's Table 1."""
        from prixlm_model.config import overrides_from_params
        from prixlm_model.training import launch

        context = get_current_context()
        overrides = overrides_from_params(context["params"])
        overrides.setdefault("train", {})["single_language"] = language
        return str(launch(load_settings(overrides), release, context["run_id"]))

    @task(trigger_rule="none_failed")  # also when no Single model was asked for (the mapped task is then skipped)
    def evaluate(release: str) -> str:
        """#### Evaluate link prediction
        Constrained beam search (K from the form) with filtered Hits@1/3/10 and MRR for Prix-LM
        (All and Single) against TransE and RotatE on the same test queries; the Table 1-style
        report goes to `reports/<release>/` and MLflow."""
        from jobs.evaluate import default_models, run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        run(settings, release, default_models(settings, release), context["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    @task
    def published(release: str) -> str:
        """#### Published figures
        For a published split, our rows beside the literature's (`jobs/published.py`): CSV and
        Markdown in `reports/<release>/` and MLflow. Nothing for a DBpedia release."""
        from jobs.published import run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        run(settings, release, dag_run_id=context["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    @task  # only after a successful run (a trailing "all_done" task would also turn a failed run green)
    def retention(release: str) -> list[str]:
        """#### Retention
        Keep each stage's outputs of only the newest `paths.keep_releases` releases (0: all); the
        run's own release is never removed."""
        from jobs.retention import prune
        from prixlm_model.config import overrides_from_params

        return [str(path) for path in prune(load_settings(overrides_from_params(get_current_context()["params"])), release)]

    @task
    def construct(release: str) -> str:
        """#### Construct new facts
        Propose new facts for every evaluated language (its own pairs, and facts carried over the
        cross-lingual links), never one already in its KB; calibrate on the validation split, tier them by
        the accept and review thresholds from the form, write `predictions/<release>/` (Parquet, N-Triples,
        an N-Quads sidecar with scores and provenance, a pyoxigraph store checked by SPARQL, a review page
        per language) and log the counts and plots to this run's MLflow run."""
        from jobs.construct import run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        run(settings, release, dag_run_id=context["run_id"])
        return str(settings.paths.stage_dir("predictions", release))

    # none_failed: they still run when no Prix-LM (Single) was asked for (an empty expansion is "skipped")
    @task(max_active_tis_per_dag=1, trigger_rule="none_failed")
    def similarity(release: str) -> str:
        """#### Similarity: XEL and BLI
        Tune the base and Prix-LM with Mirror-BERT (the same words and budget), link the split's
        held-out cross-lingual links by nearest neighbour (Hits@1, MRR), induce bilingual lexicons
        (VecMap + CSLS, Procrustes + cosine), and propose new `owl:sameAs` links above the
        calibrated threshold under `predictions/<release>/`; tables and charts to `reports/<release>/`."""
        from jobs.similarity import compared_models, run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        run(settings, release, compared_models(settings, release), context["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    @task(max_active_tis_per_dag=1, trigger_rule="none_failed")
    def probe(release: str) -> str:
        """#### Knowledge probing
        mLAMA-style cloze queries per language (mpararel templates and facts, mLAMA candidates),
        the base model against Prix-LM; accuracy per language to `reports/<release>/`."""
        from jobs.probe import probed_models, run
        from prixlm_model.config import overrides_from_params

        context = get_current_context()
        settings = load_settings(overrides_from_params(context["params"]))
        run(settings, release, probed_models(settings, release), context["run_id"])
        return str(settings.paths.stage_dir("reports", release))

    settings = load_settings()
    spark_jobs = [
        SparkSubmitOperator(task_id=job, doc_md=f"#### {job}\nSee `jobs/{job}.py`.", **spark_job_kwargs(settings, job, RELEASE, "{{ run_id }}"))
        for job in ("parse", "sequences", "split")
    ]
    shards = SparkSubmitOperator(task_id="shards", doc_md="#### shards\nSee `jobs/shards.py`.", trigger_rule="none_failed_min_one_success",
                                 **spark_job_kwargs(settings, "shards", RUN_RELEASE, "{{ run_id }}"))
    acquired, imported, code = acquire(), import_benchmark(), package_code()
    choose_start() >> [acquired, imported]
    run_release = release()
    [acquired, imported] >> run_release
    [acquired, code] >> spark_jobs[0]
    for upstream, downstream in zip(spark_jobs, spark_jobs[1:]):
        upstream >> downstream
    [spark_jobs[-1], run_release, code] >> shards  # after split, or straight after the import
    trained = pretrain(run_release)
    shards >> trained
    languages = single_languages(run_release)
    shards >> languages  # the language list reads the split
    singles = pretrain_single.partial(release=run_release).expand(language=languages)
    evaluated, compared, constructed = evaluate(run_release), published(run_release), construct(run_release)
    similar, probed = similarity(run_release), probe(run_release)
    # one after the other: on a laptop each of them uses every core
    trained >> singles >> evaluated >> compared >> constructed >> similar >> probed >> retention(run_release)


prix_lm_full()
