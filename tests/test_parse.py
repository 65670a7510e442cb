"""jobs.parse on real DBpedia data and hand-made faults (reliability #11-19), against rdflib's parser.

One Spark session (local[2]) for the module; the main parse runs once over a raw release holding
the ConceptNet5 DBpedia quads, the extraction framework's French quads, three files of the
DBP15K-derived sample mirror, an edge-case fixture and a generated file of malformed lines.
"""

from __future__ import annotations

import bz2
import json
import re
import shutil
from pathlib import Path

import pytest
from pyspark.sql import functions as F
import rdflib
from rdflib import BNode, Literal, URIRef

from jobs import parse, parse_classify, parse_inputs, parse_outputs
from jobs.stage import is_complete
from prixlm_model.config import LANGUAGE_CODES, load_settings

pytestmark = pytest.mark.slow

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
CONCEPTNET = DATA / "dbpedia-samples-conceptnet5"
EXTRACTION = DATA / "dbpedia-extraction-framework" / "InfoboxExtractor_samples" / "fr"
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "parse"
RELEASE = "2016.10.01"
SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"

R = "http://fr.dbpedia.org/resource/"
P = "http://fr.dbpedia.org/property/"


def good(i: int) -> bytes:
    return f"<{R}Ligne_{i}> <{P}suivant> <{R}Ligne_{i + 1}> .".encode()


# (line, reason): None for a valid line. Each fault sits between valid lines (reliability #11-14, 17).
MALFORMED: list[tuple[bytes, str | None]] = [
    (b"# started 2016-10-01T00:00:00Z", None),
    (good(1), None),
    (f"<{R}A <{P}p> <{R}B> .".encode(), "unterminated_iri"),
    (good(2), None),
    (f"<{R}A> <{P}p> <{R}B>".encode(), "missing_dot"),
    (f'<{R}A> <{P}p> "caf\\u00ZZ"@fr .'.encode(), "bad_escape"),
    (f'<{R}A> <{P}p> "beyond \\U00110000"@fr .'.encode(), "bad_escape"),
    (f'<{R}A> <{P}p> "lone \\uD800 surrogate"@fr .'.encode(), "bad_escape"),
    (f'<{R}A> <{P}p> "unknown \\q escape"@fr .'.encode(), "bad_escape"),
    (good(3), None),
    (f"<{R}Caf".encode() + b"\xff\xfe" + f"> <{P}p> <{R}B> .".encode(), "invalid_utf8"),
    (f'"A" <{P}p> <{R}B> .'.encode(), "literal_subject"),
    (f'<{R}A> "p" <{R}B> .'.encode(), "literal_predicate"),
    (f"<{R}A> <{P}p> .".encode(), "wrong_term_count"),
    (f"<{R}A> <{P}p> <{R}B> <{R}C> .".encode(), "wrong_term_count"),  # a graph term in an N-Triples file
    (f'<{R}A> <{P}p> "stray quote .'.encode(), "unterminated_literal"),
    (f'<{R}A> <{P}p> "'.encode() + b"x" * 200_000 + b'"@fr .', "too_long"),  # a 200 KB literal
    (f"<{R}{'y' * 100_000}> <{P}p> <{R}B> .".encode(), "too_long"),  # a 100,000-character IRI
    (good(4), None),
    (f'<{R}A> <{P}p> "escaped \\\\uD800 backslash, pair \\uD83D\\uDE00"@fr .'.encode(), None),  # valid literal
    (f"<{R}Paris> <{P}pays> <{R}France> .".encode(), None),  # also in the edge fixture: a duplicate
    (good(5), None),
    (b"# completed 2016-10-01T00:00:00Z", None),
]


# --- an independent Python statement of the documented IRI normal form ------------------------
KEEP_ENCODED = set(range(0x21)) | set(b'"#%/<>?\\^`{|}') | {0x7F}
CHAPTER = re.compile(r"^http://(?:([a-z0-9-]+)\.)?dbpedia\.org/resource/.+$")


