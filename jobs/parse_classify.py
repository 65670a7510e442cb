"""Classify every raw line once: its class, its reject reason, and the columns its output needs.

Steps, in one projection per line (SQL expressions only, no Python per row):
  1. ``too_long``: ``octet_length`` above ``parse.max_line_bytes``, before any other step.
  2. ``invalid_utf8``: ``is_valid_utf8`` on the raw bytes, before any regex or string function
     (they would silently turn bad bytes into U+FFFD). Rejects keep the raw bytes (binary column).
  3. Blank and ``#`` lines are comments; DBpedia's frame lines are among them.
  4. ``bad_escape`` (``parse_grammar.bad_escape``), on lines holding a backslash only.
  5. The line regex (``LINE_REGEX``): ``regexp_replace`` turns the line into the terms joined by
     NUL (an IRI's text without its brackets, or the literal or blank node as written), then
     ``split`` (1.7x faster than one ``regexp_extract`` per group). Lines it does not match are
     ``unparsed`` here and diagnosed when the rejects are written (``diagnose``, only on them).
     Matched lines may still be ``wrong_term_count`` (a graph term in an N-Triples file),
     ``literal_subject``, ``literal_predicate`` or ``blank_predicate``.
  6. Only on lines holding a backslash, a ``%`` or a host to rewrite (``needs_decoding``, about
     0.3% of DBpedia's): escapes decoded, then the IRI normal form (``parse_iri``). Every other
     line's terms are already in normal form.

Every line falls in exactly one class (``LINE_CLASSES``): comment, reject, blank_node (a ``_:``
subject or object), foreign_iri, unknown_chapter (subject first, then object), label
(``rdfs:label`` with a literal object), literal (other literal objects), fact (subject and object
entities of one chapter, any predicate), link (``owl:sameAs`` between two chapters),
cross_chapter (another predicate between two chapters).

``kind`` says which output a line feeds: ``fact``, ``link``, ``reject``, or ``name`` for a label
in its entity's own chapter language; null for lines that are only counted.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.parse_grammar import (
    LINE_PARTS, LINE_REGEX, LINE_REPLACEMENT, OWL_SAME_AS, RDFS_LABEL, SEP, UNPARSED, bad_escape, decode_escapes, needs_decoding,
)
from jobs.parse_iri import chapter_code, chapter_status, normalize_iri
from prixlm_model.config import ParseSettings

# Output columns of ``classify_lines`` besides ``cls``, each null where its kind does not use it.
KIND_SCHEMA = (
    "kind string, s_iri string, p_iri string, o_iri string, s_lang string, o_lang string, label string, "
    "file_path string, block_start long, pos long, raw binary, quads boolean, reason string"
)
KIND_COLUMNS = tuple(field.split()[0] for field in KIND_SCHEMA.split(", "))


def classify_lines(lines: DataFrame, settings: ParseSettings) -> DataFrame:
    """``file_path, block_start, pos, value, quads`` -> one row per line: ``cls`` and ``KIND_COLUMNS``.

    Facts and links carry ``s_iri, p_iri, o_iri, s_lang, o_lang``; names ``s_iri, s_lang,
    label``; rejects ``file_path, block_start, pos, raw`` (bytes), ``quads`` and ``reason``
    (``unparsed`` until ``diagnose``).

    Two paths, one per kind of line (``needs_decoding``): the decoding one holds higher-order
    functions, which Spark cannot compile into a whole stage, so the ~99.7% of lines that need no
    decoding take a path that is one compiled stage from the scan to the write. Both paths give
    the same result on a line that needs no decoding. Each scans the input (a union): reading a
    line twice costs less than interpreting the whole projection for every line (32.8 s against
    41.7 s on 2M lines when this was measured).
    """
    slow = needs_decoding(F.col("value"))
    return _classify(lines.where(~slow), settings, decode=False).unionByName(_classify(lines.where(slow), settings, decode=True))


def _classify(lines: DataFrame, settings: ParseSettings, decode: bool) -> DataFrame:
    """``classify_lines`` on lines that need decoding (``decode``) or hold nothing to decode.

    Each step is its own projection so that no expression is computed twice per row (inside one
    compiled stage a projection costs nothing). ``decode`` picks the path's expressions.
    """
    value = F.col("value")
    too_long = F.octet_length(value) > settings.max_line_bytes
    frame = lines.select(
        "file_path", "block_start", "pos", "quads", "value",
        F.when(too_long, F.lit("too_long")).when(~F.is_valid_utf8(value), F.lit("invalid_utf8")).alias("early"),
    )
    # Only lines that passed both checks are ever handed to a string function or regex.
    frame = frame.select("*", F.when(F.col("early").isNull(), value).alias("line"))
    frame = frame.select("*", F.ltrim(F.col("line"), F.lit(" \t")).alias("trimmed"))
    is_comment = (F.col("trimmed") == "") | F.col("trimmed").startswith("#")
    frame = frame.select("*", F.coalesce(is_comment, F.lit(False)).alias("is_comment"))
    statement = F.when(~F.col("is_comment"), F.col("line"))
    frame = frame.select(
        "*",
        F.split(F.regexp_replace(statement, LINE_REGEX, LINE_REPLACEMENT), SEP, len(LINE_PARTS) + 1).alias("parts"),
        (bad_escape(statement) if decode else F.lit(False)).alias("bad_escape"),
    )
    matched = (F.size("parts") == len(LINE_PARTS) + 1) & (F.try_element_at("parts", F.lit(1)) == "") & ~F.col("line").startswith(SEP)
    frame = frame.select("*", *[F.when(matched, F.try_element_at("parts", F.lit(i))).alias(name) for i, name in enumerate(LINE_PARTS, 2)])
    s_other, p_other, o_other = F.col("s_other"), F.col("p_other"), F.col("o_other")
    reason = (
        F.when(F.col("early").isNotNull(), F.col("early"))
        .when(F.col("is_comment"), F.lit(None))
        .when(F.col("bad_escape"), F.lit("bad_escape"))
        .when(s_other.isNull(), F.lit(UNPARSED))
        .when(((F.col("g_body") != "") | (F.col("g_other") != "")) & ~F.col("quads"), F.lit("wrong_term_count"))
        .when(s_other.startswith('"'), F.lit("literal_subject"))
        .when(p_other.startswith('"'), F.lit("literal_predicate"))
        .when(p_other.startswith("_:"), F.lit("blank_predicate"))
    )
    frame = frame.select("*", reason.alias("reason"))
    ok = F.col("reason").isNull() & ~F.col("is_comment")
    terms = ("s", "p", "o")
    frame = frame.select("*", *[F.when(ok & (F.col(f"{t}_other") == ""), F.col(f"{t}_body")).alias(f"{t}_in") for t in terms])
    if decode:  # escapes decoded, then the normal form
        frame = frame.select("*", *[normalize_iri(decode_escapes(F.col(f"{t}_in"))).alias(f"{t}_iri") for t in terms])
    else:  # no escape, no percent-escape, no host to rewrite: the text is the normal form
        frame = frame.select("*", *[F.col(f"{t}_in").alias(f"{t}_iri") for t in terms])
    frame = frame.select("*", *[chapter_code(F.col(f"{t}_iri"), settings).alias(f"{t}_lang") for t in ("s", "o")])
    frame = frame.select(
        "*",
        chapter_status(F.col("s_lang"), settings).alias("s_status"),
        chapter_status(F.col("o_lang"), settings).alias("o_status"),
    )
    o_literal = o_other.startswith('"')
    cls = (
        F.when(F.col("is_comment"), F.lit("comment"))
        .when(F.col("reason").isNotNull(), F.lit("reject"))
        .when(s_other.startswith("_:") | o_other.startswith("_:"), F.lit("blank_node"))
        .when(F.col("s_status") != "ok", F.col("s_status"))
        .when(o_literal & (F.col("p_iri") == RDFS_LABEL), F.lit("label"))
        .when(o_literal, F.lit("literal"))
        .when(F.col("o_status") != "ok", F.col("o_status"))
        .when(F.col("s_lang") == F.col("o_lang"), F.lit("fact"))
        .when(F.col("p_iri") == OWL_SAME_AS, F.lit("link"))
        .otherwise(F.lit("cross_chapter"))
    )
    frame = frame.select("*", cls.alias("cls"))
    # A label's text is between the first and the last quote; its language tag after the last one.
    is_label = F.col("cls") == "label"
    frame = frame.select("*", F.when(is_label, F.substring_index(o_other, '"', -1)).alias("suffix"))
    label_lang = F.translate(F.lower(F.substring(F.col("suffix"), 2, 1 << 20)), "-", "_")
    own_label = is_label & F.col("suffix").startswith("@") & (label_lang == F.col("s_lang"))
    kind = F.when(F.col("cls").isin("fact", "link", "reject"), F.col("cls")).when(own_label, F.lit("name"))
    frame = frame.select("*", kind.alias("kind"))
    return frame.select("cls", "kind", *_payload(settings.max_line_bytes, decode))


def _payload(max_line_bytes: int, decode: bool) -> list[Column]:
    """``KIND_COLUMNS`` after ``kind``: each kept only on the kinds that use it."""
    kind = F.col("kind")
    entity = kind.isin("fact", "link")
    reject = kind == "reject"
    text = F.expr("substring(o_other, 2, length(o_other) - length(suffix) - 2)")
    raw = F.col("value").cast("binary")
    return [
        F.when(entity | (kind == "name"), F.col("s_iri")).alias("s_iri"),
        F.when(entity, F.col("p_iri")).alias("p_iri"),
        F.when(entity, F.col("o_iri")).alias("o_iri"),
        F.when(entity | (kind == "name"), F.col("s_lang")).alias("s_lang"),
        F.when(entity, F.col("o_lang")).alias("o_lang"),
        F.when(kind == "name", decode_escapes(text) if decode else text).alias("label"),
        F.when(reject, F.col("file_path")).alias("file_path"),
        F.when(reject, F.col("block_start")).alias("block_start"),
        F.when(reject, F.col("pos")).alias("pos"),
        F.when(reject, F.when(F.col("early") == "too_long", F.substring(raw, 1, max_line_bytes)).otherwise(raw)).alias("raw"),
        F.when(reject, F.col("quads")).alias("quads"),
        F.when(reject, F.col("reason")).alias("reason"),
    ]
