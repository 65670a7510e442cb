"""acquire: download a DBpedia release's dumps, verified and resumable, into ``var/raw/<release>/``.

Each file streams to ``<name>.part``; a dropped connection resumes with an HTTP ``Range``
request; the finished file is checked against the published sha256 (or, with none published,
read as a complete bz2 stream) and only then renamed to its final name. A final path therefore
never holds a partial or unverified file. A re-run verifies what is there and downloads nothing.
``manifest.json`` records url, path, sha256, bytes, release, source and fetched_at per file.

Run as ``python -m jobs.acquire [--release R] [--languages fr en] [--source mirror]``.
"""

from __future__ import annotations

import argparse
import bz2
import fcntl
import hashlib
import http.client
import json
import logging
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Iterator

from jobs.databus import NotFound, RemoteFile, SourceError, TRANSIENT_STATUS, backoff, is_url, list_files, resolve_release, retry_after
from jobs.stage import last_acquired_release  # noqa: F401  (re-exported: callers of acquire ask it too)
from prixlm_model.atomic import write_file
from prixlm_model.config import AcquireSettings, Settings, check_safe_name, load_settings

log = logging.getLogger(__name__)

CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class DownloadError(RuntimeError):
    """A file could not be fetched; the message names the URL and the last error."""


class ChecksumMismatch(DownloadError):
    """The bytes do not hash to the published sha256; the file was moved to quarantine."""


class MetadataChanged(SourceError):
    """The server's size disagrees with the metadata: the release was re-published mid-download."""


class _Restart(Exception):
    """The server's answer cannot continue the ``.part`` (ignored or wrong range): start over."""


class _Transient(Exception):
    """A failure worth retrying: 5xx, time-out, refused or dropped connection, short body."""


