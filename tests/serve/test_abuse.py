"""Abuse of a running echoprime Serve graph over real HTTP on 127.0.0.1 (issue 17, "Requests").

* No input a client controls gets a 5xx: each abusive request below is a 4xx (or a 200 that
  reports the bad file), with a stable code and a reason that names the field or file.
* No error body carries server internals: paths, host names, tracebacks, library exception
  names, S3 client text.
* A client that sends its body too slowly is cut off with 408 and a log line; uploads over the
  bound are answered 503 with ``Retry-After``.
* A hostile study (tests/hostile_corpus.py) is answered 200 with a specific reason for every bad
  file and the good files interpreted.
* A request that crashes its replica costs one replica restart: it is answered once (502
  ``replica_crashed``, naming its files) and not retried into more crashes; a request that
  timed out has the work behind it cancelled.
"""

from __future__ import annotations

import json
import re
import select
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests

from tests.conftest import ROOT
from tests.serve.conftest import LIMITS, TEST_OPTIONS, equal_results, read_study

pytestmark = pytest.mark.ray
T = 60

DEEP_ARRAY = "[" * 50_000 + "]" * 50_000
DEEP_OBJECT = '{"a":' * 50_000 + "1" + "}" * 50_000
DIGITS = "9" * 5000

# (name, method, path, requests kwargs, expected status, expected code, text the reason must hold)
JSON = {"Content-Type": "application/json"}
CASES: list[tuple[str, str, str, dict[str, Any], int, str, str]] = [
    (
        "json nested 50 000 deep",
        "post",
        "/v1/interpret",
        {"data": DEEP_ARRAY, "headers": JSON},
        422,
        "invalid_json",
        "too deeply",
    ),
    (
        "objects nested 50 000 deep",
        "post",
        "/v1/search/reports",
        {"data": DEEP_OBJECT},
        422,
        "invalid_json",
        "too deeply",
    ),
    (
        "5000-digit k",
        "post",
        "/v1/search/reports",
        {"data": f'{{"text": "a", "k": {DIGITS}}}'},
        422,
        "invalid_request",
        "k: ",
    ),
    (
        "5000-digit embedding value",
        "post",
        "/v1/search/reports",
        {"data": f'{{"embedding": [{DIGITS}]}}'},
        422,
        "invalid_request",
        "embedding.0: ",
    ),
    (
        "NaN in an embedding",
        "post",
        "/v1/search/reports",
        {"data": '{"embedding": [NaN, 0.5]}'},
        422,
        "invalid_request",
        "embedding.0: Input should be a finite number",
    ),
    (
        "-Infinity in an embedding",
        "post",
        "/v1/search/reports",
        {"data": '{"embedding": [0.5, -Infinity]}'},
        422,
        "invalid_request",
        "embedding.1: ",
    ),
    (
        "s3:///x",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3:///x"]}},
        422,
        "invalid_uri",
        "files.0: the bucket",
    ),
    (
        "s3://bucket//double",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3://bucket//double"]}},
        422,
        "invalid_uri",
        "files.0: the object key",
    ),
    (
        "s3 key climbing out",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3://studies/ok.dcm", "s3://studies/../../etc/passwd"]}},
        422,
        "invalid_uri",
        "files.1: ",
    ),
    (
        "a server path",
        "post",
        "/v1/interpret",
        {"json": {"files": ["/etc/passwd"]}},
        422,
        "invalid_uri",
        "files.0: only s3://",
    ),
    (
        "a file:// URI",
        "post",
        "/v1/interpret",
        {"json": {"files": ["file:///etc/passwd"]}},
        422,
        "invalid_uri",
        "files.0: ",
    ),
    (
        "an upper-case bucket",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3://Studies/a.dcm"]}},
        422,
        "invalid_uri",
        "files.0: the bucket",
    ),
    (
        "a control character in a key",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3://studies/a\u0000.dcm"]}},
        422,
        "invalid_uri",
        "control characters",
    ),
    (
        "files is a string",
        "post",
        "/v1/interpret",
        {"json": {"files": "s3://studies/a.dcm"}},
        422,
        "invalid_request",
        "files: ",
    ),
    (
        "files are numbers",
        "post",
        "/v1/interpret",
        {"json": {"files": [1, 2.5]}},
        422,
        "invalid_request",
        "files.0: Input should be a valid string",
    ),
    ("files is null", "post", "/v1/interpret", {"json": {"files": None}}, 422, "invalid_request", "files: "),
    (
        "a top-level array",
        "post",
        "/v1/interpret",
        {"json": ["s3://studies/a.dcm"]},
        422,
        "invalid_request",
        "body: ",
    ),
    ("a top-level string", "post", "/v1/embed/text", {"json": "report"}, 422, "invalid_request", "body: "),
    (
        "100 000 URIs",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3://studies/a.dcm"] * 100_000}},
        413,
        "too_many_files",
        "limit is 8",
    ),
    (
        "100 000 embedding values",
        "post",
        "/v1/search/reports",
        {"json": {"embedding": [0.1] * 100_000}},
        422,
        "invalid_request",
        "embedding: ",
    ),
    (
        "1000 reports",
        "post",
        "/v1/embed/text",
        {"json": {"reports": ["x"] * 1000}},
        422,
        "invalid_request",
        "reports: ",
    ),
    (
        "reports are numbers",
        "post",
        "/v1/embed/text",
        {"json": {"reports": [1, 2]}},
        422,
        "invalid_request",
        "reports.0: ",
    ),
    (
        "reports nested",
        "post",
        "/v1/embed/text",
        {"json": {"reports": [[["x"]]]}},
        422,
        "invalid_request",
        "reports.0: ",
    ),
    (
        "k as a string",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a", "k": "5"}},
        422,
        "invalid_request",
        "k: Input should be a valid integer",
    ),
    (
        "k as a boolean",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a", "k": True}},
        422,
        "invalid_request",
        "k: ",
    ),
    (
        "k as a fraction",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a", "k": 1.5}},
        422,
        "invalid_request",
        "k: ",
    ),
    (
        "k negative",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a", "k": -1}},
        422,
        "invalid_request",
        "k: Input should be greater than or equal to 1",
    ),
    (
        "text and embedding",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a", "embedding": [0.1]}},
        422,
        "invalid_request",
        "exactly one of 'text' and 'embedding'",
    ),
    (
        "an unknown key",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a", "sql": "drop table"}},
        422,
        "invalid_request",
        "sql: ",
    ),
    (
        "text over 20 000 characters",
        "post",
        "/v1/search/reports",
        {"json": {"text": "x" * 20_001}},
        422,
        "invalid_request",
        "text: ",
    ),
    (
        "a report over 20 000 characters",
        "post",
        "/v1/embed/text",
        {"json": {"reports": ["x" * 20_001]}},
        413,
        "payload_too_large",
        "20000 characters",
    ),
    (
        "an embedding of the wrong width",
        "post",
        "/v1/search/reports",
        {"json": {"embedding": [0.1] * 7}},
        422,
        "invalid_embedding",
        "7 values",
    ),
    (
        "a body that is not UTF-8",
        "post",
        "/v1/interpret",
        {"data": b'{"files": ["\xff\xfe"]}', "headers": JSON},
        422,
        "invalid_json",
        "UTF-8",
    ),
    (
        "an empty JSON body",
        "post",
        "/v1/interpret",
        {"data": b"", "headers": JSON},
        422,
        "invalid_json",
        "not valid JSON",
    ),
    (
        "multipart without a boundary",
        "post",
        "/v1/interpret",
        {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}},
        422,
        "invalid_multipart",
        "boundary",
    ),
    (
        "multipart garbage",
        "post",
        "/v1/interpret",
        {"data": b"--zz\r\n\x00\x01garbage", "headers": {"Content-Type": "multipart/form-data; boundary=zz"}},
        422,
        "invalid_multipart",
        "multipart",
    ),
    (
        "a part without a name",
        "post",
        "/v1/embed/video",
        {
            "data": b'--zz\r\nContent-Disposition: form-data; filename="a.mp4"\r\n\r\nx\r\n--zz--\r\n',
            "headers": {"Content-Type": "multipart/form-data; boundary=zz"},
        },
        422,
        "invalid_multipart",
        "name",
    ),
    (
        "a 5000-character boundary",
        "post",
        "/v1/interpret",
        {
            "data": b"--" + b"z" * 5000 + b"\r\n",
            "headers": {"Content-Type": "multipart/form-data; boundary=" + "z" * 5000},
        },
        422,
        "invalid_multipart",
        "multipart",
    ),
    (
        "a 10 000-character file name",
        "post",
        "/v1/interpret",
        {"files": [("files", ("a" * 10_000 + ".dcm", b"x"))]},
        422,
        "invalid_multipart",
        "multipart",
    ),
    (
        "fields but no file",
        "post",
        "/v1/interpret",
        {"files": {"note": (None, "text only")}},
        422,
        "no_files",
        "multipart parts named 'files'",
    ),
    (
        "1001 form fields",
        "post",
        "/v1/embed/video",
        {"files": [(f"f{i}", (None, "v")) for i in range(1001)]},
        422,
        "invalid_multipart",
        "Too many fields",
    ),
    (
        "nine files",
        "post",
        "/v1/interpret",
        {"files": [("files", (f"f{i}.mp4", b"x")) for i in range(9)]},
        413,
        "too_many_files",
        "the limit is 8",
    ),
    (
        "JSON sent to the upload-only route",
        "post",
        "/v1/embed/video",
        {"json": {"files": ["s3://studies/a.dcm"]}},
        422,
        "invalid_multipart",
        "boundary",
    ),
    (
        "text/plain",
        "post",
        "/v1/interpret",
        {"data": b"x", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
        "multipart/form-data",
    ),
    (
        "a 5000-character content type",
        "post",
        "/v1/interpret",
        {"data": b"x", "headers": {"Content-Type": "x" * 5000}},
        415,
        "unsupported_media_type",
        "...",
    ),
    (
        "X-Request-Timeout NaN",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a"}, "headers": {"X-Request-Timeout": "nan"}},
        422,
        "invalid_header",
        "X-Request-Timeout",
    ),
    (
        "X-Request-Timeout negative",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a"}, "headers": {"X-Request-Timeout": "-5"}},
        422,
        "invalid_header",
        "X-Request-Timeout",
    ),
    (
        "X-Request-Timeout 400 digits",
        "post",
        "/v1/search/reports",
        {"json": {"text": "a"}, "headers": {"X-Request-Timeout": "9" * 400}},
        422,
        "invalid_header",
        "X-Request-Timeout",
    ),
    (
        "previews=maybe",
        "post",
        "/v1/interpret",
        {"json": {"files": ["s3://studies/a.dcm"]}, "params": {"previews": "maybe"}},
        422,
        "invalid_request",
        "query.previews",
    ),
    ("a 5000-digit example index", "get", f"/v1/examples/{DIGITS}", {}, 422, "invalid_request", "path.index"),
    ("a negative example index", "get", "/v1/examples/-1", {}, 404, "not_found", "0..999"),
    ("a word as example index", "get", "/v1/examples/first", {}, 422, "invalid_request", "path.index"),
    ("GET on a POST route", "get", "/v1/interpret", {}, 405, "method_not_allowed", "Not Allowed"),
    ("an unknown route", "get", "/v1/../../etc/passwd", {}, 404, "not_found", "Not Found"),
]
# Bad files are not bad requests: the study is answered 200 and the file reported skipped.
FILE_CASES: list[tuple[str, list[tuple[str, bytes]]]] = [
    ("a path-traversal file name", [("../../../etc/passwd", b"root:x:0:0")]),
    ("a 600-character file name", [("a" * 600 + ".dcm", b"\x00" * 200)]),
    ("control characters in a file name", [("evil\r\nX-Injected: 1\x00.mp4", b"\x00\x00")]),
    ("zero-byte files", [("empty.dcm", b""), ("empty.mp4", b"")]),
]

