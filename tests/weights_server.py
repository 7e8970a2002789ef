"""A local HTTP server for weight-download tests (127.0.0.1 only, bounded, no internet).

``serve(files)`` runs a ThreadingHTTPServer on a free port in a daemon thread and yields its base
URL; ``files`` maps URL paths to bytes. ``/truncated/<name>`` announces the full length of
``<name>`` but sends half and closes, like a dropped connection. Requests are counted per path.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from iqpfr.weights.zoo import ZooEntry


class _Handler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    hits: Counter = Counter()
    timeout = 5  # a stuck client cannot hold a handler thread for long

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.hits[self.path] += 1
        truncated = self.path.startswith("/truncated/")
        body = self.files.get("/" + self.path.removeprefix("/truncated/") if truncated else self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if truncated else body)
        if truncated:
            self.close_connection = True

    def log_message(self, *args) -> None:  # keep test output clean
        pass


@contextlib.contextmanager
def serve(files: dict[str, bytes]) -> Iterator[tuple[str, Counter]]:
    """Serve ``files`` on 127.0.0.1; yields ``(base_url, hits)``."""
    handler = type("Handler", (_Handler,), {"files": dict(files), "hits": Counter()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def payload(n: int = 300_000) -> bytes:
    """Deterministic test bytes (several 1 MiB-chunk-free reads; not compressible to nothing)."""
    return hashlib.sha256(b"iqpfr").digest() * (n // 32)


def make_entry(name: str, urls: tuple[str, ...], sha256: str | None, **kw) -> ZooEntry:
    """A zoo entry for a test file called ``<name>.bin`` (``kind`` defaults to perceptual)."""
    kw.setdefault("kind", "perceptual")
    return ZooEntry(name=name, filename=f"{name}.bin", licence="test licence", urls=urls, sha256=sha256, **kw)
