"""The construct stage on a hand-made two-language KB: candidate queries and transfer, calibration,
RDF round trips through rdflib and pyoxigraph, and the whole stage with the tiny model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prixlm_model.calibration import expected_calibration_error, fit_calibrator, precision_at_k, precision_recall_at
from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.construct import LanguageKB, candidate_queries, hash_sample, transferred_queries

RELEASE = "2016.04.01"
FR, EN = "http://fr.dbpedia.org/resource/", "http://dbpedia.org/resource/"
FRP, ENP, DBO = "http://fr.dbpedia.org/property/", "http://dbpedia.org/property/", "http://dbpedia.org/ontology/"
EVRY = FR + "%C3%89vry_%28ville%29"  # percent-encoded as some dumps write it ...
ILE = FR + "Île-de-France"  # ... and raw UTF-8 as others do

# French facts; the English KB knows more about some of the same (linked) entities.
FR_FACTS = [
    ("Paris", "pays", "France"), ("Lyon", "pays", "France"), ("Berlin", "pays", "Allemagne"),
    ("Lyon", DBO + "mayor", "Gérard_Collomb"), ("Paris", "jumelage", "Rome"), (EVRY, "région", ILE), ("Paris", "région", ILE),
    ("Marseille", "région", "Provence"), ("Rome", "pays", "Italie"),
    ("Lyon", "villeDe", "France"),  # beside one of the aligned "pays" facts: country -> pays by 3 of 4 relations seen
]
EN_FACTS = [
    ("Paris", "country", "France"), ("Lyon", "country", "France"), ("Berlin", "country", "Germany"),  # already known in fr
    ("Marseille", "country", "France"),  # mapped by alignment (3 aligned facts), linked object: fr France
    ("Paris", DBO + "mayor", "Anne_Hidalgo"),  # mapped by the ontology, linked object: fr Anne Hidalgo (no fr fact)
    ("Paris", "motto", "Fluctuat_nec_mergitur"),  # no French relation: unmapped
    ("Toulouse", "country", "France"),  # Toulouse has no French counterpart: not carried over
]
LINKED = ["Paris", "Lyon", "Berlin", "Marseille", "France", "Rome", "Anne_Hidalgo"]
EN_NAMES = {"Germany": "Allemagne"}  # English entities linked to a French one of another name


def iri(base: str, name: str) -> str:
    return name if name.startswith("http") else base + name


def name_of(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value.rsplit("/", 1)[-1]).replace("_", " ")


def facts_table(lang: str, facts) -> pa.Table:
    base, prop = (FR, FRP) if lang == "fr" else (EN, ENP)
    rows = [(iri(base, s), iri(prop, p), iri(base, o)) for s, p, o in facts]
    return pa.table({"s_iri": [r[0] for r in rows], "p_iri": [r[1] for r in rows], "o_iri": [r[2] for r in rows],
                     "s": [name_of(r[0]) for r in rows], "p": [name_of(r[1]) for r in rows], "o": [name_of(r[2]) for r in rows],
                     "lang": [lang] * len(rows)})


def links_table() -> pa.Table:
    pairs = [(EN + name, FR + name) for name in LINKED] + [(EN + en, FR + fr) for en, fr in EN_NAMES.items()]
    rows = [(e, "en", f, "fr") for e, f in pairs] + [(f, "fr", e, "en") for e, f in pairs]
    return pa.table({"s_iri": [r[0] for r in rows], "s_lang": [r[1] for r in rows], "o_iri": [r[2] for r in rows],
                     "o_lang": [r[3] for r in rows], "s": [name_of(r[0]) for r in rows], "o": [name_of(r[2]) for r in rows]})


def kbs() -> tuple[LanguageKB, LanguageKB]:
    return LanguageKB("fr", facts_table("fr", FR_FACTS)), LanguageKB("en", facts_table("en", EN_FACTS))


def test_transfer_maps_by_ontology_and_alignment_and_skips_the_rest() -> None:
    fr, en = kbs()
    queries, counts = transferred_queries(fr, en, links_table(), min_alignments=2)
    assert set(queries) == {(FR + "Marseille", FRP + "pays"), (FR + "Paris", DBO + "mayor")}
    marseille = queries[(FR + "Marseille", FRP + "pays")]
    assert (marseille.s, marseille.p, marseille.source) == ("Marseille", "pays", "transferred-from-en")
    assert marseille.expected == {FR + "France"}  # the English object's French counterpart, to check the answer against
    assert queries[(FR + "Paris", DBO + "mayor")].expected == {FR + "Anne_Hidalgo"}
    assert counts["mapped_ontology"] == 1 and counts["mapped_aligned"] == 1  # mayor by the ontology; country -> pays by 3 aligned facts
    assert counts["already_known"] == 3  # Paris, Lyon, Berlin: their country is in the French KB already
    assert counts["unmapped_facts"] == 1 and counts["unmapped_relations"] == 1  # motto
    assert counts["linked_facts"] == 6  # Toulouse has no French counterpart
    # Too few aligned facts, or too small a share of the relations between the aligned entities:
    # country maps to nothing and Marseille is not carried over.
    assert transferred_queries(fr, en, links_table(), min_alignments=2, min_share=0.75)[0].keys() == queries.keys()
    for strict in ({"min_alignments": 4}, {"min_alignments": 2, "min_share": 0.8}):
        queries, counts = transferred_queries(fr, en, links_table(), **strict)
        assert set(queries) == {(FR + "Paris", DBO + "mayor")} and counts["unmapped_facts"] == 5


def test_candidate_queries_keep_a_pair_once_and_sample_deterministically() -> None:
    fr, en = kbs()
    queries, counts = candidate_queries(fr, [en], links_table(), min_alignments=2)
    pairs = [(q.s_iri, q.p_iri) for q in queries]
    assert len(pairs) == len(set(pairs)) == len(fr.objects) + 2
    sources = {(q.s_iri, q.p_iri): q.source for q in queries}
    assert sources[(FR + "Marseille", FRP + "pays")] == "transferred-from-en" and sources[(FR + "Paris", FRP + "pays")] == "monolingual"
    assert counts["monolingual"]["candidate_pairs"] == len(fr.objects)
    small, large = hash_sample(queries, 3), hash_sample(list(reversed(queries)), 5)
    assert [q for q in small if q.source == "monolingual"] == [q for q in large if q.source == "monolingual"][:3]
    assert sum(q.source == "monolingual" for q in small) == 3 and sum(q.source != "monolingual" for q in small) == 2


def test_isotonic_calibration_is_monotone_and_recovers_the_true_precision() -> None:
    rng = np.random.default_rng(0)
    logprob = rng.uniform(-12, 0, 40_000)
    truth = 1 / (1 + np.exp(-(logprob + 6)))  # the known answer: P(true | logprob)
    correct = rng.random(logprob.size) < truth
    calibrator = fit_calibrator(logprob, correct, "isotonic")
    grid = np.linspace(-12, 0, 200)
    fitted = calibrator(grid)
    assert np.all(np.diff(fitted) >= 0)
    assert np.max(np.abs(fitted - 1 / (1 + np.exp(-(grid + 6))))) < 0.08
    # On fresh data, facts kept at probability >= 0.8 are true 0.8-1.0 of the time, as promised.
    fresh = rng.uniform(-12, 0, 40_000)
    fresh_correct = rng.random(fresh.size) < 1 / (1 + np.exp(-(fresh + 6)))
    probability = calibrator(fresh)
    chosen = probability >= 0.8
    expected = float(np.mean(1 / (1 + np.exp(-(fresh[chosen] + 6)))))
    assert precision_recall_at(probability, fresh_correct, 0.8, int(fresh_correct.sum()))["precision"] == pytest.approx(expected, abs=0.02)
    assert expected_calibration_error(probability, fresh_correct) < 0.03
    assert expected_calibration_error(np.full(fresh.size, 0.9), fresh_correct) > 0.3  # an overconfident score is caught


def test_platt_scaling_finds_the_logistic_curve_and_degenerate_fits_are_constant() -> None:
    rng = np.random.default_rng(1)
    logprob = rng.uniform(-12, 0, 40_000)
    correct = rng.random(logprob.size) < 1 / (1 + np.exp(-(0.5 * logprob + 3)))
    calibrator = fit_calibrator(logprob, correct, "platt")
    assert calibrator.params == pytest.approx((0.5, 3.0), rel=0.1)
    assert type(calibrator).from_dict(json.loads(json.dumps(calibrator.to_dict())))(np.array([-6.0]))[0] == pytest.approx(0.5, abs=0.05)
    nothing_true = fit_calibrator([-1.0, -2.0, -3.0], [False, False, False])
    assert nothing_true.degenerate and list(nothing_true([0.0, -9.0])) == [0.0, 0.0]
    assert list(precision_at_k(np.array([0.9, 0.2, 0.5]), np.array([True, False, False]))) == [1.0, 0.5, pytest.approx(1 / 3)]


def test_ntriples_round_trip_through_rdflib_and_pyoxigraph_with_non_ascii_and_percent_escapes(tmp_path: Path) -> None:
    import rdflib

    from prixlm_model.rdf import load_store, run_graph, scored_facts, valid_iri, write_facts

    rows = [
        {"s_iri": EVRY, "p_iri": FRP + "région", "o_iri": ILE, "logprob": -0.7, "probability": 0.91, "rank": 1, "status": "accept", "source": "monolingual"},
        {"s_iri": "http://ja.dbpedia.org/resource/源氏物語", "p_iri": DBO + "genre", "o_iri": "http://ja.dbpedia.org/resource/物語_(文学)",
         "logprob": -2.5, "probability": 0.42, "rank": 2, "status": "review", "source": "transferred-from-en"},
    ]
    graph = run_graph(RELEASE, "fr", "prixlm-x", "run123")
    assert write_facts(rows, tmp_path / "fr.nt", tmp_path / "fr.nq", graph, {"model": "prixlm-x"}) == 2
    parsed = rdflib.Graph().parse(tmp_path / "fr.nt", format="nt")
    assert {(str(s), str(p), str(o)) for s, p, o in parsed} == {(r["s_iri"], r["p_iri"], r["o_iri"]) for r in rows}
    quads = rdflib.Dataset().parse(tmp_path / "fr.nq", format="nquads")
    assert len(list(quads.quads((None, rdflib.URIRef("urn:prixlm:vocab:probability"), None, rdflib.URIRef(graph))))) == 2

    answered = scored_facts(load_store(tmp_path / "store", [tmp_path / "fr.nt", tmp_path / "fr.nq"]))
    assert [(r["s_iri"], r["o_iri"], r["probability"], r["status"], r["graph"]) for r in answered] == [
        (EVRY, ILE, 0.91, "accept", graph), (rows[1]["s_iri"], rows[1]["o_iri"], 0.42, "review", graph)]
    assert not valid_iri(FR + "with space") and valid_iri(EVRY)


# --- the whole stage, with the tiny model -------------------------------------------------------

def write_release(settings, model_release: str = RELEASE) -> None:
    """``parsed/`` and ``split/`` of the hand-made KB, and a model folder (the tiny base) trained "on" ``model_release``."""
    from jobs.stage import atomic_output, write_stats
    from prixlm_model.base_model import ensure_base_model
    from prixlm_model.data import shard_folder, write_shards
    from prixlm_model.training import run_name

    facts = {"fr": facts_table("fr", FR_FACTS), "en": facts_table("en", EN_FACTS)}
    with atomic_output(settings.paths.stage_dir("parsed", RELEASE)) as staging:
        for lang, table in facts.items():
            (staging / "facts" / f"lang={lang}").mkdir(parents=True)
            pq.write_table(table.drop(["lang"]), staging / "facts" / f"lang={lang}" / "part-0.parquet")
        (staging / "links").mkdir()
        pq.write_table(links_table(), staging / "links" / "part-0.parquet")
        write_stats(staging, {"facts": sum(t.num_rows for t in facts.values())})
    held = {"valid": {("Rome", "pays", "Italie")}, "test": {(EVRY, "région", ILE), ("Berlin", "pays", "Allemagne")}}
    with atomic_output(settings.paths.stage_dir("split", RELEASE)) as staging:
        fr = facts["fr"]
        keys = [(s, p, o) for s, p, o in zip(*(fr.column(n).to_pylist() for n in ("s_iri", "p_iri", "o_iri")))]
        for part in ("valid", "test"):
            chosen = [i for i, (s, p, o) in enumerate(keys) if any((iri(FR, a), iri(FRP, b), iri(FR, c)) == (s, p, o) for a, b, c in held[part])]
            folder = staging / part / ("lang=fr" if part == "test" else "")
            folder.mkdir(parents=True)
            table = fr.take(chosen)
            pq.write_table(table.drop(["lang"]) if part == "test" else table, folder / "part-0.parquet")
        (staging / "known").mkdir()
        pq.write_table(pa.concat_tables(facts.values()).select(["lang", "s_iri", "p_iri", "o_iri"]), staging / "known" / "part-0.parquet")
        (staging / "entities" / "lang=fr").mkdir(parents=True)
        names = {i: n for s, o, sn, on in zip(*(fr.column(c).to_pylist() for c in ("s_iri", "o_iri", "s", "o"))) for i, n in ((s, sn), (o, on))}
        names[FR + "Anne_Hidalgo"] = "Anne Hidalgo"  # a candidate object known only through a link
        pq.write_table(pa.table({"iri": list(names), "name": list(names.values())}), staging / "entities" / "lang=fr" / "part-0.parquet")
        write_stats(staging, {"eval_languages": ["fr"], "table": []})
    # the run a model of these settings is found under: named by the training settings and the shards' fingerprint
    write_shards(shard_folder(settings, RELEASE, "train"), [([0, 5, 2], 1, "triple", "fr")], release=RELEASE, split="train", fingerprint="c0ffee")
    model = settings.paths.stage_dir("models", RELEASE) / run_name(settings, RELEASE)
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(ensure_base_model(settings), model)
    (model / "training.json").write_text(json.dumps({"release": model_release, "run": model.name, "mlflow_run_id": "train-run-1"}))


@pytest.fixture
def stage_settings(tmp_path: Path):
    settings = load_settings({
        "paths": {"data_root": str(tmp_path / "var"), "cache_dir": str(PROJECT_ROOT / "var" / "cache")},
        "model": {"base": "tiny"},
        # Every candidate of the small trie fits in the beam; everything proposed is written.
        "construct": {"beam_size": 32, "objects_per_query": 40, "accept_threshold": 0.5, "review_threshold": 0.0, "min_alignments": 2},
    })
    write_release(settings)
    return settings


@pytest.mark.slow
def test_stage_proposes_only_new_facts_writes_them_all_ways_and_reruns_to_the_same_files(stage_settings) -> None:
    from jobs.construct import run
    from prixlm_model.rdf import load_store, scored_facts

    stats = run(stage_settings, RELEASE)
    folder = stage_settings.paths.stage_dir("predictions", RELEASE)
    table = pq.read_table(folder / "fr.parquet")
    rows = table.to_pylist()
    known = {(s, p, o) for s, p, o in LanguageKB("fr", facts_table("fr", FR_FACTS)).facts()}
    entities = set(pq.read_table(stage_settings.paths.stage_dir("split", RELEASE) / "entities/lang=fr").column("iri").to_pylist())
    pairs = {(row["s_iri"], row["p_iri"]) for row in rows}
    assert pairs == {(s, p) for s, p, _ in known} | {(FR + "Marseille", FRP + "pays"), (FR + "Paris", DBO + "mayor")}
    for s, p in pairs:  # every candidate but the known objects and the subject itself: known facts are never proposed
        proposed = {row["o_iri"] for row in rows if (row["s_iri"], row["p_iri"]) == (s, p)}
        assert proposed == entities - {o for ks, kp, o in known if (ks, kp) == (s, p)} - {s}
    assert [row["rank"] for row in rows if (row["s_iri"], row["p_iri"]) == (FR + "Paris", DBO + "mayor")] == sorted(
        row["rank"] for row in rows if (row["s_iri"], row["p_iri"]) == (FR + "Paris", DBO + "mayor"))
    mayor = [row for row in rows if row["p_iri"] == DBO + "mayor" and row["s_iri"] == FR + "Paris"]
    assert {row["source"] for row in mayor} == {"transferred-from-en"}
    assert {row["o_iri"] for row in mayor if row["link_confirmed"]} == {FR + "Anne_Hidalgo"}
    assert all(row["link_confirmed"] is None for row in rows if row["source"] == "monolingual")
    assert all(row["status"] in ("accept", "review") and 0 <= row["probability"] <= 1 and row["logprob"] <= 0 for row in rows)
    (model,) = {row["model"] for row in rows}
    assert model.startswith(f"prixlm-{RELEASE}-") and {row["model_run_id"] for row in rows} == {"train-run-1"}
    assert stats["fr"]["written"] == len(rows) and stats["fr"]["candidates"]["transferred-from-en"]["unmapped_facts"] == 1

    answered = json.loads((folder / "triplestore.json").read_text())
    assert answered["sparql_rows"] == answered["parquet_rows"] == len(rows) and answered["ok"]
    nt_lines = (folder / "fr.nt").read_text(encoding="utf-8").splitlines()
    assert len(nt_lines) == len(set(nt_lines)) == len(rows)
    assert any(f"<{EVRY}>" in line for line in nt_lines) and any("Île-de-France" in line for line in nt_lines)
    quality = stats["fr"]["quality"]
    assert quality["held_out_facts"] == 2 and quality["queries"] == 2 and 0 <= quality["review"]["recall"] <= 1
    report = (folder / "report_fr.html").read_text(encoding="utf-8")
    assert "data:image/png;base64," in report and "Marseille" in report
    calibration = json.loads((folder / "calibration.json").read_text())
    assert calibration["fr"]["examples"] == stats["fr"]["calibration"]["examples"]

    before = {path.name: path.read_bytes() for path in folder.iterdir() if path.suffix in (".parquet", ".nt", ".nq")}
    run(stage_settings, RELEASE)
    after = {path.name: path.read_bytes() for path in folder.iterdir() if path.suffix in (".parquet", ".nt", ".nq")}
    assert after == before  # a re-run replaces the files with the same content: no duplicates
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    store = load_store(None, sorted([*folder.glob("*.nt"), *folder.glob("*.nq")]))
    assert len(scored_facts(store)) == len(rows)


def test_a_model_from_another_release_is_refused(stage_settings) -> None:
    from jobs.construct import ModelReleaseError, run

    write_release(stage_settings, model_release="2016.10.01")
    with pytest.raises(ModelReleaseError, match="trained on release '2016.10.01', not '2016.04.01'"):
        run(stage_settings, RELEASE)
    assert not stage_settings.paths.stage_dir("predictions", RELEASE).exists()



@pytest.mark.slow
def test_predict_answers_from_the_command_line_and_names_the_closest_known_names(stage_settings, monkeypatch, capsys) -> None:
    from jobs.construct import run
    from jobs.predict import UnknownName, main, predict

    before = predict(stage_settings, RELEASE, "fr", "Paris", "pays", top=3)
    assert [row["rank"] for row in before] == [1, 2, 3] and all(row["probability"] is None for row in before)
    assert [row["known"] for row in before].count(True) <= 1 and FR + "Paris" not in {row["o_iri"] for row in before}
    run(stage_settings, RELEASE)  # writes the calibration predict then uses
    by_iri = predict(stage_settings, RELEASE, "fr", FR + "Paris", FRP + "pays", top=3)
    assert [(row["o_iri"], row["logprob"]) for row in by_iri] == [(row["o_iri"], row["logprob"]) for row in before]
    assert all(0 <= row["probability"] <= 1 for row in by_iri)

    monkeypatch.setenv("PRIXLM_PATHS__DATA_ROOT", str(stage_settings.paths.data_root))
    monkeypatch.setenv("PRIXLM_MODEL__BASE", "tiny")  # the settings the model was trained with: they name its run
    main(["--lang", "fr", "--subject", "Paris", "--relation", "pays", "--release", RELEASE, "--top", "2"])
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("  1  p=") and f"<{by_iri[0]['o_iri']}>" in printed[0]
    with pytest.raises(SystemExit, match=r"unknown subject 'Pari' in the fr KB; closest known: 'Paris'"):
        main(["--lang", "fr", "--subject", "Pari", "--relation", "pays", "--release", RELEASE])
    with pytest.raises(UnknownName, match=r"unknown relation 'pais' .* closest known: 'pays'"):
        predict(stage_settings, RELEASE, "fr", "Paris", "pais", top=3)
