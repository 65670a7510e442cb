"""sequences → split → shards on real DBpedia data (a slice of the DBP15K-derived sample)."""

from __future__ import annotations

import bz2
import json
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from jobs import parse, sequences, shards, split
from jobs.stage import StageInputError, require_complete, spark_session
from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.tokenization import END, OBJECT, encode_triples, load_tokenizer

pytestmark = pytest.mark.slow
RELEASE = "2016.10.01"
FACTS_PER_LANG = 6000
LINKS_PER_LANG = 3000


def boundary_names(tokenizer) -> tuple[str, str]:
    """Two object names giving whole sequences of exactly 29 and exactly 30 tokens."""
    subject, relation = "Prixlm Test", "pays"
    base = encode_triples(tokenizer, [subject], [relation], [""])[0].n_tokens
    words, names = [], {}
    while len(names) < 2:
        words.append("ville")
        name = " ".join(words)
        n = encode_triples(tokenizer, [subject], [relation], [name])[0].n_tokens
        if n in (29, 30):
            names[n] = name
        assert n <= 30 or len(names) == 2, f"could not hit 29 and 30 tokens from a base of {base}"
    return names[29], names[30]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, sample_mirror: Path):
    """Raw dumps cut from the sample mirror, plus two boundary-length facts; then every stage once."""
    data_root = tmp_path_factory.mktemp("prepare") / "var"
    settings = load_settings({"paths": {"data_root": str(data_root), "cache_dir": str(PROJECT_ROOT / "var/cache")},
                              "model": {"base": "tiny"}, "spark": {"shuffle_partitions": 4},
                              "prepare": {"max_tokens_by_lang": {"en": 31}}})
    tokenizer = load_tokenizer(ensure_base_model(settings))
    name29, name30 = boundary_names(tokenizer)
    source = sample_mirror / "databus/dbpedia/generic"
    for lang in ("fr", "en"):
        folder = settings.paths.stage_dir("raw", RELEASE) / lang
        folder.mkdir(parents=True)
        for artifact, limit in (("infobox-properties", FACTS_PER_LANG), ("labels", None), ("interlanguage-links", LINKS_PER_LANG)):
            lines = bz2.decompress((source / artifact / RELEASE / f"{artifact}_lang={lang}.ttl.bz2").read_bytes()).decode().splitlines()
            body = lines[1:-1][:limit] if limit else lines[1:-1]
            if artifact == "infobox-properties" and lang == "fr":
                host = "http://fr.dbpedia.org"
                body += [f"<{host}/resource/Prixlm_Test> <{host}/property/pays> <{host}/resource/{name.replace(' ', '_')}> ." for name in (name29, name30)]
            (folder / f"{artifact}_lang={lang}.ttl").write_text("\n".join([lines[0], *body, lines[-1]]) + "\n")
    spark = spark_session(settings, "test-prepare", "local[2]")
    stats = {}
    try:
        for job in (parse, sequences, split, shards):
            stats[job.__name__.rsplit(".", 1)[-1]] = job.run(spark, settings, RELEASE)
        yield settings, spark, stats, tokenizer, (name29, name30)
    finally:
        spark.stop()


def read(folder: Path):
    """A stage's Parquet output with its hive partition columns (stats.json and markers skipped)."""
    return ds.dataset(folder, format="parquet", partitioning="hive", exclude_invalid_files=True).to_table().to_pandas()


def test_sequence_ids_and_lengths_match_the_tokenizer(prepared):
    settings, _, stats, tokenizer, _ = prepared
    frame = read(settings.paths.stage_dir("sequences", RELEASE))
    triples = frame[frame.kind == "triple"].sample(300, random_state=0)
    expected = encode_triples(tokenizer, list(triples.s), list(triples.p), list(triples.o))
    for (_, row), enc in zip(triples.iterrows(), expected):
        assert list(row.prefix_ids) == enc.prefix_ids and list(row.object_ids) == enc.object_ids
        assert row.n_tokens == enc.n_tokens == len(enc.prefix_ids) + len(enc.object_ids) + 1
    assert frame.n_tokens.max() < max(settings.prepare.max_tokens, *settings.prepare.max_tokens_by_lang.values())
    counts = stats["sequences"]["by_kind_and_lang"]
    assert counts["triple"]["fr"]["kept"] == int((frame[(frame.kind == "triple") & (frame.lang == "fr")]).shape[0])
    assert stats["sequences"]["dropped_by_length"] == sum(c["dropped"] for langs in counts.values() for c in langs.values()) > 0


def test_length_boundary_keeps_29_and_drops_30(prepared):
    settings, _, _, _, (name29, name30) = prepared
    frame = read(settings.paths.stage_dir("sequences", RELEASE))
    probe = frame[(frame.s == "Prixlm Test") & (frame.p == "pays")]
    assert list(probe.o) == [name29] and list(probe.n_tokens) == [29]


def test_length_limit_per_language_and_its_shares_in_table_one(prepared):
    """English has its own limit (31), French the paper's (30); a link takes the larger of its two languages'."""
    settings, _, stats, _, _ = prepared
    frame = read(settings.paths.stage_dir("sequences", RELEASE))
    triples = frame[frame.kind == "triple"]
    assert triples[triples.lang == "en"].n_tokens.max() == 30 and triples[triples.lang == "fr"].n_tokens.max() == 29
    assert frame[frame.kind == "link"].n_tokens.max() <= 30
    shares = stats["sequences"]["dropped_by_lang"]
    counts = stats["sequences"]["by_kind_and_lang"]
    for lang in ("en", "fr"):
        for kind in ("triple", "link"):
            c = counts[kind][lang]
            assert shares[lang][f"dropped_share_{kind}"] == round(c["dropped"] / (c["kept"] + c["dropped"]), 6)
    rows = {row["lang"]: row for row in stats["split"]["table"]}
    assert (rows["en"]["max_tokens"], rows["fr"]["max_tokens"]) == (31, 30)
    assert rows["fr"]["dropped_share_triple"] == shares["fr"]["dropped_share_triple"] > 0
    assert stats["split"]["warnings"] == stats["sequences"]["warnings"]


