"""The Prix-LM tokenizer and sequence layouts.

The tokenizer is XLM-R's with the released checkpoint's tokens appended in its order: ``[S]``,
``[P]``, ``[O]``, ``[EOS]`` (250002-250005), then one ``[xx]`` per language of
``LANGUAGE_CODES`` (250006-250086). Sequences are assembled from ids by hand, because XLM-R's
pair template cannot express three parts:

- triple: ``<s> [S] X_s </s> </s> [P] X_p </s> </s> [O] X_o [EOS] </s>``
- link:   ``<s> [S] X_s </s> </s> [P] [s_lang] [o_lang] </s> </s> [O] X_o [EOS] </s>``

Names are always text: a name such as ``"Foo [en]"`` never yields a special id.

This module is shipped to Spark workers; ``load_tokenizer`` caches per folder at module level
so that each Python worker loads a tokenizer once, not once per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerFast

from prixlm_model.base_model import XLMR_VOCAB_SIZE
from prixlm_model.config import LANGUAGE_CODES

SPECIAL_TOKENS = ("[S]", "[P]", "[O]", "[EOS]")
LANGUAGE_TOKENS = tuple(f"[{code}]" for code in LANGUAGE_CODES)
PRIXLM_TOKENS = SPECIAL_TOKENS + LANGUAGE_TOKENS  # ids XLMR_VOCAB_SIZE, XLMR_VOCAB_SIZE + 1, ...
BOS, SEP = 0, 2  # XLM-R's <s> and </s>
SUBJECT, RELATION, OBJECT, END = range(XLMR_VOCAB_SIZE, XLMR_VOCAB_SIZE + len(SPECIAL_TOKENS))

_TOKENIZERS: dict[Path, PreTrainedTokenizerFast] = {}


@dataclass(frozen=True, slots=True)
class Encoded:
    """One sequence: the prefix the model reads both ways, then the object it must generate."""

    prefix_ids: list[int]  # <s> ... [O]
    object_ids: list[int]  # object tokens + [EOS]
    n_tokens: int  # the whole sequence, the final </s> included


def language_token(code: str) -> str:
    """The token of a DBpedia language code, e.g. ``"[en]"``."""
    return f"[{code}]"


def load_tokenizer(base_dir: str | Path) -> PreTrainedTokenizerFast:
    """The Prix-LM tokenizer for the base model in ``base_dir``, loaded once per process.

    Loading an exported Prix-LM model, whose tokenizer already holds the tokens, adds nothing.
    Fails if the tokens would not get the released checkpoint's ids.
    """
    key = Path(base_dir).resolve()
    if key not in _TOKENIZERS:
        tokenizer = AutoTokenizer.from_pretrained(key, split_special_tokens=True)
        tokenizer.add_tokens(list(PRIXLM_TOKENS), special_tokens=True)
        ids = tokenizer.convert_tokens_to_ids(list(PRIXLM_TOKENS))
        if ids != list(range(XLMR_VOCAB_SIZE, XLMR_VOCAB_SIZE + len(PRIXLM_TOKENS))):
            raise ValueError(f"{key}: the Prix-LM tokens got ids {ids[0]}..{ids[-1]}, not from {XLMR_VOCAB_SIZE}")
        _TOKENIZERS[key] = tokenizer
    return _TOKENIZERS[key]


def name_ids(tokenizer: PreTrainedTokenizerFast, names: Sequence[str]) -> list[list[int]]:
    """Token ids of each name, without special tokens, in one batch over the distinct names."""
    backend = tokenizer.backend_tokenizer
    backend.encode_special_tokens = True  # what split_special_tokens does per call in transformers
    distinct = list(dict.fromkeys(names))
    by_name = {name: enc.ids for name, enc in zip(distinct, backend.encode_batch_fast(distinct, add_special_tokens=False))}
    return [by_name[name] for name in names]


def language_id(tokenizer: PreTrainedTokenizerFast, code: str) -> int:
    """The id of a language's token; an unknown code is an error, not ``<unk>``."""
    if code not in LANGUAGE_CODES:
        raise ValueError(f"unknown language code {code!r}; known: {' '.join(LANGUAGE_CODES)}")
    return tokenizer.convert_tokens_to_ids(language_token(code))


