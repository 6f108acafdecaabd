"""The ingress's guards without Ray: JSON parsing, body timeouts, upload slots, retries and
cancellation down the graph, S3 failures kept out of answers, and Preprocess stopping on cancel."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
from typing import Any

import numpy as np
import pytest

from echoprime.api.answers import bundle_summary
from echoprime.api.errors import ApiError
from echoprime.api.guards import UploadSlots
from echoprime.api.uploads import Limits, fetch_s3, parse_json, read_body
from serve.args import ServeArgs
from serve.ingress import Ingress

LIMITS = Limits(
    max_upload_bytes=1000,
    max_files=3,
    max_frames_per_file=10,
    request_timeout_s=30,
    body_timeout_s=0.6,
    body_idle_timeout_s=0.2,
)


def _raises(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(*args)
    return e.value


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 50_000 + b"]" * 50_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"{nope",
        b"",
        b"\xff\xfe\x00garbage",
        b'{"files": ["a"]} trailing',
    ],
)
def test_bodies_that_are_not_json_are_422_without_the_parsers_internals(body):
    e = _raises(parse_json, body)
    assert (e.status, e.code) == (422, "invalid_json")
    assert "Error" not in e.reason and "recursion" not in e.reason.lower()


def test_huge_and_non_finite_numbers_parse_to_floats_the_models_refuse_naming_the_field():
    from pydantic import ValidationError

    from echoprime.api.errors import describe_errors
    from echoprime.api.schemas import SearchRequest

    got = parse_json(
        b'{"k": ' + b"9" * 5000 + b', "embedding": [NaN, -Infinity, 1e999, -' + b"1" * 5000 + b"]}"
    )
    assert got["k"] == float("inf") and np.isnan(got["embedding"][0])
    with pytest.raises(ValidationError) as e:
        SearchRequest.model_validate(got)
    got_by_field = {".".join(map(str, err["loc"])): err["msg"] for err in e.value.errors()}
    assert got_by_field["k"] == "Input should be a valid integer"
    assert [got_by_field[f"embedding.{i}"] for i in range(4)] == ["Input should be a finite number"] * 4
    assert describe_errors(e.value.errors()).startswith("embedding.0: Input should be a finite number; ")
    assert parse_json(b'{"k": 12345678901234567890}') == {"k": 12345678901234567890}


class _Request:
    """The part of a Starlette request that the body readers use, fed by a test."""

    method, headers = "POST", {}

    class url:
        path = "/v1/interpret"

    def __init__(self, pieces: list[tuple[float, bytes]]) -> None:
        self.pieces = pieces  # (seconds to wait before it, piece)

    async def stream(self):
        for wait, piece in self.pieces:
            await asyncio.sleep(wait)
            yield piece


def test_a_stalled_or_trickling_body_is_cut_off_with_408_and_a_log_line(caplog):
    caplog.set_level(logging.WARNING, logger="ray.serve")
    stalled = _Request([(0, b"x" * 10), (5.0, b"y")])
    e = asyncio.run(_raises_async(read_body(stalled, 1000, LIMITS)))
    assert (e.status, e.code) == (408, "body_timeout") and "nothing arrived for 0.2 s" in e.reason
    trickle = _Request([(0.1, b"z")] * 50)  # never idle long enough, but never done
    e = asyncio.run(_raises_async(read_body(trickle, 1000, LIMITS)))
    assert (e.status, e.code) == (408, "body_timeout") and "longer than 0.6 s" in e.reason
    lines = [r.getMessage() for r in caplog.records if "cut off" in r.getMessage()]
    assert len(lines) == 2 and "POST /v1/interpret" in lines[0] and "10 bytes received" in lines[0]
    assert asyncio.run(read_body(_Request([(0.05, b"ab")] * 3), 1000, LIMITS)) == b"ababab"
    e = asyncio.run(_raises_async(read_body(_Request([(0, b"q" * 600)] * 2), 1000, LIMITS)))
    assert (e.status, e.code) == (413, "payload_too_large")


async def _raises_async(coro) -> ApiError:
    with pytest.raises(ApiError) as e:
        await coro
    return e.value


def test_upload_slots_refuse_the_one_over_the_limit_with_503_and_retry_after():
    slots = UploadSlots(2)

    async def run() -> ApiError:
        async with slots.slot(), slots.slot():
            assert slots.active == 2
            try:
                async with slots.slot():
                    pytest.fail("a third slot was given")
            except ApiError as e:
                return e
        raise AssertionError("unreachable")

    e = asyncio.run(run())
    assert (e.status, e.code, e.headers()) == (503, "busy", {"Retry-After": "5"})
    assert slots.active == 0  # every slot came back


class _Response:
    """A DeploymentResponse's surface: awaited for a value, or cancelled."""

    def __init__(self, outcome: Any, delay: float = 0.0) -> None:
        self.outcome, self.delay, self.cancelled = outcome, delay, False

    def __await__(self):
        return self._result().__await__()

    async def _result(self) -> Any:
        await asyncio.sleep(self.delay)
        if isinstance(self.outcome, BaseException):
            raise self.outcome
        return self.outcome

    def cancel(self) -> None:
        self.cancelled = True


