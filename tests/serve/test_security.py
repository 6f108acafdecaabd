"""Serve's trust boundaries without Ray (issue 18, Serve): no authentication off loopback unless
forced, the Host allow-list and Origin check, and the security headers on the viewer and API.

The routes run in-process on the real FastAPI app of :func:`serve.routes.create_api`, over an
ingress that holds only what these routes read (its args, key and model summary)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient

from echoprime.api.auth import ApiKeyAuth
from echoprime.api.security import CSP, HostPolicy, check_no_auth, default_hosts, is_loopback
from serve.args import ServeArgs
from serve.routes import STATIC, create_api

KEY = "security-test-key"
ORIGIN = "http://127.0.0.1:8000"


class _Ingress:
    """The state the viewer, /healthz, /readyz and /v1/model read from a real ingress."""

    def __init__(self, args: ServeArgs) -> None:
        self.args = args
        self.auth = ApiKeyAuth(key=KEY)
        self.model = {"bundle": {"name": "b", "version": "v", "sha256": "0" * 64}, "versions": {}}

    async def ready(self) -> list[str]:
        return []


def client(peer: str = "testclient", **args) -> TestClient:
    sargs = ServeArgs.model_validate({"bundle_uri": "x", "host": "127.0.0.1", **args})
    ing = _Ingress(sargs)
    if sargs.auth_disabled:
        ing.auth = ApiKeyAuth(disabled=True)
    return TestClient(create_api(ing), base_url=ORIGIN, client=(peer, 50000))


def _bundle(root: Path) -> Path:
    from echoprime.bundle import BundleWriter

    w = BundleWriter(root)
    w.save_module("mil", torch.nn.Linear(2, 2), model="tiny_linear")
    return w.commit(spec={}, config=None)


@pytest.fixture(autouse=True)
def _no_bundle_key(monkeypatch):
    for var in ("ECHOPRIME_BUNDLE_KEY", "ECHOPRIME_BUNDLE_KEY_FILE", "ECHOPRIME_BUNDLE_PUBLIC_KEY"):
        monkeypatch.delenv(var, raising=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.1.2.3", "echo.example.org"])
def test_no_auth_off_loopback_is_refused(host):
    with pytest.raises(
        ValueError, match=f"authentication is off.*{re.escape(host)}.*--allow-no-auth-off-loopback"
    ):
        ServeArgs(bundle_uri="x", auth_disabled=True, host=host)


def test_echoprime_serve_no_auth_on_every_address_is_refused_before_anything_starts(
    monkeypatch, capsys, tmp_path
):
    import ray_jobs.common
    from echoprime.cli import main

    def no_ray(*a, **k):
        raise AssertionError("Ray must not start")

    monkeypatch.setattr(ray_jobs.common, "ray_session", no_ray)
    bundle = _bundle(tmp_path / "b")
    assert main(["serve", "--bundle", str(bundle), "--host", "0.0.0.0", "--no-auth"]) == 2
    err = capsys.readouterr().err
    assert "authentication is off" in err and "'0.0.0.0'" in err and "--allow-no-auth-off-loopback" in err


def test_no_auth_is_allowed_on_loopback_or_when_forced(tmp_path):
    from ray_jobs.serve_app import resolve

    bundle = str(_bundle(tmp_path / "b"))
    for host in ("127.0.0.1", "localhost", "::1"):
        assert resolve(bundle, None, no_auth=True, host=host)[0].auth_disabled
    args = resolve(bundle, None, no_auth=True, host="0.0.0.0", allow_no_auth_off_loopback=True)[0]
    assert args.auth_disabled and args.allow_no_auth_off_loopback and args.host == "0.0.0.0"
    check_no_auth("0.0.0.0", auth_disabled=False, allow_off_loopback=False)  # a key: any address


def test_the_forced_no_auth_is_logged_as_a_warning(caplog, monkeypatch):
    from serve import ingress

    monkeypatch.setattr(ingress, "bundle_summary", lambda uri: {"bundle": {"sha256": "0"}})
    args = ServeArgs(bundle_uri="x", auth_disabled=True, host="0.0.0.0", allow_no_auth_off_loopback=True)
    with caplog.at_level("WARNING", logger="ray.serve"):
        ingress.Ingress(None, None, None, None, None, args)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("authentication is OFF on 0.0.0.0" in m for m in warned), warned


def test_loopback_and_the_default_host_list():
    assert all(
        is_loopback(h) for h in ("localhost", "127.0.0.1", "127.0.0.2", "::1", "[::1]", "app.localhost")
    )
    assert not any(
        is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "example.org", "localhost.example.org")
    )
    assert default_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"] + ["127.0.0.1"]
    assert "echo.internal" in default_hosts("echo.internal")
    assert ServeArgs(bundle_uri="x").host_allow_list() is None  # where it listens is not stated
    assert ServeArgs(
        bundle_uri="x", host="0.0.0.0", allowed_hosts=["echo.example.org"]
    ).host_allow_list() == ["echo.example.org"]


@pytest.mark.parametrize("host", ["evil.example", "127.0.0.1.evil.example", "localhost:8000@evil", ""])
def test_a_host_not_on_the_list_gets_421(host):
    r = client().get("/v1/model", headers={"X-API-Key": KEY, "Host": host})
    assert r.status_code == 421
    assert r.json()["code"] == "misdirected_request"
    assert r.headers["content-security-policy"] == CSP


def test_listed_hosts_are_answered_and_probes_answer_any_host():
    c = client(allowed_hosts=["echo.example.org"])
    assert c.get("/v1/model", headers={"X-API-Key": KEY, "Host": "echo.example.org:8443"}).status_code == 200
    assert c.get("/v1/model", headers={"X-API-Key": KEY, "Host": "127.0.0.1:8000"}).status_code == 421
    d = client()
    for host in ("localhost:8000", "127.0.0.1", "[::1]:8000"):
        assert d.get("/", headers={"Host": host}).status_code == 200, host
    for path in ("/healthz", "/readyz"):
        assert d.get(path, headers={"Host": "10.0.0.7:8000"}).status_code == 200
    assert client(allowed_hosts=["*"]).get("/", headers={"Host": "anything.example"}).status_code == 200


def test_browser_calls_from_another_origin_are_refused():
    c = client(allowed_origins=["https://viewer.example.org"])
    ok = {"X-API-Key": KEY}
    assert c.get("/v1/model", headers=ok).status_code == 200  # not a browser: no Origin
    assert c.get("/v1/model", headers={**ok, "Origin": ORIGIN}).status_code == 200  # the viewer itself
    assert c.get("/v1/model", headers={**ok, "Origin": "https://viewer.example.org"}).status_code == 200
    for origin in ("https://evil.example", "null", "http://127.0.0.1:9999"):
        r = c.get("/v1/model", headers={**ok, "Origin": origin})
        assert r.status_code == 403 and r.json()["code"] == "origin_not_allowed", origin
        assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/", {}),
        ("/static/viewer.js", {}),
        ("/static/viewer.css", {}),
        ("/healthz", {}),
        ("/readyz", {}),
        ("/openapi.json", {}),
        ("/v1/model", {"X-API-Key": KEY}),
        ("/v1/model", {}),  # 401
        ("/v1/nothing", {}),  # 404
    ],
)
def test_security_headers_on_the_viewer_and_the_api(path, headers):
    r = client().get(path, headers=headers)
    assert r.headers["content-security-policy"] == CSP, path
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    if path.startswith("/static/"):
        assert "no-store" not in r.headers.get("cache-control", "")
    else:
        assert r.headers["cache-control"] == "no-store", path


def test_the_policy_loads_nothing_from_outside_and_refuses_framing():
    directives = dict(d.strip().split(" ", 1) for d in CSP.split(";"))
    assert directives["default-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
    sources = " ".join(directives.values()).split()
    assert set(sources) <= {"'self'", "'none'", "data:"}  # no host, no scheme but data: images
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP


def test_the_viewer_needs_nothing_the_policy_refuses():
    """What a CSP of script-src/style-src 'self' blocks: inline scripts, styles and handlers, and
    eval-like calls. The real browser's check is tests/serve/test_viewer.py."""
    html = (STATIC / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline <script>"
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.I), "inline style or handler"
    assert not re.search(r"(src|href)=\"(https?:)?//", html), "an outside resource"
    js = (STATIC / "viewer.js").read_text()
    assert not re.search(r"\beval\(|new Function|setAttribute\(\s*['\"](style|on)", js)
    css = (STATIC / "viewer.css").read_text()
    assert not re.search(r"@import|url\(\s*['\"]?(https?:)?//", css)


