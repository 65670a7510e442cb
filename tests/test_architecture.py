"""The layering of docs/architecture.md, enforced: import-linter's contracts (``.importlinter``) and no import cycles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

from prixlm_model.config import PROJECT_ROOT


def test_import_linter_contracts_hold() -> None:
    """prixlm_model imports no jobs, dags or airflow; jobs import no dags."""
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports")], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "2 kept, 0 broken" in result.stdout


def test_no_import_cycles_between_modules() -> None:
    """Function-level imports count too: a cycle is a cycle whenever it is taken."""
    graph = grimp.build_graph("prixlm_model", "jobs", include_external_packages=False)
    cycles = []
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append((importer, *back))
    assert cycles == []


def test_every_named_query_is_run_by_a_job_and_loads_from_the_code_archive(tmp_path: Path) -> None:
    """``sql/`` holds no dead query, and a Spark driver importing ``jobs`` from the --py-files zip reads the same text."""
    import zipfile

    from jobs.named_sql import query_text

    names = sorted(path.stem for path in (PROJECT_ROOT / "sql").glob("*.sql"))
    sources = "\n".join(path.read_text() for path in (PROJECT_ROOT / "jobs").glob("*.py"))
    assert names and [name for name in names if f'"{name}"' not in sources] == []
    archive = tmp_path / "code.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for package in ("jobs", "sql"):
            for path in (PROJECT_ROOT / package).rglob("*"):
                if path.is_file() and "__pycache__" not in path.parts:
                    zipped.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    code = "import sys, jobs.named_sql as n; print(n.__file__); sys.stdout.write(n.query_text(sys.argv[1]))"
    out = subprocess.run([sys.executable, "-c", code, names[0]], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(archive)},
                         capture_output=True, text=True, check=True).stdout
    loaded_from, text = out.split("\n", 1)
    assert loaded_from.startswith(str(archive)) and text == query_text(names[0])
