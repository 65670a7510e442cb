"""acquire against a real HTTP server on loopback that misbehaves on purpose (reliability #1–10, 30, 33)."""

from __future__ import annotations

import bz2
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path

import pytest

from jobs.acquire import DownloadError, acquire, last_acquired_release
from jobs.databus import NotFound, SourceError, newest, resolve_release, version_key
from tools.mirror_server import MirrorHandler, MirrorServer
from prixlm_model.config import PROJECT_ROOT, Settings, load_settings

GROUP = "databus/dbpedia/generic"
LABELS_FR = "labels_lang=fr.ttl.bz2"


@dataclass
class Faults:
    """What a test server does wrong, and what it saw. Keys are file-name suffixes."""

    drop_after: dict[str, int] = field(default_factory=dict)  # first GET sends this many bytes, then closes
    ignore_range: bool = False  # answer 200 with the whole body to a Range request
    wrong_range: bool = False  # answer 206 from byte 0 to any Range request
    fail_first: dict[str, int] = field(default_factory=dict)  # answer 503 this many times first
    always_fail: bool = False
    corrupt: set[str] = field(default_factory=set)  # flip one byte of these files
    slow_s: float = 0.0  # sleep per 64 KiB written
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Range)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, suffix: str, method: str = "GET") -> int:
        return sum(1 for m, path, _ in self.seen if m == method and path.endswith(suffix))

    def ranges(self, suffix: str) -> list[str | None]:
        return [r for m, path, r in self.seen if m == "GET" and path.endswith(suffix)]


def faulty_handler(faults: Faults) -> type[MirrorHandler]:
    class FaultyHandler(MirrorHandler):
        def serve(self, head: bool) -> None:
            with faults.lock:
                faults.seen.append((self.command, self.path, self.headers.get("Range")))
            name = self.path.rsplit("/", 1)[-1]
            if faults.always_fail or faults.fail_first.get(name, 0) > 0:
                if not faults.always_fail:
                    faults.fail_first[name] -= 1
                self.send_response(HTTPStatus.SERVICE_UNAVAILABLE)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if faults.ignore_range and "Range" in self.headers:
                del self.headers["Range"]
            if faults.wrong_range and "Range" in self.headers:
                self.headers.replace_header("Range", "bytes=0-")
            super().serve(head)

        def send_body(self, path: Path, start: int, stop: int) -> None:
            data = path.read_bytes()[start:stop]
            if path.name in faults.corrupt:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
            limit = faults.drop_after.pop(path.name, None)
            if limit is not None:
                self.wfile.write(data[:limit])
                self.wfile.flush()
                self.close_connection = True
                return
            for offset in range(0, len(data), 1 << 16):
                self.wfile.write(data[offset : offset + (1 << 16)])
                if faults.slow_s:
                    time.sleep(faults.slow_s)

    return FaultyHandler


@pytest.fixture
def mirror_copy(tmp_path: Path, sample_mirror: Path) -> Path:
    """A private copy of the sample mirror that a test may re-publish or break."""
    target = tmp_path / "mirror"
    shutil.copytree(sample_mirror, target)
    return target


@pytest.fixture
def serve():
    """Start a (possibly faulty) server for a folder; every server is stopped at teardown."""
    servers = []

    def start(folder: Path, faults: Faults | None = None) -> MirrorServer:
        server = MirrorServer(folder, handler=faulty_handler(faults or Faults()))
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def http_settings(tmp_path: Path, url: str, layout: str = "databus", **acquire_options) -> Settings:
    options = {"source": "mirror", "mirror_url": url, "mirror_layout": layout, "backoff_s": 0.01, "retries": 4, **acquire_options}
    return load_settings({"paths": {"data_root": str(tmp_path / "var")}, "acquire": options})


def published(mirror: Path, artifact: str, version: str, name: str) -> dict:
    graph = json.loads((mirror / GROUP / artifact / version / "index.jsonld").read_text())["@graph"]
    return next(node for node in graph if node.get("file") == name)


