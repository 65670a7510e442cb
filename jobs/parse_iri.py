"""The IRI normal form and the chapter of an IRI, as SQL expressions (reliability #19).

Normal form, applied to every IRI: ``https://`` -> ``http://`` and ``en.dbpedia.org`` ->
``dbpedia.org`` on DBpedia hosts; percent-escapes are decoded to the raw characters DBpedia
writes (``%28`` -> ``(``, ``%C3%A9`` -> ``é``) except those whose character changes the IRI or
cannot appear raw in an N-Triples IRI: controls, space, ``" # % / < > ? \\ ^ ` { | }`` and DEL
stay encoded (so ``What%3F`` keeps ``%3F``, as DBpedia writes it). If an IRI has a ``%`` not
followed by two hex digits, or its escapes are not UTF-8, it is kept as written. Hex case is
not changed.

Chapters (string functions, no regex: this runs twice for every line).
``http://dbpedia.org/resource/<name>`` is ``en``, ``http://xx.dbpedia.org/resource/<name>`` is
``xx`` (``-`` -> ``_``, so ``zh-min-nan`` is ``zh_min_nan``), after ``parse.chapter_map``. Hosts
in ``parse.foreign_hosts`` (``wikidata``) and any other IRI are foreign; chapters not in
``parse.languages`` (``simple``, ``commons``) are ``unknown_chapter``.

Shapes: string column in, string column out, row by row.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

from jobs.parse_grammar import DBPEDIA_HOST_REGEX, KEEP_ENCODED_REGEX
from prixlm_model.config import ParseSettings


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
    is ``xx`` for a host label of ``[a-z0-9-]`` (``-`` -> ``_``); the name is not empty.
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