def normalize(iri: str) -> str:
    if iri.startswith("https://") or iri.startswith("http://en."):
        iri = re.sub(r"^https?://(?:en\.)?((?:[A-Za-z0-9-]+\.)?)dbpedia\.org/", r"http://\1dbpedia.org/", iri)
    if "%" not in iri or re.search(r"%(?![0-9A-Fa-f]{2})", iri):
        return iri
    out = bytearray()
    for piece in re.split(r"(%[0-9A-Fa-f]{2})", iri):
        if piece.startswith("%") and len(piece) == 3 and int(piece[1:], 16) not in KEEP_ENCODED:
            out.append(int(piece[1:], 16))
        else:
            out += piece.encode("utf-8")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return iri


def chapter(iri: str) -> str | None:
    match = CHAPTER.match(iri)
    if not match:
        return None
    code = (match.group(1) or "en").replace("-", "_")
    return code if code in LANGUAGE_CODES and code != "wikidata" else None


def rdflib_statements(path: Path, data: bytes | None = None) -> set[tuple[str, str, str]]:
    """IRI-only triples as rdflib parses them (normalised), blank nodes and literals left out."""
    text = (data if data is not None else (bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes())).decode()
    quads = ".tql" in path.name or ".nq" in path.name
    graph = rdflib.Dataset() if quads else rdflib.Graph()
    graph.parse(data=text, format="nquads" if quads else "nt")
    triples = graph.quads((None, None, None, None)) if quads else ((s, p, o, None) for s, p, o in graph)
    return {
        (normalize(str(s)), normalize(str(p)), normalize(str(o)))
        for s, p, o, _ in triples
        if isinstance(s, URIRef) and isinstance(o, URIRef) and not isinstance(o, (BNode, Literal))
    }


def expected(statements: set[tuple[str, str, str]]) -> tuple[set, set]:
    facts, links = set(), set()
    for s, p, o in statements:
        cs, co = chapter(s), chapter(o)
        if cs is None or co is None:
            continue
        if cs == co:
            facts.add((s, p, o))
        elif p == SAME_AS:
            links |= {(s, o), (o, s)}
    return facts, links


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("test-parse")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, sample_mirror):
    """A data root whose raw/<RELEASE>/ holds the real files, the fixture and the malformed file."""
    root = tmp_path_factory.mktemp("parse") / "var"
    raw = root / "raw" / RELEASE
    (raw / "en").mkdir(parents=True)
    (raw / "fr").mkdir()
    for source in sorted(CONCEPTNET.glob("*.tql.bz2")):
        shutil.copy(source, raw / "en" / source.name)
    for source in sorted(EXTRACTION.glob("*.tql")):
        shutil.copy(source, raw / "fr" / source.name)
    databus = sample_mirror / "databus/dbpedia/generic"
    shutil.copy(databus / "infobox-properties" / RELEASE / "infobox-properties_lang=fr.ttl.bz2", raw / "fr")
    shutil.copy(databus / "labels" / RELEASE / "labels_lang=en.ttl.bz2", raw / "en")
    shutil.copy(sample_mirror / "classic/2016-10/core-i18n/fr/interlanguage_links_fr.tql.bz2", raw / "fr")
    shutil.copy(FIXTURES / "edge_cases_fr.nt", raw / "fr")
    (raw / "fr" / "malformed_fr.nt").write_bytes(b"\n".join(line for line, _ in MALFORMED) + b"\n")
    (raw / "fr" / ".infobox-properties_lang=fr.ttl.bz2.lock").write_text("")  # acquire's lock files are ignored
    settings = load_settings({"paths": {"data_root": str(root)}})
    return root, raw, settings


@pytest.fixture(scope="module")
def parsed(spark, workspace):
    root, raw, settings = workspace
    stats = parse.run(spark, settings, RELEASE)
    return root / "parsed" / RELEASE, stats


def _lines_in(path: Path) -> int:
    data = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
    return data.count(b"\n") + (0 if data.endswith(b"\n") or not data else 1)


# --- tests -------------------------------------------------------------------------------------


