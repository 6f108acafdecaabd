"""The viewer without Ray: Debian's chromium loads the page's own files from a routed origin,
with the server's Content-Security-Policy, and a faked API answers (tests/serve/test_viewer_*.py
and bench/viewer_render.py)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from echoprime.api.security import CSP
from serve.routes import STATIC

ORIGIN = "http://viewer.test"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
MODEL = {
    "bundle": {"name": "quickstart", "version": "2026-12-05T21:24:28Z", "sha256": "9f2c" + "0" * 60},
    "created": "2026-12-05T21:24:28Z",
    "versions": {"echoprime": "0.1.0"},
    "label_sets": {"views": ["A4C"] * 11, "phenotypes": ["p"] * 21},
}
# Records page errors and Content-Security-Policy violations as they happen.
WATCH = (
    "window.__violations = [];"
    "document.addEventListener('securitypolicyviolation',"
    " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
)


@dataclass
class FakeApi:
    """What the faked server answers: ``interpret`` and ``example`` are called per request and
    return ``(status, body)``; every request's path and headers are recorded."""

    interpret: Callable[[], tuple[int, Any]]
    example: Callable[[int], tuple[int, Any]] | None = None
    model: Callable[[], tuple[int, Any]] = lambda: (200, MODEL)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)

    def answer(self, url: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """``(status, content type, body)`` for a request of the page."""
        path = url.split("?")[0]
        self.seen.append((url, dict(headers)))
        if path in ("/", "/static/viewer.js", "/static/viewer.css"):
            f = STATIC / ("index.html" if path == "/" else path.removeprefix("/static/"))
            return 200, TYPES[f.suffix], f.read_bytes()
        if path == "/v1/interpret":
            status, body = self.interpret()
        elif path == "/v1/model":
            status, body = self.model()
        elif path.startswith("/v1/examples/") and self.example is not None:
            status, body = self.example(int(path.rsplit("/", 1)[1]))
        else:
            status, body = 404, {"code": "not_found", "reason": "Not Found"}
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.bodies[path] = raw
        return status, "application/json", raw

    def route(self, route: Any) -> None:
        """A Playwright route handler: answer on the routed origin."""
        req = route.request
        status, kind, raw = self.answer(req.url.removeprefix(ORIGIN), dict(req.headers))
        route.fulfill(status=status, body=raw, content_type=kind, headers={"content-security-policy": CSP})


@contextlib.contextmanager
def local_server(api: FakeApi, hold: threading.Event | None = None) -> Iterator[str]:
    """Serve ``api`` over loopback HTTP (a real upload, with the browser's upload progress);
    ``POST /v1/interpret`` waits for ``hold`` when given. Yields the base URL."""

    class Handler(BaseHTTPRequestHandler):
        def _reply(self) -> None:
            n = int(self.headers.get("content-length") or 0)
            if n:
                self.rfile.read(n)
            if self.path.startswith("/v1/interpret") and hold is not None:
                hold.wait(60)
            status, kind, raw = api.answer(self.path, {k.lower(): v for k, v in self.headers.items()})
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(raw)))
            self.send_header("content-security-policy", CSP)
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _reply

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        if hold is not None:
            hold.set()
        server.shutdown()
        server.server_close()


def open_viewer(page: Any, api: FakeApi, key: str = "k", url: str | None = None) -> None:
    """Load the viewer and enter the key: from ``url`` (a :func:`local_server`), or with every
    request of ``page`` routed to ``api``."""
    page.unroute("**/*")
    if url is None:
        page.route("**/*", api.route)
    page.goto((url or ORIGIN) + "/")
    page.fill("#api-key", key)


def run_example(page: Any, index: int = 7) -> None:
    """Press "Interpret example" and wait until the page has rendered the result or an error."""
    page.fill("#example-index", str(index))
    page.click("#example")
    page.wait_for_selector("body[data-state=done], body[data-state=error]")
