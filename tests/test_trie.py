"""The entity trie: exact membership, prefix entities, shared names, vectorised ``allowed``,
and agreement with the released code's dict of prefixes on real DBpedia names."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import lzma
from collections import defaultdict
from urllib.parse import unquote

import pytest
import torch
from transformers import PreTrainedTokenizerFast

from prixlm_model.base_model import ensure_base_model
from prixlm_model.config import PROJECT_ROOT, load_settings
from prixlm_model.tokenization import END, load_tokenizer, name_ids
from prixlm_model.trie import EntityTrie

DBP15K_FR = PROJECT_ROOT.parent / "shared" / "data" / "dbp15k-jape" / "fr_en" / "ent_ids_1.xz"


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    settings = load_settings({"paths": {"cache_dir": str(PROJECT_ROOT / "var" / "cache")}, "model": {"base": "tiny"}})
    return load_tokenizer(ensure_base_model(settings))


def real_names(count: int) -> list[str]:
    with lzma.open(DBP15K_FR, "rt", encoding="utf-8") as lines:
        return [unquote(line.rstrip("\n").split("\t")[1].rsplit("/", 1)[1]).replace("_", " ") for _, line in zip(range(count), lines)]


def test_prefix_entity_and_non_entities(tokenizer: PreTrainedTokenizerFast) -> None:
    names = ["Paris", "Paris Saint-Germain", "Lyon"]
    ids = name_ids(tokenizer, names)
    trie = EntityTrie.build(ids, END)
    assert ids[1][: len(ids[0])] == ids[0]  # "Paris" really is a token prefix of the club
    assert [trie.lookup(name) for name in ids] == [[0], [1], [2]]
    assert set(trie.next_tokens(ids[0])) == {END, ids[1][len(ids[0])]}
    for other in ["Pari", "Paris Saint", "Marseille", "Lyon Lyon", ""]:
        assert trie.lookup(name_ids(tokenizer, [other])[0]) == []
    assert trie.walk([*ids[2], END, END]) == -1 and trie.next_tokens([*ids[2], END]) == []


def test_shared_surface_name_is_one_leaf(tokenizer: PreTrainedTokenizerFast) -> None:
    trie = EntityTrie.build(name_ids(tokenizer, ["Victoria", "Berlin", "Victoria"]), END)
    assert trie.leaf_count == 2 and sorted(trie.lookup(name_ids(tokenizer, ["Victoria"])[0])) == [0, 2]
    assert int(trie.entity_leaf[0]) == int(trie.entity_leaf[2]) != int(trie.entity_leaf[1])


def test_matches_released_dict_of_prefixes_on_real_names(tokenizer: PreTrainedTokenizerFast) -> None:
    names = name_ids(tokenizer, real_names(3000))
    trie = EntityTrie.build(names, END)
    expand: dict[tuple[int, ...], set[int]] = defaultdict(set)  # lp.py's expand_dict
    for name in names:
        sequence = (*name, END)
        for i in range(len(sequence)):
            expand[sequence[:i]].add(sequence[i])
    assert trie.node_count == len(expand) + trie.leaf_count  # every prefix is an inner node; leaves end in [EOS]
    nodes = torch.tensor([trie.walk(prefix) for prefix in expand])
    rows, tokens, children = trie.allowed(nodes)
    for row, prefix in enumerate(expand):
        assert set(tokens[rows == row].tolist()) == expand[prefix]
    assert trie.is_leaf(children).tolist() == (tokens == END).tolist()
    for entity, name in enumerate(names):
        assert entity in trie.lookup(name)
        assert trie.leaf_tokens(int(trie.entity_leaf[entity])) == [*name, END]


def test_dead_nodes_cover_only_fully_banned_subtrees(tokenizer: PreTrainedTokenizerFast) -> None:
    ids = name_ids(tokenizer, ["Paris", "Paris Saint-Germain", "Lyon"])
    trie = EntityTrie.build(ids, END)
    paris, club = int(trie.entity_leaf[0]), int(trie.entity_leaf[1])
    dead = set(trie.dead_nodes([paris]).tolist())
    assert dead == {trie.walk([*ids[0], END])}  # only "Paris [EOS]": the club stays reachable
    dead = set(trie.dead_nodes([paris, club]).tolist())
    assert trie.walk(ids[0][:1]) in dead and trie.walk(name_ids(tokenizer, ["Lyon"])[0][:1]) not in dead


def test_empty_trie_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one name"):
        EntityTrie.build([], END)