_EXC_NAME = re.compile(r"\b[A-Z][A-Za-z]+(?:Error|Exception|Exit)\b")


def internal_text(body: str, served: Any, extra: tuple[str, ...] = ()) -> list[str]:
    """What in an error body is the server's own: paths, host names, tracebacks, library
    exception names, S3 client text."""
    host = urlparse(served.url)
    needles = [
        str(ROOT),
        str(Path(sys.prefix)),
        "site-packages",
        "/tmp/",
        "Traceback",
        'File "',
        "curl",
        "AWS Error",
        "ServeReplica",
        "actor_id",
        host.hostname or "",
        f":{host.port}",
        socket.gethostname() if len(socket.gethostname()) >= 4 else "",
        *extra,
    ]
    found = [n for n in needles if n and n in body]
    found += _EXC_NAME.findall(body)
    found += re.findall(r"\bray\.[a-z_]+", body)
    return found


def _check_error(r: requests.Response, served: Any, status: int, code: str, names: str) -> None:
    assert r.status_code == status, (r.status_code, r.text[:500])
    body = r.json()
    assert body["code"] == code, body
    assert names in body["reason"], body["reason"]
    assert internal_text(r.text, served) == [], r.text[:500]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_abusive_requests_are_4xx_naming_the_field_without_internals(served, case):
    _, method, path, kwargs, status, code, names = case
    kwargs = {**kwargs, "headers": {**served.headers(), **kwargs.get("headers", {})}}
    r = getattr(requests, method)(f"{served.url}{path}", timeout=T, **kwargs)
    _check_error(r, served, status, code, names)


