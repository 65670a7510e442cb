"""Similarity inference and probing: CSLS, VecMap, XEL and BLI scoring, Mirror-BERT, mLAMA queries, the jobs."""

from __future__ import annotations

import lzma
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from prixlm_model.base_model import ensure_base_model
from prixlm_model.bli import Dictionaries, evaluate_pair, read_pair
from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.mirror import Embedder, forward_strings, load_encoder, mirror_tune, read_words
from prixlm_model.probing import candidate_pieces, masked_sentence, read_templates
from prixlm_model.retrieval import Scorer, rank_golds
from prixlm_model.tokenization import load_tokenizer
from prixlm_model.vecmap import orthogonal, procrustes, vecmap_supervised
from prixlm_model.xel import calibrate_threshold, evaluate_links, evaluate_xlbel, n_triples, propose_links

CACHE = {"paths": {"cache_dir": str(PROJECT_ROOT / "var" / "cache")}}


def lookup(vectors: dict[str, list[float]]):
    """An embed function over hand-made vectors (normalised, as the encoder's are)."""
    return lambda texts: torch.nn.functional.normalize(torch.tensor([vectors[t] for t in texts], dtype=torch.float32), dim=1)


@pytest.fixture(scope="module")
def tiny():
    settings = load_settings({**CACHE, "model": {"base": "tiny"}})
    return settings, ensure_base_model(settings)


def test_csls_on_a_hand_computed_example():
    # queries = identity, so the cosine matrix is keys.T: x1 -> (A .82, H .85), x2 -> (A .10, H .90)
    queries, keys = torch.eye(2), torch.tensor([[0.82, 0.10], [0.85, 0.90]])
    cosine = Scorer(queries, keys).block_scores(0)
    csls = Scorer(queries, keys, csls_k=1).block_scores(0)
    # k = 1: r_T(x1) = .85, r_T(x2) = .90, r_S(A) = .82, r_S(H) = .90
    # CSLS(x1, A) = 1.64 - .85 - .82 = -.03; CSLS(x1, H) = 1.70 - .85 - .90 = -.05
    # CSLS(x2, A) = 0.20 - .90 - .82 = -1.52; CSLS(x2, H) = 1.80 - .90 - .90 = 0
    assert torch.allclose(csls, torch.tensor([[-0.03, -0.05], [-1.52, 0.0]]), atol=1e-6)
    assert cosine[0].argmax() == 1 and csls[0].argmax() == 0  # the hub H loses x1 under CSLS


def test_ranks_take_the_best_gold_and_count_ties_half():
    scores = torch.tensor([[0.9, 0.5, 0.9, 0.1], [0.9, 0.5, 0.8, 0.1], [0.3, 0.2, 0.1, 0.0]])
    scorer = Scorer(torch.eye(3), scores.T)
    ranked = rank_golds(scorer, [[1, 2], [3], []])
    assert ranked["rank"].tolist() == [1.5, 4.0, float("inf")]
    assert ranked["top"].tolist() == [0, 0, 0]


def test_vecmap_recovers_a_known_orthogonal_map():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    rotation, _ = torch.linalg.qr(torch.randn(16, 16, generator=generator, dtype=torch.float64))
    z = x @ rotation + 0.01 * torch.randn(300, 16, generator=generator, dtype=torch.float64)
    train = torch.arange(200)
    u, _, v = orthogonal(x[train], z[train])
    assert torch.allclose(u @ v.T, rotation, atol=0.01)
    for mapper in (vecmap_supervised, procrustes):
        xw, zw = mapper(x, z, train, train)
        assert (xw[200:] - zw[200:]).norm(dim=1).max() < 0.05  # held-out words land on their translations
        assert ((xw[200:] @ zw.T).argmax(1) == torch.arange(200, 300)).all()


