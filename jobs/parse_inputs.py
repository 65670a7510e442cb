"""The parse's inputs: finding the dumps, bounded decompression, line counts, and reading lines into Spark.

Why line counts come from the driver. Every input line must be accounted for, and a reject must
name its line number. Spark's observed metrics count rows without a group-by, so instead the
driver counts each file's lines while it decompresses it (or, for a plain input, in a thread
while Spark parses), as Spark's text reader splits them (``\\n``, ``\\r\\n`` or a lone ``\\r``
ends a line), keeping the count at every MiB. Spark is told to read each split of each file as a
partition of its own (``spark.sql.files.openCostInBytes`` = the split size), so a row's number
inside its partition is its number inside its split, and a reject's line number is the lines of
the earlier splits (from the nearest MiB count, and at most 1 MiB read again) + that number + 1.
The two counts, driver and Spark, are then compared: ``run`` fails if they differ.

Why decompression on the driver. Python's ``bz2`` is libbzip2 with the GIL released: it runs at
``bzcat`` speed, about 2.5x Hadoop's Java codec here, and files decompress in parallel. A
truncated or corrupt stream raises ``CorruptInputError`` naming the file before Spark reads a
line (reliability #15), and no file expands past ``acquire.max_expansion`` (reliability #33).
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote, urlparse

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

COMPRESSED = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}
TRIPLE_EXTENSIONS = (".ttl", ".nt")
QUAD_EXTENSIONS = (".tql", ".nq")
MARK_BYTES = 1 << 20  # the driver keeps a file's line count at every multiple of this offset


class ParseError(RuntimeError):
    """The parse of a release failed; the message names the file at fault when there is one."""


class CorruptInputError(ParseError):
    """A compressed input is truncated or corrupt, or expands too far (reliability #15, 33)."""


@dataclass(frozen=True)
class InputFile:
    """One acquired dump: its path, its name relative to the release folder, and its syntax."""

    path: Path
    rel: str
    quads: bool
    codec: str | None  # ".bz2", ".gz", ".xz" or None for plain


@dataclass
class LineCount:
    """Lines of one plain file as Spark's text reader cuts them, with the count kept at every MiB.

    ``marks[k]`` is the number of line breaks (``\\n``, ``\\r``, less the ``\\r\\n`` pairs seen
    whole) in the first ``k * MARK_BYTES`` bytes: one int per MiB, whatever the file size.
    """

    breaks: int = 0
    pairs: int = 0
    size: int = 0
    last: bytes = b""
    marks: list[int] = field(default_factory=lambda: [0])

    def update(self, data: bytes) -> None:
        while data:
            room = MARK_BYTES - self.size % MARK_BYTES
            piece, data = data[:room], data[room:]
            self.breaks += piece.count(b"\n") + piece.count(b"\r")
            self.pairs += piece.count(b"\r\n") + (self.last == b"\r" and piece[:1] == b"\n")
            self.last = piece[-1:]
            self.size += len(piece)
            if self.size % MARK_BYTES == 0:
                self.marks.append(self.breaks - self.pairs)

    @property
    def lines(self) -> int:
        """Rows Spark reads: one per line end, plus an unterminated last line."""
        return self.breaks - self.pairs + (1 if self.last not in (b"", b"\n", b"\r") else 0)


@dataclass
class StagedFile:
    """A plain file Spark reads, the input it came from, and what the driver counted in it."""

    path: Path
    item: InputFile
    count: LineCount
    started: bool = False  # its first line is DBpedia's "# started ..."
    completed: bool = False  # its last line is "# completed ..."


def discover_inputs(raw_dir: Path) -> list[InputFile]:
    """The dumps under ``raw/<release>/`` (one folder level), in name order; dot-files are skipped."""
    if not raw_dir.is_dir():
        raise ParseError(f"no acquired dumps: {raw_dir} is not a folder")
    found = []
    for path in sorted(raw_dir.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(raw_dir).parts):
            continue
        name = path.name
        codec = next((ext for ext in COMPRESSED if name.endswith(ext)), None)
        base = name[: -len(codec)] if codec else name
        if base.endswith(QUAD_EXTENSIONS) or base.endswith(TRIPLE_EXTENSIONS):
            found.append(InputFile(path, path.relative_to(raw_dir).as_posix(), base.endswith(QUAD_EXTENSIONS), codec))
    if not found:
        raise ParseError(f"no .ttl/.nt/.tql/.nq dumps under {raw_dir}")
    return found


def _decompress(item: InputFile, target: Path, max_expansion: int) -> StagedFile:
    """Stream ``item`` to ``target``, counting lines, refusing to write more than ``max_expansion`` times its size.

    The same bound acquire checks: a published checksum proves where a file came from, not that
    it expands to something sane.
    """
    limit = max(item.path.stat().st_size * max_expansion, 1 << 20)
    count = LineCount()
    try:
        with COMPRESSED[item.codec](item.path, "rb") as source, open(target, "wb") as sink:
            for block in iter(lambda: source.read(MARK_BYTES), b""):
                if count.size + len(block) > limit:
                    raise CorruptInputError(f"{item.rel}: expands beyond {max_expansion}x its compressed size (acquire.max_expansion); "
                                            f"refused as a decompression bomb, no line of it was parsed")
                count.update(block)
                sink.write(block)
    except CorruptInputError:
        target.unlink(missing_ok=True)
        raise
    except (EOFError, OSError, lzma.LZMAError) as exc:
        raise CorruptInputError(f"{item.rel}: compressed file is truncated or corrupt ({exc}); no line of it was parsed") from exc
    return _framed(StagedFile(target, item, count))


def _count_plain(item: InputFile) -> StagedFile:
    count = LineCount()
    with open(item.path, "rb") as source:
        for block in iter(lambda: source.read(MARK_BYTES), b""):
            count.update(block)
    return _framed(StagedFile(item.path, item, count))


def _framed(staged: StagedFile) -> StagedFile:
    """Whether the first line starts with ``# started`` and the last with ``# completed`` (DBpedia's frame)."""
    with open(staged.path, "rb") as handle:
        staged.started = handle.read(9) == b"# started"
        size = staged.count.size
        handle.seek(max(0, size - (1 << 16)))
        tail = handle.read()
    for end in (b"\r\n", b"\n", b"\r"):  # the last line's own terminator
        if tail.endswith(end):
            tail = tail[: -len(end)]
            break
    start = max(tail.rfind(b"\n"), tail.rfind(b"\r")) + 1
    staged.completed = tail[start:].startswith(b"# completed") and (start > 0 or size <= 1 << 16)
    return staged


def stage_inputs(inputs: list[InputFile], work_dir: Path, workers: int = 0, max_expansion: int = 200) -> dict[str, StagedFile]:
    """Decompress compressed inputs into ``work_dir`` and count every input's lines (plain ones stay where they are).

    Returns ``{resolved plain path: StagedFile}`` once every file is counted. Raises
    ``CorruptInputError`` naming the first bad file.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        futures = [
            pool.submit(_count_plain, item) if item.codec is None
            else pool.submit(_decompress, item, work_dir / f"{index:05d}{'.nq' if item.quads else '.nt'}", max_expansion)
            for index, item in enumerate(inputs)
        ]
        staged = [future.result() for future in futures]
    return {str(entry.path.resolve()): entry for entry in staged}


def split_bytes(staged: dict[str, StagedFile], parallelism: int, configured: int = 0) -> int:
    """Input split size: ``configured``, else four splits per core between 4 MB and 128 MB (Spark's default maximum).

    With Spark's default a 290 MB file is cut 128 + 128 + 34 MB, and two cores finish unevenly.
    """
    if configured:
        return configured
    total = sum(entry.count.size for entry in staged.values())
    return int(min(128 << 20, max(4 << 20, total // max(1, 4 * parallelism))))


@contextmanager
def one_split_per_partition(spark: SparkSession, split: int) -> Iterator[None]:
    """Read files in splits of ``split`` bytes, each split a partition of its own; restore the settings after.

    With the open cost equal to the split size Spark never packs two splits into one partition,
    so ``read_lines``'s ``pos`` counts the rows of one split. A partitioned write inside goes
    through one open writer per partition value instead of a sort of every row first (the
    planned write always adds that sort), whatever the session says.
    """
    wanted = {"spark.sql.files.maxPartitionBytes": str(split), "spark.sql.files.openCostInBytes": str(split),
              "spark.sql.optimizer.plannedWrite.enabled": "false", "spark.sql.maxConcurrentOutputFileWriters": "64"}
    before = {key: spark.conf.get(key, None) for key in wanted}
    for key, value in wanted.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in before.items():
            spark.conf.unset(key) if value is None else spark.conf.set(key, value)


def read_lines(spark: SparkSession, staged: dict[str, StagedFile]) -> DataFrame:
    """Raw lines with their position: ``file_path, block_start, pos, value, quads``.

    ``pos`` is the row's number inside its split (see ``one_split_per_partition``): the low 33
    bits of ``monotonically_increasing_id()`` in the same projection as the scan.
    """
    paths = [str(entry.path) for entry in staged.values()]
    frame = spark.read.text(paths).select(
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().bitwiseAND((1 << 33) - 1).alias("pos"),
        F.col("value"),
    )
    # Staged files are named .nq/.nt by syntax; plain inputs keep their .tql/.nq/.ttl/.nt name.
    quads = F.lit(False)
    for ext in QUAD_EXTENSIONS:
        quads = quads | F.col("file_path").endswith(ext)
    return frame.withColumn("quads", quads)


def local_path(file_path: str) -> str:
    """The resolved local path of Spark's ``_metadata.file_path`` (a ``file:`` URI)."""
    parsed = urlparse(file_path)
    return str(Path(unquote(parsed.path)).resolve()) if parsed.scheme in ("file", "") else file_path


def lines_before(entry: StagedFile, block_start: int) -> int:
    """Lines Spark reads in the splits before the one starting at ``block_start``.

    Hadoop's line reader gives a split the lines that start after its first byte and up to its
    last byte, included: the lines before a split starting at ``s > 0`` are those starting at or
    before ``s``, one more than the line ends wholly inside the first ``s`` bytes. Reads at most
    ``MARK_BYTES + 2`` bytes.
    """
    if block_start == 0:
        return 0
    mark = block_start // MARK_BYTES * MARK_BYTES
    low = max(mark - 1, 0)
    with open(entry.path, "rb") as handle:
        handle.seek(low)
        chunk = handle.read(block_start + 1 - low)
    body = chunk[mark - low : block_start - low]
    ends = entry.count.marks[mark // MARK_BYTES] + body.count(b"\n") + body.count(b"\r") - body.count(b"\r\n")
    if mark > 0 and chunk[:1] == b"\r" and body[:1] == b"\n":  # a pair across the mark, counted twice
        ends -= 1
    if chunk[block_start - 1 - low : block_start + 1 - low] == b"\r\n":  # a pair across the split: it ends after it
        ends -= 1
    return ends + 1