def test_output_layout_and_schema(spark, parsed):
    out, stats = parsed
    assert is_complete(out)
    assert sorted(p.name for p in (out / "facts").iterdir() if p.is_dir()) == ["lang=en", "lang=fr"]
    facts = spark.read.parquet(str(out / "facts"))
    assert facts.columns == list(parse_outputs.FACT_COLUMNS[:-1]) + ["lang"]
    links = spark.read.parquet(str(out / "links"))
    assert links.columns == list(parse_outputs.LINK_COLUMNS)
    rejects = spark.read.parquet(str(out / "rejects"))
    assert rejects.columns == list(parse_outputs.REJECT_COLUMNS)
    assert dict(rejects.dtypes) == {"file": "string", "line_no": "bigint", "line": "binary", "reason": "string"}
    assert not list(out.parent.glob(f".{RELEASE}.*")), "no staging folder is left behind"
    assert json.loads((out / "stats.json").read_text())["lines_read"] == stats["lines_read"]


def test_facts_and_links_equal_rdflib(spark, parsed, workspace):
    out, _ = parsed
    _, raw, _ = workspace
    statements: set = set()
    for path in sorted(raw.rglob("*")):
        if path.name.startswith(".") or not path.is_file() or path.name == "malformed_fr.nt":
            continue
        statements |= rdflib_statements(path)
    valid = b"\n".join(line for line, reason in MALFORMED if reason is None)
    statements |= rdflib_statements(Path("malformed_fr.nt"), valid)
    want_facts, want_links = expected(statements)
    got_facts = {tuple(r) for r in spark.read.parquet(str(out / "facts")).select("s_iri", "p_iri", "o_iri").collect()}
    got_links = {tuple(r) for r in spark.read.parquet(str(out / "links")).select("s_iri", "o_iri").collect()}
    assert len(want_facts) > 100_000 and len(want_links) > 20_000
    assert got_facts == want_facts
    assert got_links == want_links
    # each real source contributed
    assert ("http://dbpedia.org/resource/NOCTI", "http://dbpedia.org/ontology/industry", "http://dbpedia.org/resource/Test_(assessment)") in got_facts
    assert any(s.startswith(R + "Bruges") for s, _, _ in got_facts)


def test_rejects_have_reason_file_and_line_number(spark, parsed):
    out, stats = parsed
    rows = spark.read.parquet(str(out / "rejects")).collect()
    got = sorted((r.file, r.line_no, r.reason) for r in rows)
    want = sorted(("fr/malformed_fr.nt", i + 1, reason) for i, (_, reason) in enumerate(MALFORMED) if reason)
    assert got == want
    raw_by_line = {r.line_no: bytes(r.line) for r in rows}
    invalid = next(i + 1 for i, (_, reason) in enumerate(MALFORMED) if reason == "invalid_utf8")
    assert raw_by_line[invalid] == MALFORMED[invalid - 1][0], "the raw bytes are kept, not U+FFFD"
    too_long = next(i + 1 for i, (_, reason) in enumerate(MALFORMED) if reason == "too_long")
    assert len(raw_by_line[too_long]) == load_settings().parse.max_line_bytes
    for reason in {reason for _, reason in MALFORMED if reason}:
        assert stats["rejects_by_reason"][reason] == sum(1 for _, r in MALFORMED if r == reason)


def test_accounting_adds_up(parsed, workspace):
    _, stats = parsed
    _, raw, _ = workspace
    on_disk = sum(_lines_in(p) for p in raw.rglob("*") if p.is_file() and not p.name.startswith("."))
    assert stats["lines_read"] == on_disk
    assert sum(stats[key] for key in parse.ACCOUNTING_KEYS) == stats["lines_read"]
    assert sum(stats["line_classes"].values()) == stats["lines_read"]
    assert stats["rejects"] == sum(stats["rejects_by_reason"].values()) == sum(1 for _, r in MALFORMED if r)
    assert stats["files"]["fr/malformed_fr.nt"]["lines"] == len(MALFORMED)
    assert stats["files"]["fr/infobox-properties_lang=fr.ttl.bz2"]["started"] is True
    assert stats["files"]["fr/infobox-properties_lang=fr.ttl.bz2"]["completed"] is True
    assert "en/mappingbased_objects_en.tql.bz2" in stats["unframed_files"]  # a cut-down sample, no frame