def test_xel_metrics_threshold_and_proposals_on_hand_made_embeddings():
    vectors = {"chat": [1, 0, 0], "chien": [0, 1, 0], "lune": [0.6, 0.8, 0], "cat": [1, 0.1, 0], "dog": [0.2, 1, 0], "moon": [0, 0, 1], "moonish": [0.7, 0.7, 0.1]}
    queries = [("fr:chat", "chat", "en:cat", "cat"), ("fr:chien", "chien", "en:dog", "dog"), ("fr:lune", "lune", "en:moon", "moon")]
    entities = [("en:cat", "cat"), ("en:dog", "dog"), ("en:moon", "moon"), ("en:moonish", "moonish")]
    result = evaluate_links(lookup(vectors), queries, entities, block=2)
    # chat -> cat first; chien -> dog first; lune ranks moon last of 4 (below moonish, dog, cat)
    assert result["metrics"] == {"hits@1": round(2 / 3, 6), "hits@10": 1.0, "mrr": round((1 + 1 + 1 / 4) / 3, 6), "queries": 3, "candidates": 4, "identical_names": 0.0}
    assert result["correct"].tolist() == [True, True, False]

    assert calibrate_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.75) == pytest.approx(0.6)
    assert calibrate_threshold(np.array([0.9, 0.8, 0.7, 0.6]), np.array([True, True, False, True]), 0.9) == pytest.approx(0.8)
    assert calibrate_threshold(np.array([0.9]), np.array([False]), 0.5) is None

    proposals = propose_links(lookup(vectors), [("fr:chat", "chat"), ("fr:lune", "lune")], entities, threshold=0.99, block=1)
    assert proposals.column("o_iri").to_pylist() == ["en:cat"] and proposals.column("score")[0].as_py() > 0.99
    from rdflib import Graph, URIRef

    graph = Graph().parse(data=n_triples(proposals), format="nt")
    assert set(graph) == {(URIRef("fr:chat"), URIRef("http://www.w3.org/2002/07/owl#sameAs"), URIRef("en:cat"))}


def test_xlbel_scores_a_concept_by_its_best_name(tmp_path):
    dictionary = tmp_path / "dictionary.txt"
    dictionary.write_text("C1||cat\nC1||moon\nC2||dog\n", encoding="utf-8")
    vectors = {"chat": [1, 0, 0], "lune": [0, 0, 1], "chien": [1, 0.1, 0], "cat": [1, 0, 0], "moon": [0, 0, 1], "dog": [0, 1, 0]}
    metrics = evaluate_xlbel(lookup(vectors), [("C1", "chat"), ("C1", "lune"), ("C2", "chien"), ("C9", "chat")], dictionary, block=2)
    # chien's best is C1 (cat), so C2 ranks 2; C9 is not in the dictionary: a miss
    assert metrics["hits@1"] == 0.5 and metrics["mrr"] == pytest.approx((1 + 1 + 0.5 + 0) / 4, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="missing.txt: XL-BEL target dictionary"):
        evaluate_xlbel(lookup(vectors), [("C1", "chat")], tmp_path / "missing.txt", block=2)


def test_bli_metrics_on_hand_made_embeddings():
    generator = torch.Generator().manual_seed(1)
    source = torch.randn(50, 8, generator=generator)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=generator))
    vectors = {f"s{i}": source[i].tolist() for i in range(50)} | {f"t{i}": (source[i] @ rotation).tolist() for i in range(50)}
    train = [(f"s{i}", f"t{i}") for i in range(40)]
    exact = evaluate_pair(lookup(vectors), Dictionaries("xx-yy", train, [(f"s{i}", f"t{i}") for i in range(40, 50)]), csls_k=3, block=4)
    assert exact["vecmap_csls"] == {"p@1": 1.0, "mrr": 1.0, "queries": 10} and exact["procrustes_cosine"]["p@1"] == 1.0
    crossed = [(f"s{i}", f"t{i}") for i in range(42, 50)] + [("s40", "t41"), ("s41", "t40")]  # two wrong golds
    result = evaluate_pair(lookup(vectors), Dictionaries("xx-yy", train, crossed), csls_k=3, block=4)
    for variant in ("vecmap_csls", "procrustes_cosine"):
        assert result[variant]["p@1"] == 0.8 and result[variant]["mrr"] <= 0.9
    assert result["vocabulary"] == {"source": 50, "target": 50, "train_pairs": 40, "test_pairs": 10}


def test_missing_inputs_fail_naming_the_file_or_language(tmp_path):
    settings = load_settings()
    with pytest.raises(FileNotFoundError, match=r"xx-yy.*no BLI dictionaries for 'xx-yy'"):
        read_pair(settings.similarity.bli_dir, "xx-yy", "5k")
    empty = tmp_path / "words.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="words.txt: the Mirror-BERT word list is empty"):
        read_words(empty)
    with pytest.raises(FileNotFoundError, match="nowhere.txt: Mirror-BERT word list not found"):
        read_words(tmp_path / "nowhere.txt")
    with pytest.raises(FileNotFoundError, match="no templates for language 'sw'"):
        read_templates(settings.similarity.probe_dir, "sw", 1)
    it_en = read_pair(settings.similarity.bli_dir, "it-en", "5k")  # stored as en-it: read swapped
    en_it = read_pair(settings.similarity.bli_dir, "en-it", "5k")
    assert it_en.test[0] == tuple(reversed(en_it.test[0])) and len(it_en.train) == 5000


