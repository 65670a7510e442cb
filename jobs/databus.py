"""Where DBpedia files are and which release is newest: Databus metadata, the classic tree, mirrors.

One function per level, as the Databus client does (artifact → versions → parts), over both
http(s) URLs and local folders laid out the same way. ``acquire`` and the refresh DAG both use
``resolve_release``, so "latest" means the same thing everywhere.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from prixlm_model.config import AcquireSettings, check_safe_name

log = logging.getLogger(__name__)

DATABUS_VERSION = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})(?:-(.+))?$")  # 2022.12.01, 2022.12.01-fix
CLASSIC_RELEASE = re.compile(r"^(\d{4})-(\d{2})$")  # 2016-10
TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


class SourceError(RuntimeError):
    """A source could not give what was asked; the message names the URL and the reason."""


class NotFound(SourceError):
    """The source answered 404 (a release, language or artifact it does not have)."""


@dataclass(frozen=True)
class RemoteFile:
    """One published file: where it is, where it goes, and what it must hash to."""

    url: str
    lang: str
    artifact: str
    name: str  # the file name under var/raw/<release>/<lang>/
    release: str
    sha256: str | None  # None when the source publishes no checksum
    size: int | None


def version_key(version: str) -> tuple | None:
    """A sort key ordering versions by date (reliability #5); None when it is not a version.

    ``2022.12.01-fix`` sorts after ``2022.12.01``; a classic ``2016-10`` sorts as the first of its
    month, so mixed lists order by date rather than by string.
    """
    if match := DATABUS_VERSION.match(version):
        year, month, day, suffix = match.groups()
        try:
            return (date(int(year), int(month), int(day)), suffix or "")
        except ValueError:
            return None
    if match := CLASSIC_RELEASE.match(version):
        try:
            return (date(int(match.group(1)), int(match.group(2)), 1), "")
        except ValueError:
            return None
    return None


def newest(versions: list[str]) -> str:
    """The newest parseable version; unparseable ones are logged and ignored."""
    valid = []
    for version in versions:
        if version_key(version) is None:
            log.warning("ignoring unparseable version %r", version)
        else:
            valid.append(version)
    if not valid:
        raise SourceError(f"no parseable version among {versions}")
    return max(valid, key=version_key)


def is_url(location: str) -> bool:
    return urlsplit(location).scheme in ("http", "https")


def join(base: str, *parts: str) -> str:
    """Join path parts onto a URL or a folder path."""
    return "/".join([base.rstrip("/"), *(part.strip("/") for part in parts)])


def read_document(location: str, settings: AcquireSettings, accept: str = "application/ld+json") -> bytes:
    """Read a small document (metadata, checksum list, listing) with retries on transient errors."""
    if not is_url(location):
        path = Path(location)
        target = path / "index.jsonld" if path.is_dir() and accept != "text/html" else path
        if path.is_dir() and accept == "text/html":
            return "\n".join(f'<a href="{p.name}/">' for p in sorted(path.iterdir()) if p.is_dir()).encode()
        if not target.is_file():
            raise NotFound(f"{location}: no such file or folder")
        return target.read_bytes()
    last_error: Exception | None = None
    for attempt in range(settings.retries):
        request = urllib.request.Request(location, headers={"Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise NotFound(f"{location}: HTTP 404 Not Found") from None
            if error.code not in TRANSIENT_STATUS:
                raise SourceError(f"{location}: HTTP {error.code} {error.reason}") from None
            last_error = error
            wait = retry_after(error.headers.get("Retry-After"), backoff(settings, attempt))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            last_error = error
            wait = backoff(settings, attempt)
        if attempt + 1 < settings.retries:
            log.warning("%s: %s; retry %d/%d in %.1fs", location, last_error, attempt + 1, settings.retries - 1, wait)
            time.sleep(wait)
    raise SourceError(f"{location}: gave up after {settings.retries} attempts; last error: {last_error}")


def backoff(settings: AcquireSettings, attempt: int) -> float:
    """Capped exponential backoff: backoff_s, 2×, 4×, … up to backoff_max_s."""
    return min(settings.backoff_s * (2**attempt), settings.backoff_max_s)


def retry_after(header: str | None, default: float) -> float:
    """Honour a numeric ``Retry-After`` (seconds), never waiting less than the backoff."""
    try:
        return max(default, float(header)) if header else default
    except ValueError:
        return default


def exists(location: str, settings: AcquireSettings) -> bool:
    """Whether a file is there (a HEAD request for URLs); used where no listing says so."""
    if not is_url(location):
        return Path(location).is_file()
    request = urllib.request.Request(location, method="HEAD")
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s):
            return True
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return False
        raise SourceError(f"{location}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise SourceError(f"{location}: {getattr(error, 'reason', error)}") from None


def artifact_versions(base: str, artifact: str, settings: AcquireSettings) -> list[str]:
    """The versions an artifact lists in its Databus JSON-LD (``databus:hasVersion``)."""
    location = join(base, artifact)
    try:
        document = json.loads(read_document(location, settings))
    except json.JSONDecodeError as error:
        raise SourceError(f"{location}: artifact metadata is not JSON ({error})") from None
    entries = document.get("databus:hasVersion")
    if entries is None:
        raise SourceError(f"{location}: no 'databus:hasVersion' in the artifact metadata")
    entries = entries if isinstance(entries, list) else [entries]
    ids = [entry["@id"] if isinstance(entry, dict) else str(entry) for entry in entries]
    return [identifier.rstrip("/").rsplit("/", 1)[-1] for identifier in ids]


def classic_releases(base: str, settings: AcquireSettings) -> list[str]:
    """The releases a classic download tree lists at its root (``2016-10/`` links)."""
    listing = read_document(base + "/", settings, accept="text/html").decode("utf-8", "replace")
    return sorted(set(re.findall(r'href="(\d{4}-\d{2})/"', listing)))


def resolve_release(settings: AcquireSettings) -> str:
    """The release to fetch: as configured, or for "latest" the newest that every artifact has."""
    if settings.release != "latest":
        return settings.release
    layout, base = settings.base_url()
    if layout == "classic":
        return newest(classic_releases(base, settings))
    common: set[str] | None = None
    for artifact in settings.artifacts:
        versions = set(artifact_versions(base, artifact, settings))
        common = versions if common is None else common & versions
    return newest(sorted(common or []))


def databus_files(base: str, release: str, settings: AcquireSettings) -> list[RemoteFile]:
    """The parts of each artifact's version for the wanted languages, with their sha256."""
    files = []
    for artifact in settings.artifacts:
        location = join(base, artifact, release) + "/"
        try:
            graph = json.loads(read_document(location, settings)).get("@graph", [])
        except json.JSONDecodeError as error:
            raise SourceError(f"{location}: version metadata is not JSON ({error})") from None
        parts = [node for node in graph if node.get("@type") == "Part" and isinstance(node.get("file"), str)]
        for lang in settings.languages:
            prefix = f"{artifact}_lang={lang}."
            matches = [p for p in parts if p["file"].rstrip("/").rsplit("/", 1)[-1].startswith(prefix)]
            if not matches:
                raise NotFound(f"{location}: version {release} of {artifact} has no file for language {lang!r}")
            part = matches[0]
            url = part["file"] if urlsplit(part["file"]).scheme else resolve_relative(location, part["file"])
            name = check_safe_name(part["file"].rstrip("/").rsplit("/", 1)[-1], f"file name in {location}")
            size = part.get("byteSize")
            files.append(RemoteFile(url=url, lang=lang, artifact=artifact, name=name, release=release,
                                    sha256=part.get("sha256sum"), size=int(size) if size else None))
    return files


def resolve_relative(document: str, reference: str) -> str:
    """Resolve a relative ``file`` reference against its metadata document (URL or folder).

    A relative reference must be a plain file name of the version folder (reliability #30).
    """
    check_safe_name(reference, f"file name in {document}")
    return urljoin(document, reference) if is_url(document) else join(document, reference)


def classic_files(base: str, release: str, settings: AcquireSettings) -> list[RemoteFile]:
    """The classic tree's files for a release; sha256 from its ``sha256sums.txt`` when published."""
    release_root = join(base, release)
    try:
        sums_text = read_document(join(release_root, "sha256sums.txt"), settings, accept="text/plain").decode()
    except NotFound:
        sums_text = ""
        log.warning("%s publishes no sha256sums.txt; files will be checked as complete bz2 streams", release_root)
    sums = {}
    for line in sums_text.splitlines():
        if line.strip():
            digest, relative = line.split(maxsplit=1)
            sums[relative.strip().lstrip("*")] = digest
    files = []
    for artifact in settings.artifacts:
        dataset = artifact.replace("-", "_")
        for lang in settings.languages:
            candidates = [f"core-i18n/{lang}/{dataset}_{lang}.{ext}.bz2" for ext in ("ttl", "tql", "nt", "nq")]
            published = [c for c in candidates if c in sums]
            if published:
                relative = published[0]
            else:
                relative = next((c for c in candidates if exists(join(release_root, c), settings)), candidates[0])
            name = check_safe_name(relative.rsplit("/", 1)[-1], "classic file name")
            files.append(RemoteFile(url=join(release_root, relative), lang=lang, artifact=artifact, name=name,
                                    release=release, sha256=sums.get(relative), size=None))
    return files


def list_files(settings: AcquireSettings, release: str) -> list[RemoteFile]:
    """Every file that acquiring ``release`` for the configured languages and artifacts means."""
    check_safe_name(release, "release")
    layout, base = settings.base_url()
    if layout == "classic":
        return classic_files(base, release, settings)
    return databus_files(base, release, settings)
