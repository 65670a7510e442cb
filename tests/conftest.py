"""Fixtures shared by the whole suite: an isolated data root and the real-data sample mirror."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests start from the declared defaults, not from the demo-sized prixlm.toml; each test states
# the settings it depends on.
os.environ["PRIXLM_CONFIG"] = str(Path(__file__).parent / "settings-defaults.toml")

from prixlm_model.config import PROJECT_ROOT, Settings, load_settings  # noqa: E402


@pytest.fixture(scope="session")
def sample_mirror(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The DBP15K-derived mirror (both layouts, two versions), built once per test session."""
    from tools.sample_mirror import build

    settings = load_settings().sample.model_copy(update={"mirror_dir": tmp_path_factory.mktemp("mirror") / "mirror"})
    return build(settings)


@pytest.fixture
def settings(tmp_path: Path, sample_mirror: Path) -> Settings:
    """Settings whose data root is a fresh temporary folder and whose mirror is the sample."""
    return load_settings(
        {
            "paths": {"data_root": str(tmp_path / "var"), "cache_dir": str(PROJECT_ROOT / "var" / "cache")},
            "acquire": {"source": "mirror", "mirror_url": str(sample_mirror / "databus/dbpedia/generic"), "backoff_s": 0.01},
        }
    )
