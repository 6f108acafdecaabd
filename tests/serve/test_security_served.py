"""Serve's trust boundaries on the real graph behind Ray Serve's HTTP proxy (issue 18, Serve):
the Host and Origin checks and the headers survive the proxy, and the viewer works in Chromium
under the Content-Security-Policy without one violation."""

from __future__ import annotations

import pytest
import requests

from echoprime.api.security import CSP
from tests.serve.browser import chromium_page

pytestmark = pytest.mark.ray


def test_the_checks_and_headers_hold_behind_the_serve_proxy(served):
    key = served.headers()
    viewer = requests.get(served.url + "/", timeout=60)
    assert viewer.status_code == 200 and viewer.headers["content-security-policy"] == CSP
    assert viewer.headers["x-frame-options"] == "DENY" and viewer.headers["cache-control"] == "no-store"
    model = requests.get(served.url + "/v1/model", headers=key, timeout=60)
    assert model.status_code == 200
    for name, value in (
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
    ):
        assert model.headers[name] == value, name
    rebound = requests.get(served.url + "/v1/model", headers={**key, "Host": "attacker.example"}, timeout=60)
    assert rebound.status_code == 421 and rebound.json()["code"] == "misdirected_request"
    other = requests.get(
        served.url + "/v1/model", headers={**key, "Origin": "https://attacker.example"}, timeout=60
    )
    assert other.status_code == 403 and other.json()["code"] == "origin_not_allowed"


def test_the_viewer_runs_under_the_policy_without_a_violation(served):
    with chromium_page() as page:
        console = []
        page.on("console", lambda m: console.append(m.text))
        page.add_init_script(
            "window.__violations = [];"
            "document.addEventListener('securitypolicyviolation',"
            " e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));"
        )
        page.goto(served.url + "/")
        page.fill("#api-key", served.key)
        page.click("#save-key")
        page.wait_for_selector(
            "#model-info:has-text('bundle')"
        )  # not wait_for_function: the CSP refuses its eval
        page.fill("#example-index", "3")
        page.click("#example")
        page.wait_for_selector("body[data-state=done]")
        # The previews (data: PNGs) drew, and the weight bars (set through CSSOM) have widths.
        drawn = page.evaluate(
            "[...document.querySelectorAll('#videos img')].map(i => i.complete && i.naturalWidth > 0)"
        )
        widths = page.evaluate("[...document.querySelectorAll('#videos .bar div')].map(d => d.style.width)")
        violations, logged = page.evaluate("window.__violations"), list(console)
        # And the listener does see the policy at work: an injected inline script is refused.
        page.evaluate(
            "() => { const s = document.createElement('script');"
            " s.textContent = 'window.__ran = true'; document.body.append(s); }"
        )
        for _ in range(200):  # page.evaluate goes through the debugger protocol, which the CSP allows
            if page.evaluate("window.__violations.length") > 0:
                break
            page.wait_for_timeout(25)
        injected = page.evaluate("[window.__violations, window.__ran === true]")
    assert drawn and all(drawn)
    assert any(w not in ("", "0%") for w in widths), widths
    assert violations == [], violations
    assert not [m for m in logged if "Content Security Policy" in m], logged
    assert injected[0][0].startswith("script-src") and injected[1] is False, injected
