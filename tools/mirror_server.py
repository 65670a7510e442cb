"""Serve a DBpedia mirror folder over HTTP on loopback, with byte ranges, as the Databus does.

Why: acquire must meet a real HTTP server (resumes with ``Range``, JSON-LD metadata, 404s), and
the demo downloads the sample the way production downloads DBpedia. A folder request answers its
``index.jsonld`` when there is one (the Databus's artifact and version documents), otherwise a
plain listing like the classic download tree's.
"""

from __future__ import annotations

import argparse
import html
import logging
import re
import threading
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)

RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


class MirrorHandler(SimpleHTTPRequestHandler):
    """Static files with single byte ranges, JSON-LD folder documents and quiet logging."""

    protocol_version = "HTTP/1.1"
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".jsonld": "application/ld+json", ".bz2": "application/x-bzip2"}

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's signature
        log.debug("%s %s", self.address_string(), format % args)

    def resolve(self) -> Path | None:
        """The file a request names, or None when it is missing or outside the served folder."""
        path = Path(self.translate_path(self.path))
        root = Path(self.directory).resolve()
        if path.is_dir():
            path = path / "index.jsonld"
        resolved = path.resolve()
        if root not in resolved.parents or not resolved.is_file():
            return None
        return resolved

    def do_HEAD(self) -> None:
        self.serve(head=True)

    def do_GET(self) -> None:
        self.serve(head=False)

    def serve(self, head: bool) -> None:
        folder = Path(self.translate_path(self.path))
        if folder.is_dir() and not (folder / "index.jsonld").is_file():
            self.send_listing(folder, head)
            return
        path = self.resolve()
        if path is None:
            self.send_error(HTTPStatus.NOT_FOUND, f"no such file: {self.path}")
            return
        size = path.stat().st_size
        start, end = 0, size - 1
        status = HTTPStatus.OK
        wanted = RANGE.match(self.headers.get("Range", ""))
        if wanted:
            start = int(wanted.group(1))
            end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            if start >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not head:
            self.send_body(path, start, end + 1)

    def send_body(self, path: Path, start: int, stop: int) -> None:
        """Write bytes ``[start, stop)`` of ``path``; fault-injecting test servers override this."""
        with path.open("rb") as handle:
            handle.seek(start)
            remaining = stop - start
            while remaining > 0:
                chunk = handle.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    def send_listing(self, folder: Path, head: bool) -> None:
        names = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in folder.iterdir() if not entry.name.startswith("."))
        links = "".join(f'<a href="{html.escape(name)}">{html.escape(name)}</a>\n' for name in names)
        body = f"<html><body><pre>\n{links}</pre></body></html>\n".encode()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


class MirrorServer:
    """A threaded HTTP server for one folder, bound to loopback; use as a context manager."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0, handler: type[MirrorHandler] = MirrorHandler):
        self.folder = Path(folder).resolve()
        self.httpd = ThreadingHTTPServer((host, port), partial(handler, directory=str(self.folder)))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="mirror-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "MirrorServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a mirror folder on loopback until interrupted.")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    server = MirrorServer(args.folder, args.host, args.port)
    print(server.url, flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