def test_full_download_matches_published_sha256_and_rerun_downloads_nothing(tmp_path, mirror_copy, serve):
    faults = Faults()
    server = serve(mirror_copy, faults)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}")
    manifest = acquire(settings)

    assert manifest["release"] == "2016.10.01" and manifest["complete"]
    assert len(manifest["files"]) == 6
    for entry in manifest["files"]:
        path = settings.paths.data_root / entry["path"]
        lang, name = path.parent.name, path.name
        expected = published(mirror_copy, entry["artifact"], "2016.10.01", name)["sha256sum"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == expected == entry["sha256"]
        assert entry["bytes"] == path.stat().st_size and entry["url"].startswith(server.url)
        assert lang == entry["lang"]
    assert not list((settings.paths.data_root / "raw").rglob("*.part"))

    gets_before = faults.count(".bz2")
    again = acquire(settings)
    assert faults.count(".bz2") == gets_before, "a re-run must not download again"
    assert [e["sha256"] for e in again["files"]] == [e["sha256"] for e in manifest["files"]]
    assert not any(e["downloaded"] for e in again["files"])
    stats = json.loads((settings.paths.data_root / "raw/2016.10.01/stats.json").read_text())
    assert stats["reused"] == 6 and stats["downloaded"] == 0


def test_dropped_connection_resumes_with_range(tmp_path, mirror_copy, serve):
    faults = Faults(drop_after={LABELS_FR: 100_000})
    server = serve(mirror_copy, faults)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    manifest = acquire(settings)

    assert faults.ranges(LABELS_FR) == [None, "bytes=100000-"]
    expected = published(mirror_copy, "labels", "2016.10.01", LABELS_FR)["sha256sum"]
    assert manifest["files"][0]["sha256"] == expected


def test_server_ignoring_range_restarts_from_zero(tmp_path, mirror_copy, serve):
    """reliability #1: a 200 answer to a Range request replaces the .part instead of being appended."""
    faults = Faults(drop_after={LABELS_FR: 50_000}, ignore_range=True)
    server = serve(mirror_copy, faults)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    manifest = acquire(settings)

    assert faults.ranges(LABELS_FR) == [None, "bytes=50000-"]
    entry = manifest["files"][0]
    assert entry["sha256"] == published(mirror_copy, "labels", "2016.10.01", LABELS_FR)["sha256sum"]
    assert entry["bytes"] == (mirror_copy / GROUP / "labels/2016.10.01" / LABELS_FR).stat().st_size


def test_mismatched_content_range_discards_part(tmp_path, mirror_copy, serve):
    """reliability #2: a 206 from another offset is never appended; the download starts over."""
    faults = Faults(drop_after={LABELS_FR: 1000}, wrong_range=True)
    server = serve(mirror_copy, faults)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    manifest = acquire(settings)

    ranges = faults.ranges(LABELS_FR)
    assert ranges[:2] == [None, "bytes=1000-"] and ranges[2] is None, ranges
    assert manifest["files"][0]["sha256"] == published(mirror_copy, "labels", "2016.10.01", LABELS_FR)["sha256sum"]


def test_republished_version_is_downloaded_again_and_both_hashes_recorded(tmp_path, mirror_copy, serve):
    """reliability #4: the same version changes on the server; the new bytes replace the old, history kept."""
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    first = acquire(settings)["files"][0]

    target = mirror_copy / GROUP / "labels/2016.10.01" / LABELS_FR
    text = bz2.decompress(target.read_bytes()).decode().replace("# completed", '<http://fr.dbpedia.org/resource/X> <http://www.w3.org/2000/01/rdf-schema#label> "X"@fr .\n# completed')
    target.write_bytes(bz2.compress(text.encode()))
    meta_path = mirror_copy / GROUP / "labels/2016.10.01/index.jsonld"
    meta = json.loads(meta_path.read_text())
    for node in meta["@graph"]:
        if node.get("file") == LABELS_FR:
            node["sha256sum"] = hashlib.sha256(target.read_bytes()).hexdigest()
            node["byteSize"] = target.stat().st_size
    meta_path.write_text(json.dumps(meta))

    second = acquire(settings)["files"][0]
    assert second["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest() != first["sha256"]
    assert [old["sha256"] for old in second["replaced"]] == [first["sha256"]]
    local = settings.paths.data_root / second["path"]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == second["sha256"]


def test_newest_version_by_date_not_by_string():
    """reliability #5: mixed formats, shuffled; unparseable versions are ignored."""
    versions = ["2022.12.01", "2016-10", "garbage", "2016.10.01", "2022.12.01-fix", "2016-04", "2023.13.01", "2022.09.01"]
    assert newest(versions) == "2022.12.01-fix"
    assert newest(["2016-10", "2016.04.01", "2016-04"]) == "2016-10"
    assert newest(["2016.10.01", "2016-10"]) == "2016.10.01"
    assert version_key("2023.13.01") is None and version_key("garbage") is None
    with pytest.raises(SourceError, match="no parseable version"):
        newest(["x", "y"])


def test_latest_resolves_to_newest_published_version(tmp_path, mirror_copy, serve):
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}")
    assert resolve_release(settings.acquire) == "2016.10.01"
    artifact = json.loads((mirror_copy / GROUP / "labels/index.jsonld").read_text())
    artifact["databus:hasVersion"].append({"@id": "2017.01.01-rc/"})
    (mirror_copy / GROUP / "labels/index.jsonld").write_text(json.dumps(artifact))
    assert resolve_release(settings.acquire) == "2016.10.01", "a version that not every artifact has is not 'latest'"
    classic = http_settings(tmp_path, f"{server.url}/classic", layout="classic")
    assert resolve_release(classic.acquire) == "2016-10"


def test_missing_language_fails_naming_url_and_keeps_finished_files(tmp_path, mirror_copy, serve):
    """reliability #6 (classic tree without checksums: the 404 comes from the file itself)."""
    (mirror_copy / "classic/2016-10/sha256sums.txt").unlink()
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/classic", layout="classic", release="2016-10", languages=["fr", "de"], artifacts=["labels"])
    with pytest.raises(DownloadError) as error:
        acquire(settings)
    assert f"{server.url}/classic/2016-10/core-i18n/de/labels_de.ttl.bz2" in str(error.value)
    assert "404" in str(error.value)
    kept = settings.paths.data_root / "raw/2016-10/fr/labels_fr.ttl.bz2"
    assert kept.read_bytes() == (mirror_copy / "classic/2016-10/core-i18n/fr/labels_fr.ttl.bz2").read_bytes()
    manifest = json.loads((settings.paths.data_root / "raw/2016-10/manifest.json").read_text())
    assert manifest["complete"] is False and [e["lang"] for e in manifest["files"]] == ["fr"]


def test_missing_language_in_databus_metadata_names_the_version(tmp_path, mirror_copy, serve):
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["de"], artifacts=["labels"])
    with pytest.raises(NotFound, match=r"labels/2016\.10\.01/.*no file for language 'de'"):
        acquire(settings)


