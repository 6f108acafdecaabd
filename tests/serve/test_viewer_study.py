"""The study viewer of issue 24 in a real browser, without Ray: Debian's chromium loads the
page's own files with the server's Content-Security-Policy from a routed origin and a faked API
answers with hand-made results (tests/fixtures_viewer.py: real loops of moving clips, every
finding, weights for every section x video, a synthetic example's truth). Each point of the
issue is checked from the DOM, and from pixels where that is what matters (a loop moves).
Screenshots at both widths are kept under build/test-artifacts/viewer/ (not committed). The
served viewer on a real result is tests/serve/test_viewer.py."""

from __future__ import annotations

import base64
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from serve.routes import STATIC
from tests.fixtures_viewer import BANK_ID, example_for, study_result
from tests.serve.browser import ARGS, CHROMIUM
from tests.serve.viewer_harness import WATCH, FakeApi, local_server, open_viewer, run_example

ARTIFACTS = Path(os.environ.get("ECHOPRIME_TEST_ARTIFACTS", "build/test-artifacts")) / "viewer"
N = 6


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    import shutil

    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser) -> Iterator[Any]:
    """A fresh 1280 x 800 page (its own storage) that records console errors, page errors and
    CSP violations; each test ends by checking there were none."""
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    pg.set_default_timeout(30_000)
    pg.add_init_script(WATCH)
    pg.errors = []
    pg.on("console", lambda m: pg.errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def result() -> dict:
    return study_result(N)


def _clean(page: Any, expected_errors: int = 0) -> None:
    assert page.evaluate("window.__violations") == []
    assert len(page.errors) == expected_errors, page.errors


def _example(page: Any, result: dict, example: dict | None = None) -> FakeApi:
    ex = example or example_for(result)
    api = FakeApi(interpret=lambda: (200, result), example=lambda i: (200, ex))
    open_viewer(page, api)
    run_example(page)
    assert page.get_attribute("body", "data-state") == "done", page.text_content("#status")
    return api


def _canvas_pixels(page: Any, j: int) -> str:
    return page.evaluate(
        f"""() => {{ const c = document.querySelectorAll('#videos canvas')[{j}];
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let h = 0; for (let i = 0; i < d.length; i += 1) h = (h * 31 + d[i]) >>> 0;
            return h + ':' + c.dataset.frame; }}"""
    )


def _frame(page: Any, j: int) -> int:
    return int(page.evaluate(f"document.querySelectorAll('#videos canvas')[{j}].dataset.frame"))


def test_loops_move_pause_step_and_play_in_step(page, result):
    _example(page, result)
    assert page.locator("#videos canvas").count() == N
    # The loop moves: its pixels change over time (the server's frames differ).
    seen = {_canvas_pixels(page, 0)}
    for _ in range(10):
        page.wait_for_timeout(60)
        seen.add(_canvas_pixels(page, 0))
    assert len({s.split(":")[0] for s in seen}) >= 3, seen
    info = page.text_content("#videos .video .frame")
    assert re.fullmatch(r"frame \d+/16 · 25\.0 fps", info), info  # 50 fps file, every 2nd frame
    # A click pauses: the frame stays; "." and "," step one frame on and back.
    page.click("#videos canvas >> nth=0")
    paused = _frame(page, 0)
    page.wait_for_timeout(300)
    assert _frame(page, 0) == paused and "paused" in page.text_content("#videos .video .frame")
    page.keyboard.press(".")
    assert _frame(page, 0) == (paused + 1) % 16
    before = _canvas_pixels(page, 0)
    page.keyboard.press(",")
    page.keyboard.press(",")
    assert _frame(page, 0) == (paused - 1) % 16 and _canvas_pixels(page, 0) != before
    # The other loops played on meanwhile.
    assert page.evaluate("[...document.querySelectorAll('#videos .video.paused')].length") == 1
    # Pause all, step all: every loop stays in step; play all restarts them together.
    page.click("#play-all")
    assert page.text_content("#play-all") == "Play all"
    page.click("#play-all")
    page.click("#play-all")  # paused again, right after a common restart
    frames = [_frame(page, j) for j in range(N)]
    assert len(set(frames)) == 1, frames  # the same fps: the same frame
    page.click("#step-fwd")
    assert [_frame(page, j) for j in range(N)] == [(frames[0] + 1) % 16] * N
    _clean(page)


def test_heat_strip_has_a_cell_per_section_and_video_and_follows_the_selection(page, result):
    _example(page, result)
    sections = list(result["evidence"])
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#heat tbody tr')].map(tr => ({
            section: tr.dataset.section, selected: tr.classList.contains('selected'),
            cells: [...tr.querySelectorAll('td.cell')].map(td => ({
                video: Number(td.dataset.video), weight: Number(td.dataset.weight),
                alpha: ((c) => { const m = c.match(/^rgba\\([^)]*,\\s*([\\d.]+)\\)$/);
                    return m ? Number(m[1]) : c.startsWith('rgb(') ? 1 : 0; })(getComputedStyle(td).backgroundColor) })) }))"""
    )
    assert [r["section"] for r in rows] == sections
    assert page.locator("#heat td.cell").count() == len(sections) * N
    for r in rows:
        assert [c["video"] for c in r["cells"]] == list(range(N))
        want = {e["video"]: e["weight"] for e in result["evidence"][r["section"]]}
        top = max(want.values())
        for c in r["cells"]:
            assert c["weight"] == pytest.approx(want[c["video"]])
            assert c["alpha"] == pytest.approx(want[c["video"]] / top, abs=0.01)
    assert [r["section"] for r in rows if r["selected"]] == [sections[0]]

    # Selecting a section highlights its row and outlines each clip by its weight for it.
    for section in (sections[3], sections[7]):
        page.click(f"#report li[data-section='{section}']")
        got = page.evaluate(
            """() => ({ row: [...document.querySelectorAll('#heat tbody tr.selected')].map(t => t.dataset.section),
                w: [...document.querySelectorAll('#videos .video')].map(v => Number(v.style.getPropertyValue('--w'))),
                ring: [...document.querySelectorAll('#videos .video')].map(v => getComputedStyle(v).boxShadow) })"""
        )
        weights = {e["video"]: e["weight"] for e in result["evidence"][section]}
        top = max(weights.values())
        assert got["row"] == [section]
        assert got["w"] == [pytest.approx(weights[j] / top, abs=1e-3) for j in range(N)]
        best = max(range(N), key=lambda j: weights[j])
        assert "5px" in got["ring"][best]  # the heaviest clip has the widest outline
    # A click on a cell selects its section (its row).
    page.click(f"#heat tbody tr[data-section='{sections[5]}'] td.cell >> nth=2")
    assert page.get_attribute("#report li.selected", "data-section") == sections[5]
    _clean(page)


def test_the_report_has_no_separators_no_bank_ids_and_no_paths(page, result):
    r = dict(result)
    r["files"] = [f | {"path": f"/srv/uploads/tmp123/{f['path']}"} for f in result["files"]]
    r["videos"] = [v | {"file": f"/srv/uploads/tmp123/{v['file']}"} for v in result["videos"]]
    model = {
        "bundle": {
            "name": "/data/bundles/quickstart",
            "version": "2026-12-05T21:24:28Z",
            "sha256": "ab" * 32,
        },
        "versions": {"echoprime": "0.1.0"},
        "label_sets": {},
    }
    api = FakeApi(
        interpret=lambda: (200, r), example=lambda i: (200, example_for(result)), model=lambda: (200, model)
    )
    open_viewer(page, api)
    page.click("#save-key")
    page.wait_for_selector("#model-info:has-text('sha256')")
    run_example(page)
    texts = page.evaluate(
        """() => { const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT); const out = [];
            while (w.nextNode()) out.push(w.currentNode.nodeValue); return out; }"""
    )
    assert texts and not [t for t in texts if "[SEP]" in t]
    body = page.text_content("body") + " ".join(
        page.evaluate(
            "[...document.querySelectorAll('[title],[aria-label],[alt]')].map(e => (e.title||'') + (e.getAttribute('aria-label')||'') + (e.alt||''))"
        )
    )
    assert BANK_ID not in body
    assert "/srv/" not in body and "/data/" not in body and "tmp123" not in body
    header = page.text_content("#model-info")
    assert (
        "quickstart" in header
        and "version 2026-12-05T21:24:28Z" in header
        and "sha256 abababababab" in header
    )
    # Each section: its own text, without its header; a bank pseudonym where it has one.
    shown = page.evaluate(
        """() => [...document.querySelectorAll('#report li')].map(li => [li.dataset.section,
            li.querySelector('.section-text').textContent, li.querySelector('.evidence').textContent])"""
    )
    for (section, text, evidence), want in zip(shown, result["report"], strict=True):
        assert section == want["section"]
        assert text == want["text"].removeprefix(f"{section}: ").removesuffix(" [SEP]")
        assert (want["source_study"] in evidence) == (want["source_study"] != BANK_ID)
    _clean(page)


def _box(page: Any, sel: str) -> dict:
    return page.evaluate(
        f'(() => {{ const r = document.querySelector("{sel}").getBoundingClientRect(); return {{x: r.x, w: r.width}}; }})()'
    )


def test_findings_are_bars_and_scales_grouped_by_section(page, result):
    _example(page, result)
    groups = page.evaluate("[...document.querySelectorAll('#metrics tr.group')].map(t => t.dataset.group)")
    assert groups[:3] == ["Left Ventricle", "Resting Segmental Wall Motion Analysis", "Right Ventricle"]
    assert groups[-1] == "Other findings"  # future_finding: a finding the viewer does not know
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#metrics tbody tr')].map(t => t.dataset.group ? 'G' : t.dataset.phenotype)"""
    )
    assert rows.count("G") == len(groups) and set(rows) - {"G"} == set(result["metrics"])
    # A binary: the bar fills to the vote share, the threshold and the calibrated value marked.
    m = result["metrics"]["mitral_regurgitation"]
    tr = "#metrics tr[data-phenotype=mitral_regurgitation]"
    bar, fill = _box(page, f"{tr} .pbar"), _box(page, f"{tr} .pfill")
    thr, cal = _box(page, f"{tr} .pthr"), _box(page, f"{tr} .pcal")
    assert fill["w"] == pytest.approx(m["probability"] * bar["w"], abs=1)
    assert thr["x"] + thr["w"] / 2 - bar["x"] == pytest.approx(m["threshold"] * bar["w"], abs=1.5)
    assert cal["x"] + cal["w"] / 2 - bar["x"] == pytest.approx(
        m["calibrated_probability"] * bar["w"], abs=1.5
    )
    title = page.get_attribute(f"{tr} .pbar", "title")
    assert "threshold 0.50 (youden)" in title and "k 10 labelled neighbours, spread 0.40" in title
    assert page.text_content(f"{tr} .source") == "k 10 · spread 0.40"
    assert page.text_content(f"{tr} .grade-label") == "mild" and page.locator(f"{tr} .disagree").count() == 1
    # A measurement: the value and its interval on a scale, the normal range shaded.
    for name, lo, hi, normal in (
        ("ejection_fraction", 0, 100, (52, 72)),
        ("heart_rate", 30, 150, (60, 100)),
        ("pulmonary_artery_pressure_continuous", 0, 100, (0, 35)),
    ):
        m = result["metrics"][name]
        tr = f"#metrics tr[data-phenotype={name}]"
        scale, norm, mark = _box(page, f"{tr} .scale"), _box(page, f"{tr} .normal"), _box(page, f"{tr} .mark")
        px = scale["w"] / (hi - lo)
        assert norm["x"] - scale["x"] == pytest.approx((normal[0] - lo) * px, abs=1.5), name
        assert norm["w"] == pytest.approx((normal[1] - normal[0]) * px, abs=1.5), name
        assert mark["x"] + 1 - scale["x"] == pytest.approx((m["value"] - lo) * px, abs=1.5), name
        if m["interval"]:
            band = _box(page, f"{tr} .band")
            assert band["x"] - scale["x"] == pytest.approx((m["interval"]["low"] - lo) * px, abs=1.5)
            assert band["w"] == pytest.approx((m["interval"]["high"] - m["interval"]["low"]) * px, abs=1.5)
        else:
            assert page.locator(f"{tr} .band").count() == 0
    assert page.text_content("#metrics tr[data-phenotype=ejection_fraction] .value") == "35.0 % (30.0-41.0)"
    assert "normal 52-72 %" in page.get_attribute(
        "#metrics tr[data-phenotype=ejection_fraction] .scale", "title"
    )
    _clean(page)


