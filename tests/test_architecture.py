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