def test_transient_errors_are_retried_then_succeed(tmp_path, mirror_copy, serve):
    """reliability #7: 503 with Retry-After twice, then the file."""
    faults = Faults(fail_first={LABELS_FR: 2})
    server = serve(mirror_copy, faults)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    manifest = acquire(settings)
    assert faults.count(LABELS_FR) == 3
    assert manifest["files"][0]["sha256"] == published(mirror_copy, "labels", "2016.10.01", LABELS_FR)["sha256sum"]


def test_always_failing_server_gives_up_in_bounded_time(tmp_path, mirror_copy, serve):
    faults = Faults(always_fail=True)
    server = serve(mirror_copy, faults)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", release="2016.10.01", retries=3)
    started = time.monotonic()
    with pytest.raises(SourceError, match=r"gave up after 3 attempts; last error: HTTP Error 503"):
        acquire(settings)
    assert time.monotonic() - started < 10


def test_connection_refused_is_retried_and_named(tmp_path):
    settings = http_settings(tmp_path, "http://127.0.0.1:9/dbpedia/generic", retries=2)
    with pytest.raises(SourceError, match=r"http://127\.0\.0\.1:9/dbpedia/generic/.*gave up after 2 attempts"):
        acquire(settings)


def test_checksum_mismatch_is_quarantined(tmp_path, mirror_copy, serve):
    """reliability #9: one corrupted byte; expected and actual hash in the error, nothing at the final path."""
    server = serve(mirror_copy, Faults(corrupt={LABELS_FR}))
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    expected = published(mirror_copy, "labels", "2016.10.01", LABELS_FR)["sha256sum"]
    with pytest.raises(DownloadError) as error:
        acquire(settings)
    assert f"expected {expected}, got " in str(error.value) and "quarantined at" in str(error.value)
    raw = settings.paths.data_root / "raw/2016.10.01/fr"
    assert not (raw / LABELS_FR).exists() and not (raw / f"{LABELS_FR}.part").exists()
    quarantined = list((settings.paths.data_root / "quarantine/2016.10.01/fr").glob(f"{LABELS_FR}.*[0-9]"))
    assert len(quarantined) == 1 and hashlib.sha256(quarantined[0].read_bytes()).hexdigest() != expected


