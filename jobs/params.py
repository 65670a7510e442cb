"""The DAG's trigger form and the one settings file of a DAG run.

The form's Params are a flat view of some settings (``DAG_PARAMS``); their JSON schemas come from
the settings' own types, so the form refuses what ``load_settings`` would. The first task of a run
(``configure``) resolves the settings once, from the TOML file, the environment and the Params,
and writes them under the data root (``paths.pipeline_settings``); every later task, Spark job and
training process of the run reads that one file (``PRIXLM_SETTINGS_FILE``), so an edit of
``prixlm.toml`` during a run changes nothing in it, and the next run sees the edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prixlm_model.config import LANGUAGE_CODES, SAFE_NAME, Settings, field_comments, load_settings, read_settings, write_settings

# The DAG's Params: a flat name for the trigger form, and the setting it overrides. The JSON
# schema of each Param is the setting's own (type, enum, bounds), so the form rejects what
# load_settings would reject (reliability #29).
DAG_PARAMS: dict[str, str] = {
    "release": "acquire.release",
    "languages": "acquire.languages",
    "source": "acquire.source",
    "mirror_url": "acquire.mirror_url",
    "mirror_layout": "acquire.mirror_layout",
    "base_model": "model.base",
    "max_steps": "train.max_steps",
    "beam_size": "eval.beam_size",
    "max_test_queries": "eval.max_test_queries",
    "accept_threshold": "construct.accept_threshold",
    "review_threshold": "construct.review_threshold",
    "construct_queries": "construct.max_queries",
    "mirror_max_steps": "similarity.mirror_max_steps",
    "bli_pairs": "similarity.bli_pairs",
    "probe_max_facts": "similarity.probe_max_facts",
}


def param_schemas(settings: Settings | None = None) -> dict[str, dict[str, Any]]:
    """JSON schema and default for each DAG Param, derived from the settings' declared types."""
    settings = settings or load_settings()
    comments = field_comments()
    schemas = {}
    for name, dotted in DAG_PARAMS.items():
        section, field = dotted.split(".")
        model = getattr(settings, section)
        schema = dict(type(model).model_json_schema()["properties"][field])
        schema.pop("title", None)
        options = schema.pop("anyOf", None)
        if options:  # Optional[X]: the trigger form understands a type list better than anyOf
            concrete = next(option for option in options if option.get("type") != "null")
            schema.update({**concrete, "type": [concrete["type"], "null"]})
        schema["default"] = getattr(model, field)
        if name == "languages":
            schema["items"] = {"type": "string", "enum": list(LANGUAGE_CODES)}
            schema["minItems"] = 1
        if name == "release":
            schema["pattern"] = SAFE_NAME.pattern
        schema["description"] = f"`{dotted}` — {comments.get(dotted, '')}".rstrip(" —")
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


def configure(params: dict[str, Any], dag_run_id: str) -> Path:
    """Resolve a DAG run's settings from its Params and write them once; the file's path.

    A retry rewrites the same values (the same sources, the same Params), atomically.
    """
    settings = load_settings(overrides_from_params(params))
    return write_settings(settings, settings.paths.pipeline_settings(dag_run_id))


def run_settings(settings_file: str | Path) -> Settings:
    """The settings a DAG run's ``configure`` task wrote."""
    return read_settings(Path(settings_file))