def test_the_docs_page_that_needs_a_cdn_is_gone_and_the_schema_stays():
    c = client()
    assert c.get("/docs").status_code == 404
    assert c.get("/openapi.json").json()["info"]["title"] == "echoprime"


def test_a_request_body_still_streams_through_the_middleware():
    """The checks run on headers only: a body sent in pieces reaches the route whole."""
    from echoprime.api.security import SecurityMiddleware

    got = []

    async def app(scope, receive, send):
        body = b""
        while True:
            m = await receive()
            body += m.get("body", b"")
            if not m.get("more_body"):
                break
        got.append(body)
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"cache-control", b"max-age=60")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})

    pieces = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"c"},
    ]
    sent = []

    async def receive():
        return pieces.pop(0)

    async def send(m):
        sent.append(m)

    scope = {"type": "http", "path": "/v1/x", "headers": [(b"host", b"localhost:8000")]}
    asyncio.run(SecurityMiddleware(app, HostPolicy(["localhost"]))(scope, receive, send))
    assert got == [b"abc"]
    headers = dict(sent[0]["headers"])
    assert headers[b"cache-control"] == b"no-store"


def test_without_auth_only_clients_on_this_machine_are_answered():
    """Where it listens was not stated (a Serve config), no key means loopback clients only."""
    unstated = {"host": None, "auth_disabled": True}
    for peer in ("10.0.0.9", "192.168.1.20", "testclient"):
        r = client(peer, **unstated).get("/v1/model")
        assert r.status_code == 403 and r.json()["code"] == "loopback_only", peer
    assert client("127.0.0.1", **unstated).get("/v1/model").status_code == 200
    assert client("10.0.0.9", **unstated).get("/healthz").status_code == 200
    forced = {
        "host": "0.0.0.0",
        "auth_disabled": True,
        "allow_no_auth_off_loopback": True,
        "allowed_hosts": ["*"],
    }
    assert client("10.0.0.9", **forced).get("/v1/model").status_code == 200
    assert client("10.0.0.9").get("/v1/model", headers={"X-API-Key": KEY}).status_code == 200  # a key: anyone
