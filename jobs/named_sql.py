"""The named Spark SQL of ``sql/``: one query per file, loaded by name, run with named parameters.

Why files: the rules that define the link-prediction split (the coin, the inverse-leak rule, the
filter and candidate sets, the Table 1 counts) are the contract a reviewer checks against the
paper; they read best as SQL, side by side. Each file says which temporary views it reads and
which ``:parameters`` it takes; parameters are bound by Spark, never pasted into the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jobs


def query_text(name: str) -> str:
    """The text of ``sql/<name>.sql``.

    Read through the loader that imported ``jobs``, so that it works from the source tree and from
    the ``--py-files`` archive alike (``jobs.runtime.CODE_PACKAGES`` puts ``sql/`` in it).
    """
    path = Path(jobs.__file__).parent.parent / "sql" / f"{name}.sql"
    return jobs.__spec__.loader.get_data(str(path)).decode("utf-8")


def run_sql(spark, name: str, views: dict[str, Any], **params: Any):
    """Register ``views`` (view name -> DataFrame) and run ``sql/<name>.sql`` with ``params``; a DataFrame."""
    for view, frame in views.items():
        frame.createOrReplaceTempView(view)
    return spark.sql(query_text(name), args=params or None)
