"""How long the study viewer takes to show a result, and screenshots of it (issue 24).

The page (serve/static, with the server's Content-Security-Policy) is served over loopback HTTP
with a faked API (tests/serve/viewer_harness.py), so only the browser's work is timed: from the
moment the result's last byte arrived (the XMLHttpRequest's ``load``) to the page drawn (JSON
parsed, every section, finding, heat-strip cell and clip built, every loop's filmstrip decoded
and its first frame on its canvas, two animation frames later). The page records that time in
``body[data-render-ms]``; each run is a fresh page in Debian's chromium, headless.

Studies: a 50-video result (tests/fixtures_viewer.py: every finding, 15 x 50 weights, a loop of
16 moving frames per clip) with 32 px clips (the tiny bundle's) and with 224 px clips (the
release's, lossy WebP at the 64 KiB bound), and with ``--bundle`` a real interpretation of
synthetic example ``--example`` by that bundle in this process (no Ray), which is what
``--screenshots`` photographs at 1280 x 800 and 768 x 1024.

Usage::

    python bench/viewer_render.py [--runs 5] [--videos 50] [--out bench/out/viewer_render.json]
        [--bundle DIR --example 7 [--screenshots docs/img]]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from echoprime.api.examples import EXAMPLE_SEED, example_study  # noqa: E402  (the repository root is put on the path first)
from echoprime.api.previews import study_loops  # noqa: E402
from tests.fixtures_viewer import example_for, study_result  # noqa: E402
from tests.serve.browser import ARGS, CHROMIUM  # noqa: E402
from tests.serve.viewer_harness import WATCH, FakeApi, local_server  # noqa: E402


def real_example(bundle: str, index: int) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """``(result with loops, example, /v1/model answer)`` of synthetic example ``index``
    interpreted by ``bundle`` in this process, as the Serve graph would answer it."""
    from echoprime.inference import StudyInterpreter

    interp = StudyInterpreter.from_bundle(bundle, device="cpu")
    ex = example_study(EXAMPLE_SEED, index)
    items = [(f["name"], base64.b64decode(f["data"])) for f in ex["files"]]
    result = interp.interpret(items).to_dict()
    clips, n_valid, reports = interp.read_study(items)
    result["loops"] = study_loops(clips, n_valid, reports, interp.spec.stride)
    manifest = (Path(bundle) / "manifest.json").read_bytes()
    raw = json.loads(manifest)
    model = {
        "bundle": {
            "name": Path(bundle).resolve().name,
            "version": raw.get("created"),
            "sha256": hashlib.sha256(manifest).hexdigest(),
        },
        "created": raw.get("created"),
        "versions": raw.get("versions", {}),
        "label_sets": raw.get("label_sets", {}),
    }
    return result, ex, model


def render_once(browser: Any, url: str, width: int, height: int, shot: Path | None = None) -> dict[str, Any]:
    ctx = browser.new_context(viewport={"width": width, "height": height})
    page = ctx.new_page()
    page.set_default_timeout(120_000)
    page.add_init_script(WATCH)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(url + "/")
        page.fill("#api-key", "k")
        page.click("#save-key")
        page.wait_for_selector("#model-info:has-text('sha256')")
        page.fill("#example-index", "7")
        page.click("#example")
        page.wait_for_selector("body[data-state=done], body[data-state=error]")
        if page.get_attribute("body", "data-state") != "done":
            raise RuntimeError(page.text_content("#status"))
        out = {
            "render_ms": int(page.get_attribute("body", "data-render-ms")),
            "videos": page.locator("#videos canvas").count(),
            "cells": page.locator("#heat td.cell").count(),
            "violations": page.evaluate("window.__violations"),
            "errors": errors,
        }
        if shot is not None:
            page.wait_for_timeout(400)  # the loops a few frames on
            page.focus("#report li >> nth=0")
            page.keyboard.press("ArrowDown")  # a section other than the first, its row outlined
            page.evaluate("window.scrollTo(0, 0)")
            page.screenshot(path=str(shot), full_page=False)
            full = shot.with_name(shot.stem + "_full.png")
            page.screenshot(path=str(full), full_page=True)
            _quantise(shot)
            _quantise(full)
        return out
    finally:
        ctx.close()


def _quantise(png: Path) -> None:
    """256 colours: a screenshot for the docs at a third of its size (Pillow, where installed)."""
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as im:
        im.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(png, optimize=True)


def bench(name: str, result: dict, example: dict, model: dict | None, runs: int, browser: Any) -> dict:
    api = FakeApi(interpret=lambda: (200, result), example=lambda i: (200, example))
    if model is not None:
        api.model = lambda: (200, model)
    body = len(json.dumps(result).encode())
    with local_server(api) as url:
        render_once(browser, url, 1280, 800)  # warm the browser's caches once
        times = []
        for _ in range(runs):
            r = render_once(browser, url, 1280, 800)
            assert not r["violations"] and not r["errors"], r
            times.append(r["render_ms"])
    row = {
        "study": name,
        "videos": r["videos"],
        "heat_cells": r["cells"],
        "result_bytes": body,
        "render_ms_median": statistics.median(times),
        "render_ms_min": min(times),
        "render_ms_max": max(times),
        "runs": times,
    }
    print(json.dumps(row))
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--out", default="bench/out/viewer_render.json")
    ap.add_argument("--bundle", help="a bundle: also time (and photograph) a real synthetic example")
    ap.add_argument("--example", type=int, default=7)
    ap.add_argument("--screenshots", help="folder for viewer_1280.png and viewer_768.png (needs --bundle)")
    ap.add_argument("--skip-synthetic", action="store_true", help="only the --bundle example")
    args = ap.parse_args(argv)

    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            if not args.skip_synthetic:
                for size in (32, 224):
                    t0 = time.perf_counter()
                    res = study_result(args.videos, size=size)
                    made = time.perf_counter() - t0
                    row = bench(
                        f"{args.videos} videos, {size} px loops",
                        res,
                        example_for(res),
                        None,
                        args.runs,
                        browser,
                    )
                    row["loops_made_s"] = round(made, 2)
                    rows.append(row)
            if args.bundle:
                res, ex, model = real_example(args.bundle, args.example)
                rows.append(
                    bench(f"example {args.example} ({args.bundle})", res, ex, model, args.runs, browser)
                )
                if args.screenshots:
                    folder = Path(args.screenshots)
                    folder.mkdir(parents=True, exist_ok=True)
                    api = FakeApi(interpret=lambda: (200, res), example=lambda i: (200, ex))
                    api.model = lambda: (200, model)
                    with local_server(api) as url:
                        for w, h in ((1280, 800), (768, 1024)):
                            render_once(browser, url, w, h, folder / f"viewer_{w}.png")
        finally:
            browser.close()
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "browser": CHROMIUM,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