def test_mlama_candidates_and_masked_sentences(tiny):
    _, folder = tiny
    tokenizer = load_tokenizer(folder)
    labels = ["Paris", "Doncaster", "(", "the", "東京", "Paris"]
    kept, dropped = candidate_pieces(tokenizer, labels, "en", {"the"})
    assert kept == {"Paris": tokenizer.convert_tokens_to_ids("▁Paris")}
    assert dropped == {"multi_token": 1, "punctuation": 1, "stop_word": 1, "incomplete_piece": 1}  # 東京 is "▁" + a word-internal piece
    kept_ja, _ = candidate_pieces(tokenizer, ["東京"], "ja", set())
    assert kept_ja == {"東京": tokenizer.convert_tokens_to_ids("東京")}  # no spaces in Japanese: a piece is a word

    ids, position = masked_sentence(tokenizer, "[X] was born in [Y] .", "Dante", "Paris", kept["Paris"])
    filled = tokenizer("Dante was born in Paris .")["input_ids"]
    assert ids[position] == tokenizer.mask_token_id and filled[position] == kept["Paris"]
    assert ids[:position] + ids[position + 1 :] == filled[:position] + filled[position + 1 :]
    assert masked_sentence(tokenizer, "[X] was born in [Y] .", "Dante", "Parisville", kept["Paris"]) is None


@pytest.mark.slow
def test_mirror_bert_views_differ_and_its_loss_decreases(tiny):
    settings, folder = tiny
    words = read_words(settings.similarity.mirror_words, 64)
    # mean pooling: a random tiny model's <s> states barely depend on the word, so [CLS] starts (and stays long) at chance
    sim = settings.similarity.model_copy(update={"mirror_batch": 16, "mirror_lr": 1e-3, "mirror_epochs": 2, "pooling": "mean", "device": "cpu"})
    model, tokenizer = load_encoder(folder, sim)
    model.train()
    with torch.no_grad():
        first, second = forward_strings(model, tokenizer, words[:8], sim), forward_strings(model, tokenizer, words[:8], sim)
    assert not torch.allclose(first, second)  # dropout is on: the two views differ
    model.eval()
    with torch.no_grad():
        assert torch.equal(forward_strings(model, tokenizer, words[:8], sim), forward_strings(model, tokenizer, words[:8], sim))
    result = mirror_tune(model, tokenizer, words, sim)
    assert len(result.losses) == 8 and not model.training
    assert np.mean(result.losses[-3:]) < np.mean(result.losses[:3]) - 0.3
    capped = mirror_tune(model, tokenizer, words, sim.model_copy(update={"mirror_max_steps": 2}))
    assert len(capped.losses) == 2


def dbp15k_links(limit: int) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str]]]:
    """The first ``limit`` DBP15K FR-EN reference links as XEL queries, and the English side as candidates."""
    root = load_settings().sample.dbp15k_dir

    def read(name: str) -> list[list[str]]:
        with lzma.open(root / f"{name}.xz", "rt", encoding="utf-8") as lines:
            return [line.rstrip("\n").split("\t") for line in lines]

    iri = {int(i): value for name in ("ent_ids_1", "ent_ids_2") for i, value in read(name)}

    def name(number: str) -> str:
        return unquote(iri[int(number)].rsplit("/", 1)[1]).replace("_", " ")

    links = read("ref_ent_ids")[:limit]
    queries = [(iri[int(fr)], name(fr), iri[int(en)], name(en)) for fr, en in links]
    return queries, [(en_iri, en) for _, _, en_iri, en in queries]


