"""mLAMA-style knowledge probing (paper section 3.5): a masked template, candidates ranked.

Data: mpararel's reviewed facts (``tuples/<lang>/P*.jsonl.xz``) and templates
(``patterns/<lang>/P*.jsonl``, human-checked ones first), and mLAMA's object sets per relation
(``TREx_multilingual_objects/<lang>.json.xz``) as candidates.

How a fact is asked: the template's ``[X]`` is the subject, its ``[Y]`` the object; the filled
sentence is tokenized and the object's token is replaced by ``<mask>``, so the model reads the
rest both ways (a masked-LM pass, not the decoder). Only single-token objects are asked: the
object must be exactly one token in the sentence, the same one it is alone.

Candidates (the paper filters the vocabulary the same way): a relation's objects that are one
piece (after a leading lone ``▁``), minus punctuation, stop words (stopwords-iso) and incomplete
word pieces (in space-separated scripts, a piece without the word-start ``▁``). The prediction is
the candidate with the highest logit at the mask; accuracy is the share of facts where it is the
gold. The random baseline (mean ``1 / candidates``) is reported beside it.
"""

from __future__ import annotations

import json
import lzma
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

WORD_START = "▁"
UNSPACED = {"ja", "zh", "th", "my", "zh_min_nan"}  # scripts written without spaces between words


@dataclass(frozen=True)
class Query:
    """One masked sentence: its ids, the gold's token id and the relation's candidate ids."""

    relation: str
    input_ids: list[int]
    mask_position: int
    gold: int
    candidates: tuple[int, ...]


def read_templates(root: Path, lang: str, per_relation: int) -> dict[str, list[str]]:
    """Up to ``per_relation`` templates per relation, human-checked ones first; fails for a language without any."""
    folder = root / "patterns" / lang
    templates = {}
    for path in sorted(folder.glob("P*.jsonl")):
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        records.sort(key=lambda record: not record.get("checked-by-human", False))  # stable: file order within each group
        patterns = [r["pattern"] for r in records if "[X]" in r["pattern"] and r["pattern"].count("[Y]") == 1]
        if patterns:
            templates[path.stem] = patterns[:per_relation]
    if not templates:
        raise FileNotFoundError(f"{folder}: no templates for language {lang!r} (similarity.probe_dir)")
    return templates


def read_facts(root: Path, lang: str, relation: str) -> list[tuple[str, str]]:
    """``(subject, object)`` labels of one relation; none when the language lacks the file."""
    path = root / "tuples" / lang / f"{relation}.jsonl.xz"
    if not path.is_file():
        return []
    with lzma.open(path, "rt", encoding="utf-8") as lines:
        return [(r["sub_label"], r["obj_label"]) for r in map(json.loads, lines) if r.get("sub_label") and r.get("obj_label")]


def read_objects(root: Path, lang: str) -> dict[str, list[str]]:
    """mLAMA's object labels per relation for ``lang``."""
    path = root / f"{lang}.json.xz"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no mLAMA candidate objects for language {lang!r} (similarity.probe_objects)")
    with lzma.open(path, "rt", encoding="utf-8") as handle:
        return {relation: sets.get("objects", []) for relation, sets in json.load(handle).items()}


def stop_words(lang: str) -> set[str]:
    """stopwords-iso's list for ``lang`` (empty, not an error, for a language it lacks)."""
    import stopwordsiso

    return set(stopwordsiso.stopwords(lang)) if stopwordsiso.has_lang(lang) else set()


def is_punctuation(text: str) -> bool:
    """True for text made only of punctuation and symbols (or nothing)."""
    return all(unicodedata.category(char)[0] in "PS" for char in text)


def candidate_pieces(tokenizer: PreTrainedTokenizerFast, labels: Sequence[str], lang: str, stops: set[str]) -> tuple[dict[str, int], Counter]:
    """The labels usable as candidates, each with its one token id, and why the others were dropped.

    Reasons: ``multi_token``, ``punctuation``, ``stop_word``, ``incomplete_piece``.
    """
    kept, dropped = {}, Counter()
    for label in dict.fromkeys(labels):
        pieces = tokenizer.tokenize(label)
        if len(pieces) == 2 and pieces[0] == WORD_START:
            pieces = pieces[1:]
        if len(pieces) != 1:
            dropped["multi_token"] += 1
        elif is_punctuation(pieces[0].removeprefix(WORD_START)):
            dropped["punctuation"] += 1
        elif label.lower() in stops:
            dropped["stop_word"] += 1
        elif lang not in UNSPACED and not pieces[0].startswith(WORD_START):
            dropped["incomplete_piece"] += 1
        else:
            kept[label] = tokenizer.convert_tokens_to_ids(pieces[0])
    return kept, dropped


