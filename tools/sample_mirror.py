"""Build a DBpedia mirror from real data (DBP15K FR-EN, DBpedia 2016-04) in both DBpedia layouts.

Why: the pipeline must run end to end with no internet. DBP15K holds real DBpedia infobox facts
and real inter-language links for two chapters; this job writes them the way DBpedia publishes
them, so that acquire and parse meet the same files they meet in production:

- Databus: ``databus/dbpedia/generic/<artifact>/<version>/<artifact>_lang=<xx>.ttl.bz2`` with
  JSON-LD metadata (``index.jsonld``) per artifact (``databus:hasVersion``) and per version
  (``@graph`` of ``Part`` nodes with ``file`` and ``sha256sum``);
- classic: ``classic/<release>/core-i18n/<xx>/<dataset>_<xx>.ttl.bz2`` (inter-language links as
  ``.tql.bz2`` N-Quads with a provenance graph, as in the real dumps) and ``sha256sums.txt``.

Two versions are published: the older one holds a deterministic share of the facts, the newer
one all of them, so that "a newer version appeared" can be exercised.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import json
import logging
import tempfile
from pathlib import Path
from urllib.parse import unquote

from prixlm_model.atomic import publish_folder
from prixlm_model.config import SampleSettings, load_settings
from prixlm_model.dbp15k import Chapter, read_dbp15k

log = logging.getLogger(__name__)

RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
OWL_SAME_AS = "http://www.w3.org/2002/07/owl#sameAs"
ARTIFACTS = ("infobox-properties", "labels", "interlanguage-links")
GROUP_PATH = Path("databus/dbpedia/generic")


def truncated(chapter: Chapter, max_facts: int) -> Chapter:
    """The chapter with its first ``max_facts`` facts (entities and relations unchanged)."""
    return Chapter(chapter.lang, chapter.entities, chapter.relations, chapter.triples[:max_facts])


def keep_in_older(key: str, share: float) -> bool:
    """Whether a statement is already in the older version: a stable hash of its text under ``share``."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def title_of(iri: str) -> str:
    """The page title DBpedia puts in ``rdfs:label``: the local name, percent-decoded, ``_`` → space."""
    return unquote(iri.rsplit("/", 1)[-1]).replace("_", " ")


def literal(text: str, lang: str) -> str:
    """An N-Triples language-tagged literal with the escapes DBpedia writes (raw UTF-8 otherwise)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"@{lang}'


def chapter_lines(chapter: Chapter, other: Chapter, links: list[tuple[int, int]], first_is_self: bool) -> dict[str, list[str]]:
    """The statements of each artifact for one chapter, as N-Triples lines without the final newline."""
    facts = [f"<{chapter.entities[h]}> <{chapter.relations[r]}> <{chapter.entities[t]}> ." for h, r, t in chapter.triples]
    labels = [f"<{iri}> <{RDFS_LABEL}> {literal(title_of(iri), chapter.lang)} ." for iri in chapter.entities.values()]
    same_as = []
    for a, b in links:
        mine, theirs = (a, b) if first_is_self else (b, a)
        same_as.append(f"<{chapter.entities[mine]}> <{OWL_SAME_AS}> <{other.entities[theirs]}> .")
    return {"infobox-properties": facts, "labels": labels, "interlanguage-links": same_as}


def as_quads(lines: list[str], lang: str) -> list[str]:
    """N-Quads as in the classic ``.tql`` dumps: the Wikipedia page of the subject as the graph."""
    quads = []
    for line in lines:
        subject = line.split(" ", 1)[0][1:-1]
        page = f"http://{lang}.wikipedia.org/wiki/{subject.rsplit('/', 1)[-1]}"
        quads.append(f"{line[:-2]} <{page}> .")
    return quads


def write_dump(path: Path, lines: list[str], stamp: str) -> str:
    """Write a bz2 dump framed by DBpedia's ``# started``/``# completed`` lines; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "\n".join([f"# started {stamp}", *lines, f"# completed {stamp}"]) + "\n"
    data = bz2.compress(body.encode("utf-8"), 9)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def version_document(artifact: str, version: str, parts: list[dict]) -> dict:
    """The Databus JSON-LD of one artifact version: a Version node and one Part per file."""
    graph = [{"@id": f"#{artifact}-{version}", "@type": ["Version", "Dataset"], "hasVersion": version, "title": artifact}]
    graph += [{"@id": f"#{part['file']}", "@type": "Part", **part} for part in parts]
    return {"@context": "https://downloads.dbpedia.org/databus/context.jsonld", "@graph": graph}


def build(settings: SampleSettings) -> Path:
    """Write the whole mirror under ``settings.mirror_dir`` (replaced atomically); return it."""
    first, second, links = read_dbp15k(settings.dbp15k_dir)
    if settings.max_facts:
        first, second, links = truncated(first, settings.max_facts), truncated(second, settings.max_facts), links[: settings.max_facts]
    per_lang = {
        first.lang: chapter_lines(first, second, links, first_is_self=True),
        second.lang: chapter_lines(second, first, links, first_is_self=False),
    }
    target = settings.mirror_dir
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".mirror-", dir=target.parent))
    parts: dict[tuple[str, str], list[dict]] = {}
    for position, (version, release) in enumerate(zip(settings.versions, settings.classic_releases)):
        newest = position == len(settings.versions) - 1
        stamp = f"{version.replace('.', '-')}T00:00:00Z"
        sums = []
        for lang, artifacts in per_lang.items():
            for artifact, lines in artifacts.items():
                chosen = lines if newest else [line for line in lines if keep_in_older(line, settings.older_share)]
                name = f"{artifact}_lang={lang}.ttl.bz2"
                databus_file = staging / GROUP_PATH / artifact / version / name
                digest = write_dump(databus_file, chosen, stamp)
                part = {"file": name, "sha256sum": digest, "byteSize": databus_file.stat().st_size,
                        "compression": "bzip2", "formatExtension": "ttl", "dcv:lang": lang}
                parts.setdefault((artifact, version), []).append(part)

                dataset = artifact.replace("-", "_")
                quads = artifact == "interlanguage-links"
                classic_name = f"{dataset}_{lang}.{'tql' if quads else 'ttl'}.bz2"
                classic_path = Path("core-i18n") / lang / classic_name
                digest = write_dump(staging / "classic" / release / classic_path, as_quads(chosen, lang) if quads else chosen, stamp)
                sums.append(f"{digest}  {classic_path.as_posix()}")
        (staging / "classic" / release / "sha256sums.txt").write_text("\n".join(sums) + "\n")
    for (artifact, version), files in parts.items():
        document = version_document(artifact, version, files)
        (staging / GROUP_PATH / artifact / version / "index.jsonld").write_text(json.dumps(document, indent=1))
    for artifact in ARTIFACTS:
        versions = [{"@id": f"{version}/"} for version in reversed(settings.versions)]
        document = {"@id": artifact, "@type": "Artifact", "databus:hasVersion": versions}
        (staging / GROUP_PATH / artifact / "index.jsonld").write_text(json.dumps(document, indent=1))
    publish_folder(staging, target)
    log.info("sample mirror written to %s (versions %s)", target, ", ".join(settings.versions))
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="mirror folder (default: sample.mirror_dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings().sample
    if args.out:
        settings = settings.model_copy(update={"mirror_dir": args.out.resolve()})
    print(build(settings))


if __name__ == "__main__":
    main()
