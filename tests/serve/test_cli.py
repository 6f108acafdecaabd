"""`echoprime serve` end to end: its own local Ray, the real configs/serve.yaml, real HTTP,
and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.serve.conftest import equal_results, read_study

pytestmark = pytest.mark.slow


def test_echoprime_serve_serves_and_stops_cleanly_on_sigterm(serve_bundle, study_dirs, interpreter, tmp_path):
    port, key = free_port(), "cli-test-key"
    env = {**os.environ, "ECHOPRIME_API_KEY": key}
    for var in ("ECHOPRIME_API_KEY_FILE", "RAY_ADDRESS"):  # its own local Ray, not the test session's
        env.pop(var, None)
    log = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "echoprime.cli", "serve", "--bundle", str(serve_bundle), "--port", str(port)]
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if requests.get(f"{url}/readyz", timeout=10).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or the app not deployed yet
                pass
            time.sleep(2)
        else:
            pytest.fail(f"echoprime serve never became ready (rc {proc.poll()}):\n{log.read_text()[-3000:]}")
        items = read_study(study_dirs[1])
        files = [("files", it) for it in items]
        assert requests.post(f"{url}/v1/interpret", files=files, timeout=60).status_code == 401
        r = requests.post(f"{url}/v1/interpret", files=files, headers={"X-API-Key": key}, timeout=300)
        assert r.status_code == 200, r.text
        assert equal_results(r.json(), interpreter.interpret(items).to_dict()) == []

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "API key required (from $ECHOPRIME_API_KEY" in text and key not in text
    assert "echoprime serve: stopping" in text and "echoprime serve: stopped" in text
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=10)
    # Ray went with it: nothing is left in the command's process group.
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)