def test_there_are_at_least_30_abusive_requests_and_none_hurt_a_worker(served, study_dirs):
    assert len(CASES) + len(FILE_CASES) >= 30
    items = read_study(study_dirs[1])
    files = [("files", it) for it in items]
    r = requests.post(f"{served.url}/v1/interpret", files=files, headers=served.headers(), timeout=240)
    assert r.status_code == 200 and r.json()["status"] == "ok"


@pytest.mark.parametrize("case", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_hostile_file_names_and_empty_files_are_reported_not_errors(served, study_dirs, case):
    _, bad = case
    good = read_study(study_dirs[2])[:1]
    files = [("files", it) for it in [*bad, *good]]
    r = requests.post(f"{served.url}/v1/interpret", files=files, headers=served.headers(), timeout=240)
    assert r.status_code == 200, r.text[:500]
    got = r.json()
    assert [f["status"] for f in got["files"]] == ["skipped"] * len(bad) + ["used"]
    for f in got["files"][: len(bad)]:
        assert f["reason"] and f["code"], f
        assert "/" not in f["path"] and "\\" not in f["path"] and len(f["path"]) <= 255, f["path"]
        assert not re.search(r"[\x00-\x1f]", f["path"]), f["path"]


def test_s3_objects_that_do_not_exist_are_reported_without_the_stores_text(served, s3_server):
    uris = ["s3://no-such-bucket-here/a.dcm", "s3://serve-abuse/missing.dcm"]
    import boto3

    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="serve-abuse")
    r = requests.post(f"{served.url}/v1/interpret", json={"files": uris}, headers=served.headers(), timeout=T)
    assert r.status_code == 200, r.text[:500]
    got = {f["path"]: f for f in r.json()["files"]}
    assert {got[u]["code"] for u in uris} == {"not_found"}
    assert internal_text(r.text, served, (urlparse(s3_server).netloc,)) == []