def test_a_language_losing_more_than_the_share_is_warned_about():
    counts = {"triple": {"ja": {"kept": 80, "dropped": 20}, "fr": {"kept": 99, "dropped": 1}},
              "link": {"ja": {"kept": 100, "dropped": 0}, "fr": {"kept": 10, "dropped": 0}}}
    settings = load_settings({"prepare": {"max_tokens_by_lang": {"ja": 40}}}).prepare
    shares, warnings = sequences.dropped_shares(counts, settings)
    assert shares["ja"] == {"max_tokens": 40, "dropped_share": 0.1, "dropped_share_link": 0.0, "dropped_share_triple": 0.2}
    assert len(warnings) == 1 and warnings[0].startswith("length rule: ja loses 10.00% of its sequences at >= 40 tokens")
    strict = load_settings({"prepare": {"warn_dropped_share": 0.005}}).prepare
    assert [w.split()[2] for w in sequences.dropped_shares(counts, strict)[1]] == ["fr", "ja"]
    with pytest.raises(ValueError, match="max_tokens_by_lang"):
        load_settings({"prepare": {"max_tokens_by_lang": {"xx": 40}}})


def test_split_is_disjoint_leak_free_and_ten_percent(prepared):
    settings, _, stats, _, _ = prepared
    root = settings.paths.stage_dir("split", RELEASE)
    train = read(root / "train")
    test = read(root / "test")
    key = lambda frame: set(zip(frame.s_iri, frame.p_iri, frame.o_iri))  # noqa: E731
    train_triples = train[train.kind == "triple"]
    assert not key(test) & key(train_triples)
    assert not key(read(root / "valid")) & key(train_triples)
    train_pairs = set(zip(train_triples.lang, train_triples.s_iri, train_triples.o_iri))
    assert not any((lang, o, s) in train_pairs for lang, s, o in zip(test.lang, test.s_iri, test.o_iri)), "an inverse leak remains"
    for row in stats["split"]["table"]:
        held_out = row["test"] + row["leaks_removed"] + row["valid"]
        assert 0.09 <= (row["test"] + row["leaks_removed"]) / row["triples"] <= 0.11 + 0.01, row
        assert row["train"] + held_out == row["triples"]
        assert row["leaks_removed"] > 0


def test_known_and_entities_cover_the_test_set(prepared):
    settings, _, _, _, _ = prepared
    root = settings.paths.stage_dir("split", RELEASE)
    test = read(root / "test")
    known = set(zip(*[read(root / "known")[c] for c in ("s_iri", "p_iri", "o_iri")]))
    assert set(zip(test.s_iri, test.p_iri, test.o_iri)) <= known
    entities = read(root / "entities")
    for lang in ("fr", "en"):
        assert set(test[test.lang == lang].o_iri) <= set(entities[entities.lang == lang].iri)


def test_link_pairs_are_held_out_together(prepared):
    settings, _, _, _, _ = prepared
    root = settings.paths.stage_dir("split", RELEASE)
    held = read(root / "links_test")
    train = read(root / "train")
    train_links = set(zip(train[train.kind == "link"].s_iri, train[train.kind == "link"].o_iri))
    assert len(held) > 0
    assert not any((o, s) in train_links or (s, o) in train_links for s, o in zip(held.s_iri, held.o_iri))


def test_shards_are_bucketed_by_exact_length_with_manifest(prepared):
    settings, _, stats, _, _ = prepared
    root = require_complete(settings.paths.stage_dir("shards", RELEASE), "shards")
    manifest = json.loads((root / "train" / "manifest.json").read_text())
    assert manifest["fingerprint"] == stats["shards"]["fingerprint"] and (root / "train" / "_SUCCESS").exists()
    train_rows = read(settings.paths.stage_dir("split", RELEASE) / "train").shape[0]
    assert manifest["rows"] == sum(f["rows"] for f in manifest["files"]) == train_rows
    for entry in manifest["files"]:
        table = pq.read_table(root / "train" / entry["path"]).to_pydict()
        assert set(table["length"]) == {entry["length"]}
        for ids, start in zip(table["input_ids"], table["object_start"]):
            assert len(ids) == entry["length"] and ids[start - 1] == OBJECT and ids[-1] == END and ids[0] == 0


def test_rerun_replaces_outputs_with_the_same_rows(prepared):
    settings, spark, stats, _, _ = prepared
    first = {p.name: p.stat().st_size for p in (settings.paths.stage_dir("split", RELEASE) / "test").rglob("*.parquet")}
    again = split.run(spark, settings, RELEASE)
    assert again["table"] == stats["split"]["table"]
    second = {p.name for p in (settings.paths.stage_dir("split", RELEASE) / "test").rglob("*.parquet")}
    assert len(second) == len(first)
    shards_again = shards.run(spark, settings, RELEASE)
    assert shards_again["splits"] == stats["shards"]["splits"]
    assert not list(settings.paths.stage_dir("split", RELEASE).parent.glob(".*tmp-*"))


def test_missing_upstream_is_a_clear_error(prepared, tmp_path):
    settings, spark, _, _, _ = prepared
    other = settings.model_copy(update={"paths": settings.paths.model_copy(update={"data_root": tmp_path})})
    with pytest.raises(StageInputError, match=r"parsed/2016\.10\.01: missing or incomplete .*jobs\.parse"):
        sequences.run(spark, other, RELEASE)