class _Method:
    def __init__(self, *outcomes: Any, delay: float = 0.0) -> None:
        self.outcomes, self.delay, self.sent = list(outcomes), delay, []

    def remote(self, *args: Any) -> _Response:
        r = _Response(self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0], self.delay)
        self.sent.append(r)
        return r


def _ingress(retries: int = 2) -> Ingress:
    ing = object.__new__(Ingress)  # the plumbing only: no handles, bundle or key
    ing.args = ServeArgs(bundle_uri="x", auth_disabled=True, retries=retries)
    ing.limits = Limits.from_args(ing.args)
    return ing


def _died(why: str):
    from ray.exceptions import RayActorError

    return RayActorError(error_msg=f"class_name: ServeReplica:echoprime:Preprocess\n{why}")


def test_a_replica_stopped_from_outside_is_retried_a_bounded_number_of_times(monkeypatch):
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    killed = _died("The actor is dead because it was killed by `ray.kill`.")
    m = _Method(killed, "ok")
    assert asyncio.run(_ingress().call(m))[1] == "ok" and len(m.sent) == 2
    m = _Method(killed)
    e = asyncio.run(_raises_async(_ingress(retries=2).call(m)))
    assert (e.status, e.code) == (503, "unavailable") and len(m.sent) == 3  # 1 + 2 retries
    assert e.retry_after_s == 5 and "ray" not in e.reason.lower()


async def _no_sleep(_s: float) -> None:
    return None


def test_a_request_whose_replica_crashed_is_not_retried_and_names_its_files(caplog):
    caplog.set_level(logging.ERROR, logger="ray.serve")
    crash = _died("The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR")
    m = _Method(crash, "ok")
    study = [("IM0001.dcm", b"\x00" * 10), ("jane-doe-echo.mp4", b"\x01" * 20)]
    e = asyncio.run(_raises_async(_ingress(retries=5).call(m, study, study=study)))
    assert len(m.sent) == 1  # one crash, not retries x crashes
    assert (e.status, e.code) == (502, "replica_crashed")
    assert "IM0001.dcm" in e.reason and "jane-doe-echo.mp4" in e.reason
    assert "Worker" not in e.reason and "ServeReplica" not in e.reason
    (line,) = [r.getMessage() for r in caplog.records]
    assert "Preprocess replica died" in line and "jane-doe" not in line and "10B:" in line


def test_a_timed_out_request_cancels_every_call_it_made_down_the_graph():
    ing = _ingress()
    views, enc, att = _Method("probs", delay=0.05), _Method("emb", delay=5.0), _Method("att", delay=5.0)

    def chain(remote):
        probs = remote(views, "clips")
        return remote(att, remote(enc, "clips"), probs)

    e = asyncio.run(_raises_async(ing.bounded(ing.retrying(chain), "0.2")))
    assert (e.status, e.code) == (408, "request_timeout")
    assert enc.sent[0].cancelled and att.sent[0].cancelled and views.sent[0].cancelled