@dataclass
class Progress:
    """A progress bar on a terminal, a log line every 25 % otherwise."""

    label: str
    total: int | None
    done: int = 0
    _last_logged: int = -1

    def advance(self, count: int) -> None:
        self.done += count
        if not self.total:
            return
        percent = min(100, self.done * 100 // self.total)
        if sys.stderr.isatty():
            bar = "#" * (percent // 4)
            print(f"\r{self.label[:40]:40} [{bar:25}] {percent:3d}% {self.done / 1e6:8.1f} MB", end="", file=sys.stderr, flush=True)
            if percent == 100:
                print(file=sys.stderr)
        elif percent // 25 > self._last_logged:
            self._last_logged = percent // 25
            log.info("%s: %d%% of %.1f MB", self.label, percent, self.total / 1e6)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_bz2_stream(path: Path, name: str, max_expansion: int) -> None:
    """Read a .bz2 file to its end (reliability #8, 33): a truncated stream or a bomb raises."""
    limit = max(path.stat().st_size * max_expansion, 1 << 20)
    expanded = 0
    try:
        with bz2.open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                expanded += len(block)
                if expanded > limit:
                    raise DownloadError(f"{name}: expands beyond {max_expansion}x its size; refused as a decompression bomb")
    except (OSError, EOFError) as error:
        raise DownloadError(f"{name}: not a complete bz2 stream ({error})") from None


@contextmanager
def file_lock(target: Path, timeout_s: float) -> Iterator[None]:
    """An exclusive lock per target file, so two runs never write the same ``.part`` (reliability #10)."""
    lock_path = target.with_name(f".{target.name}.lock")
    deadline = time.monotonic() + timeout_s
    with lock_path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise DownloadError(f"{target}: still locked by another run after {timeout_s:.0f}s") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def open_stream(remote: RemoteFile, offset: int, settings: AcquireSettings) -> tuple[IO[bytes], int, int]:
    """Open ``remote`` at ``offset``; return (stream, first byte it will send, total size).

    Raises ``_Restart`` when the answer cannot continue the partial file (reliability #1, 2), ``NotFound``
    on 404, ``_Transient`` on errors worth retrying, ``DownloadError`` otherwise.
    """
    if not is_url(remote.url):
        path = Path(remote.url)
        if not path.is_file():
            raise NotFound(f"{remote.url}: no such file")
        handle = path.open("rb")
        handle.seek(offset)
        return handle, offset, path.stat().st_size
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(remote.url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=settings.timeout_s)
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise NotFound(f"{remote.url}: HTTP 404 Not Found") from None
        if error.code == 416 and offset:
            raise _Restart(f"{remote.url}: range {offset}- not satisfiable") from None
        if error.code in TRANSIENT_STATUS:
            raise _Transient(f"{remote.url}: HTTP {error.code} {error.reason}", error.headers.get("Retry-After")) from None
        raise DownloadError(f"{remote.url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
        raise _Transient(f"{remote.url}: {getattr(error, 'reason', error)}") from None
    length = response.headers.get("Content-Length")
    if response.status == 206:
        match = CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            response.close()
            raise _Restart(f"{remote.url}: asked for bytes {offset}-, got Content-Range {response.headers.get('Content-Range')!r}")
        total = int(match.group(3)) if match.group(3) != "*" else offset + int(length or 0)
        return response, offset, total
    if offset:
        log.warning("%s: server ignored Range (HTTP %d); starting over from byte 0", remote.url, response.status)
    return response, 0, int(length) if length is not None else -1


def fetch_to_part(remote: RemoteFile, part: Path, settings: AcquireSettings) -> int:
    """Stream ``remote`` into ``part`` until complete, resuming across failures; return its size."""
    expected_total = remote.size
    last_error = "none"
    for attempt in range(settings.retries):
        offset = part.stat().st_size if part.exists() else 0
        try:
            stream, start, total = open_stream(remote, offset, settings)
        except _Restart as restart:
            log.warning("%s; discarding %s and starting over", restart, part.name)
            part.unlink(missing_ok=True)
            last_error = str(restart)
            continue
        except _Transient as transient:
            last_error = transient.args[0]
            wait = retry_after(transient.args[1] if len(transient.args) > 1 else None, backoff(settings, attempt))
            log.warning("%s; retry %d/%d in %.1fs", last_error, attempt + 1, settings.retries - 1, wait)
            time.sleep(wait)
            continue
        with stream:
            if total >= 0 and expected_total is not None and total != expected_total:
                part.unlink(missing_ok=True)
                raise MetadataChanged(f"{remote.url}: server says {total} bytes, metadata says {expected_total}; the release changed, re-read its metadata")
            if total > settings.max_file_bytes or (remote.size or 0) > settings.max_file_bytes:
                raise DownloadError(f"{remote.url}: {max(total, remote.size or 0)} bytes exceeds acquire.max_file_bytes={settings.max_file_bytes}")
            if total >= 0:
                expected_total = total
            progress = Progress(f"{remote.lang}/{remote.name}", total if total >= 0 else None, start)
            mode = "ab" if start else "wb"
            written = start
            try:
                with part.open(mode) as sink:
                    for block in iter(lambda: stream.read(settings.chunk_bytes), b""):
                        sink.write(block)
                        written += len(block)
                        progress.advance(len(block))
                        if written > settings.max_file_bytes or (expected_total is not None and written > expected_total):
                            part.unlink(missing_ok=True)
                            raise DownloadError(f"{remote.url}: more bytes than announced ({written}); refused")
            except (OSError, http.client.HTTPException) as error:
                last_error = f"{remote.url}: connection lost after {written} bytes ({error})"
                log.warning("%s; will resume", last_error)
                time.sleep(backoff(settings, attempt))
                continue
        if expected_total is None or written == expected_total:
            return written
        last_error = f"{remote.url}: body ended at {written} of {expected_total} bytes"
        log.warning("%s; resuming with a Range request", last_error)
        time.sleep(backoff(settings, attempt))
    raise DownloadError(f"{remote.url}: gave up after {settings.retries} attempts; last error: {last_error}")


def verify(remote: RemoteFile, path: Path, settings: AcquireSettings) -> str:
    """Return the sha256 of a verified file: the published hash when there is one, and for every bz2 the
    stream read to its end within the expansion bound (a checksum proves origin, not a sane size)."""
    actual = sha256_of(path)
    if remote.sha256 and actual != remote.sha256.lower():
        raise ChecksumMismatch(f"{remote.url}: sha256 mismatch: expected {remote.sha256}, got {actual}")
    if remote.name.endswith(".bz2"):
        check_bz2_stream(path, remote.name, settings.max_expansion)
    return actual


def quarantine(path: Path, settings: Settings, remote: RemoteFile, reason: Exception) -> Path:
    """Move a bad download out of the way, keeping it for inspection, and say where it went."""
    folder = settings.paths.stage_dir("quarantine", remote.release) / remote.lang
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{remote.name}.{int(time.time())}"
    shutil.move(path, target)
    (folder / f"{target.name}.reason.txt").write_text(f"{reason}\n")
    return target


def acquire_file(remote: RemoteFile, settings: Settings, previous: dict | None) -> dict:
    """Fetch one file to ``var/raw/<release>/<lang>/<name>``; return its manifest entry."""
    options = settings.acquire
    folder = settings.paths.stage_dir("raw", remote.release) / check_safe_name(remote.lang, "language")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / check_safe_name(remote.name, "file name")
    part = final.with_name(final.name + ".part")
    entry = {"url": remote.url, "path": str(final.relative_to(settings.paths.data_root)), "release": remote.release,
             "source": options.source, "lang": remote.lang, "artifact": remote.artifact}
    history = list((previous or {}).get("replaced", []))
    with file_lock(final, options.lock_timeout_s):
        if final.exists():
            present = sha256_of(final)
            if remote.sha256 is None or present == remote.sha256.lower():
                log.info("%s: present and verified, nothing to download", final.name)
                fetched_at = (previous or {}).get("fetched_at") or datetime.now(timezone.utc).isoformat()
                return {**entry, "sha256": present, "bytes": final.stat().st_size, "fetched_at": fetched_at,
                        "downloaded": False, "replaced": history}
            log.warning("%s: re-published (sha256 %s → %s); downloading the new file", final.name, present, remote.sha256)
            history.append({"sha256": present, "fetched_at": (previous or {}).get("fetched_at")})
        started = time.monotonic()
        size = fetch_to_part(remote, part, options)
        try:
            digest = verify(remote, part, options)
        except DownloadError as error:
            where = quarantine(part, settings, remote, error)
            raise type(error)(f"{error}; quarantined at {where}") from None
        os.replace(part, final)
        log.info("%s: %.1f MB in %.1fs, sha256 %s", final.name, size / 1e6, time.monotonic() - started, digest[:12])
    return {**entry, "sha256": digest, "bytes": size, "fetched_at": datetime.now(timezone.utc).isoformat(),
            "downloaded": True, "replaced": history}


def run(settings: Settings, dag_run_id: str | None = None, dag_id: str | None = None) -> str:
    """The DAG task: acquire, log the stage and describe the DAG run in MLflow (tags, resolved settings); return the release."""
    from jobs.stage import read_stats
    from prixlm_model.tracking import (
        describe_pipeline_run,
        log_stage,
        require_reachable,
    )

    if dag_run_id:  # before any download (reliability #27)
        require_reachable(settings.mlflow.resolved_uri())
    release = acquire(settings)["release"]
    if dag_run_id:
        tags = {"airflow.dag_id": dag_id or "", "airflow.run_id": dag_run_id, "prixlm.release": release}
        describe_pipeline_run(settings, dag_run_id, tags)
        log_stage(settings, dag_run_id, "acquire", release, read_stats(settings.paths.stage_dir("raw", release)))
    return release


def acquire(settings: Settings) -> dict:
    """Fetch every configured file of the configured release; return the manifest.

    Files already finished stay when another fails (reliability #6); the error names the failed URLs.
    """
    options = settings.acquire
    release = resolve_release(options)
    remotes = list_files(options, release)
    root = settings.paths.stage_dir("raw", release)
    root.mkdir(parents=True, exist_ok=True)
    manifest_path = root / "manifest.json"
    with file_lock(manifest_path, options.lock_timeout_s):
        old = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": []}
    previous = {entry["path"]: entry for entry in old.get("files", [])}
    entries, failures = [], []
    started = time.monotonic()
    for remote in remotes:
        key = str((root / remote.lang / remote.name).relative_to(settings.paths.data_root))
        try:
            try:
                entries.append(acquire_file(remote, settings, previous.get(key)))
            except MetadataChanged as changed:
                log.warning("%s; reading the metadata again", changed)
                fresh = {(r.lang, r.artifact): r for r in list_files(options, release)}
                entries.append(acquire_file(fresh[(remote.lang, remote.artifact)], settings, previous.get(key)))
        except (DownloadError, SourceError) as error:
            log.error("%s", error)
            failures.append(str(error))
    with file_lock(manifest_path, options.lock_timeout_s):
        current = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"files": []}
        merged = {entry["path"]: entry for entry in current.get("files", [])}
        merged.update({entry["path"]: entry for entry in entries})
        manifest = {"release": release, "source": options.source, "complete": not failures and len(merged) >= len(remotes),
                    "files": sorted(merged.values(), key=lambda entry: entry["path"])}
        write_file(manifest_path, json.dumps(manifest, indent=1, sort_keys=True, ensure_ascii=False))
    stats = {"release": release, "files": len(remotes), "downloaded": sum(e["downloaded"] for e in entries),
             "reused": sum(not e["downloaded"] for e in entries), "failed": len(failures),
             "bytes": sum(e["bytes"] for e in entries), "seconds": round(time.monotonic() - started, 3)}
    write_file(root / "stats.json", json.dumps(stats, indent=1, sort_keys=True, ensure_ascii=False))
    if failures:
        raise DownloadError(f"{len(failures)} of {len(remotes)} files failed:\n" + "\n".join(failures))
    log.info("acquired release %s: %d files (%d downloaded, %d already verified), %.1f MB into %s",
             release, stats["files"], stats["downloaded"], stats["reused"], stats["bytes"] / 1e6, root)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--release", help="a version, or 'latest' (default: acquire.release)")
    parser.add_argument("--languages", nargs="+", help="chapter codes (default: acquire.languages)")
    parser.add_argument("--source", choices=["databus", "classic", "mirror"])
    parser.add_argument("--mirror-url", help="folder or http URL of a mirror")
    parser.add_argument("--mirror-layout", choices=["databus", "classic"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {key: value for key, value in {"release": args.release, "languages": args.languages,
                                                "source": args.source, "mirror_url": args.mirror_url,
                                                "mirror_layout": args.mirror_layout}.items() if value}
    manifest = acquire(load_settings({"acquire": overrides}))
    print(json.dumps({"release": manifest["release"], "files": len(manifest["files"])}))


if __name__ == "__main__":
    main()
