"""import_benchmark: a published link-prediction split as a release of the pipeline (DBP-5L).

``python -m jobs.import_benchmark dbp-5l [--max-triples N]`` reads KEnS's DBP-5L
(``benchmark.dbp5l_dir``; its SOURCE.md gives origin and format) and writes ``split/<release>/``
in the split job's contract, so that ``shards``, training and ``evaluate`` run on it unchanged:

- ``train/kind=triple/`` and ``valid/``: the published train and val triples of each language as
  Prix-LM sequences (``jobs.sequences``' columns); ``train/kind=link/``: the seed links, both
  directions, as link sequences. The 30-token rule (``prepare.max_tokens``) drops the over-long
  ones, counted per language and kind in ``stats.json``;
- ``test/lang=<xx>/``: every published test triple, over-long ones included: a published test set
  is evaluated whole, so the rule only counts them (``over_length``). Decoding reads names, not
  these ids, so an over-long query costs nothing but length;
- ``known/``: every published triple with its ``split`` (train, valid, test), the long ones too:
  the ``all`` filter uses them all, the ``train`` filter (KEnS's and SS-AGA's code) train's only;
- ``entities/lang=<xx>/``: every entity of the language's list: the candidates KEnS ranks over;
- ``links_test/``: empty (DBP-5L gives links for training only); ``stats.json``: Table 1 rows, the
  length rule per language, the SHA-256 of every input file.

Names come from the IRIs as the parse job makes them: an entity's is its resource name
percent-decoded with ``_`` as space; a relation's is the DBpedia ontology's ``rdfs:label`` in the
language for a ``dbo:`` property that has one, else its local name (``_`` as space). Entity ids
that name the same IRI (a few per language in DBP-5L's lists) become one entity, and are counted.

Bad input stops the import before anything is written, with an error naming the file and the
line: a missing file, a line that is not ``id<TAB>id[<TAB>id]``, an entity id that is not in the
language's list, a relation id out of range. Output is atomic: a re-run replaces the release.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import lzma
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import permutations
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs.sequences import OWL_SAME_AS
from jobs.split import as_markdown
from jobs.stage import atomic_output, write_stats
from prixlm_model.config import Settings, load_settings

log = logging.getLogger(__name__)

PARTS = {"train": "train", "val": "valid", "test": "test"}  # DBP-5L's file suffix -> the split's folder
DBO = "http://dbpedia.org/ontology/"
_IDS = pa.list_(pa.int32())
SEQUENCE_SCHEMA = pa.schema(
    [(name, pa.string()) for name in ("kind", "lang", "s_lang", "o_lang", "s_iri", "p_iri", "o_iri", "s", "p", "o")]
    + [("prefix_ids", _IDS), ("object_ids", _IDS), ("n_tokens", pa.int32())]
)


class BenchmarkInputError(ValueError):
    """A published split's file is missing or holds a bad line; the message names the file and line."""


# The published splits that can be imported, each a reader below.
BENCHMARKS = ("dbp-5l",)


def release_name(name: str, max_triples: int) -> str:
    """The release an import writes: the benchmark's name, or ``<name>-first<N>`` for a slice."""
    return f"{name}-first{max_triples}" if max_triples else name


def input_file(folder: Path, name: str) -> Path:
    """``folder/name`` or its ``.xz``; a clear error naming both when neither exists."""
    for candidate in (folder / f"{name}.xz", folder / name):
        if candidate.is_file():
            return candidate
    raise BenchmarkInputError(f"{folder / name}(.xz): missing; a DBP-5L folder holds entity/, relations.txt, kg/ and seed_alignlinks/")


def numbered_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number from 1, text)`` of the non-blank lines of a UTF-8 file, plain or xz."""
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            text = line.rstrip("\r\n")
            if text.strip():
                yield number, text


def resource_name(iri: str) -> str:
    """A resource's surface name: everything after ``/resource/``, percent-decoded, ``_`` as space."""
    _, found, tail = iri.partition("/resource/")
    return unquote(tail if found else iri.rsplit("/", 1)[-1]).replace("_", " ")


def relation_name(iri: str, lang: str, labels: dict[tuple[str, str], str]) -> str:
    """A relation's surface name in ``lang``: the ontology's label for a ``dbo:`` property, else its local name."""
    if iri.startswith(DBO) and (iri, lang) in labels:
        return labels[(iri, lang)]
    return unquote(iri.rsplit("/", 1)[-1].rsplit("#", 1)[-1]).replace("_", " ")


