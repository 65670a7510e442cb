"""Parse acquired DBpedia dumps into facts, cross-lingual links and rejects (Spark).

Input: ``<data_root>/raw/<release>/<dir>/<file>`` (``.ttl``/``.nt`` N-Triples, ``.tql``/``.nq``
N-Quads; ``.bz2``, ``.gz``, ``.xz`` or plain). Output: ``<data_root>/parsed/<release>/`` with
``facts/lang=<xx>/``, ``links/``, ``rejects/`` (Parquet), ``stats.json`` and ``_SUCCESS``.

Design (why it is built this way)
---------------------------------
Reading and line numbers.
  Compressed files are decompressed, streaming, to plain staging files by a thread pool on the
  driver (Python's ``bz2`` module is libbzip2 with the GIL released: it runs at ``bzcat`` speed,
  about 2.5x Hadoop's Java codec here, and files decompress in parallel). A truncated or corrupt
  stream raises ``CorruptInputError`` naming the file before Spark reads a line, so a cut file is
  never counted (FAULTS 15). Plain inputs are read in place. Spark then reads all files with
  ``spark.read.text`` (split in parallel at line boundaries, raw bytes kept). The line number is
  exact without ``wholetext`` or an RDD ``zipWithIndex``: in the same projection as the scan we take
  ``_metadata.file_path``, ``_metadata.file_block_start`` (the split) and
  ``pos``, the low 33 bits of ``monotonically_increasing_id()``: the row's number inside its
  partition, where the rows of one split are contiguous. One small aggregate per (file, split) (its
  first ``pos`` and its row count, collected with the statistics) gives each split's offset inside
  its file, and ``line_no = pos - first pos of the split + lines in earlier splits + 1``. Only
  rejects need it. Splits are sized for four per core (``split_bytes``).

Parsing, with SQL expressions only (no Python per row).
  1. ``too_long``: ``octet_length`` above ``parse.max_line_bytes``, before any other step.
  2. ``invalid_utf8``: ``is_valid_utf8`` on the raw bytes, before any regex or string function
     (they would silently turn bad bytes into U+FFFD). Rejects keep the raw bytes (binary column).
  3. Blank and ``#`` lines are counted as comments.
  4. ``bad_escape``: on lines holding a backslash only, escaped backslashes are removed first and
     valid surrogate pairs next; then any ``\\u`` that is not 4 hex digits or is a lone surrogate,
     ``\\U`` that is not 8 hex digits up to 10FFFF, or another escape letter than ``tbnrf"'\\`` fails.
  5. One line regex (``LINE_REGEX``): possessive quantifiers and unrolled loops only, so a 200 KB
     literal cannot overflow the JVM stack. ``regexp_replace`` turns the line into the terms joined
     by NUL (an IRI's text without its brackets, or the literal or blank node as written), then
     ``split`` (faster than one ``regexp_extract`` per group). Lines it does
     not match are diagnosed by a lenient tokenizer: ``unterminated_iri``,
     ``unterminated_literal``, ``wrong_term_count``, ``missing_dot``, ``bad_iri`` else ``syntax``.
     Matched lines may still be ``wrong_term_count`` (a graph term in an N-Triples file),
     ``literal_subject``, ``literal_predicate`` or ``blank_predicate``.
  6. Kept terms, on the ~0.3% of lines with a backslash, a ``%`` or a host to rewrite only
     (``needs_decoding``; the others skip this step, see ``classify_lines``): escapes decoded (``\\uXXXX``, ``\\UXXXXXXXX``, ECHARs) with ``unhex`` + ``decode``
     as UTF-16BE/UTF-32 over ``regexp_extract_all`` pieces, then IRIs normalised (below).

IRI normal form (FAULTS 19), applied to every IRI.
  ``https://`` -> ``http://`` and ``en.dbpedia.org`` -> ``dbpedia.org`` on DBpedia hosts;
  percent-escapes are decoded to the raw characters DBpedia writes (``%28`` -> ``(``,
  ``%C3%A9`` -> ``é``) except those whose character changes the IRI or cannot appear raw in an
  N-Triples IRI: controls, space, ``" # % / < > ? \\ ^ ` { | }`` and DEL stay encoded (so
  ``What%3F`` keeps ``%3F``, as DBpedia writes it). If an IRI has a ``%`` not followed by two hex
  digits, or its escapes are not UTF-8, it is kept as written. Hex case is not changed.

Chapters (string functions, no regex). ``http://dbpedia.org/resource/<name>`` is ``en``,
``http://xx.dbpedia.org/resource/<name>`` is ``xx`` (``-`` -> ``_``, so ``zh-min-nan`` is ``zh_min_nan``), after ``parse.chapter_map``.
Hosts in ``parse.foreign_hosts`` (``wikidata``) and any other IRI are foreign; chapters not in
``parse.languages`` (``simple``, ``commons``) are ``unknown_chapter``. Both are counted, skipped.

Every line falls in exactly one class (``LINE_CLASSES``) and ``stats.json`` adds them up:
  comment (``#`` and blank lines), reject (by reason), blank_node (a ``_:`` subject or object),
  foreign_iri, unknown_chapter (subject first, then object), label (``rdfs:label`` with a literal
  object), literal (other literal objects), fact (subject and object entities of one chapter,
  any predicate), link (``owl:sameAs`` between two chapters), cross_chapter (another predicate
  between two chapters). ``facts`` and ``links`` count distinct statements; repeats are
  ``duplicates``. Outputs: facts deduplicated on (s_iri, p_iri, o_iri); links are the distinct
  directed pairs of both directions of every link statement.

Names. An entity's name is its ``rdfs:label`` whose language tag is the entity's chapter (the
smallest if there are several), else its local name percent-decoded with ``_`` -> space. Two IRIs
may share a name (``Paris``): the IRI stays the key everywhere; names are only surface text.
A relation's name is the ``rdfs:label`` of a ``http://dbpedia.org/ontology/`` property in the
fact's language from ``parse.ontology`` (read once on the driver with rdflib, broadcast), else its
local name (after the last ``/`` or ``#``) percent-decoded with ``_`` -> space.

Passes. The classified lines are persisted once; one grouped aggregate over them (per file,
split, class, reason and fact language) gives every line count, the split offsets and the framing.
Facts, links and rejects are then one write each, and their row counts (facts per language,
distinct link statements via a ``stated`` flag, rejects per reason) are observed metrics of those
writes (``DataFrame.observe``), so no output is read back to be counted. Entity names are
broadcast to the fact and link lookups while there are at most ``BROADCAST_NAMES_MAX`` labels:
the facts are then shuffled once (deduplication), not once per name lookup.

Atomic and idempotent: everything is written to ``parsed/.<release>.tmp-<id>/``; ``stats.json``
then ``_SUCCESS`` are written last, and the folder is renamed over ``parsed/<release>/`` (the old
one is moved aside first and removed). Readers call ``is_complete``. A re-run replaces it.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

if __package__ in (None, ""):  # run as a file by spark-submit: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from jobs.stage import atomic_output, spark_stage_main, write_stats
from prixlm_model.config import ParseSettings, Settings, check_safe_name

log = logging.getLogger(__name__)

RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
OWL_SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"
DBO = "http://dbpedia.org/ontology/"

# ---------------------------------------------------------------------------------------------
# Regular expressions (Java syntax). Possessive quantifiers and unrolled loops only: no
# backtracking, no recursion per character, so long lines cannot overflow the JVM stack.
_HEX = "[0-9A-Fa-f]"
_IRI_CHAR = r"[^\x00-\x20<>\"{}|^`\\]"
IRI_REGEX = rf"<{_IRI_CHAR}*+(?:\\(?:u{_HEX}{{4}}|U{_HEX}{{8}}){_IRI_CHAR}*+)*+>"
_LIT_CHAR = r"[^\"\\\r\n]"
LITERAL_REGEX = (
    rf"\"{_LIT_CHAR}*+(?:\\(?:[tbnrf\"'\\]|u{_HEX}{{4}}|U{_HEX}{{8}}){_LIT_CHAR}*+)*+\""
    rf"(?:@[A-Za-z]++(?:-[A-Za-z0-9]++)*+|\^\^{IRI_REGEX})?"
)
_BNODE_CHAR = r"[^\x00-\x20<>\"{}|^`\\.]"
BNODE_REGEX = rf"_:{_BNODE_CHAR}(?:\.*+{_BNODE_CHAR})*+"
_IRI_BODY = rf"{_IRI_CHAR}*+(?:\\(?:u{_HEX}{{4}}|U{_HEX}{{8}}){_IRI_CHAR}*+)*+"
# A term captured as two groups: the IRI's text between < and > (empty when the term is not an
# IRI), and a literal or blank node as written (empty when it is an IRI: "" and _:x are never empty).
TERM_REGEX = rf"(?:<({_IRI_BODY})>|({LITERAL_REGEX}|{BNODE_REGEX}))"
# The one line regex: subject, predicate, object, optional graph, '.', optional comment.
LINE_REGEX = (
    rf"^[ \t]*+{TERM_REGEX}[ \t]*+{TERM_REGEX}[ \t]*+{TERM_REGEX}"
    rf"(?:[ \t]*+{TERM_REGEX})?[ \t]*+\.[ \t]*+(?:#.*+)?$"
)
SEP = "\u0000"
# Marker first (a line starting with NUL never matches), then subject, predicate and graph as
# (IRI, other) pairs, and the object last, so that a NUL inside a literal object cannot shift the
# split. IRIs and blank nodes never hold a NUL.
LINE_PARTS = ("s_body", "s_other", "p_body", "p_other", "g_body", "g_other", "o_body", "o_other")
LINE_REPLACEMENT = SEP + SEP.join(f"${group}" for group in (1, 2, 3, 4, 7, 8, 5, 6))

# Lenient tokenizer, used only on lines LINE_REGEX did not match, to name the fault.
DIAG_TOKEN_REGEX = (
    r"<[^>\s]*+>?"
    r"|\"(?:[^\"\\]++|\\.)*+\"?(?:@[^\s]*+|\^\^<[^>\s]*+>?)?"
    r"|_:[^\s.<\"]*+(?:\.++[^\s.<\"]++)*+"
    r"|\.|#.*+|[^\s<\"]++"
)
# Bad escapes, looked for after escaped backslashes and valid surrogate pairs are removed.
ESCAPED_BACKSLASH_REGEX = r"\\\\"
SURROGATE_PAIR_REGEX = rf"\\u[dD][89abAB]{_HEX}{{2}}\\u[dD][c-fC-F]{_HEX}{{2}}"
BAD_ESCAPE_REGEX = (
    rf"\\(?:u(?!{_HEX}{{4}})|u[dD][89a-fA-F]|U(?!000{_HEX}{{5}}|0010{_HEX}{{4}})|[^tbnrf\"'\\uU]|$)"
)
# Escape pieces for decoding: a pair first, so that it is decoded as one character.
ESCAPE_PIECE_REGEX = rf"\\U{_HEX}{{8}}|{SURROGATE_PAIR_REGEX}|\\u{_HEX}{{4}}|\\.|[^\\]++"
# Percent-escapes kept encoded in the normal form (see the module docstring).
KEEP_ENCODED_REGEX = r"%(?=[01][0-9A-Fa-f]|2[0235Ff]|3[CcEeFf]|5[CcEe]|60|7[BbCcDdFf])"
DBPEDIA_HOST_REGEX = r"^https?://(?:en\.)?((?:[A-Za-z0-9-]++\.)?)dbpedia\.org/"

REJECT_REASONS = (
    "too_long", "invalid_utf8", "bad_escape", "unterminated_iri", "unterminated_literal", "wrong_term_count",
    "missing_dot", "bad_iri", "syntax", "literal_subject", "literal_predicate", "blank_predicate",
)
LINE_CLASSES = (
    "comment", "reject", "blank_node", "foreign_iri", "unknown_chapter", "label", "literal", "fact", "link",
    "cross_chapter",
)
COMPRESSED = {".bz2": bz2.open, ".gz": gzip.open, ".xz": lzma.open}
TRIPLE_EXTENSIONS = (".ttl", ".nt")
QUAD_EXTENSIONS = (".tql", ".nq")

FACT_COLUMNS = ("s_iri", "p_iri", "o_iri", "s", "p", "o", "lang")
LINK_COLUMNS = ("s_iri", "s_lang", "o_iri", "o_lang", "s", "o")
REJECT_COLUMNS = ("file", "line_no", "line", "reason")


class ParseError(RuntimeError):
    """The parse of a release failed; the message names the file at fault when there is one."""


class CorruptInputError(ParseError):
    """A compressed input is truncated or corrupt (FAULTS 15)."""


@dataclass(frozen=True)
class InputFile:
    """One acquired dump: its path, its name relative to the release folder, and its syntax."""

    path: Path
    rel: str
    quads: bool
    codec: str | None  # ".bz2", ".gz", ".xz" or None for plain


# ---------------------------------------------------------------------------------------------
# Inputs


def discover_inputs(raw_dir: Path) -> list[InputFile]:
    """The dumps under ``raw/<release>/`` (one folder level), in name order; dot-files are skipped."""
    if not raw_dir.is_dir():
        raise ParseError(f"no acquired dumps: {raw_dir} is not a folder")
    found = []
    for path in sorted(raw_dir.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(raw_dir).parts):
            continue
        name = path.name
        codec = next((ext for ext in COMPRESSED if name.endswith(ext)), None)
        base = name[: -len(codec)] if codec else name
        if base.endswith(QUAD_EXTENSIONS) or base.endswith(TRIPLE_EXTENSIONS):
            found.append(InputFile(path, path.relative_to(raw_dir).as_posix(), base.endswith(QUAD_EXTENSIONS), codec))
    if not found:
        raise ParseError(f"no .ttl/.nt/.tql/.nq dumps under {raw_dir}")
    return found


def _decompress(item: InputFile, target: Path, max_expansion: int) -> Path:
    """Stream ``item`` to ``target``, refusing to write more than ``max_expansion`` times its size (FAULTS 33).

    The same bound acquire checks: a published checksum proves where a file came from, not that
    it expands to something sane.
    """
    limit = max(item.path.stat().st_size * max_expansion, 1 << 20)
    written = 0
    try:
        with COMPRESSED[item.codec](item.path, "rb") as source, open(target, "wb") as sink:
            for block in iter(lambda: source.read(1 << 20), b""):
                written += len(block)
                if written > limit:
                    raise CorruptInputError(f"{item.rel}: expands beyond {max_expansion}x its compressed size (acquire.max_expansion); "
                                            f"refused as a decompression bomb, no line of it was parsed")
                sink.write(block)
    except CorruptInputError:
        target.unlink(missing_ok=True)
        raise
    except (EOFError, OSError, lzma.LZMAError) as exc:
        raise CorruptInputError(f"{item.rel}: compressed file is truncated or corrupt ({exc}); no line of it was parsed") from exc
    return target


def stage_inputs(inputs: list[InputFile], work_dir: Path, workers: int = 0, max_expansion: int = 200) -> dict[str, tuple[Path, InputFile]]:
    """Decompress compressed inputs into ``work_dir`` (plain ones stay where they are).

    Returns ``{resolved plain path: (plain path, input)}``. Raises ``CorruptInputError`` naming the
    first bad file.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, tuple[Path, InputFile]] = {}
    jobs = []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for index, item in enumerate(inputs):
            if item.codec is None:
                staged[str(item.path.resolve())] = (item.path, item)
            else:
                target = work_dir / f"{index:05d}{'.nq' if item.quads else '.nt'}"
                jobs.append((item, pool.submit(_decompress, item, target, max_expansion)))
        for item, future in jobs:
            path = future.result()
            staged[str(path.resolve())] = (path, item)
    return staged