def test_fine_tuned_heads_have_their_panel_and_a_bundle_without_heads_hides_it(page, result):
    _example(page, result)
    assert page.is_visible("#tasks-panel")
    rows = page.evaluate(
        """() => [...document.querySelectorAll('#tasks tbody tr')].map(t =>
            [t.dataset.task, t.querySelector('.answer').textContent, t.querySelector('.pooled').textContent])"""
    )
    assert rows[0] == ["ef", "41.3 %", "Left Ventricle"]
    assert rows[1] == ["mitral_regurgitation:grade", "moderate (p 0.55)", "Mitral Valve"]
    assert rows[2][0] == "views" and rows[2][1].startswith("clip00.mp4: ") and rows[2][2] == "per video"
    _clean(page)
    plain = {k: v for k, v in result.items() if k != "tasks"}
    page2 = page.context.new_page()
    page2.add_init_script(WATCH)
    page2.errors = []
    page2.on("pageerror", lambda e: page2.errors.append(str(e)))
    _example(page2, plain)
    assert not page2.is_visible("#tasks-panel") and page2.locator("#tasks tbody tr").count() == 0
    _clean(page2)


def test_a_synthetic_example_sets_the_truth_beside_each_section_and_finding(page, result):
    ex = example_for(result)
    _example(page, result, ex)
    got = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#report li')].map(li => [li.dataset.section, {
            truth: li.querySelector('.truth-text')?.textContent, mark: li.querySelector('.section-head .agree')?.textContent ?? null }]))"""
    )
    for s in ex["truth"]["sections"]:
        assert got[s["section"]]["truth"] == "truth: " + s["text"]
    # aortic_stenosis is flipped in the truth, heart rate lies outside its interval: those
    # sections differ; a section whose findings all agree agrees; one without findings is unmarked.
    assert got["Aortic Valve"]["mark"] == " ✗ differs"
    assert got["Resting Segmental Wall Motion Analysis"]["mark"] == " ✗ differs"
    assert got["Mitral Valve"]["mark"] == " ✓ agrees" and got["Left Ventricle"]["mark"] == " ✓ agrees"
    assert got["Atrial Septum"]["mark"] is None
    marks = page.evaluate(
        "Object.fromEntries([...document.querySelectorAll('#metrics tr[data-phenotype]')].map(t => [t.dataset.phenotype, t.dataset.truth]))"
    )
    assert marks["aortic_stenosis"] == "differ" and marks["heart_rate"] == "differ"
    assert marks["ejection_fraction"] == "agree" and marks["mitral_regurgitation"] == "agree"
    assert page.is_visible("#metrics th.truth-col")
    # The first clip's true view differs from the predicted one.
    views = page.evaluate("[...document.querySelectorAll('#videos .view .agree')].map(a => a.textContent)")
    assert views[0] == f" ✗ {ex['views'][0]}" and set(views[1:]) == {" ✓"}
    _clean(page)


def test_keyboard_moves_between_videos_and_sections(page, result):
    _example(page, result)
    sections = [s["section"] for s in result["report"]]
    page.focus("#videos .video >> nth=0")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.index") == "2"
    page.keyboard.press("ArrowLeft")
    assert page.evaluate("document.activeElement.dataset.index") == "1"
    page.keyboard.press(" ")
    assert page.evaluate(
        "[...document.querySelectorAll('#videos .video.paused')].map(v => v.dataset.index)"
    ) == ["1"]
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowDown")
    assert page.get_attribute("#report li.selected", "data-section") == sections[2]
    assert page.evaluate("document.activeElement.dataset.section") == sections[2]
    page.keyboard.press("ArrowUp")
    assert page.get_attribute("#report li.selected", "data-section") == sections[1]
    assert page.get_attribute("#heat tr.selected", "data-section") == sections[1]
    page.keyboard.press("p")
    assert page.locator("#videos .video.paused").count() == N
    page.keyboard.press("p")
    assert page.locator("#videos .video.paused").count() == 0
    _clean(page)


def test_the_key_stays_in_the_tab_session_never_in_local_storage(page, result):
    api = _example(page, result)
    page.click("#save-key")
    page.wait_for_selector("#model-info:has-text('sha256')")
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("sessionStorage.getItem('echoprime-api-key')") == "k"
    sent = [h.get("x-api-key") for url, h in api.seen if url.startswith("/v1/")]
    assert sent and set(sent) == {"k"}
    page.reload()
    page.wait_for_selector("#model-info:has-text('sha256')")  # the key came back from the session
    assert page.input_value("#api-key") == "k" and page.evaluate("localStorage.length") == 0
    _clean(page)


@pytest.mark.parametrize(
    ("status", "body", "kind", "words"),
    [
        (
            401,
            {"code": "unauthorized", "reason": "a valid API key is required"},
            "auth",
            "refused the API key",
        ),
        (408, {"code": "request_timeout", "reason": "it took longer than 120 s."}, "timeout", "time limit"),
        (
            500,
            {"code": "internal_error", "reason": "the server failed (incident 0123abcd)."},
            "server",
            "incident 0123abcd",
        ),
        (503, {"code": "busy", "reason": "every upload slot is taken."}, "busy", "Try again"),
    ],
)
def test_errors_say_what_happened(page, result, status, body, kind, words):
    api = FakeApi(interpret=lambda: (status, body), example=lambda i: (200, example_for(result)))
    open_viewer(page, api)
    run_example(page)
    assert page.get_attribute("body", "data-state") == "error"
    assert page.get_attribute("#status", "data-kind") == kind
    assert words in page.text_content("#status") and page.is_hidden("#progress")
    _clean(page, expected_errors=1)  # the browser logs the failed request itself


def test_a_network_failure_and_a_client_timeout_are_named(page, result):
    ex = example_for(result)
    api = FakeApi(interpret=lambda: (200, result), example=lambda i: (200, ex))
    open_viewer(page, api)
    page.route("**/v1/interpret*", lambda route: route.abort())
    run_example(page)
    assert page.get_attribute("#status", "data-kind") == "network"
    assert "Could not reach the server" in page.text_content("#status")
    pending = []
    page.unroute("**/v1/interpret*")
    page.route("**/v1/interpret*", lambda route: pending.append(route))  # never answered
    page.evaluate("sessionStorage.setItem('echoprime-client-timeout-ms', '800')")
    run_example(page)
    assert page.get_attribute("#status", "data-kind") == "timeout"
    assert "No answer from the server within 0.8 s" in page.text_content("#status")


def test_progress_names_the_files_while_they_upload_and_the_server_works(page, result):
    ex = example_for(result)
    # Files big enough that the upload takes a few progress events, over real loopback HTTP.
    ex["files"] = [f | {"data": base64.b64encode(os.urandom(1 << 20)).decode()} for f in ex["files"]]
    hold = threading.Event()
    api = FakeApi(interpret=lambda: (200, result), example=lambda i: (200, ex))
    with local_server(api, hold) as url:
        open_viewer(page, api, url=url)
        page.evaluate(
            "window.__progress = []; new MutationObserver(() => window.__progress.push("
            "document.querySelector('#progress-text').textContent)).observe("
            "document.querySelector('#progress-text'), {subtree: true, childList: true, characterData: true});"
        )
        page.fill("#example-index", "7")
        page.click("#example")
        page.wait_for_selector("#progress-text:has-text('interpreting')")
        assert page.is_visible("#progress-bar") and page.get_attribute("body", "data-state") == "working"
        assert f"Read {N} file(s); interpreting on the server" in page.text_content("#progress-text")
        assert page.get_attribute("#progress-bar", "value") is None  # indeterminate while it works
        assert page.is_disabled("#interpret")
        hold.set()
        page.wait_for_selector("body[data-state=done]")
    seen = page.evaluate("window.__progress")
    assert any(re.match(rf"Uploading: \d of {N} file\(s\) sent \(", t) for t in seen), seen
    assert page.is_hidden("#progress") and not page.is_disabled("#interpret")
    assert page.text_content("#status").startswith(f"Interpreted {N} of {N} file(s)")
    _clean(page)


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (768, 1024)])
def test_layout_at_desktop_and_tablet_width(browser, result, width, height):
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.add_init_script(WATCH)
    try:
        _example(page, result)
        page.wait_for_timeout(200)
        got = page.evaluate(
            """() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
                panels: [...document.querySelectorAll('.panel')].filter(p => p.offsetParent).map(p => p.getBoundingClientRect().right),
                canvases: [...document.querySelectorAll('#videos canvas')].map(c => c.getBoundingClientRect().width),
                perRow: new Set([...document.querySelectorAll('#videos .video')].map(v => Math.round(v.getBoundingClientRect().top))).size,
                findings: [document.querySelector('#metrics').scrollWidth,
                    document.querySelector('#findings-panel .table-scroll').clientWidth],
                columns: [...document.querySelectorAll('#metrics thead th')].filter(th => getComputedStyle(th).display !== 'none').map(th => th.textContent) })"""
        )
        assert got["scroll"] <= got["inner"], got  # nothing makes the page scroll sideways
        assert max(got["panels"]) <= width
        assert min(got["canvases"]) >= 110  # a clip is big enough to read
        assert got["perRow"] <= 2  # six clips in at most two rows at both widths
        assert {"finding", "estimate", "decision", "grade", "truth"} <= set(got["columns"])
        assert got["findings"][0] <= got["findings"][1]  # the findings fit without scrolling sideways
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"viewer_{width}.png"), full_page=True)
        assert page.evaluate("window.__violations") == []
    finally:
        ctx.close()


def test_print_gives_a_one_page_summary(page, result):
    _example(page, result)
    page.emulate_media(media="print")
    hidden = page.evaluate(
        "['#controls', '#videos-panel', '#attention-panel', '#files-panel'].map(s => getComputedStyle(document.querySelector(s)).display)"
    )
    assert hidden == ["none"] * 4
    assert page.is_visible("#report") and page.is_visible("#metrics") and page.is_visible("#print-meta")
    pdf = page.pdf(format="A4")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "viewer_print.pdf").write_bytes(pdf)
    assert len(re.findall(rb"/Type\s*/Page[^s]", pdf)) == 1
    _clean(page)


def test_fifty_videos_render_and_the_page_loads_nothing_from_outside(page):
    big = study_result(50)
    api = _example(page, big)
    assert page.locator("#videos canvas").count() == 50
    assert page.locator("#heat td.cell").count() == 15 * 50
    assert int(page.get_attribute("body", "data-render-ms")) > 0  # timed by bench/viewer_render.py
    # Every request stayed on the page's own origin (the routed one): no external resource.
    assert all(not url.startswith("http") for url, _ in api.seen)
    _clean(page)


def test_the_page_names_no_external_resource_and_has_nothing_inline():
    html = (STATIC / "index.html").read_text()
    assert "<style" not in html and " style=" not in html and not re.search(r"\son[a-z]+=", html)
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/viewer.js">']
    for f in ("index.html", "viewer.js", "viewer.css"):
        text = (STATIC / f).read_text()
        assert not re.search(r"https?://", text), f
        assert "localStorage" not in text, f
