"""A replica killed while requests are in flight: they are all answered, and the app recovers."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.serve.conftest import equal_results, read_study

pytestmark = pytest.mark.ray


def _replicas(deployment: str) -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].startswith("SERVE_REPLICA::echoprime#") and f"#{deployment}#" in a["name"]
    )


def test_requests_survive_a_killed_encoder_replica_and_the_app_recovers(served, study_dirs, interpreter):
    import ray
    from ray import serve

    studies = [read_study(d) for d in study_dirs[1:4]]
    want = [interpreter.interpret(s).to_dict() for s in studies]
    (victim,) = _replicas("VideoEncoder")
    out: list[tuple[int, int, dict]] = []
    started = threading.Event()

    def client(c: int) -> None:
        with requests.Session() as s:
            for rep in range(3):
                i = (c + rep) % len(studies)
                started.set()
                r = s.post(
                    f"{served.url}/v1/interpret",
                    files=[("files", it) for it in studies[i]],
                    headers=served.headers(),
                    timeout=300,
                )
                out.append((i, r.status_code, r.json()))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(4)]
    for t in threads:
        t.start()
    started.wait(30)
    time.sleep(0.3)  # requests are in flight in the graph
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    for t in threads:
        t.join()
    assert len(out) == 12
    for i, code, got in out:
        assert code == 200, got
        assert equal_results(got, want[i]) == []

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        dep = serve.status().applications["echoprime"].deployments["VideoEncoder"]
        now = _replicas("VideoEncoder")
        if dep.status == "HEALTHY" and dep.replica_states.get("RUNNING") == 1 and now and victim not in now:
            break
        time.sleep(1)
    else:
        pytest.fail(f"VideoEncoder did not recover: {serve.status().applications['echoprime'].deployments}")
    r = requests.post(
        f"{served.url}/v1/interpret",
        files=[("files", it) for it in studies[0]],
        headers=served.headers(),
        timeout=300,
    )
    assert r.status_code == 200 and equal_results(r.json(), want[0]) == []
    assert requests.get(f"{served.url}/readyz", timeout=60).status_code == 200
