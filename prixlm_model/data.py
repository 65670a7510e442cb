"""The streaming shard loader: length-bucketed token ids in an order fixed by seed and epoch.

Why this shape: every Parquet file holds sequences of one exact length, so a batch drawn from
one length has no padding; the order of an epoch is a pure function of ``(seed, epoch)`` and of
the shard metadata, so a resumed run (or another rank) finds any batch from its index alone,
without reading the batches before it. Memory stays bounded: a reader decodes one row group at
a time (at most two per length bucket when a batch straddles two of them), never the dataset.

Shard contract (``<data_root>/shards/<release>/<split>/``, written by ``jobs/shards.py``):

- ``_SUCCESS``: written last; a folder without it is refused.
- ``manifest.json``: ``release``, ``split``, ``fingerprint`` (hex string of the inputs and the
  config), ``rows``, ``files`` (``[{"path", "rows", "length"}]``, paths relative to the folder),
  ``config``.
- ``length=<L>/part-<n>.parquet``: only sequences of length L, columns ``input_ids``
  (``list<int32>``: ``<s> ... [O] object... [EOS]``, without the final ``</s>``),
  ``object_start`` (int32, the index of the first object token), ``length`` (int32),
  ``kind`` (``triple`` | ``link``) and ``lang``.

The order of an epoch: within each length, the row groups are shuffled and the rows inside
each row group are shuffled; that stream is cut into batches of ``batch_size`` (the last batch
of each length may be shorter); the batches of all lengths are interleaved at random. The
global sequence of batches is cut to a multiple of ``world_size x group`` (group: micro-batches
per optimizer step) and batch g goes to rank ``g % world_size``, so 1 process accumulating
``world_size`` micro-batches sees exactly what ``world_size`` processes see in one step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from prixlm_model.atomic import publish_folder
from prixlm_model.config import Settings, check_safe_name

SUCCESS = "_SUCCESS"
MANIFEST = "manifest.json"
SPLITS = ("train", "valid")
COLUMNS = ("input_ids", "object_start", "length", "kind", "lang")
SCHEMA = pa.schema(
    [
        ("input_ids", pa.list_(pa.int32())),
        ("object_start", pa.int32()),
        ("length", pa.int32()),
        ("kind", pa.string()),
        ("lang", pa.string()),
    ]
)


@dataclass(frozen=True)
class ShardFile:
    """One Parquet file of the manifest: all its rows have ``length`` tokens."""

    path: Path
    rows: int
    length: int


@dataclass(frozen=True)
class Manifest:
    """A complete shard folder, as its manifest describes it."""

    folder: Path
    release: str
    split: str
    fingerprint: str
    rows: int
    files: tuple[ShardFile, ...]
    config: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """One micro-batch: ``input_ids`` ``(B, L)`` and ``object_start`` ``(B,)``, no padding."""

    input_ids: torch.Tensor
    object_start: torch.Tensor
    epoch: int
    index: int  # position in the epoch's global batch order (the same on every rank)

    @property
    def tokens(self) -> int:
        return self.input_ids.numel()


def shard_folder(settings: Settings, release: str, split: str) -> Path:
    """``<data_root>/shards/<release>/<split>``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return settings.paths.stage_dir("shards", release) / split


def read_manifest(folder: Path) -> Manifest:
    """The manifest of a complete shard folder; a folder without ``_SUCCESS`` is refused."""
    folder = Path(folder)
    if not (folder / SUCCESS).is_file():
        raise FileNotFoundError(f"{folder} has no {SUCCESS}: the shards are missing or were not finished")
    raw = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    files = []
    for entry in raw["files"]:
        relative = Path(entry["path"])
        if relative.is_absolute() or ".." in relative.parts:
            raise ValueError(f"{folder / MANIFEST}: file path {entry['path']!r} leaves the shard folder")
        files.append(ShardFile(folder / relative, int(entry["rows"]), int(entry["length"])))
    return Manifest(
        folder=folder,
        release=raw["release"],
        split=raw["split"],
        fingerprint=str(raw["fingerprint"]),
        rows=int(raw["rows"]),
        files=tuple(files),
        config=raw.get("config", {}),
    )


@dataclass(frozen=True)
class _Unit:
    """One row group of one file: the unit the loader shuffles and decodes."""

    file: int
    group: int
    rows: int  # rows that pass the filter


