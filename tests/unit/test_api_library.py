"""The HTTP API's library side without Ray or a server: the time budget, the answers shaped
from the graph's arrays, the DICOMweb format choice, error bodies and the start-up log."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from echoprime.api.answers import check_texts, no_views, text_embeddings, video_embeddings
from echoprime.api.archive import format_of
from echoprime.api.auth import ApiKeyAuth
from echoprime.api.errors import ApiError, http_error, internal_error, validation_error
from echoprime.api.guards import describe_input, input_digests, time_budget, timed_out
from echoprime.api.security import log_exposure
from echoprime.io import FileReport
from echoprime.taxonomy import VIEWS


def test_the_time_budget_counts_from_arrival_and_takes_the_clients_shorter_one():
    timeout, budget = time_budget(30.0, None, time.monotonic() - 10)
    assert 19.5 < timeout <= 20.0 and budget == 30.0
    assert time_budget(30.0, "2.5", None) == (2.5, 2.5)
    assert time_budget(30.0, "99", None) == (30.0, 30.0)
    for bad in ("0", "-1", "nan", "soon", "x" * 100):
        with pytest.raises(ApiError) as e:
            time_budget(30.0, bad, None)
        assert (e.value.status, e.value.code) == (422, "invalid_header") and len(e.value.reason) < 120
    assert (timed_out(2.5).status, str(timed_out(2.5))) == (
        408,
        "408 request_timeout: the request took longer than 2.5 s",
    )


def test_a_failed_input_is_named_to_the_client_and_digested_for_the_log():
    study = [(f"f{i}.dcm", bytes(i)) for i in range(7)]
    assert describe_input(study) == "files f0.dcm, f1.dcm, f2.dcm, f3.dcm, f4.dcm and 2 more"
    assert describe_input(None) == "input"
    digests = input_digests(study, limit=2)
    assert digests.startswith("0B:") and digests.endswith(" +5") and "f0" not in digests


def test_video_answers_pair_each_used_file_with_its_embedding_and_view():
    files = [
        FileReport("a.dcm", "used"),
        FileReport("b.txt", "skipped", "not a video"),
        FileReport("c.mp4", "used"),
    ]
    probs = np.eye(len(VIEWS), dtype=np.float32)[[2, 5]]
    got = video_embeddings(files, np.ones((2, 3), np.float32), probs)
    assert [v["file"] for v in got["videos"]] == ["a.dcm", "c.mp4"]
    assert [v["view"] for v in got["videos"]] == [VIEWS[2], VIEWS[5]] and got["videos"][0][
        "confidence"
    ] == 1.0
    assert [f["status"] for f in got["files"]] == ["used", "skipped", "used"]
    assert video_embeddings(files[1:2], [], [])["videos"] == [] and no_views().shape == (0, len(VIEWS))
    assert text_embeddings(np.zeros((2, 4), np.float32))["dim"] == 4


def test_texts_over_the_limit_are_413_by_index():
    check_texts(["short"], 10)
    with pytest.raises(ApiError) as e:
        check_texts(["ok", "x" * 11, "y" * 12], 10)
    assert (e.value.status, e.value.code, e.value.reason) == (
        413,
        "payload_too_large",
        "reports [1, 2] exceed 10 characters",
    )


@pytest.mark.parametrize(
    ("accept", "fmt"),
    [
        ("application/pdf", "pdf"),
        ("text/html, application/dicom;q=0.9", "sr"),
        ("APPLICATION/FHIR+JSON", "fhir"),
        ("*/*", "json"),
        ("", "json"),
    ],
)
def test_the_accept_header_picks_the_format(accept, fmt):
    assert format_of(accept) == fmt


def test_error_bodies_name_the_field_and_keep_internals_in_the_log(caplog):
    assert http_error(404, "Not Found") == {"code": "not_found", "reason": "Not Found"}
    assert http_error(418, "teapot")["code"] == "http_418"
    body = validation_error([{"loc": ("query", "previews"), "msg": "Input should be a valid boolean"}])
    assert body["reason"] == "query.previews: Input should be a valid boolean"
    assert body["errors"] == [{"loc": ["query", "previews"], "msg": "Input should be a valid boolean"}]
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        body = internal_error("POST", "/v1/interpret", RuntimeError("/secret/path"))
    assert body["code"] == "internal_error" and "/secret" not in body["reason"]
    incident = body["reason"].split("incident ")[1].rstrip(")")
    assert any(incident in r.getMessage() for r in caplog.records)


def test_the_start_up_log_says_who_can_reach_the_server(caplog):
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        log_exposure(ApiKeyAuth(disabled=True), "0.0.0.0", None)
        log_exposure(ApiKeyAuth(key="k"), "127.0.0.1", ["localhost", "127.0.0.1"])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("authentication is OFF on 0.0.0.0" in m for m in warned)
    assert any("no Host allow-list" in m for m in warned)
    assert any("answering Host localhost, 127.0.0.1" in r.getMessage() for r in caplog.records)