def split_bytes(staged: dict[str, tuple[Path, InputFile]], parallelism: int) -> int:
    """Input split size: four splits per core, between 4 MB and 128 MB (Spark's default maximum).

    With Spark's default a 290 MB file is cut 128 + 128 + 34 MB, and two cores finish unevenly.
    """
    total = sum(path.stat().st_size for path, _ in staged.values())
    return int(min(128 << 20, max(4 << 20, total // max(1, 4 * parallelism))))


def read_lines(spark: SparkSession, staged: dict[str, tuple[Path, InputFile]]) -> DataFrame:
    """Raw lines with their position: ``file_path, block_start, pos, value, quads``.

    ``pos`` is the row's number inside its scan partition: the low 33 bits of
    ``monotonically_increasing_id()`` in the same projection as the scan, so it is consecutive
    inside a split and the same in every branch that scans these files (the high bits are the
    partition's index, which a union renumbers).
    """
    paths = [str(path) for path, _ in staged.values()]
    frame = spark.read.text(paths).select(
        F.col("_metadata.file_path").alias("file_path"),
        F.col("_metadata.file_block_start").alias("block_start"),
        F.monotonically_increasing_id().bitwiseAND((1 << 33) - 1).alias("pos"),
        F.col("value"),
    )
    # Staged files are named .nq/.nt by syntax; plain inputs keep their .tql/.nq/.ttl/.nt name.
    quads = F.lit(False)
    for ext in (*QUAD_EXTENSIONS,):
        quads = quads | F.col("file_path").endswith(ext)
    return frame.withColumn("quads", quads)


def _path_of(file_path: str) -> str:
    parsed = urlparse(file_path)
    return str(Path(unquote(parsed.path)).resolve()) if parsed.scheme in ("file", "") else file_path


# ---------------------------------------------------------------------------------------------
# Column helpers (SQL expressions, no Python per row)


def decode_escapes(text: Column) -> Column:
    """Decode N-Triples escapes (``\\uXXXX`` incl. surrogate pairs, ``\\UXXXXXXXX``, ``\\t`` …)."""
    echar = F.create_map(*[F.lit(x) for pair in (("\\t", "\t"), ("\\b", "\b"), ("\\n", "\n"), ("\\r", "\r"),
                                                  ("\\f", "\f"), ('\\"', '"'), ("\\'", "'"), ("\\\\", "\\"))
                           for x in pair])

    def piece(token: Column) -> Column:
        return (
            F.when(~token.startswith("\\"), token)
            .when(token.startswith("\\U"), F.decode(F.unhex(F.substring(token, 3, 8)), "UTF-32"))
            .when(token.startswith("\\u") & (F.length(token) == 6), F.decode(F.unhex(F.substring(token, 3, 4)), "UTF-16BE"))
            .when(token.startswith("\\u"), F.decode(F.unhex(F.concat(F.substring(token, 3, 4), F.substring(token, 9, 4))), "UTF-16BE"))
            .otherwise(F.coalesce(echar[token], token))
        )

    pieces = F.regexp_extract_all(text, F.lit(ESCAPE_PIECE_REGEX), 0)
    return F.when(text.contains("\\"), F.array_join(F.transform(pieces, piece), "")).otherwise(text)


def _try_percent_decode(text: Column) -> Column:
    """Every ``%XX`` decoded (a raw ``+`` stays ``+``); null if that fails or is not valid UTF-8."""
    decoded = F.try_url_decode(F.regexp_replace(text, r"\+", "%2B"))
    bad = decoded.isNull() | ((decoded.contains("\ufffd")) & (~text.contains("\ufffd")))
    return F.when(~bad, decoded)


def percent_decode_all(text: Column) -> Column:
    """Decode every ``%XX``; the input unchanged if it has none or they do not decode to UTF-8."""
    return F.when(~text.contains("%"), text).otherwise(F.coalesce(_try_percent_decode(text), text))


def normalize_iri(iri: Column) -> Column:
    """The one normal form of an IRI (see the module docstring); cheap checks keep the usual IRI as is."""
    hosted = F.regexp_replace(iri, DBPEDIA_HOST_REGEX, "http://$1dbpedia.org/")
    protected = F.regexp_replace(hosted, KEEP_ENCODED_REGEX, "%25")
    slow = iri.startswith("https://") | iri.startswith("http://en.") | (iri.contains("%"))
    return F.when(slow, F.coalesce(_try_percent_decode(protected), hosted)).otherwise(iri)


def chapter_code(iri: Column, settings: ParseSettings) -> Column:
    """The chapter code (after ``chapter_map``) of a normalised IRI, null when it is no DBpedia resource.

    ``http://dbpedia.org/resource/<name>`` is ``en``, ``http://<xx>.dbpedia.org/resource/<name>``
    is ``xx`` for a host label of ``[a-z0-9-]`` (``-`` -> ``_``); the name is not empty. String
    functions, not a regex: this runs twice for every line.
    """
    host = F.substring_index(F.substring(iri, 8, 1 << 30), "/", 1)
    is_resource = (
        iri.startswith("http://")
        & (F.substring(iri, F.length(host) + 8, 10) == "/resource/")
        & (F.length(iri) > F.length(host) + 17)
    )
    label = F.substring(host, 1, F.length(host) - len(".dbpedia.org"))
    code = F.when(is_resource & (host == "dbpedia.org"), F.lit("en")).when(
        is_resource & host.endswith(".dbpedia.org") & (label != "") & (F.translate(label, _HOST_LABEL_CHARS, "") == ""),
        F.translate(label, "-", "_"),
    )
    if settings.chapter_map:
        mapping = F.create_map(*[F.lit(x) for pair in settings.chapter_map.items() for x in pair])
        code = F.coalesce(mapping[code], code)
    return code


_HOST_LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def chapter_status(code: Column, settings: ParseSettings) -> Column:
    """``ok``, ``unknown_chapter`` or ``foreign_iri`` for a chapter code from ``chapter_code``."""
    return (
        F.when(code.isNull() | code.isin(list(settings.foreign_hosts)), F.lit("foreign_iri"))
        .when(code.isin(list(settings.languages)), F.lit("ok"))
        .otherwise(F.lit("unknown_chapter"))
    )


def local_name(iri: Column, resource: bool = False) -> Column:
    """Surface name from an IRI, percent-decoded, ``_`` -> space.

    With ``resource`` (a chapter's resource IRI, ``http://<host>/resource/<name>``) the name is all
    of ``<name>``, slashes included; else the text after the last ``/`` or ``#``.
    """
    if resource:  # skip "http://<host>" (up to the third slash) and "/resource/"
        tail = F.substring(iri, F.length(F.substring_index(iri, "/", 3)) + len("/resource/") + 1, 1 << 30)
    else:
        tail = F.substring_index(F.substring_index(iri, "/", -1), "#", -1)
    return F.translate(percent_decode_all(tail), "_", " ")


def _bad_escape(line: Column) -> Column:
    """Whether a line holds an escape that N-Triples does not allow (see the module docstring)."""
    cleaned = F.regexp_replace(F.regexp_replace(line, ESCAPED_BACKSLASH_REGEX, ""), SURROGATE_PAIR_REGEX, "")
    return F.when(line.contains("\\"), cleaned.rlike(BAD_ESCAPE_REGEX)).otherwise(F.lit(False))


def diagnose(line: Column, quads: Column) -> Column:
    """The reject reason of a (valid UTF-8) line that LINE_REGEX did not match.

    Only ever evaluated on rejected lines, so it may be slower than the main pass.
    """
    tokens = F.filter(F.regexp_extract_all(line, F.lit(DIAG_TOKEN_REGEX), 0), lambda t: ~t.startswith("#"))
    terms = F.filter(tokens, lambda t: t.startswith("<") | t.startswith('"') | t.startswith("_:"))
    n_terms = F.size(terms)
    return (
        F.when(F.exists(tokens, lambda t: t.startswith("<") & ~t.endswith(">")), F.lit("unterminated_iri"))
        .when(F.exists(tokens, lambda t: t.startswith('"') & ~t.rlike(r'^"(?:[^"\\]++|\\.)*+"')), F.lit("unterminated_literal"))
        .when((n_terms < 3) | (n_terms > F.when(quads, 4).otherwise(3)), F.lit("wrong_term_count"))
        .when(F.try_element_at(tokens, F.lit(-1)) != ".", F.lit("missing_dot"))
        .when(F.exists(terms, lambda t: t.startswith("<") & ~t.rlike(f"^{IRI_REGEX}$")), F.lit("bad_iri"))
        .otherwise(F.lit("syntax"))
    )


# ---------------------------------------------------------------------------------------------
# The pipeline, DataFrame -> DataFrame

BROADCAST_NAMES_MAX = 2_000_000  # labels up to which entity names are broadcast to the fact and link lookups
UNPARSED = "unparsed"  # provisional reason of lines LINE_REGEX did not match; diagnose() names it


def needs_decoding(value: Column) -> Column:
    """Whether a raw line may hold an escape, a percent-escape or a host to normalise.

    Only such lines (about 0.3% of DBpedia's) go through ``decode_escapes`` and ``normalize_iri``:
    their higher-order functions cannot be compiled with the rest of the projection, so every
    other line takes a path that is one compiled stage from the scan to the class. A byte search:
    safe on invalid UTF-8, which both paths reject first.
    """
    return (
        (value.contains("\\")) | (value.contains("%")) | (value.contains("https://")) | (value.contains("http://en."))
    )


def classify_lines(lines: DataFrame, settings: ParseSettings) -> DataFrame:
    """One row per input line with its class (``LINE_CLASSES``), reject reason and parsed terms.

    Columns: file_path, block_start, pos, cls, reason (``unparsed`` until ``build_rejects``
    diagnoses it), raw (bytes) and quads (rejects only), marker (``started``/``completed`` on
    DBpedia's frame lines), s_iri, p_iri, o_iri, s_lang, o_lang, label, label_lang (labels only).
    Lines without escapes or hosts to normalise take the compiled path, the others the decoding one
    (``needs_decoding``); both give the same result on a line that needs no decoding. The two
    paths made the parse 1.3x faster (32.8 s against 41.7 s on 2M lines).

    Persist the result before filtering it by class, as ``run`` does: a filter pushed down
    through these projections inlines every step into itself, and the plan grows past what the
    code generator can compile.
    """
    slow = needs_decoding(F.col("value"))
    plain = _classify(lines.where(~slow), settings, decode=False)
    return plain.unionByName(_classify(lines.where(slow), settings, decode=True))


def _classify(lines: DataFrame, settings: ParseSettings, decode: bool) -> DataFrame:
    """``classify_lines`` on lines that need decoding (``decode``) or hold nothing to decode.

    Each step is its own projection so that no expression is computed twice per row (inside one
    compiled stage a projection costs nothing).
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
    frame = frame.select(
        "*",
        F.coalesce(is_comment, F.lit(False)).alias("is_comment"),
        F.when(F.col("line").startswith("# started"), F.lit("started"))
        .when(F.col("line").startswith("# completed"), F.lit("completed")).alias("marker"),
    )
    statement = F.when(~F.col("is_comment"), F.col("line"))
    frame = frame.select(
        "*",
        F.split(F.regexp_replace(statement, LINE_REGEX, LINE_REPLACEMENT), SEP, len(LINE_PARTS) + 1).alias("parts"),
        (_bad_escape(statement) if decode else F.lit(False)).alias("bad_escape"),
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
        frame = frame.select("*", *[decode_escapes(F.col(f"{t}_in")).alias(f"{t}_dec") for t in terms])
        frame = frame.select("*", *[normalize_iri(F.col(f"{t}_dec")).alias(f"{t}_iri") for t in terms])
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
    is_label = F.col("cls") == "label"
    is_reject = F.col("cls") == "reject"
    keep = F.col("cls").isin("fact", "link")
    # The literal of a label: between the first and the last quote; its tag after the last quote.
    frame = frame.select("*", F.when(is_label, F.substring_index(o_other, '"', -1)).alias("suffix"))
    frame = frame.select("*", F.expr("substring(o_other, 2, length(o_other) - length(suffix) - 2)").alias("text"))
    text = F.col("text")
    raw = F.when(F.col("early") == "too_long", F.substring(F.col("value").cast("binary"), 1, settings.max_line_bytes)).otherwise(
        F.col("value").cast("binary")
    )
    return frame.select(
        "file_path", "block_start", "pos", "cls", "reason", "marker",
        F.when(is_reject, raw).alias("raw"),
        F.when(is_reject, F.col("quads")).alias("quads"),
        F.when(keep | is_label, F.col("s_iri")).alias("s_iri"),
        F.when(keep, F.col("p_iri")).alias("p_iri"),
        F.when(keep, F.col("o_iri")).alias("o_iri"),
        F.when(keep | is_label, F.col("s_lang")).alias("s_lang"),
        F.when(keep, F.col("o_lang")).alias("o_lang"),
        F.when(is_label, decode_escapes(text) if decode else text).alias("label"),
        F.when(is_label & F.col("suffix").startswith("@"), F.translate(F.lower(F.substring(F.col("suffix"), 2, 1 << 20)), "-", "_")).alias("label_lang"),
    )


def entity_names(classified: DataFrame) -> DataFrame:
    """``iri, name``: the label in the entity's own chapter language (the smallest if several)."""
    return (
        classified.where((F.col("cls") == "label") & (F.col("label_lang") == F.col("s_lang")))
        .groupBy(F.col("s_iri").alias("iri"))
        .agg(F.min("label").alias("name"))
    )


def _named(frame: DataFrame, names: DataFrame, iri: str, out: str, broadcast: bool) -> DataFrame:
    lookup = names.select(F.col("iri").alias(iri), F.col("name").alias(f"_{out}"))
    return frame.join(F.broadcast(lookup) if broadcast else lookup, iri, "left").withColumn(
        out, F.coalesce(F.col(f"_{out}"), local_name(F.col(iri), resource=True))
    ).drop(f"_{out}")


def build_facts(classified: DataFrame, names: DataFrame, relation_labels: DataFrame, broadcast_names: bool = False) -> DataFrame:
    """Distinct facts with surface names: ``s_iri, p_iri, o_iri, s, p, o, lang``.

    With ``broadcast_names`` the name lookups are map-side (no shuffle of the facts per lookup):
    the deduplication is then the only shuffle of the facts.
    """
    facts = classified.where(F.col("cls") == "fact").select("s_iri", "p_iri", "o_iri", F.col("s_lang").alias("lang"))
    facts = facts.dropDuplicates(["s_iri", "p_iri", "o_iri"])
    facts = _named(_named(facts, names, "s_iri", "s", broadcast_names), names, "o_iri", "o", broadcast_names)
    facts = facts.join(F.broadcast(relation_labels), ["p_iri", "lang"], "left")
    facts = facts.withColumn("p", F.coalesce(F.col("p_label"), local_name(F.col("p_iri"))))
    return facts.select(*FACT_COLUMNS)


def build_links(classified: DataFrame, names: DataFrame, broadcast_names: bool = False) -> DataFrame:
    """Both directions of every inter-chapter sameAs, distinct: ``s_iri, s_lang, o_iri, o_lang, s, o``.

    Also ``stated``: whether the pair was itself a statement (not only the reverse of one); its sum
    is the number of distinct link statements, so no separate distinct count is needed.
    """
    links = classified.where(F.col("cls") == "link").select("s_iri", "s_lang", "o_iri", "o_lang", F.lit(1).alias("stated"))
    reverse = links.select(
        F.col("o_iri").alias("s_iri"), F.col("o_lang").alias("s_lang"), F.col("s_iri").alias("o_iri"), F.col("s_lang").alias("o_lang"),
        F.lit(0).alias("stated"),
    )
    links = links.unionByName(reverse).groupBy("s_iri", "o_iri").agg(
        F.first("s_lang").alias("s_lang"), F.first("o_lang").alias("o_lang"), F.max("stated").alias("stated")
    )
    named = _named(_named(links, names, "s_iri", "s", broadcast_names), names, "o_iri", "o", broadcast_names)
    return named.select(*LINK_COLUMNS, "stated")


def build_rejects(classified: DataFrame, splits: DataFrame) -> DataFrame:
    """``file, line_no, line, reason``; ``splits`` has file_path, block_start, first_pos, offset, file."""
    rejects = classified.where(F.col("cls") == "reject").join(F.broadcast(splits), ["file_path", "block_start"])
    line_no = F.col("pos") - F.col("first_pos") + F.col("offset") + 1
    reason = F.when(F.col("reason") == UNPARSED, diagnose(F.col("raw").cast("string"), F.col("quads"))).otherwise(F.col("reason"))
    return rejects.select("file", line_no.cast("long").alias("line_no"), F.col("raw").alias("line"), reason.alias("reason"))


@lru_cache(maxsize=4)
def _ontology_labels(path: str, mtime: float) -> tuple[tuple[str, str, str], ...]:
    import rdflib
    from rdflib.namespace import RDFS

    opener = lzma.open if path.endswith(".xz") else open
    with opener(path, "rb") as handle:
        data = handle.read()
    graph = rdflib.Graph()
    graph.parse(data=data, format="xml")
    rows = set()
    for subject, label in graph.subject_objects(RDFS.label):
        if isinstance(subject, rdflib.URIRef) and str(subject).startswith(DBO) and getattr(label, "language", None):
            rows.add((str(subject), label.language.lower().replace("-", "_"), str(label).replace("_", " ")))
    # One label per (property, language): the smallest, so that the choice is stable.
    best: dict[tuple[str, str], str] = {}
    for iri, lang, text in sorted(rows):
        best.setdefault((iri, lang), text)
    return tuple((iri, lang, text) for (iri, lang), text in sorted(best.items()))


def ontology_labels(ontology: Path) -> dict[tuple[str, str], str]:
    """``(dbo: property IRI, lang) -> rdfs:label`` (one per pair, the smallest); empty, with a warning, without the file."""
    if not ontology.exists():
        log.warning("ontology %s not found: dbo: relations are named by their local name", ontology)
        return {}
    return {(iri, lang): text for iri, lang, text in _ontology_labels(str(ontology), ontology.stat().st_mtime)}


def relation_labels(spark: SparkSession, ontology: Path) -> DataFrame:
    """``p_iri, lang, p_label`` for the ontology's properties (read once per driver process)."""
    schema = T.StructType([T.StructField(n, T.StringType(), False) for n in ("p_iri", "lang", "p_label")])
    if not ontology.exists():
        log.warning("ontology %s not found: dbo: relations are named by their local name", ontology)
        return spark.createDataFrame([], schema)
    return spark.createDataFrame(list(_ontology_labels(str(ontology), ontology.stat().st_mtime)), schema)


# ---------------------------------------------------------------------------------------------
# Driver


def _split_table(groups: list[Any], staged: dict[str, tuple[Path, InputFile]]) -> tuple[list[tuple], dict[str, dict]]:
    """From the per-(file, split, class) aggregate: the split offsets and per-file statistics."""
    splits: dict[tuple[str, int], dict] = {}
    for row in groups:
        entry = splits.setdefault((row.file_path, row.block_start), {"first": row.first_pos, "last": row.last_pos, "n": 0,
                                                                      "started": None, "completed": None})
        entry["first"] = min(entry["first"], row.first_pos)
        entry["last"] = max(entry["last"], row.last_pos)
        entry["n"] += row.n
        for key in ("started", "completed"):
            value = getattr(row, f"{key}_pos")
            if value is not None:
                entry[key] = value if entry[key] is None else (min if key == "started" else max)(entry[key], value)
    rows, files = [], {}
    by_file: dict[str, list[tuple[int, dict]]] = {}
    for (file_path, block_start), entry in splits.items():
        by_file.setdefault(file_path, []).append((block_start, entry))
    for file_path, parts in by_file.items():
        parts.sort(key=lambda item: item[0])
        _, item = staged[_path_of(file_path)]
        offset = 0
        for block_start, entry in parts:
            rows.append((file_path, block_start, entry["first"], offset, item.rel))
            offset += entry["n"]
        first, last = parts[0][1], parts[-1][1]
        files[item.rel] = {
            "lines": offset,
            "started": first["started"] == first["first"],
            "completed": last["completed"] is not None and last["completed"] == last["last"],
        }
    for path, item in staged.values():  # empty files have no rows at all
        files.setdefault(item.rel, {"lines": 0, "started": False, "completed": False})
    return rows, files


def run(spark: SparkSession, settings: Settings, release: str) -> dict[str, Any]:
    """Parse ``raw/<release>`` into ``parsed/<release>`` atomically; return the statistics."""
    started = time.time()
    release = check_safe_name(release, "release")
    cfg = settings.parse
    inputs = discover_inputs(settings.paths.stage_dir("raw", release))
    classified = None
    with atomic_output(settings.paths.stage_dir("parsed", release)) as staging:
        try:
            staged = stage_inputs(inputs, staging / "_input", cfg.decompress_workers, settings.acquire.max_expansion)
            decompressed_s = time.time() - started
            spark.conf.set("spark.sql.files.maxPartitionBytes", str(split_bytes(staged, spark.sparkContext.defaultParallelism)))
            classified = classify_lines(read_lines(spark, staged), cfg).persist(StorageLevel.MEMORY_AND_DISK)
            groups = (
                classified.groupBy("file_path", "block_start", "cls", "reason", F.when(F.col("cls") == "fact", F.col("s_lang")).alias("lang"))
                .agg(
                    F.count(F.lit(1)).alias("n"),
                    F.min("pos").alias("first_pos"),
                    F.max("pos").alias("last_pos"),
                    F.min(F.when(F.col("marker") == "started", F.col("pos"))).alias("started_pos"),
                    F.max(F.when(F.col("marker") == "completed", F.col("pos"))).alias("completed_pos"),
                )
                .collect()
            )
            log.info("decompressed in %.1f s, classified in %.1f s", decompressed_s, time.time() - started - decompressed_s)
            split_rows, files = _split_table(groups, staged)
            unframed = sorted(rel for rel, info in files.items() if not (info["started"] and info["completed"]))
            if cfg.require_framing and unframed:
                raise ParseError(f"{unframed[0]}: not framed by '# started' / '# completed' lines (parse.require_framing)")
            split_schema = "file_path string, block_start long, first_pos long, offset long, file string"
            splits = spark.createDataFrame(split_rows, split_schema)

            # Names are broadcast (map-side lookups) while they fit comfortably in memory.
            by_class = {name: 0 for name in LINE_CLASSES}
            for row in groups:
                by_class[row.cls] += row.n
            broadcast_names = by_class["label"] <= BROADCAST_NAMES_MAX
            names = entity_names(classified)
            # The counts come from observed metrics of the writes themselves: no output is re-read.
            fact_langs = sorted({row.lang for row in groups if row.cls == "fact"})
            facts_seen = Observation("facts")
            facts_out = build_facts(classified, names, relation_labels(spark, cfg.ontology), broadcast_names)
            facts_out.observe(facts_seen, F.count(F.lit(1)).alias("rows"),
                              *[F.count_if(F.col("lang") == lang).alias(f"lang_{lang}") for lang in fact_langs],
                              ).write.partitionBy("lang").parquet(str(staging / "facts"))
            log.info("facts written at %.1f s", time.time() - started)
            links_seen = Observation("links")
            build_links(classified, names, broadcast_names).observe(
                links_seen, F.count(F.lit(1)).alias("rows"), F.coalesce(F.sum("stated"), F.lit(0)).alias("stated")
            ).drop("stated").write.parquet(str(staging / "links"))
            rejects_seen = Observation("rejects")
            build_rejects(classified, splits).observe(
                rejects_seen, F.count(F.lit(1)).alias("rows"), *[F.count_if(F.col("reason") == name).alias(name) for name in REJECT_REASONS]
            ).write.parquet(str(staging / "rejects"))
            log.info("links and rejects written at %.1f s", time.time() - started)

            rejects = {name: rejects_seen.get[name] for name in REJECT_REASONS}
            facts = facts_seen.get["rows"]
            per_lang = {lang: facts_seen.get[f"lang_{lang}"] for lang in fact_langs}
            distinct_links, link_rows = links_seen.get["stated"], links_seen.get["rows"]
            lines = sum(info["lines"] for info in files.values())
            stats = {
                "release": release,
                "lines_read": lines,
                "comments": by_class["comment"],
                "facts": facts,
                "links": distinct_links,
                "labels": by_class["label"],
                "literals_skipped": by_class["literal"],
                "foreign_iris_skipped": by_class["foreign_iri"],
                "unknown_chapter_skipped": by_class["unknown_chapter"],
                "cross_chapter_skipped": by_class["cross_chapter"],
                "blank_nodes_skipped": by_class["blank_node"],
                "rejects": by_class["reject"],
                "duplicates": by_class["fact"] - facts + by_class["link"] - distinct_links,
                "rejects_by_reason": rejects,
                "line_classes": by_class,
                "fact_rows_by_lang": per_lang,
                "link_rows": link_rows,
                "files": files,
                "unframed_files": unframed,
                "decompress_seconds": round(decompressed_s, 3),
                "seconds": round(time.time() - started, 3),
            }
            stats["lines_per_second"] = round(lines / max(stats["seconds"], 1e-9), 1)
            accounted = sum(stats[key] for key in ACCOUNTING_KEYS)
            if accounted != lines:
                raise ParseError(f"accounting error: {accounted} lines accounted for, {lines} read")
            shutil.rmtree(staging / "_input", ignore_errors=True)
            write_stats(staging, stats)
        finally:
            if classified is not None:
                classified.unpersist()
    log.info("parsed %s: %d lines, %d facts, %d link rows, %d rejects in %.1f s", release, lines, facts, link_rows,
             stats["rejects"], stats["seconds"])
    return stats


# The stats.json keys whose sum is lines_read (FAULTS: every input line is accounted for).
ACCOUNTING_KEYS = (
    "comments", "facts", "links", "labels", "literals_skipped", "foreign_iris_skipped", "unknown_chapter_skipped",
    "cross_chapter_skipped", "blank_nodes_skipped", "rejects", "duplicates",
)


def main(argv: list[str] | None = None) -> None:
    spark_stage_main(argv, __doc__, "parse", "raw", run, output="parsed",
                     summary=lambda stats: {key: stats[key] for key in ("lines_read", "facts", "links", "rejects", "seconds")})


if __name__ == "__main__":
    main()