def test_html_page_under_a_bz2_name(tmp_path, mirror_copy, serve):
    """reliability #8: caught by the checksum (Databus) and, with no checksum published, by the bz2 check."""
    page = b"<html><body>Service temporarily unavailable</body></html>"
    (mirror_copy / GROUP / "labels/2016.10.01" / LABELS_FR).write_bytes(page)
    meta_path = mirror_copy / GROUP / "labels/2016.10.01/index.jsonld"
    meta = json.loads(meta_path.read_text())
    for node in meta["@graph"]:
        if node.get("file") == LABELS_FR:
            node["byteSize"] = len(page)
    meta_path.write_text(json.dumps(meta))
    classic = mirror_copy / "classic/2016-10"
    (classic / "sha256sums.txt").unlink()
    (classic / "core-i18n/fr/labels_fr.ttl.bz2").write_bytes(page)
    server = serve(mirror_copy)

    databus = http_settings(tmp_path / "d", f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    with pytest.raises(DownloadError, match="sha256 mismatch: expected"):
        acquire(databus)
    plain = http_settings(tmp_path / "c", f"{server.url}/classic", layout="classic", release="2016-10", languages=["fr"], artifacts=["labels"])
    with pytest.raises(DownloadError, match="labels_fr.ttl.bz2: not a complete bz2 stream"):
        acquire(plain)
    assert not (plain.paths.data_root / "raw/2016-10/fr/labels_fr.ttl.bz2").exists()


def test_decompression_bomb_is_refused(tmp_path, mirror_copy, serve):
    """reliability #33: a bz2 that expands far beyond acquire.max_expansion."""
    classic = mirror_copy / "classic/2016-10"
    (classic / "sha256sums.txt").unlink()
    (classic / "core-i18n/fr/labels_fr.ttl.bz2").write_bytes(bz2.compress(b"\0" * (64 << 20)))
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/classic", layout="classic", release="2016-10", languages=["fr"], artifacts=["labels"])
    with pytest.raises(DownloadError, match="decompression bomb"):
        acquire(settings)


def test_checksummed_decompression_bomb_is_quarantined(tmp_path, mirror_copy, serve):
    """reliability #33 with a published sha256 (the Databus always publishes one): the hash matches, the expansion is still bounded."""
    bomb = bz2.compress(b"\0" * (64 << 20))
    target = mirror_copy / GROUP / "labels/2016.10.01" / LABELS_FR
    target.write_bytes(bomb)
    meta_path = mirror_copy / GROUP / "labels/2016.10.01/index.jsonld"
    meta = json.loads(meta_path.read_text())
    for node in meta["@graph"]:
        if node.get("file") == LABELS_FR:
            node["sha256sum"], node["byteSize"] = hashlib.sha256(bomb).hexdigest(), len(bomb)
    meta_path.write_text(json.dumps(meta))
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    with pytest.raises(DownloadError, match="decompression bomb"):
        acquire(settings)
    assert not (settings.paths.data_root / "raw/2016.10.01/fr" / LABELS_FR).exists()
    assert [p.read_bytes() == bomb for p in (settings.paths.data_root / "quarantine/2016.10.01/fr").glob(f"{LABELS_FR}.*") if p.suffix != ".txt"] == [True]


def test_file_larger_than_the_limit_is_refused(tmp_path, mirror_copy, serve):
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"], max_file_bytes=10_000)
    with pytest.raises(DownloadError, match="exceeds acquire.max_file_bytes=10000"):
        acquire(settings)
    assert not (settings.paths.data_root / "raw/2016.10.01/fr" / LABELS_FR).exists()


def test_path_traversal_in_metadata_is_refused(tmp_path, mirror_copy, serve):
    """reliability #30: a Part whose file name climbs out of the data root."""
    meta_path = mirror_copy / GROUP / "labels/2016.10.01/index.jsonld"
    meta = json.loads(meta_path.read_text())
    for node in meta["@graph"]:
        if node.get("file") == LABELS_FR:
            node["file"] = "../../../../labels_lang=fr.ttl.bz2"
    meta_path.write_text(json.dumps(meta))
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    with pytest.raises(ValueError, match="not a safe name"):
        acquire(settings)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"], "nothing may be written anywhere"


@pytest.mark.parametrize("bad", [{"release": "../../x"}, {"languages": ["xx"]}, {"source": "ftp"}, {"retries": 0}])
def test_bad_settings_fail_at_load_naming_the_setting(bad):
    with pytest.raises(ValueError) as error:
        load_settings({"acquire": bad})
    assert list(bad)[0] in str(error.value)


def test_two_runs_on_one_target_never_interleave(tmp_path, mirror_copy, serve):
    """reliability #10: two acquire processes at once; each file is fetched once and both runs succeed."""
    faults = Faults(slow_s=0.01)
    server = serve(mirror_copy, faults)
    env = {**os.environ, "PRIXLM_PATHS__DATA_ROOT": str(tmp_path / "var"), "PRIXLM_ACQUIRE__SOURCE": "mirror",
           "PRIXLM_ACQUIRE__MIRROR_URL": f"{server.url}/{GROUP}", "PRIXLM_ACQUIRE__ARTIFACTS": '["labels", "interlanguage-links"]'}
    runs = [subprocess.Popen([sys.executable, "-m", "jobs.acquire"], cwd=PROJECT_ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    for name in ("labels_lang=fr.ttl.bz2", "labels_lang=en.ttl.bz2", "interlanguage-links_lang=fr.ttl.bz2"):
        assert faults.count(name) == 1, (name, faults.seen)
    manifest = json.loads((tmp_path / "var/raw/2016.10.01/manifest.json").read_text())
    assert len(manifest["files"]) == 4 and manifest["complete"]


def test_last_acquired_release_reads_complete_manifests(tmp_path, mirror_copy, serve):
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", release="2016.04.01", artifacts=["labels"])
    assert last_acquired_release(settings) is None
    acquire(settings)
    assert last_acquired_release(settings) == "2016.04.01"
    with pytest.raises(NotFound):
        acquire(http_settings(tmp_path, f"{server.url}/{GROUP}", release="2015.10.01", artifacts=["labels"]))
    assert last_acquired_release(settings) == "2016.04.01"


def test_unreachable_mlflow_fails_before_any_download(tmp_path, mirror_copy, serve):
    """reliability #27: the tracking server is down (a closed loopback port): the task stops at once, naming it, and writes nothing."""
    from jobs.acquire import run
    from prixlm_model.tracking import TrackingUnavailable

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    server = serve(mirror_copy)
    settings = http_settings(tmp_path, f"{server.url}/{GROUP}", languages=["fr"], artifacts=["labels"])
    settings = settings.model_copy(update={"mlflow": settings.mlflow.model_copy(update={"tracking_uri": f"http://127.0.0.1:{closed}"})})
    started = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=rf"MLflow tracking server http://127.0.0.1:{closed} is unreachable .* nothing was lost"):
        run(settings, "manual__unreachable", "prix_lm_full")
    assert time.monotonic() - started < 30
    assert not (settings.paths.data_root / "raw").exists()