# ------------------------------------------------------------------------- slow clients
PART = b'--bnd\r\nContent-Disposition: form-data; name="files"; filename="a.dcm"\r\n\r\n'


def _open_upload(served: Any, path: str = "/v1/interpret", declared: int = 200_000) -> socket.socket:
    """A connection that sent its headers and the start of a multipart body, and no more."""
    u = urlparse(served.url)
    s = socket.create_connection((u.hostname, u.port), timeout=T)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\nX-API-Key: {served.key}\r\n"
        f"Content-Type: multipart/form-data; boundary=bnd\r\nContent-Length: {declared}\r\n\r\n"
    )
    s.sendall(head.encode() + PART)
    return s


def _answer(s: socket.socket, trickle: bool, limit_s: float = 90.0) -> tuple[int, dict[str, str], bytes]:
    """Wait for the server's answer, sending one more body byte a second when ``trickle``;
    ``(status, headers, body)``, status 0 if the server closed the connection without one."""
    data, sent, end = b"", 0, time.monotonic() + limit_s
    while time.monotonic() < end:
        ready, _, _ = select.select([s], [], [], 1.0)
        if ready:
            try:
                chunk = s.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
            if _complete(data):
                break
        elif trickle:
            try:
                s.sendall(b"x")
                sent += 1
            except OSError:  # the server closed the connection: read what it said
                continue
    s.close()
    if not data.startswith(b"HTTP/1.1 "):
        return 0, {}, data
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def _complete(data: bytes) -> bool:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    return m is not None and len(body) >= int(m.group(1))