def test_blank_nodes_foreign_and_unknown_chapters_are_counted_and_skipped(spark, parsed):
    out, stats = parsed
    assert stats["blank_nodes_skipped"] == 2  # the edge fixture's _:b0 subject and _:b1 object
    assert stats["unknown_chapter_skipped"] >= 2  # simple, commons (the ConceptNet links add more)
    assert stats["foreign_iris_skipped"] >= 4  # wikidata.dbpedia.org and wikidata.org, in both samples
    assert stats["cross_chapter_skipped"] == 1  # fr -> de jumelage
    links = spark.read.parquet(str(out / "links"))
    facts = spark.read.parquet(str(out / "facts"))
    for frame, columns in ((links, ("s_iri", "o_iri")), (facts, ("s_iri", "o_iri"))):
        for column in columns:
            assert frame.where(frame[column].rlike("wikidata|^_:|simple\\.|commons\\.")).count() == 0
    langs = {r.s_lang for r in links.select("s_lang").distinct().collect()}
    assert "zh_min_nan" in langs and langs <= set(LANGUAGE_CODES)


def test_duplicates_normalisation_and_names(spark, parsed):
    out, stats = parsed
    facts = spark.read.parquet(str(out / "facts"))
    # The same triple twice in one file and once in another, and %C3%A9 against é: one row each.
    assert facts.where((facts.s_iri == R + "Paris") & (facts.p_iri == P + "pays")).count() == 1
    flore = facts.where(facts.s_iri.startswith(R + "Caf")).collect()
    assert [(r.s_iri, r.s, r.p) for r in flore] == [(R + "Café_de_Flore", "Café de Flore", "emplacement")]
    assert stats["duplicates"] >= 3
    # %27 and %C3%A9 decoded, %3F and %28 handled by the documented normal form.
    jeanne = facts.where(facts.s_iri == R + "Jeanne_d'Arc").collect()
    assert [(r.o_iri, r.s, r.p, r.o, r.lang) for r in jeanne] == [
        (R + "Domrémy-la-Pucelle", "Jeanne d'Arc", "lieu de naissance", "Domrémy-la-Pucelle", "fr")
    ]
    quoi = facts.where(facts.s_iri == R + "Quoi_%3F").collect()
    assert [(r.o_iri, r.s, r.p, r.o) for r in quoi] == [
        (R + "Chanson_(musique)", 'Quoi ? été 😀 😀 "cité"', "genre musical", "Chanson (musique)")
    ]
    # https and en.dbpedia.org normalised; the English chapter's host is dbpedia.org.
    assert facts.where(facts.s_iri == R + "Louvre").count() == 1
    en = facts.where((facts.lang == "en") & (facts.s_iri == "http://dbpedia.org/resource/Paris")).collect()
    assert [(r.o_iri, r.p) for r in en] == [("http://dbpedia.org/resource/France", "country")]
    # Two IRIs with the same surface name stay two entities (reliability #18).
    paris = facts.where((facts.s == "Paris") & (facts.lang == "fr")).select("s_iri").distinct().collect()
    assert {r.s_iri for r in paris} == {R + "Paris", R + "Paris_(prénom)"}
    # A dbo: property in English gets the ontology's English label.
    nocti = facts.where(facts.s_iri == "http://dbpedia.org/resource/NOCTI").collect()
    assert [(r.p, r.o) for r in nocti] == [("industry", "Test (assessment)")]
    links = spark.read.parquet(str(out / "links"))
    both = links.where(links.s_iri.isin(R + "Paris", "http://dbpedia.org/resource/Paris")).collect()
    assert {(r.s_iri, r.s_lang, r.o_iri, r.o_lang) for r in both} >= {
        (R + "Paris", "fr", "http://dbpedia.org/resource/Paris", "en"),
        ("http://dbpedia.org/resource/Paris", "en", R + "Paris", "fr"),
    }


