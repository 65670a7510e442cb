"""The refresh decision of ``dbpedia_refresh`` against a loopback mirror (reliability #28).

The DAG's short-circuit task returns ``newer_release``; under the real scheduler,
``tests/test_scheduler.py`` shows that a release starts exactly one run and that None starts none.
"""

from __future__ import annotations

import logging

import pytest

from jobs.acquire import acquire
from jobs.refresh import newer_release
from prixlm_model.config import PROJECT_ROOT, load_settings
from tools.mirror_server import MirrorServer
from tools.sample_mirror import build

GROUP = "databus/dbpedia/generic"


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory):
    """A tiny real-data mirror with the two published versions (2016.04.01 and 2016.10.01)."""
    sample = load_settings().sample.model_copy(update={"mirror_dir": tmp_path_factory.mktemp("refresh") / "mirror", "max_facts": 200})
    with MirrorServer(build(sample)) as server:
        yield server


def settings_for(data_root, url: str, **acquire_settings):
    return load_settings({"paths": {"data_root": str(data_root), "cache_dir": str(PROJECT_ROOT / "var/cache")},
                          "acquire": {"source": "mirror", "mirror_url": url, **acquire_settings}})


def test_a_release_starts_the_pipeline_only_when_it_is_newer(mirror, tmp_path, caplog) -> None:
    """reliability #28 (no news): the newest published release starts a run unless it is already acquired."""
    caplog.set_level(logging.INFO, logger="jobs.refresh")
    settings = settings_for(tmp_path, f"{mirror.url}/{GROUP}")
    assert newer_release(settings) == "2016.10.01"  # nothing acquired yet
    acquire(settings_for(tmp_path, f"{mirror.url}/{GROUP}", release="2016.04.01"))
    assert newer_release(settings) == "2016.10.01"
    assert "new release 2016.10.01 (last acquired: 2016.04.01)" in caplog.text
    acquire(settings_for(tmp_path, f"{mirror.url}/{GROUP}", release="2016.10.01"))
    assert newer_release(settings) is None
    assert "is not newer than the last acquired 2016.10.01; nothing starts" in caplog.text


def test_an_unreachable_source_starts_nothing_and_says_why(tmp_path, caplog) -> None:
    """reliability #28 (no network): a closed port is not an error; nothing starts, and the log says why."""
    caplog.set_level(logging.INFO, logger="jobs.refresh")
    settings = settings_for(tmp_path, "http://127.0.0.1:9/dbpedia/generic", retries=1)
    assert newer_release(settings) is None
    assert "cannot reach the source to look for a new release; nothing starts" in caplog.text
