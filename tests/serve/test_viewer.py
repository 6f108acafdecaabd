"""The study viewer in a real browser: Debian's chromium, driven headless by Playwright."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.serve.browser import chromium_page
from tests.serve.conftest import read_study

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def page():
    with chromium_page() as pg:
        yield pg


def _rendered(page) -> dict:
    return page.evaluate(
        """() => ({
            videos: [...document.querySelectorAll('#videos .video')].map(v => ({
                view: v.querySelector('.view').textContent, file: v.querySelector('.name').textContent,
                src: v.querySelector('img').getAttribute('src') })),
            report: [...document.querySelectorAll('#report li')].map(li => ({
                section: li.dataset.section, text: li.querySelector('.section-text').textContent })),
            metrics: Object.fromEntries([...document.querySelectorAll('#metrics tbody tr')].map(
                tr => [tr.dataset.phenotype, tr.querySelector('.decision').textContent])),
            findings: Object.fromEntries([...document.querySelectorAll('#metrics tbody tr')].map(
                tr => [tr.dataset.phenotype, {
                    value: tr.querySelector('.value').textContent,
                    calibrated: tr.querySelector('.calibrated').textContent,
                    grade: tr.querySelector('.grade .grade-label')?.textContent
                        ?? tr.querySelector('.grade').textContent,
                    disagree: tr.querySelector('.grade .disagree') !== null }])),
            top: [...document.querySelectorAll('#videos .video.top')].map(v => Number(v.dataset.index)),
            status: document.querySelector('#status').textContent,
        })"""
    )


def _fixed(x: float, digits: int) -> str:
    """JavaScript's ``x.toFixed(digits)``: the exact binary value rounded half away from zero
    (Python's format rounds half to even, so 35.25 would read 35.2 here and 35.3 in the page)."""
    return str(Decimal(x + 0.0).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def test_upload_a_study_and_read_the_rendered_report(served, page, study_dirs, interpreter):
    folder = study_dirs[2]
    want = interpreter.interpret(read_study(folder)).to_dict()
    page.goto(served.url + "/")
    page.fill("#api-key", served.key)
    page.click("#save-key")
    page.wait_for_selector(
        "#model-info:has-text('bundle')"
    )  # not wait_for_function: the CSP refuses its eval
    page.set_input_files("#files", [str(p) for p in sorted(folder.iterdir())])
    page.click("#interpret")
    page.wait_for_selector("body[data-state=done]")
    got = _rendered(page)

    assert [v["view"] for v in got["videos"]] == [v["view"] for v in want["videos"]]
    assert [v["file"] for v in got["videos"]] == [v["file"] for v in want["videos"]]
    assert all(v["src"].startswith("data:image/png;base64,") for v in got["videos"])
    assert got["report"] == [{"section": s["section"], "text": s["text"]} for s in want["report"]]
    decisions = {
        p: ("–" if m["decision"] is None else "yes" if m["decision"] else "no")
        for p, m in want["metrics"].items()
    }
    assert got["metrics"] == decisions
    # Issue 23: grades, calibrated probabilities and intervals, where the result has them.
    for p, m in want["metrics"].items():
        shown = got["findings"][p]
        g, iv, cal = m.get("grade"), m.get("interval"), m.get("calibrated_probability")
        assert shown["grade"] == ("–" if g is None else g["label"] or "ungraded"), p
        assert shown["disagree"] == (g is not None and g["agrees_with_report"] is False), p
        assert shown["calibrated"] == ("–" if cal is None else _fixed(cal, 2)), p
        if m["kind"] == "regression" and m["value"] is not None:
            span = (
                f" ({_fixed(iv['low'], 1)}-{_fixed(iv['high'], 1)})"
                if iv and None not in (iv["low"], iv["high"])
                else ""
            )
            assert shown["value"] == f"{_fixed(m['value'], 1)} {m['unit']}{span}", p
    assert got["status"].startswith(f"Interpreted {len(want['videos'])} of {len(want['files'])}")

    # Selecting a section highlights the video that weighed most for it.
    for s in want["report"][:3]:
        page.click(f"#report li[data-section='{s['section']}']")
        ev = want["evidence"][s["section"]]
        top = {e["video"] for e in ev if e["weight"] >= ev[0]["weight"]}
        assert set(_rendered(page)["top"]) == top, s["section"]


def test_pick_a_synthetic_example(served, page):
    page.goto(served.url + "/")
    page.fill("#api-key", served.key)
    page.click("#save-key")
    page.fill("#example-index", "7")
    page.click("#example")
    page.wait_for_selector("body[data-state=done]")
    got = _rendered(page)
    assert len(got["videos"]) >= 3 and len(got["report"]) > 10
    assert page.is_visible("#truth-panel") and "Left Ventricle" in page.text_content("#truth")


def test_a_wrong_key_shows_the_reason(served, page, study_dirs):
    page.goto(served.url + "/")
    page.evaluate("sessionStorage.clear()")
    page.fill("#api-key", "not-the-key")
    page.set_input_files("#files", [str(p) for p in sorted(study_dirs[1].iterdir())])
    page.click("#interpret")
    page.wait_for_selector("body[data-state=error]")
    assert "401 unauthorized" in page.text_content("#status")