def test_labels_name_entities_from_the_mirror(spark, parsed):
    out, stats = parsed
    assert stats["labels"] > 19_000
    links = spark.read.parquet(str(out / "links"))
    row = links.where(links.s_lang == "en").where(links.o_lang == "fr").limit(1).collect()[0]
    assert row.s and row.o and "_" not in row.s


def test_long_literal_does_not_crash_the_regex(spark, workspace):
    """A 200 KB literal and a 100,000-character IRI through the line regex and the diagnosis (limit raised above them)."""
    root, _, settings = workspace
    folder = root / "raw" / "long" / "fr"
    folder.mkdir(parents=True)
    big = "y" * 200_000
    lines = [
        f'<{R}A> <{P}p> "{big}"@fr .',
        f'<{R}A> <{P}p> "{big}\\"@fr .',  # unterminated after 200 KB
        f'<{R}A> <{P}p> "{"a" * 70_000}\\u00e9{"b" * 70_000}"@fr .',
        f"<{R}{'z' * 100_000}> <{P}p> <{R}B> .",
    ]
    (folder / "long_fr.nt").write_text("\n".join(lines) + "\n")
    raised = settings.model_copy(update={"parse": settings.parse.model_copy(update={"max_line_bytes": 1_000_000})})
    stats = parse.run(spark, raised, "long")
    assert (stats["literals_skipped"], stats["facts"], stats["rejects"]) == (2, 1, 1)
    facts = spark.read.parquet(str(root / "parsed" / "long" / "facts")).collect()
    assert [len(r.s_iri) for r in facts] == [len(R) + 100_000]
    rejects = spark.read.parquet(str(root / "parsed" / "long" / "rejects")).collect()
    assert [(r.line_no, r.reason) for r in rejects] == [(2, "unterminated_literal")]


def test_line_numbers_across_splits_and_line_ends(spark, workspace):
    """A file cut into 64 KiB splits, with \\n, \\r\\n and lone \\r line ends (a \\r\\n across a split start and
    across the driver's 1 MiB count marks): every reject keeps its exact line number and bytes, and the count is exact."""
    root, _, settings = workspace
    folder = root / "raw" / "splits" / "fr"
    folder.mkdir(parents=True)
    split = 64 << 10
    targets = [3 * split, 1 << 20, 2 << 20]  # a \r\n pair straddles each of these offsets
    data, lines, i = bytearray(), [], 0
    while len(data) < (2 << 20) + 5 * split:
        if targets and len(data) + 200 > targets[0] - 1:
            line = b"#" + b"x" * (targets.pop(0) - 1 - len(data) - 1)  # fills up to the \r
            end = b"\r\n"
        else:
            line = f"<{R}A> <{P}p> <{R}B>".encode() if i % 997 == 996 else good(i)
            end = (b"\n", b"\r\n", b"\r")[i % 3]
            i += 1
        lines.append(line)
        data += line + end
    (folder / "splits_fr.nt").write_bytes(bytes(data))
    small = settings.model_copy(update={"parse": settings.parse.model_copy(update={"split_bytes": split})})
    stats = parse.run(spark, small, "splits")
    rejects = spark.read.parquet(str(root / "parsed" / "splits" / "rejects")).collect()
    want = [n for n, line in enumerate(lines, 1) if not line.endswith(b".") and not line.startswith(b"#")]
    assert len(want) > 10 and sorted(r.line_no for r in rejects) == want
    assert all(bytes(r.line) == lines[r.line_no - 1] and r.reason == "missing_dot" for r in rejects)
    assert stats["lines_read"] == len(lines) and sum(stats[key] for key in parse.ACCOUNTING_KEYS) == len(lines)
    assert stats["comments"] == 3 and stats["facts"] == len(lines) - 3 - len(want)