def test_a_failed_call_cancels_its_siblings():
    ing = _ingress()
    slow, bad = _Method("emb", delay=5.0), _Method(ApiError(422, "invalid_embedding", "x"))

    async def run() -> ApiError:
        return await _raises_async(
            ing.retrying(lambda remote: asyncio.gather(remote(slow, 1), remote(bad, 2)))
        )

    assert asyncio.run(run()).code == "invalid_embedding" and slow.sent[0].cancelled


@pytest.mark.parametrize("value", ["0", "-3", "nan", "inf", "1e999", "soon", "x" * 500])
def test_a_bad_request_timeout_header_is_422_naming_it(value):
    ing = _ingress()

    async def never() -> None:
        await asyncio.sleep(10)

    e = asyncio.run(_raises_async(ing.bounded(never(), value)))
    assert (e.status, e.code) == (422, "invalid_header") and e.reason.startswith("X-Request-Timeout")
    assert len(e.reason) < 200


def test_s3_failures_reach_the_log_not_the_client(monkeypatch, caplog):
    with socket.socket() as s:  # a port nobody listens on: the store is unreachable
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    caplog.set_level(logging.WARNING, logger="ray.serve")
    uri = "s3://archive/patients/Jane-Doe/IM0001.dcm"
    files, failed = fetch_s3([uri], LIMITS)
    code, reason = failed[uri]
    assert files == [] and code == "unreadable"
    assert str(port) not in reason and "127.0.0.1" not in reason and "curl" not in reason.lower()
    (line,) = [r.getMessage() for r in caplog.records]
    assert str(port) in line and "bucket archive" in line  # the operator gets the details
    assert "Jane-Doe" not in line  # but not the key, which may hold a patient's name


def test_the_model_summary_names_the_bundle_by_content_not_by_path(serve_bundle):
    got = bundle_summary(str(serve_bundle))
    manifest = (serve_bundle / "manifest.json").read_bytes()
    import hashlib

    assert got["bundle"]["sha256"] == hashlib.sha256(manifest).hexdigest()
    assert (
        got["bundle"]["name"] == serve_bundle.name
        and got["bundle"]["version"] == json.loads(manifest)["created"]
    )
    text = json.dumps(got)
    assert str(serve_bundle.parent) not in text and "files" not in got


def test_preprocess_stops_at_the_file_in_hand_when_cancelled(serve_bundle, study_dirs, monkeypatch):
    """Serve cancels the replica's task when the ingress cancels the call: the files after the
    one being read are never read."""
    from serve import preprocess
    from tests.serve.conftest import read_study

    monkeypatch.setattr(preprocess, "torch_threads", lambda: 1)  # no Ray runtime here
    pre = preprocess.Preprocess(str(serve_bundle), Limits(1 << 26, 10, 10_000, 30))
    study = read_study(study_dirs[0])
    assert len(study) >= 3
    started, release, calls = threading.Event(), threading.Event(), []
    real = preprocess.read_study

    def held(items, spec):
        calls.append(items[0][0])
        started.set()
        release.wait(30)  # the first file is "being read" until the test has cancelled
        return real(items, spec)

    monkeypatch.setattr(preprocess, "read_study", held)

    async def run() -> None:
        task = asyncio.ensure_future(pre.load(study))
        await asyncio.to_thread(started.wait, 30)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert calls == [study[0][0]] and pre.stats() == {"studies": 0, "files": 0, "cancelled": 1}
    monkeypatch.setattr(preprocess, "read_study", real)
    out = asyncio.run(pre.load(study))
    assert out["clips"].shape[0] == len(study) and pre.stats()["studies"] == 1
