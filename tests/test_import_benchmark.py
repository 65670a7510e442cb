"""The published-split importer on a small slice of DBP-5L's real files: ids to IRIs and names, the
split contract (no test triple in train, every test triple evaluated, the length rule counted),
both filters against a hand computation, and bad inputs named by file and line."""

from __future__ import annotations

import lzma
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from jobs.import_benchmark import BenchmarkInputError, import_split, read_published, resource_name
from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, EvalSettings, load_settings
from prixlm_model.decoding import constrained_beam_search, load_decoder
from prixlm_model.evaluation import build_candidates, evaluate_link_prediction, read_split
from prixlm_model.tokenization import query_prefix

DBP5L = PROJECT_ROOT.parent / "shared" / "data" / "dbp-5l"
RELEASE = "dbp-5l-slice"


def real_lines(relative: str, numbers: list[int]) -> list[str]:
    """Lines of one of DBP-5L's shipped files, by 0-based line number (its ids)."""
    with lzma.open(DBP5L / f"{relative}.xz", "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    return [lines[n] for n in numbers]


# Real entities: en 0-3 are 500 Days of Summer, 1. FC Magdeburg, 1. FC Union Berlin, 1. FSV Mainz 05;
# en 3673 is percent-encoded; 13245 and 10905 are the list's longest names (the length rule).
EN = real_lines("entity/en.tsv", [0, 1, 2, 3, 3673, 13245, 10905])
EL = real_lines("entity/el.tsv", [0, 1, 2, 3])
RELATIONS = real_lines("relations.txt", range(8))  # 0 property/nfcchampion, 2 ontology/composer, 3 property/recognisedLanguages
LONG, LONGER = 5, 6  # ids in the slice's en list


def write_slice(folder: Path, kg: dict[str, list[str]], links: list[str] | None = None) -> Path:
    """A DBP-5L folder: real entity and relation lines, the given kg lines; some files xz, some plain."""
    (folder / "entity").mkdir(parents=True)
    (folder / "kg").mkdir()
    (folder / "seed_alignlinks").mkdir()
    with lzma.open(folder / "entity" / "en.tsv.xz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(EN) + "\n")
    (folder / "entity" / "el.tsv").write_text("\n".join(EL) + "\n", encoding="utf-8")
    (folder / "relations.txt").write_text("\n".join(RELATIONS) + "\n")
    for name, lines in kg.items():
        (folder / "kg" / f"{name}.tsv").write_text("".join(f"{line}\n" for line in lines))
    (folder / "seed_alignlinks" / "el-en.tsv").write_text("".join(f"{line}\n" for line in (links or ["0.0\t0.0", "1.0\t1.0"])))
    return folder


KG = {
    "el-train": ["0\t2\t1", "2\t3\t3"],
    "el-val": ["1\t2\t2"],
    "el-test": ["3\t2\t0"],
    "en-train": ["0\t2\t1", f"{LONG}\t0\t{LONGER}", "4\t2\t0"],
    "en-val": ["1\t3\t2"],
    "en-test": ["2\t2\t3", f"{LONGER}\t0\t{LONG}"],
}


def slice_settings(tmp_path: Path, folder: Path):
    return load_settings({
        "paths": {"data_root": str(tmp_path / "var"), "cache_dir": str(PROJECT_ROOT / "var" / "cache")},
        "model": {"base": "tiny"},
        "benchmark": {"dbp5l_dir": str(folder), "languages": ["el", "en"]},
    })


def read(folder: Path):
    return ds.dataset(folder, format="parquet", partitioning="hive").to_table()


def test_ids_map_to_their_iris_and_names_and_the_contract_holds(tmp_path: Path) -> None:
    settings = slice_settings(tmp_path, write_slice(tmp_path / "dbp-5l", KG))
    stats = import_split(settings, "dbp-5l", RELEASE)
    split = settings.paths.stage_dir("split", RELEASE)

    el_test = read(split / "test" / "lang=el").to_pylist()
    assert [(r["s_iri"], r["p_iri"], r["o_iri"]) for r in el_test] == [(EL[3], RELATIONS[2], EL[0])]
    assert el_test[0]["o"] == "(500) Μέρες με τη Σάμερ"  # percent-decoded, "_" as space
    assert el_test[0]["p"] == "συνθέτης"  # dbo:composer by the ontology's Greek label
    train = read(split / "train" / "kind=triple").to_pylist()
    en_train = {(r["s_iri"], r["p_iri"], r["o_iri"]): r for r in train if r["lang"] == "en"}
    composer = en_train[(EN[0], RELATIONS[2], EN[1])]
    assert (composer["s"], composer["p"], composer["o"]) == ("500 Days of Summer", "composer", "1. FC Magdeburg")
    assert en_train[(EN[4], RELATIONS[2], EN[0])]["s"] == "Who's Afraid of Virginia Woolf? (film)"  # %3F decoded
    (en_valid,) = [r for r in read(split / "valid").to_pylist() if r["lang"] == "en"]
    assert (en_valid["o_iri"], en_valid["p"]) == (EN[2], "recognisedLanguages")  # a property/ relation: its local name
    assert stats["length_rule"]["el"]["train"] == {"kept": 0, "dropped": 2}  # Greek names are many pieces: both reach 30 tokens

    # The length rule drops the over-long train triple and counts it; its over-long test twin is kept.
    assert (EN[LONG], RELATIONS[0], EN[LONGER]) not in en_train
    assert stats["length_rule"]["en"]["train"] == {"kept": 2, "dropped": 1}
    assert stats["length_rule"]["en"]["test"] == {"evaluated": 2, "over_length": 1}
    en_test = read(split / "test" / "lang=en")
    assert en_test.num_rows == len(KG["en-test"]) and max(en_test["n_tokens"].to_pylist()) >= settings.prepare.max_tokens
    test_keys = {(r["s_iri"], r["p_iri"], r["o_iri"]) for lang in ("el", "en") for r in read(split / "test" / f"lang={lang}").to_pylist()}
    assert not test_keys & {(r["s_iri"], r["p_iri"], r["o_iri"]) for r in train}
    known = read(split / "known").to_pylist()
    assert len(known) == sum(len(lines) for lines in KG.values())  # every published triple, the long one too
    assert {r["split"] for r in known if (r["s_iri"], r["o_iri"]) == (EN[LONG], EN[LONGER])} == {"train"}

    links = read(split / "train" / "kind=link").to_pylist()
    assert {(r["s_iri"], r["o_iri"], r["s_lang"], r["o_lang"]) for r in links} == {
        (EL[0], EN[0], "el", "en"), (EN[0], EL[0], "en", "el"), (EL[1], EN[1], "el", "en"), (EN[1], EL[1], "en", "el")}
    assert [r["name"] for r in read(split / "entities" / "lang=en").to_pylist()] == [resource_name(iri) for iri in EN]
    assert [row["test"] for row in stats["table"]] == [1, 2] and stats["eval_languages"] == ["el", "en"]

    again = import_split(settings, "dbp-5l", RELEASE)  # a re-run replaces the release: nothing doubles
    assert again["table"] == stats["table"] and read(split / "known").num_rows == len(known)


def test_both_filters_give_the_hand_computed_ranks(tmp_path: Path) -> None:
    """The gold is the 4th best name; the best is a train object, the 2nd a valid one: rank 2 under
    train+valid+test, rank 3 under train only. Every test triple is a query, the over-long one too."""
    settings = slice_settings(tmp_path, tmp_path / "dbp-5l")
    model, tokenizer = load_decoder(ensure_base_model(settings))
    names = [resource_name(iri) for iri in EN]
    candidates = build_candidates(tokenizer, pa.table({"iri": EN, "name": names}))
    (ranked,) = constrained_beam_search(model, candidates.trie, [query_prefix(tokenizer, names[2], "composer")], k=len(EN))
    order = [EN.index(candidates.iris[candidates.trie.entities_of_leaf(leaf)[0]]) for leaf, _ in ranked]
    assert len({nll for _, nll in ranked}) == len(EN)  # no ties: the hand computation needs none
    kg = dict(KG, **{"en-train": [f"2\t2\t{order[0]}", f"{LONG}\t0\t{LONGER}"], "en-val": [f"2\t2\t{order[1]}"], "en-test": [f"2\t2\t{order[3]}", f"{LONGER}\t0\t{LONG}"]})
    write_slice(tmp_path / "dbp-5l", kg)
    import_split(settings, "dbp-5l", RELEASE)

    tables = read_split(settings.paths.data_root, RELEASE, "en")
    eval_settings = EvalSettings(beam_size=len(EN), max_test_queries=0, filters=["all", "train"], full_rank_max_queries=0)
    result = evaluate_link_prediction(model, tokenizer, tables, eval_settings)
    assert result.metrics["queries"] == len(kg["en-test"])  # every published test triple
    query = result.per_query.to_pylist()[[row["s_iri"] for row in result.per_query.to_pylist()].index(EN[2])]
    assert (query["rank_all"], query["rank_train"]) == (2.0, 3.0)
    assert query["rank"] == query["rank_all"] and query["full_rank"] == 2.0
    by_filter = result.metrics["by_filter"]
    assert by_filter["all"]["filter_hash"] != by_filter["train"]["filter_hash"]
    assert by_filter["train"]["full_rank_hits@3"] == by_filter["train"]["hits@3"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda folder: (folder / "kg" / "el-val.tsv").unlink(), r"kg/el-val\.tsv\(\.xz\): missing"),
        (lambda folder: (folder / "seed_alignlinks" / "el-en.tsv").write_text("0.0\t0.0\n99.0\t1.0\n"),
         r"seed_alignlinks/el-en\.tsv line 2: entity id 99 is not in entity/el\.tsv \(4 entities\)"),
        (lambda folder: (folder / "kg" / "en-train.tsv").write_text("0\t2\t1\n\n1\t8\t2\n"),
         r"kg/en-train\.tsv line 3: relation id 8 out of range \(relations\.txt has 8\)"),
        (lambda folder: (folder / "kg" / "en-test.tsv").write_text("0\t2\n"), r"kg/en-test\.tsv line 1: 2 fields"),
    ],
    ids=["missing-file", "link-to-unknown-id", "relation-out-of-range", "short-line"],
)
def test_bad_input_is_an_error_naming_file_and_line(tmp_path: Path, change, message: str) -> None:
    folder = write_slice(tmp_path / "dbp-5l", KG)
    change(folder)
    settings = slice_settings(tmp_path, folder)
    with pytest.raises(BenchmarkInputError, match=message):
        import_split(settings, "dbp-5l", RELEASE)
    assert not settings.paths.stage_dir("split", RELEASE).exists()  # nothing half-written


def test_the_shipped_dbp5l_reads_whole() -> None:
    """The real files: 960 relations, the published sizes of SOURCE.md, every link end an entity."""
    published = read_published(DBP5L, ["el", "en", "es", "fr", "ja"])
    assert len(published.relations) == 960
    assert {lang: len(published.triples[(lang, "test")]) for lang in ("el", "en", "es", "fr", "ja")} == {
        "el": 1017, "en": 7464, "es": 4810, "fr": 4171, "ja": 2162}
    assert len(published.triples[("el", "train")]) == 8670 and len(published.triples[("el", "valid")]) == 4152
    assert len(published.entities["el"]) == 5231 and len(published.links) == 10