def masked_sentence(tokenizer: PreTrainedTokenizerFast, template: str, subject: str, obj: str, gold: int) -> tuple[list[int], int] | None:
    """Ids of the filled template with the object's token masked, and the mask's position.

    ``None`` when the object is not exactly the token ``gold`` in this sentence.
    """
    before, after = template.split("[Y]")
    before = before.replace("[X]", subject)
    sentence = before + obj + after.replace("[X]", subject)
    start, end = len(before), len(before) + len(obj)
    encoded = tokenizer(sentence, return_offsets_mapping=True)
    inside = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if a < end and b > start and b > a]
    if len(inside) != 1 or encoded["input_ids"][inside[0]] != gold:
        return None
    ids = list(encoded["input_ids"])
    ids[inside[0]] = tokenizer.mask_token_id
    return ids, inside[0]


def build_queries(tokenizer: PreTrainedTokenizerFast, templates: dict[str, list[str]], facts: dict[str, list[tuple[str, str]]],
                  objects: dict[str, list[str]], lang: str) -> tuple[list[Query], dict[str, int]]:
    """Every (single-token fact, template) query of one language, and counts of what was left out."""
    stops = stop_words(lang)
    queries, counts = [], Counter()
    for relation, patterns in templates.items():
        kept, dropped = candidate_pieces(tokenizer, [*objects.get(relation, []), *(o for _, o in facts.get(relation, []))], lang, stops)
        counts.update({f"candidates_dropped_{reason}": n for reason, n in dropped.items()})
        candidates = tuple(sorted(set(kept.values())))
        for subject, obj in facts.get(relation, []):
            if obj not in kept:
                counts["facts_not_single_token"] += 1
                continue
            for template in patterns:
                masked = masked_sentence(tokenizer, template, subject, obj, kept[obj])
                if masked is None:
                    counts["queries_split_in_context"] += 1
                    continue
                queries.append(Query(relation, masked[0], masked[1], kept[obj], candidates))
    return queries, dict(counts)


@torch.inference_mode()
def probe(model: PreTrainedModel, queries: Sequence[Query], batch_size: int) -> dict[str, float | int]:
    """Accuracy of ``model`` (a masked LM) over ``queries``, and the random baseline.

    Only the mask position goes through the LM head, and only candidate rows are scored.
    """
    model.eval()
    device = model.device
    correct, chance = 0, 0.0
    for start in range(0, len(queries), batch_size):
        chunk = queries[start : start + batch_size]
        width = max(len(q.input_ids) for q in chunk)
        ids = torch.full((len(chunk), width), model.config.pad_token_id, dtype=torch.long)
        for row, q in enumerate(chunk):
            ids[row, : len(q.input_ids)] = torch.tensor(q.input_ids)
        ids = ids.to(device)
        hidden = model.roberta(input_ids=ids, attention_mask=(ids != model.config.pad_token_id).long()).last_hidden_state
        at_mask = hidden[torch.arange(len(chunk), device=device), torch.tensor([q.mask_position for q in chunk], device=device)]
        logits = model.lm_head(at_mask)  # (b, V): one row per query, not per position
        for row, q in enumerate(chunk):
            candidates = torch.tensor(q.candidates, device=device)
            correct += int(candidates[logits[row, candidates].argmax()] == q.gold)
            chance += 1 / len(q.candidates)
    n = len(queries)
    return {"accuracy": round(correct / n, 6) if n else 0.0, "random": round(chance / n, 6) if n else 0.0, "queries": n}


def spread(queries: Sequence[Query], cap: int) -> list[Query]:
    """At most ``cap`` queries (0: all), a fixed sample spread over every relation: every k-th."""
    if cap == 0 or len(queries) <= cap:
        return list(queries)
    return list(queries[:: -(-len(queries) // cap)])