@dataclass
class Published:
    """A published split read and checked, by id: what the import turns into the split's tables."""

    entities: dict[str, list[str]]  # lang -> IRI of each entity id
    relations: list[str]  # IRI of each relation id
    triples: dict[tuple[str, str], list[tuple[int, int, int]]]  # (lang, train|valid|test) -> (head, relation, tail) ids
    links: dict[tuple[str, str], list[tuple[int, int]]]  # (lang a, lang b) -> (id in a, id in b)
    sha256: dict[str, str] = field(default_factory=dict)  # input file (relative) -> SHA-256


def _int_id(text: str, path: Path, number: int, what: str) -> int:
    """An id written as an integer (``12``) or an integral float (``12.0``, as the seed links are)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value.is_integer() or value < 0:
        raise BenchmarkInputError(f"{path} line {number}: {what} {text!r} is not a non-negative integer id")
    return int(value)


def _check_entity(entity: int, lang: str, entities: dict[str, list[str]], path: Path, number: int) -> int:
    if entity >= len(entities[lang]):
        raise BenchmarkInputError(f"{path} line {number}: entity id {entity} is not in entity/{lang}.tsv ({len(entities[lang])} entities)")
    return entity


def read_published(folder: Path, languages: list[str], max_triples: int = 0) -> Published:
    """Read and check DBP-5L's files for ``languages`` (kg/ files cut to their first ``max_triples`` lines when > 0)."""
    if not folder.is_dir():
        raise BenchmarkInputError(f"{folder}: missing; set benchmark.dbp5l_dir to the DBP-5L folder")
    sha256: dict[str, str] = {}

    def lines(path: Path) -> Iterator[tuple[int, str]]:
        sha256[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        return numbered_lines(path)

    entities = {lang: [text.strip() for _, text in lines(input_file(folder / "entity", f"{lang}.tsv"))] for lang in languages}
    relations = [text.strip() for _, text in lines(input_file(folder, "relations.txt"))]
    triples: dict[tuple[str, str], list[tuple[int, int, int]]] = {}
    for lang in languages:
        for suffix, part in PARTS.items():
            path = input_file(folder / "kg", f"{lang}-{suffix}.tsv")
            rows = []
            for number, text in lines(path):
                if max_triples and len(rows) == max_triples:
                    break
                fields = text.split("\t")
                if len(fields) != 3:
                    raise BenchmarkInputError(f"{path} line {number}: {len(fields)} fields, expected head_id<TAB>relation_id<TAB>tail_id")
                head, relation, tail = (_int_id(value, path, number, what) for value, what in zip(fields, ("head id", "relation id", "tail id")))
                if relation >= len(relations):
                    raise BenchmarkInputError(f"{path} line {number}: relation id {relation} out of range (relations.txt has {len(relations)})")
                rows.append((_check_entity(head, lang, entities, path, number), relation, _check_entity(tail, lang, entities, path, number)))
            triples[(lang, part)] = rows
    links: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for a, b in permutations(languages, 2):  # each pair has one file, in either order (el-en, es-en)
        path = next((path for xz in (".xz", "") if (path := folder / "seed_alignlinks" / f"{a}-{b}.tsv{xz}").is_file()), None)
        if path is None:
            continue
        pairs = []
        for number, text in lines(path):
            fields = text.split("\t")
            if len(fields) != 2:
                raise BenchmarkInputError(f"{path} line {number}: {len(fields)} fields, expected id_in_{a}<TAB>id_in_{b}")
            left, right = (_int_id(value, path, number, f"{code} id") for value, code in zip(fields, (a, b)))
            pairs.append((_check_entity(left, a, entities, path, number), _check_entity(right, b, entities, path, number)))
        links[(a, b)] = pairs
    if len(languages) > 1 and not links:
        raise BenchmarkInputError(f"{folder / 'seed_alignlinks'}: no <a>-<b>.tsv(.xz) file for any two of {languages}")
    return Published(entities, relations, triples, links, sha256)


def sequence_table(rows: list[dict[str, Any]], encoded: list[Any]) -> pa.Table:
    """Rows of names and IRIs with their encodings as a table in ``jobs.sequences``' columns."""
    columns: dict[str, list[Any]] = {name: [row[name] for row in rows] for name in SEQUENCE_SCHEMA.names[:10]}
    columns["prefix_ids"] = [e.prefix_ids for e in encoded]
    columns["object_ids"] = [e.object_ids for e in encoded]
    columns["n_tokens"] = [e.n_tokens for e in encoded]
    return pa.table(columns, schema=SEQUENCE_SCHEMA)


def length_rule(table: pa.Table, max_tokens: int) -> tuple[pa.Table, int]:
    """The rows under ``max_tokens`` tokens (the 30-token rule), and how many the rule would drop."""
    long = pc.greater_equal(table["n_tokens"], max_tokens)
    return table.filter(pc.invert(long)), pc.sum(long).as_py() or 0


def write_parquet(folder: Path, table: pa.Table) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "part-00000.parquet")


