"""The study viewer in a real browser: Debian's chromium, driven headless by Playwright."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest

from tests.fixtures_bundle import original_ids
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
                view: v.dataset.view, file: v.querySelector('.name').textContent,
                src: v.querySelector('img.strip').getAttribute('src') })),
            report: [...document.querySelectorAll('#report li')].map(li => ({
                section: li.dataset.section, text: li.querySelector('.section-text').textContent })),
            metrics: Object.fromEntries([...document.querySelectorAll('#metrics tbody tr[data-phenotype]')].map(
                tr => [tr.dataset.phenotype, tr.querySelector('.decision').textContent])),
            findings: Object.fromEntries([...document.querySelectorAll('#metrics tbody tr[data-phenotype]')].map(
                tr => [tr.dataset.phenotype, {
                    value: tr.querySelector('.value').textContent,
                    calibrated: tr.querySelector('.calibrated').textContent,
                    grade: tr.querySelector('.grade .grade-label')?.textContent
                        ?? tr.querySelector('.grade').textContent,
                    disagree: tr.querySelector('.grade .disagree') !== null }])),
            top: [...document.querySelectorAll('#videos .video.top')].map(v => Number(v.dataset.index)),
            status: document.querySelector('#status').textContent,
            cells: document.querySelectorAll('#heat td.cell').length,
            rows: [...document.querySelectorAll('#heat tbody tr')].map(tr => tr.dataset.section),
            sep: (() => { const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); let n = 0;
                while (w.nextNode()) n += w.currentNode.nodeValue.includes('[SEP]') ? 1 : 0; return n; })(),
            header: document.querySelector('#model-info').textContent,
            body: document.body.innerText,
            local: localStorage.length,
        })"""
    )


def _frames_move(page) -> bool:
    """Whether the first clip's canvas shows different pixels over half a second."""
    seen = set()
    for _ in range(10):
        seen.add(
            page.evaluate(
                """() => { const c = document.querySelector('#videos canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                let h = 0; for (let i = 0; i < d.length; i += 1) h = (h * 31 + d[i]) >>> 0; return h; }"""
            )
        )
        page.wait_for_timeout(50)
    return len(seen) > 1


def _fixed(x: float, digits: int) -> str:
    """JavaScript's ``x.toFixed(digits)``: the exact binary value rounded half away from zero
    (Python's format rounds half to even, so 35.25 would read 35.2 here and 35.3 in the page)."""
    return str(Decimal(x + 0.0).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_UP))


def test_upload_a_study_and_read_the_rendered_report(served, page, study_dirs, interpreter, serve_bundle):
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
    # Issue 24: each clip loops (a WebP filmstrip the page steps through), the report reads
    # without [SEP] or section headers, the heat strip has a cell per section x video, and
    # the page names neither a server path nor a bank study's original id.
    assert all(v["src"].startswith("data:image/webp;base64,") for v in got["videos"])
    assert _frames_move(page)
    clean = [
        " ".join(s["text"].replace("[SEP]", " ").split()).removeprefix(f"{s['section']}:").strip()
        for s in want["report"]
    ]
    assert got["report"] == [
        {"section": s["section"], "text": t} for s, t in zip(want["report"], clean, strict=True)
    ]
    assert got["sep"] == 0
    assert got["cells"] == len(want["evidence"]) * len(want["videos"])
    assert set(got["rows"]) == set(want["evidence"])
    assert str(serve_bundle) not in got["body"] and str(serve_bundle.parent) not in got["body"]
    assert "sha256" in got["header"] and "version" in got["header"]
    assert not [s for s in original_ids(300) if s in got["body"]]
    assert got["local"] == 0 and page.evaluate("sessionStorage.getItem('echoprime-api-key')") == served.key
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
    # The truth beside each section and finding, agreement marked; each clip's true view.
    assert page.locator("#report li .truth-text").count() == len(got["report"])
    assert "Left Ventricle" in page.evaluate(
        "[...document.querySelectorAll('#report li')].map(l => l.dataset.section)"
    )
    assert page.locator("#report .section-head .agree").count() > 0
    assert page.locator("#metrics tr[data-truth=agree], #metrics tr[data-truth=differ]").count() > 10
    assert page.locator("#videos .view .agree").count() == len(got["videos"])
    assert _frames_move(page) and got["sep"] == 0


def test_a_wrong_key_shows_the_reason(served, page, study_dirs):
    page.goto(served.url + "/")
    page.evaluate("sessionStorage.clear()")
    page.fill("#api-key", "not-the-key")
    page.set_input_files("#files", [str(p) for p in sorted(study_dirs[1].iterdir())])
    page.click("#interpret")
    page.wait_for_selector("body[data-state=error]")
    assert "401 unauthorized" in page.text_content("#status")
    assert "refused the API key" in page.text_content("#status")
    assert page.get_attribute("#status", "data-kind") == "auth"