def triple_prefix(subject_ids: list[int], relation_ids: list[int]) -> list[int]:
    """``<s> [S] X_s </s> </s> [P] X_p </s> </s> [O]``."""
    return [BOS, SUBJECT, *subject_ids, SEP, SEP, RELATION, *relation_ids, SEP, SEP, OBJECT]


def link_prefix(subject_ids: list[int], s_lang_id: int, o_lang_id: int) -> list[int]:
    """``<s> [S] X_s </s> </s> [P] [s_lang] [o_lang] </s> </s> [O]``."""
    return [BOS, SUBJECT, *subject_ids, SEP, SEP, RELATION, s_lang_id, o_lang_id, SEP, SEP, OBJECT]


def close_sequence(prefix_ids: list[int], object_ids: list[int]) -> Encoded:
    """Close a prefix with its object, ``[EOS]`` and the final ``</s>`` (counted, not stored)."""
    target = [*object_ids, END]
    return Encoded(prefix_ids=prefix_ids, object_ids=target, n_tokens=len(prefix_ids) + len(target) + 1)


def encode_triples(
    tokenizer: PreTrainedTokenizerFast, subjects: Sequence[str], relations: Sequence[str], objects: Sequence[str]
) -> list[Encoded]:
    """Encode ``(subject, relation, object)`` name triples as Prix-LM sequences."""
    n = len(subjects)
    if not n == len(relations) == len(objects):
        raise ValueError("subjects, relations and objects must have the same length")
    ids = name_ids(tokenizer, [*subjects, *relations, *objects])
    return [close_sequence(triple_prefix(ids[i], ids[n + i]), ids[2 * n + i]) for i in range(n)]


def encode_links(
    tokenizer: PreTrainedTokenizerFast,
    subjects: Sequence[str],
    s_langs: Sequence[str],
    o_langs: Sequence[str],
    objects: Sequence[str],
) -> list[Encoded]:
    """Encode cross-lingual links (``subject`` in ``s_lang`` is ``object`` in ``o_lang``)."""
    n = len(subjects)
    if not n == len(s_langs) == len(o_langs) == len(objects):
        raise ValueError("subjects, s_langs, o_langs and objects must have the same length")
    ids = name_ids(tokenizer, [*subjects, *objects])
    lang = {code: language_id(tokenizer, code) for code in {*s_langs, *o_langs}}
    return [close_sequence(link_prefix(ids[i], lang[s_langs[i]], lang[o_langs[i]]), ids[n + i]) for i in range(n)]


def query_prefix(tokenizer: PreTrainedTokenizerFast, subject: str, relation: str) -> list[int]:
    """The link-prediction query for ``(subject, relation, ?)``: the triple prefix up to ``[O]``.

    As in the released ``lp.py``, the query carries no language token: the language only
    restricts which entities decoding may produce.
    """
    subject_ids, relation_ids = name_ids(tokenizer, [subject, relation])
    return triple_prefix(subject_ids, relation_ids)


def resize_model_embeddings(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, seed: int) -> None:
    """Give ``model`` one embedding row per token of ``tokenizer``, new rows drawn from ``seed``.

    The model is first cut to XLM-R's 250,002 rows, then grown: a base with extra rows (the
    offline e5 base has 250,037) would otherwise hand its unused leftovers to the new tokens.
    Rows 0..250,001 stay bit-identical; the new ones follow transformers' default (sampled
    around the mean of the old rows). A model that already has a row per token (an exported
    Prix-LM model) is left as it is, so trained rows are never cut.
    """
    if model.get_input_embeddings().num_embeddings == len(tokenizer):
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.resize_token_embeddings(XLMR_VOCAB_SIZE)
        model.resize_token_embeddings(len(tokenizer))