def import_split(settings: Settings, name: str, release: str | None = None) -> dict[str, Any]:
    """Import the published split ``name`` as ``split/<release>`` (atomically); return its statistics."""
    from jobs.parse_outputs import ontology_labels
    from prixlm_model.base_model import ensure_base_model
    from prixlm_model.tokenization import encode_links, encode_triples, load_tokenizer

    if name not in BENCHMARKS:
        raise ValueError(f"unknown published split {name!r}; known: {', '.join(BENCHMARKS)}")
    cfg = settings.benchmark
    release = release or release_name(name, cfg.max_triples)
    published = read_published(cfg.dbp5l_dir, cfg.languages, cfg.max_triples)
    labels = ontology_labels(settings.parse.ontology)
    tokenizer = load_tokenizer(ensure_base_model(settings))
    max_tokens = settings.prepare.max_tokens

    entity_names = {lang: [resource_name(iri) for iri in iris] for lang, iris in published.entities.items()}
    relation_names = {lang: [relation_name(iri, lang, labels) for iri in published.relations] for lang in cfg.languages}
    parts: dict[str, list[pa.Table]] = {"train": [], "valid": [], "test": [], "link": []}
    known, counts = [], {}
    for lang in cfg.languages:
        iris, names = published.entities[lang], entity_names[lang]
        test_keys = {(iris[h], published.relations[r], iris[t]) for h, r, t in published.triples[(lang, "test")]}
        per: dict[str, Any] = {"entities": len(set(iris)), "entity_ids_sharing_an_iri": len(iris) - len(set(iris)), "held_out_copies_removed": 0}
        for part in ("train", "valid", "test"):
            rows = []
            for h, r, t in published.triples[(lang, part)]:
                key = (iris[h], published.relations[r], iris[t])
                known.append((lang, *key, part))
                if part != "test" and key in test_keys:  # only through ids sharing an IRI: the test triple stays, its copy leaves train
                    per["held_out_copies_removed"] += 1
                    continue
                rows.append({"kind": "triple", "lang": lang, "s_lang": lang, "o_lang": lang, "s_iri": key[0], "p_iri": key[1], "o_iri": key[2],
                             "s": names[h], "p": relation_names[lang][r], "o": names[t]})
            table = sequence_table(rows, encode_triples(tokenizer, [x["s"] for x in rows], [x["p"] for x in rows], [x["o"] for x in rows]))
            kept, dropped = length_rule(table, max_tokens)
            if part == "test":  # the published test set stays whole: the rule only counts
                per["test"] = {"evaluated": table.num_rows, "over_length": dropped}
            else:
                per[part] = {"kept": kept.num_rows, "dropped": dropped}
            parts[part].append(table if part == "test" else kept)
        counts[lang] = per
    for (a, b), pairs in sorted(published.links.items()):
        for s_lang, o_lang, order in ((a, b, 0), (b, a, 1)):  # both directions, as parse writes owl:sameAs
            ends = [(pair[order], pair[1 - order]) for pair in pairs]
            rows = [{"kind": "link", "lang": s_lang, "s_lang": s_lang, "o_lang": o_lang, "s_iri": published.entities[s_lang][s],
                     "p_iri": OWL_SAME_AS, "o_iri": published.entities[o_lang][o], "s": entity_names[s_lang][s], "p": "",
                     "o": entity_names[o_lang][o]} for s, o in ends]
            table = sequence_table(rows, encode_links(tokenizer, [x["s"] for x in rows], [s_lang] * len(rows), [o_lang] * len(rows), [x["o"] for x in rows]))
            kept, dropped = length_rule(table, max_tokens)
            link = counts[s_lang].setdefault("link", {"kept": 0, "dropped": 0})
            link["kept"] += kept.num_rows
            link["dropped"] += dropped
            parts["link"].append(kept)

    with atomic_output(settings.paths.stage_dir("split", release)) as staging:
        write_parquet(staging / "train" / "kind=triple", pa.concat_tables(parts["train"]).drop(["kind"]))
        write_parquet(staging / "train" / "kind=link", pa.concat_tables(parts["link"]).drop(["kind"]))
        write_parquet(staging / "valid", pa.concat_tables(parts["valid"]))
        for table in parts["test"]:
            write_parquet(staging / "test" / f"lang={table['lang'][0].as_py()}", table.drop(["lang"]))
        write_parquet(staging / "links_test", SEQUENCE_SCHEMA.empty_table())
        unique_known = sorted(set(known))
        write_parquet(staging / "known", pa.table({key: [row[i] for row in unique_known] for i, key in enumerate(("lang", "s_iri", "p_iri", "o_iri", "split"))}))
        for lang in cfg.languages:
            first: dict[str, str] = {}  # one row per IRI, in id order
            for iri, entity_name in zip(published.entities[lang], entity_names[lang]):
                first.setdefault(iri, entity_name)
            write_parquet(staging / "entities" / f"lang={lang}", pa.table({"iri": list(first), "name": list(first.values())}))
        rows = table_one(counts, published, cfg.languages)
        stats = {
            "release": release,
            "benchmark": name,
            "source": str(cfg.dbp5l_dir),
            "sha256": published.sha256,
            "max_triples": cfg.max_triples,
            "max_tokens": max_tokens,
            "base_model": settings.model.base,
            "eval_languages": list(cfg.languages),
            "table": rows,
            "length_rule": counts,
            "leaks_removed": 0,
            "links_held_out": 0,
        }
        write_stats(staging, stats)
        (staging / "stats.md").write_text(as_markdown(rows))
    log.info("imported %s as split/%s:\n%s", name, release, as_markdown(rows))
    return stats