def test_compiled_path_equals_decoding_path_on_real_lines(spark, workspace):
    """Lines that need no decoding classify the same on both paths (classify_lines takes the compiled one)."""
    _, raw, settings = workspace
    sources = [raw / "fr" / "interlanguage_links_fr.tql.bz2", raw / "en" / "labels_lang=en.ttl.bz2",
               raw / "fr" / "infobox-properties_lang=fr.ttl.bz2", *sorted((raw / "fr").glob("*.tql")), raw / "fr" / "malformed_fr.nt"]
    rows = []
    for path in sources:
        data = bz2.decompress(path.read_bytes()) if path.suffix == ".bz2" else path.read_bytes()
        rows += [(path.name, 0, i, line.decode("utf-8", "replace"), ".tql" in path.name) for i, line in enumerate(data.split(b"\n")[:3000])]
    lines = spark.createDataFrame(rows, "file_path string, block_start long, pos long, value string, quads boolean")
    plain = lines.where(~parse_classify.needs_decoding(F.col("value")))
    columns = ["cls", *parse_classify.KIND_COLUMNS]
    compiled = parse_classify._classify(plain, settings.parse, decode=False).select(columns).collect()
    decoding = parse_classify._classify(plain, settings.parse, decode=True).select(columns).collect()
    assert sorted(compiled) == sorted(decoding)
    classes = {row.cls for row in compiled}
    assert {"fact", "link", "label", "reject"} <= classes, classes
    assert len(compiled) > 0.9 * len(rows)


def test_truncated_bz2_fails_naming_the_file(spark, workspace, sample_mirror):
    root, _, settings = workspace
    raw = root / "raw" / "truncated" / "fr"
    raw.mkdir(parents=True)
    whole = (sample_mirror / "databus/dbpedia/generic/infobox-properties" / RELEASE / "infobox-properties_lang=fr.ttl.bz2").read_bytes()
    (raw / "infobox-properties_lang=fr.ttl.bz2").write_bytes(whole[: len(whole) // 2])
    shutil.copy(FIXTURES / "edge_cases_fr.nt", raw)
    with pytest.raises(parse_inputs.CorruptInputError, match=re.escape("fr/infobox-properties_lang=fr.ttl.bz2")):
        parse.run(spark, settings, "truncated")
    assert not (root / "parsed" / "truncated").exists()
    assert not list((root / "parsed").glob(".truncated.*"))


def test_decompression_bomb_is_refused_naming_the_file(spark, workspace):
    """reliability #33 in parse: a bz2 already on disk (checksummed or not) never expands past acquire.max_expansion."""
    root, _, settings = workspace
    raw = root / "raw" / "bomb" / "fr"
    raw.mkdir(parents=True)
    (raw / "labels_lang=fr.ttl.bz2").write_bytes(bz2.compress(b"\0" * (64 << 20)))
    with pytest.raises(parse_inputs.CorruptInputError, match=r"fr/labels_lang=fr\.ttl\.bz2: expands beyond 200x .* decompression bomb"):
        parse.run(spark, settings, "bomb")
    assert not (root / "parsed" / "bomb").exists() and not list((root / "parsed").glob(".bomb.*"))


def test_rerun_replaces_output_with_the_same_counts(spark, parsed, workspace):
    out, first = parsed
    _, _, settings = workspace
    before = {name: spark.read.parquet(str(out / name)).count() for name in ("facts", "links", "rejects")}
    marker = out / "facts" / "stale-file-from-before"
    marker.write_text("x")
    second = parse.run(spark, settings, RELEASE)
    after = {name: spark.read.parquet(str(out / name)).count() for name in ("facts", "links", "rejects")}
    assert after == before
    assert not marker.exists(), "the output was replaced, not merged"
    facts = spark.read.parquet(str(out / "facts"))
    assert facts.select("s_iri", "p_iri", "o_iri").distinct().count() == after["facts"], "no duplicate facts"
    assert spark.read.parquet(str(out / "links")).select("s_iri", "o_iri").distinct().count() == after["links"], "no duplicate links"
    volatile = {"seconds", "decompress_seconds", "scan_seconds", "lines_per_second"}
    assert {k: v for k, v in second.items() if k not in volatile} == {k: v for k, v in first.items() if k not in volatile}
    assert is_complete(out)
