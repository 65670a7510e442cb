"""Retention of older releases (reliability #34): the newest N kept by date, the current one always, nothing half deleted."""

from __future__ import annotations

from pathlib import Path

from jobs.retention import disk_usage, prune
from prixlm_model.config import load_settings


def test_prune_keeps_the_newest_releases_by_date_and_the_current_one(tmp_path: Path) -> None:
    """reliability #34 (retention): older releases pruned as configured, by date, never half deleted."""
    settings = load_settings({"paths": {"data_root": str(tmp_path / "var"), "keep_releases": 2}})
    root = settings.paths.data_root
    # string order would keep 2016.04.01 over 2016-10 and drop the "-fix" re-release
    releases = ["2016-04", "2016.04.01", "2016-10", "2022.12.01", "2022.12.01-fix"]
    for stage in ("raw", "models"):
        for release in releases:
            (root / stage / release / "sub").mkdir(parents=True)
            (root / stage / release / "sub" / "data.bin").write_bytes(b"x" * 1000)
    (root / "raw" / "dbp15k-test").mkdir()  # not a release name: never touched
    removed = prune(settings, current="2016-04")
    for stage in ("raw", "models"):
        assert sorted(p.name for p in (root / stage).iterdir()) == sorted(["2016-04", "2022.12.01", "2022.12.01-fix"] + (["dbp15k-test"] if stage == "raw" else []))
    assert sorted(p.name for p in removed) == sorted(["2016.04.01", "2016-10"] * 2)
    assert not list(root.rglob(".deleting-*"))  # renamed out of the way, then gone
    assert disk_usage(settings) == {"models": 3000, "raw": 3000}
    assert prune(settings.model_copy(update={"paths": settings.paths.model_copy(update={"keep_releases": 0})}), "x") == []
