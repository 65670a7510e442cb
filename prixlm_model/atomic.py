"""Atomic writes: a reader sees the old file or folder, or the new one, never a partial one.

Every writer of the project goes through these two: ``replacing`` (and ``write_file`` on top of
it) for one file, ``publish_folder`` for a folder built beside its target. Both rely on
``rename`` being atomic within one filesystem, so the scratch always lives next to the target.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def replacing(path: Path, mode: int = 0o644, durable: bool = False) -> Iterator[Path]:
    """Yield a scratch path beside ``path``; once the block succeeds it replaces ``path``.

    ``durable`` also flushes the file and its folder to disk (a checkpoint's pointer must survive
    a power cut, a report need not). A failed block leaves ``path`` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    scratch = Path(name)
    try:
        yield scratch
        os.chmod(scratch, mode)  # mkstemp makes it owner-only
        if durable:
            with open(scratch, "rb") as written:
                os.fsync(written.fileno())
        os.replace(scratch, path)
        if durable:
            directory = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
    finally:
        scratch.unlink(missing_ok=True)


def write_file(path: Path, content: str | bytes, mode: int = 0o644, durable: bool = False) -> Path:
    """Write ``content`` (text as UTF-8) to ``path`` atomically; return ``path``."""
    with replacing(path, mode, durable) as scratch:
        if isinstance(content, bytes):
            scratch.write_bytes(content)
        else:
            scratch.write_text(content, encoding="utf-8")
    return path


def staging_folder(target: Path) -> Path:
    """A new, empty hidden folder beside ``target`` to build it in (readable by all, like the result)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staging.chmod(0o755)
    return staging


def publish_folder(staging: Path, target: Path) -> Path:
    """Put the finished ``staging`` folder at ``target``, replacing an older ``target`` whole.

    The older folder is first renamed aside, then deleted: at no moment does ``target`` hold a
    mix of old and new files.
    """
    retired = None
    if target.exists():
        retired = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(retired)
    staging.rename(target)
    if retired is not None:
        shutil.rmtree(retired, ignore_errors=True)
    return target
