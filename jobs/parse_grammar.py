"""The N-Triples / N-Quads grammar of the parse: Java regexes and the SQL expressions built on them.

Why regexes and SQL expressions, not Python: every line is matched in the JVM inside one compiled
projection (no row crosses to Python). Every quantifier below is possessive or an unrolled loop:
no backtracking and no recursion per character, so a 200 KB literal cannot overflow the JVM
stack (a nested alternation ``(?:a|b)*`` does, and kills the executor).

Shapes: every function here maps string columns to a column of the same row; none aggregates.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
OWL_SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"
DBO = "http://dbpedia.org/ontology/"

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
# Percent-escapes kept encoded in the IRI normal form (jobs/parse_iri.py).
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
UNPARSED = "unparsed"  # provisional reason of lines LINE_REGEX did not match; diagnose() names it


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


def bad_escape(line: Column) -> Column:
    """Whether a line holds an escape that N-Triples does not allow.

    Escaped backslashes are removed first and valid surrogate pairs next; then any ``\\u`` that is
    not 4 hex digits or is a lone surrogate, ``\\U`` that is not 8 hex digits up to 10FFFF, or
    another escape letter than ``tbnrf"'\\`` fails.
    """
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


