"""Debian's chromium, headless under Playwright: the one way the Serve tests open a page."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def chromium_page() -> Iterator[Any]:
    """A 1280 x 1600 page with a 180 s default timeout; the browser closes on exit. Fails (not
    skips) without chromium: `make test` installs it."""
    from playwright.sync_api import sync_playwright

    if not shutil.which("chromium"):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1600})
            page.set_default_timeout(180_000)
            yield page
        finally:
            browser.close()