@pytest.mark.slow
def test_offline_base_with_mirror_beats_random_on_real_xel_and_bli():
    settings = load_settings({**CACHE, "model": {"base": "offline-e5"},
                              "similarity": {"mirror_max_words": 256, "mirror_batch": 32, "mirror_max_steps": 1, "device": "cpu"}})
    sim = settings.similarity
    model, tokenizer = load_encoder(ensure_base_model(settings), sim)
    mirror_tune(model, tokenizer, read_words(sim.mirror_words, sim.mirror_max_words), sim)
    embed = Embedder(model, tokenizer, sim)

    queries, entities = dbp15k_links(200)
    xel = evaluate_links(embed, queries, entities, sim.search_block)["metrics"]
    assert xel["hits@1"] > 10 / xel["candidates"] and xel["mrr"] > 0.2  # random: 1/200 Hits@1

    pair = read_pair(sim.bli_dir, "en-it", "500")
    pair = Dictionaries(pair.pair, pair.train, pair.test[:200])
    bli = evaluate_pair(embed, pair, sim.csls_k, sim.search_block)
    random_p1 = 1 / len(pair.vocabulary(1))
    assert bli["vecmap_csls"]["p@1"] > 5 * random_p1 and bli["procrustes_cosine"]["p@1"] > 5 * random_p1


def write_parquet(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "part-0.parquet")


def fake_split(root: Path, release: str) -> None:
    """A split and parsed links of 40 real DBP15K links (10 held out, both ways) and 5 unlinked entities per side."""
    queries, _ = dbp15k_links(45)
    linked = queries[:40]
    both = [{"s_lang": "fr", "o_lang": "en", "s_iri": a, "s": b, "o_iri": c, "o": d} for a, b, c, d in linked]
    both += [{"s_lang": "en", "o_lang": "fr", "s_iri": c, "s": d, "o_iri": a, "o": b} for a, b, c, d in linked]
    split, parsed = root / "split" / release, root / "parsed" / release
    write_parquet(split / "links_test", [{"kind": "link", **row} for row in both if row["s_iri"] in {q[0] for q in linked[:10]} | {q[2] for q in linked[:10]}])
    write_parquet(parsed / "links", both)
    for lang, iri, name in (("fr", 0, 1), ("en", 2, 3)):
        write_parquet(split / "entities" / f"lang={lang}", [{"iri": q[iri], "name": q[name]} for q in queries])
    for folder in (split, parsed):
        (folder / "stats.json").write_text("{}")
        (folder / "_SUCCESS").write_text("")


@pytest.mark.slow
def test_similarity_and_probe_jobs_write_their_tables_and_links(tiny, tmp_path):
    from jobs import probe, similarity

    base, folder = tiny
    settings = load_settings({**CACHE, "paths": {**CACHE["paths"], "data_root": str(tmp_path)}, "model": {"base": "tiny"},
                              "similarity": {"mirror_max_words": 32, "mirror_max_steps": 1, "bli_pairs": ["en-it"], "bli_train": "500",
                                             "sameas_precision": 0.05, "probe_languages": ["en", "ja"], "probe_max_facts": 10, "device": "cpu"}})
    fake_split(tmp_path, "R")
    report = similarity.run(settings, "R", {similarity.BASE: folder, similarity.PRIXLM: folder})
    reports = tmp_path / "reports" / "R"
    assert {(row["direction"], row["model"]) for row in report["xel"]} == {(d, m) for d in ("en-fr", "fr-en") for m in (similarity.BASE, similarity.PRIXLM)}
    assert all(row["queries"] == 10 and row["candidates"] == 45 for row in report["xel"])
    assert {(row["pair"], row["variant"]) for row in report["bli"]} == {("en-it", "vecmap_csls"), ("en-it", "procrustes_cosine")}
    assert report["mirror"][similarity.BASE]["steps"] == 1 and "XL-BEL skipped" in report["xlbel"]
    for name in ("similarity_xel.md", "similarity_xel.csv", "similarity_xel.png", "similarity_bli.md", "similarity_bli.png", "similarity.json"):
        assert (reports / name).stat().st_size > 0
    assert "| Prix-LM + Mirror |" in (reports / "similarity_bli.md").read_text()
    proposals = pq.read_table(tmp_path / "predictions" / "R" / "sameas-fr-en.parquet")
    assert proposals.num_rows == report["sameas_proposed"]["fr-en"] and proposals.num_rows <= 5  # only the 5 unlinked French entities are searched
    assert set(proposals.column("s_iri").to_pylist()) <= {q[0] for q in dbp15k_links(45)[0][40:]}
    assert (tmp_path / "predictions" / "R" / "sameas-fr-en.nt").read_text().count("owl#sameAs") == proposals.num_rows

    probed = probe.run(settings, "R", {"Base": folder})
    assert {row["lang"] for row in probed["rows"]} == {"en", "ja"} and all(row["queries"] == 10 for row in probed["rows"])
    assert all(0 < row["random"] < 1 for row in probed["rows"])
    assert (reports / "probing.md").read_text().count("| Base |") == 2 and (reports / "probing.png").is_file()
