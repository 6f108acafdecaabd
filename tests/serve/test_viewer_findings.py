"""The viewer's findings table in a real browser, without Ray: Debian's chromium loads the page's
own files (with the server's Content-Security-Policy) from a routed origin, and the API answers
with hand-made results (tests/fixtures_graded.py), so every case issue 23 adds is shown: grades
with their distribution, calibrated probabilities, intervals, heart rate, a disagreement with
the report text, and a converted release that has none of them. The served viewer on a real
result is tests/serve/test_viewer.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from echoprime.api.security import CSP
from serve.routes import STATIC
from tests.fixtures_graded import graded_result, release_result
from tests.serve.browser import chromium_page

ORIGIN = "http://viewer.test"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    with chromium_page() as pg:
        pg.set_default_timeout(30_000)
        yield pg


def _open(page: Any, result: Callable[[], dict]) -> tuple[dict, list[str]]:
    """Load the viewer, interpret one (fake) file and read the findings table back; with the
    console's errors (a CSP violation is one)."""
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    def handle(route: Any) -> None:
        path = route.request.url.removeprefix(ORIGIN).split("?")[0]
        headers = {"content-security-policy": CSP}
        if path in ("/", "/static/viewer.js", "/static/viewer.css"):
            f = STATIC / ("index.html" if path == "/" else path.removeprefix("/static/"))
            route.fulfill(status=200, body=f.read_bytes(), content_type=_TYPES[f.suffix], headers=headers)
        elif path == "/v1/interpret":
            route.fulfill(
                status=200, body=json.dumps(result()), content_type="application/json", headers=headers
            )
        elif path == "/v1/model":
            body = {"bundle": {"name": "b", "sha256": "0" * 64}, "versions": {}, "label_sets": {}}
            route.fulfill(status=200, body=json.dumps(body), content_type="application/json", headers=headers)
        else:
            route.fulfill(status=404, body="{}", content_type="application/json", headers=headers)

    page.unroute("**/*")
    page.route("**/*", handle)
    page.goto(ORIGIN + "/")
    page.fill("#api-key", "k")
    page.set_input_files("#files", files=[{"name": "a.dcm", "mimeType": "application/dicom", "buffer": b"x"}])
    page.click("#interpret")
    page.wait_for_selector("body[data-state=done]")
    rows = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#metrics tbody tr[data-phenotype]')].map(tr => [
            tr.dataset.phenotype, {
                value: tr.querySelector('.value').textContent,
                probability: tr.querySelector('.probability')?.textContent ?? null,
                calibrated: tr.querySelector('.calibrated').textContent,
                calibratedTitle: tr.querySelector('.calibrated').title,
                grade: tr.querySelector('.grade .grade-label')?.textContent ?? tr.querySelector('.grade').textContent,
                shares: [...tr.querySelectorAll('.grade-dist .grade-share')].map(s => s.getBoundingClientRect().width),
                predicted: [...tr.querySelectorAll('.grade-dist .grade-share')].findIndex(s => s.classList.contains('predicted')),
                distTitle: tr.querySelector('.grade-dist')?.title ?? null,
                disagree: tr.querySelector('.grade .disagree')?.title ?? null,
                decision: tr.querySelector('.decision').textContent,
            }]))"""
    )
    return rows, errors


def test_grades_intervals_and_calibrated_probabilities_are_shown(page):
    rows, errors = _open(page, graded_result)
    assert errors == []
    assert set(rows) == set(graded_result()["metrics"])

    assert rows["ejection_fraction"]["value"] == "35.0 % (30.0-41.0)"
    assert rows["heart_rate"]["value"] == "72.0 bpm (64.0-80.0)"
    assert rows["pulmonary_artery_pressure_continuous"]["value"] == "31.0 mmHg"
    assert rows["future_finding"]["value"] == "1.0 au (0.0-2.0)"  # a finding the viewer does not know

    mr = rows["mitral_regurgitation"]
    assert (mr["probability"], mr["calibrated"], mr["decision"]) == ("0.30", "0.25", "no")
    assert "isotonic" in mr["calibratedTitle"]
    assert mr["grade"] == "mild" and mr["predicted"] == 2
    assert "mild 40 %" in mr["distTitle"] and "(10 graded)" in mr["distTitle"]
    # The bar's segments are the shares (80 px wide in all).
    assert [round(w) for w in mr["shares"]] == [8, 16, 32, 16, 8]
    assert "report text states moderate" in mr["disagree"] and "graded finding is mild" in mr["disagree"]

    assert rows["aortic_stenosis"]["grade"] == "severe" and rows["aortic_stenosis"]["disagree"] is None
    assert rows["rv_systolic_function_depressed"]["grade"] == "mildly reduced"
    assert rows["rv_systolic_function_depressed"]["calibrated"] == "–"
    assert rows["pericardial_effusion"]["grade"] == "trivial"
    ra = rows["right_atrium_dilation"]
    assert ra["grade"] == "ungraded" and ra["shares"] == [] and ra["disagree"] is None
    assert rows["pacemaker"]["grade"] == "–" and rows["pacemaker"]["calibrated"] == "0.10"
    assert page.locator("#metrics tr[data-agrees=no]").count() == 1


def test_a_converted_release_shows_dashes_where_it_has_nothing(page):
    rows, errors = _open(page, release_result)
    assert errors == []
    assert rows["ejection_fraction"]["value"] == "35.0 %"
    assert all(r["grade"] == "–" and r["calibrated"] == "–" and r["disagree"] is None for r in rows.values())
    assert rows["mitral_regurgitation"]["decision"] == "no"