class ShardLoader:
    """Batches of one shard folder for one rank, in the order fixed by ``(seed, epoch)``.

    ``kinds`` / ``languages`` keep only those sequences (``None``: all); filtering reads the
    ``kind`` and ``lang`` columns once, row group by row group, to count what each holds.
    Raises ``ValueError`` when nothing is left or the data cannot fill one optimizer step.
    """

    def __init__(
        self,
        manifest: Manifest,
        batch_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        group: int = 1,
        kinds: Iterable[str] | None = None,
        languages: Iterable[str] | None = None,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, {world_size})")
        self.manifest, self.batch_size, self.seed = manifest, batch_size, seed
        self.rank, self.world_size, self.group = rank, world_size, group
        self.kinds = None if kinds is None else frozenset(kinds)
        self.languages = None if languages is None else frozenset(languages)
        self.units_by_length = self._count_units()
        self.rows = sum(unit.rows for units in self.units_by_length.values() for unit in units)
        what = f"kinds {sorted(self.kinds) if self.kinds else 'all'}, languages {sorted(self.languages) if self.languages else 'all'}"
        if self.rows == 0:
            raise ValueError(f"{manifest.folder}: no sequences to train on ({what}; {manifest.rows} rows in the manifest)")
        per_length = sum(-(-sum(u.rows for u in units) // batch_size) for units in self.units_by_length.values())
        step = world_size * group
        self.batches_per_epoch = per_length // step * step
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{manifest.folder}: {self.rows} sequences ({what}) make {per_length} batches of {batch_size}, fewer than one "
                f"optimizer step needs ({world_size} processes x {group} micro-batches); lower train.global_batch or train.micro_batch"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.batches_per_epoch // (self.world_size * self.group)

    def _count_units(self) -> dict[int, list[_Unit]]:
        """Row groups per length, with how many of their rows pass the filter."""
        by_length: dict[int, list[_Unit]] = {}
        total = 0
        for index, shard in enumerate(self.manifest.files):
            parquet = pq.ParquetFile(shard.path)
            if parquet.metadata.num_rows != shard.rows:
                raise ValueError(f"{shard.path}: {parquet.metadata.num_rows} rows, the manifest says {shard.rows}")
            total += shard.rows
            for group in range(parquet.num_row_groups):
                if self.kinds is None and self.languages is None:
                    rows = parquet.metadata.row_group(group).num_rows
                else:
                    rows = int(self._keep(parquet.read_row_group(group, columns=["kind", "lang"])).sum())
                if rows:
                    by_length.setdefault(shard.length, []).append(_Unit(index, group, rows))
        if total != self.manifest.rows:
            raise ValueError(f"{self.manifest.folder}: the files hold {total} rows, the manifest says {self.manifest.rows}")
        return dict(sorted(by_length.items()))

    def _keep(self, table: pa.Table) -> np.ndarray:
        keep = np.ones(table.num_rows, dtype=bool)
        if self.kinds is not None:
            keep &= pc.is_in(table["kind"], pa.array(sorted(self.kinds))).to_numpy(zero_copy_only=False)
        if self.languages is not None:
            keep &= pc.is_in(table["lang"], pa.array(sorted(self.languages))).to_numpy(zero_copy_only=False)
        return keep

    def plan(self, epoch: int) -> tuple[np.ndarray, np.ndarray, dict[int, list[_Unit]]]:
        """The epoch's order: per global batch its length and its number among that length's batches,
        and per length the shuffled row groups. Needs only metadata."""
        rng = np.random.default_rng([self.seed, epoch])
        units = {length: [units[i] for i in rng.permutation(len(units))] for length, units in self.units_by_length.items()}
        counts = {length: -(-sum(u.rows for u in group) // self.batch_size) for length, group in units.items()}
        labels = np.repeat(np.array(list(counts), dtype=np.int32), list(counts.values()))
        labels = rng.permutation(labels)[: self.batches_per_epoch]
        occurrence = np.empty(len(labels), dtype=np.int64)
        for length in counts:
            where = np.flatnonzero(labels == length)
            occurrence[where] = np.arange(len(where))
        return labels, occurrence, units

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """This rank's batches of ``epoch`` from global batch ``start`` (a multiple of the world size) on."""
        if start % self.world_size:
            raise ValueError(f"start batch {start} is not a multiple of the world size {self.world_size}")
        labels, occurrence, units = self.plan(epoch)
        streams = {length: _LengthStream(self, epoch, length, group) for length, group in units.items()}
        for index in range(start + self.rank, len(labels), self.world_size):
            length = int(labels[index])
            first = int(occurrence[index]) * self.batch_size
            input_ids, object_start = streams[length].rows(first, first + self.batch_size)
            yield Batch(torch.from_numpy(input_ids).long(), torch.from_numpy(object_start).long(), epoch, index)

    def read_unit(self, epoch: int, unit: _Unit, length: int) -> tuple[np.ndarray, np.ndarray]:
        """One row group's kept rows, shuffled by ``(seed, epoch, file, row group)``."""
        shard = self.manifest.files[unit.file]
        table = pq.ParquetFile(shard.path).read_row_group(unit.group, columns=list(COLUMNS))
        keep = self._keep(table) if self.kinds is not None or self.languages is not None else None
        ids = table["input_ids"].combine_chunks()
        lengths = table["length"].to_numpy()
        flat = ids.values.to_numpy()
        if flat.size != table.num_rows * length or (lengths != length).any() or (pc.list_value_length(ids).to_numpy() != length).any():
            raise ValueError(f"{shard.path}: row group {unit.group} holds sequences that are not of length {length}")
        input_ids = flat.reshape(-1, length)
        object_start = table["object_start"].to_numpy()
        if keep is not None:
            input_ids, object_start = input_ids[keep], object_start[keep]
        order = np.random.default_rng([self.seed, epoch, unit.file, unit.group]).permutation(len(object_start))
        return input_ids[order], object_start[order]


class _LengthStream:
    """The shuffled row stream of one length in one epoch, decoding one row group at a time."""

    def __init__(self, loader: ShardLoader, epoch: int, length: int, units: Sequence[_Unit]) -> None:
        self.loader, self.epoch, self.length, self.units = loader, epoch, length, units
        self.ends = np.cumsum([unit.rows for unit in units])
        self.cached: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def rows(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``first .. last - 1`` of the stream (fewer at its end)."""
        last = min(last, int(self.ends[-1]))
        parts_ids, parts_start = [], []
        position = first
        while position < last:
            index = int(np.searchsorted(self.ends, position, side="right"))
            begin = int(self.ends[index - 1]) if index else 0
            ids, starts = self._unit(index)
            stop = min(last, int(self.ends[index])) - begin
            parts_ids.append(ids[position - begin : stop])
            parts_start.append(starts[position - begin : stop])
            position = begin + stop
        return np.concatenate(parts_ids), np.concatenate(parts_start)

    def _unit(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if index not in self.cached:
            # Reading moves forward: only the row group being read and the one before stay decoded.
            self.cached = {k: v for k, v in self.cached.items() if k == index - 1}
            self.cached[index] = self.loader.read_unit(self.epoch, self.units[index], self.length)
        return self.cached[index]


def write_shards(
    folder: Path,
    rows: Iterable[tuple[Sequence[int], int, str, str]],
    *,
    release: str,
    split: str,
    fingerprint: str,
    config: dict | None = None,
    row_group_size: int = 1024,
) -> Manifest:
    """Write ``(input_ids, object_start, kind, lang)`` rows as a shard folder of the contract above.

    The reference writer of the contract, for tests and benchmarks (the pipeline's own writer is
    the Spark job ``jobs/shards.py``). Written beside the target and renamed into place, with
    ``_SUCCESS`` last. Holds the rows in memory: meant for small data.
    """
    check_safe_name(release, "release")
    folder = Path(folder)
    scratch = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(scratch, ignore_errors=True)
    by_length: dict[int, list[tuple[Sequence[int], int, str, str]]] = {}
    for row in rows:
        by_length.setdefault(len(row[0]), []).append(row)
    files = []
    for length, group in sorted(by_length.items()):
        relative = f"length={length}/part-00000.parquet"
        (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
        table = pa.table(
            {
                "input_ids": [list(map(int, r[0])) for r in group],
                "object_start": [r[1] for r in group],
                "length": [length] * len(group),
                "kind": [r[2] for r in group],
                "lang": [r[3] for r in group],
            },
            schema=SCHEMA,
        )
        pq.write_table(table, scratch / relative, row_group_size=row_group_size)
        files.append({"path": relative, "rows": len(group), "length": length})
    manifest = {
        "release": release,
        "split": split,
        "fingerprint": fingerprint,
        "rows": sum(f["rows"] for f in files),
        "files": files,
        "config": config or {},
    }
    scratch.mkdir(parents=True, exist_ok=True)
    (scratch / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    (scratch / SUCCESS).touch()
    folder.parent.mkdir(parents=True, exist_ok=True)
    publish_folder(scratch, folder)
    return read_manifest(folder)
