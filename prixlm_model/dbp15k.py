"""DBP15K (Sun et al., 2017): one reader for the cross-lingual DBpedia sample the project ships with.

A pair folder such as ``fr_en`` holds, xz-compressed and tab-separated, ``ent_ids_<side>`` and
``rel_ids_<side>`` (id, IRI), ``triples_<side>`` (head, relation, tail ids) for side 1 (the first
language) and 2 (the second), and the gold inter-language links ``sup_ent_ids`` (the training
share) and ``ref_ent_ids`` (the test share) as (id in side 1, id in side 2).
"""

from __future__ import annotations

import lzma
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote


@dataclass(frozen=True)
class Chapter:
    """One language's slice of DBP15K: entity and relation IRIs by id, and its facts."""

    lang: str
    entities: dict[int, str]
    relations: dict[int, str]
    triples: list[tuple[int, int, int]]


def read_tsv(path: Path) -> list[list[str]]:
    """The non-blank lines of an xz-compressed TSV file, split into fields."""
    with lzma.open(path, "rt", encoding="utf-8") as handle:
        return [line.rstrip("\n").split("\t") for line in handle if line.strip()]


def read_chapter(folder: Path, side: int) -> Chapter:
    """Side 1 or 2 of a pair folder (``fr_en``: 1 is fr, 2 is en)."""
    lang = folder.name.split("_")[side - 1]
    entities = {int(i): iri for i, iri in read_tsv(folder / f"ent_ids_{side}.xz")}
    relations = {int(i): iri for i, iri in read_tsv(folder / f"rel_ids_{side}.xz")}
    triples = [(int(h), int(r), int(t)) for h, r, t in read_tsv(folder / f"triples_{side}.xz")]
    return Chapter(lang, entities, relations, triples)


def read_links(folder: Path, shares: tuple[str, ...] = ("sup", "ref")) -> list[tuple[int, int]]:
    """The gold links (side-1 id, side-2 id) of the given shares, in file order."""
    return [(int(a), int(b)) for share in shares for a, b, *_ in read_tsv(folder / f"{share}_ent_ids.xz")]


def read_dbp15k(folder: Path) -> tuple[Chapter, Chapter, list[tuple[int, int]]]:
    """Both chapters of a pair folder and all its gold inter-language links."""
    return read_chapter(folder, 1), read_chapter(folder, 2), read_links(folder)


def local_name(iri: str) -> str:
    """A resource's name from its IRI: the last path segment, percent-decoded, ``_`` as space."""
    return unquote(iri.rsplit("/", 1)[1]).replace("_", " ")