def _log_lines(needle: str) -> list[str]:
    import ray

    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    out = []
    for p in logs.rglob("*"):
        if p.is_file() and p.stat().st_size < 50 << 20:
            out += [line for line in p.read_text(errors="ignore").splitlines() if needle in line]
    return out


def _wait_for(fn, what: str, limit_s: float = 60.0) -> Any:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if got := fn():
            return got
        time.sleep(0.5)
    pytest.fail(f"never happened within {limit_s:g} s: {what}")


def test_a_client_that_stops_sending_its_body_is_cut_off_with_408_and_a_log_line(served):
    status, headers, body = _answer(_open_upload(served), trickle=False)
    assert status == 408, (status, body[:300])
    got = json.loads(body)
    assert got["code"] == "body_timeout" and f"{LIMITS['body_idle_timeout_s']:g} s" in got["reason"]
    lines = _wait_for(lambda: _log_lines("cut off POST /v1/interpret"), "the cut-off's log line")
    assert any("nothing arrived" in line for line in lines)


def test_trickling_uploads_over_the_bound_get_503_then_all_are_cut_off(served, study_dirs):
    """max_concurrent_uploads (6 here) clients trickle a byte a second; each is cut off with 408
    once body_timeout_s has passed (or refused with 503 if a probe took its slot first), the
    health check answers meanwhile, and the slots come back.
    Uploads beside them are refused with 503 and Retry-After when they reach a full ingress
    replica, and otherwise answered as ordinary requests, never a 5xx. (Whether they reach the
    full replica depends on Serve's proxy: in 2 of 3 full-suite runs on 2026-12-05 none did, so
    the bound itself is asserted without Ray in test_guards.py.)"""
    n = LIMITS["max_concurrent_uploads"]
    answers: list[tuple[int, dict[str, str], bytes]] = []
    socks = [_open_upload(served) for _ in range(n)]
    threads = [threading.Thread(target=lambda s=s: answers.append(_answer(s, trickle=True))) for s in socks]
    for t in threads:
        t.start()

    seen: list[tuple[int, str]] = []

    def refused() -> requests.Response | None:
        # A cheap request with a body: it needs a slot like any upload.
        r = requests.post(f"{served.url}/v1/search/reports", data=b"{", headers=served.headers(), timeout=T)
        seen.append((r.status_code, r.text[:60]))
        return r if r.status_code == 503 else None

    end = time.monotonic() + LIMITS["body_timeout_s"]
    while (r := refused()) is None and time.monotonic() < end:  # a 503 Response is falsy
        time.sleep(0.3)
    assert all(code == 503 or 400 <= code < 500 for code, _ in seen), seen
    if r is not None:
        assert r.json()["code"] == "busy" and r.headers["Retry-After"] == "5"
        assert internal_text(r.text, served) == []
    assert requests.get(f"{served.url}/healthz", timeout=T).status_code == 200
    for t in threads:
        t.join()
    # A trickler is cut off with 408; one whose headers reached the replica after a probe took
    # the last slot is refused with 503 like any upload over the bound (seen once in CI).
    codes = {408: "body_timeout", 503: "busy"}
    assert all(a[0] in codes and json.loads(a[2])["code"] == codes[a[0]] for a in answers), [
        a[:2] for a in answers
    ]
    assert len(answers) == n and any(a[0] == 408 for a in answers), [a[:2] for a in answers]
    # The slots came back: a study is served again.
    files = [("files", it) for it in read_study(study_dirs[0])]
    r = requests.post(f"{served.url}/v1/interpret", files=files, headers=served.headers(), timeout=240)
    assert r.status_code == 200, r.text[:300]


# ----------------------------------------------------- a second app: hostile study, faults
@pytest.fixture(scope="module")
def second(served, serve_bundle, tmp_path_factory):
    """A second application beside the suite's, on /second: the same graph with limits a whole
    hostile study fits (128 files, 32 MB), whose Preprocess is the real one except on files
    that start with the markers of tests/serve/faults.py; ``(url, record of fault events)``."""
    from ray import serve

    from serve.app import build_graph
    from tests.serve.faults import faulty_preprocess

    record = tmp_path_factory.mktemp("faults") / "faults.log"
    record.touch()
    args = {
        **LIMITS,
        "max_files": 128,
        "max_upload_mb": 32,
        "bundle_uri": str(serve_bundle),
        "api_key_file": str(served.key_file),
    }
    app = build_graph(args, TEST_OPTIONS, classes={"Preprocess": faulty_preprocess(str(record))})
    serve.run(app, name="second", route_prefix="/second", logging_config={"enable_access_log": False})
    try:
        yield f"{served.url}/second", record
    finally:
        serve.delete("second")