def table_one(counts: dict[str, dict[str, Any]], published: Published, languages: list[str]) -> list[dict[str, Any]]:
    """The split's Table 1 rows, with what the length rule dropped and how many test triples are over length."""
    links = Counter()
    for (a, b), pairs in published.links.items():
        links[a] += len(pairs)
        links[b] += len(pairs)
    rows = []
    for lang in languages:
        c = counts[lang]
        rows.append({
            "lang": lang,
            "entities": c["entities"],
            "triples": sum(len(published.triples[(lang, part)]) for part in ("train", "valid", "test")),
            "links": links[lang],
            "train": c["train"]["kept"],
            "valid": c["valid"]["kept"],
            "test": c["test"]["evaluated"],
            "leaks_removed": 0,
            "dropped_by_length": c["train"]["dropped"] + c["valid"]["dropped"] + c.get("link", {}).get("dropped", 0),
            "test_over_length": c["test"]["over_length"],
            "rejects": 0,
        })
    return rows


def run(settings: Settings, name: str, dag_run_id: str | None = None) -> str:
    """The Airflow task: import ``name``, log its statistics to the DAG run's MLflow run; return the release."""
    if dag_run_id:  # before the work, not after it (reliability #27)
        from prixlm_model.tracking import require_reachable

        require_reachable(settings.mlflow.resolved_uri())
    stats = import_split(settings, name)
    if dag_run_id:
        from prixlm_model.tracking import log_stage

        folder = settings.paths.stage_dir("split", stats["release"])
        log_stage(settings, dag_run_id, "import_benchmark", stats["release"], stats, artifacts=[folder / "stats.md"])
    return stats["release"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=BENCHMARKS, help="the published split")
    parser.add_argument("--max-triples", type=int, help="keep the first N lines of every kg/ file (a slice; default benchmark.max_triples)")
    parser.add_argument("--dag-run-id", help="Airflow DAG run id: the statistics go to its MLflow run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if args.max_triples is not None:
        settings.benchmark.max_triples = args.max_triples
    release = run(settings, args.name, args.dag_run_id)
    stats = json.loads((settings.paths.stage_dir("split", release) / "stats.json").read_text())
    print(json.dumps({"release": release, "table": stats["table"]}, ensure_ascii=False))


if __name__ == "__main__":
    main()