def test_a_hostile_study_is_answered_with_a_reason_for_every_bad_file(served, second, interpreter, tmp_path):
    """The hostile corpus (tests/hostile_corpus.py: ~90 files in ~30 classes, good ones mixed
    in) uploaded as one study: 200, each bad file skipped with its class's specific reason,
    the good files interpreted, all as the library interprets the same files in one process."""
    from tests.hostile_corpus import EXPECTED_REASON, GENERIC_REASON, write_hostile_corpus

    url, _ = second
    corpus = write_hostile_corpus(tmp_path / "study")
    items = [(f.path.name, f.path.read_bytes()) for f in corpus]
    r = requests.post(
        f"{url}/v1/interpret", files=[("files", it) for it in items], headers=served.headers(), timeout=300
    )
    assert r.status_code == 200, r.text[:500]
    got = r.json()
    status = {f["path"]: f for f in got["files"]}
    assert len(status) == len(corpus)
    for f in corpus:
        s = status[f.path.name]
        if f.expect_ok:
            assert s["status"] == "used", (f.cls, s)
            continue
        assert s["status"] == "skipped" and s["code"], (f.cls, s)
        assert not re.search(GENERIC_REASON, s["reason"]), (f.cls, s)
        if f.cls in EXPECTED_REASON:
            assert re.search(EXPECTED_REASON[f.cls], s["reason"], re.I), (f.cls, s)
    good = [f.path.name for f in corpus if f.expect_ok]
    assert got["status"] == "ok" and [v["file"] for v in got["videos"]] == good
    assert equal_results(got, interpreter.interpret(items).to_dict()) == []


def _preprocess_replicas(app: str) -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith(f"SERVE_REPLICA::{app}#Preprocess#")
    )


def test_a_poison_request_costs_one_replica_restart_and_a_timed_out_one_is_cancelled(
    served, second, study_dirs
):
    from ray import serve

    from tests.serve.faults import CRASH, HANG, events

    url, record = second
    good = read_study(study_dirs[1])
    (first,) = _preprocess_replicas("second")
    poison = [good[0], ("IM-poison.dcm", CRASH + b"\x00" * 64), good[1]]
    r = requests.post(
        f"{url}/v1/interpret", files=[("files", it) for it in poison], headers=served.headers(), timeout=240
    )
    assert r.status_code == 502, r.text[:500]
    body = r.json()
    assert body["code"] == "replica_crashed" and "IM-poison.dcm" in body["reason"]
    assert internal_text(r.text, served) == []
    assert [e for e in events(record) if e.startswith("crash")] != []

    def recovered() -> bool:
        dep = serve.status().applications["second"].deployments["Preprocess"]
        now = _preprocess_replicas("second")
        return dep.status == "HEALTHY" and dep.replica_states.get("RUNNING") == 1 and first not in now

    _wait_for(recovered, "a new Preprocess replica", limit_s=240)
    r = requests.post(
        f"{url}/v1/interpret", files=[("files", it) for it in good], headers=served.headers(), timeout=240
    )
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text[:300]
    # One poison request, one crash: the ingress did not send it to a second replica.
    assert len([e for e in events(record) if e.startswith("crash")]) == 1, events(record)
    assert len(_log_lines("not retried (the input may have caused it)")) >= 1

    # A request that times out has its work cancelled down the graph, not left running.
    r = requests.post(
        f"{url}/v1/interpret",
        files=[("files", good[0]), ("files", ("slow.dcm", HANG))],
        headers={**served.headers(), "X-Request-Timeout": "3"},
        timeout=T,
    )
    assert r.status_code == 408 and r.json()["code"] == "request_timeout", r.text[:300]
    _wait_for(lambda: "cancelled" in events(record), "the Preprocess call's cancellation")
