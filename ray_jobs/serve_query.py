"""A bundle served inside the current Ray session for a job or a test, and one study sent to it.

The quickstart's serve stage, the Serve tests and bench/serve_load.py start the echoprime Serve
graph with small replicas on a free 127.0.0.1 port (:func:`served_app`), send studies over HTTP
(:func:`echoprime.commands.serve.query_study`) and stop Serve again; ``echoprime serve``
(:mod:`ray_jobs.serve_app`) is the long-running server.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve

from echoprime.commands.serve import free_port, query_study, study_paths
from ray_jobs.serve_app import start_http
from serve.app import build_graph, deployment_options, min_cpus
from serve.args import APP_NAME

# Small replicas for serving inside a job's Ray session (the quickstart): 1.2 CPUs in all.
QUERY_OPTIONS = {
    n: {"ray_actor_options": {"num_cpus": c}}
    for n, c in {
        "Ingress": 0.1,
        "Preprocess": 0.3,
        "ViewClassifier": 0.2,
        "VideoEncoder": 0.3,
        "AnatomicalAttention": 0.1,
        "RAIRetriever": 0.2,
    }.items()
}


def serve_running() -> bool:
    """Whether Serve is already running in the current Ray session."""
    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(all_namespaces=True))


@dataclass
class ServedApp:
    """A running app: where it answers, the key it wants, the file holding that key."""

    url: str
    key: str
    key_file: Path

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"X-API-Key": key or self.key}


@contextmanager
def served_app(
    bundle_uri: str,
    *,
    api_key: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    args: Mapping[str, Any] | None = None,
) -> Iterator[ServedApp]:
    """Serve the bundle on a free 127.0.0.1 port inside the current Ray session; stop Serve on exit.

    Args:
        bundle_uri: the bundle to serve.
        api_key: the key (default: a random one); it reaches the replicas in a 0600 file.
        options: per-deployment options (default: :data:`QUERY_OPTIONS`, 1.2 CPUs in all).
        args: more application arguments (limits, ...; see :class:`serve.args.ServeArgs`).

    Raises:
        RuntimeError: no Ray session, Serve already running in it, or too few CPUs for the replicas.
    """
    if not ray.is_initialized():
        raise RuntimeError("the app is served inside a Ray session: call ray.init() (or ray_session) first")
    if serve_running():
        raise RuntimeError("Ray Serve is already running in this Ray session; this starts and stops its own")
    opts = deployment_options(QUERY_OPTIONS if options is None else options)
    need, have = min_cpus(opts), ray.cluster_resources().get("CPU", 0.0)
    if need > have:  # serve.run would wait for them forever
        raise RuntimeError(f"the app's replicas ask for {need:g} CPUs; this Ray cluster has {have:g}")
    key = api_key or secrets.token_urlsafe(24)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="echoprime-key-") as tmp:
        key_file = Path(tmp) / "api-key"
        key_file.touch(mode=0o600)
        key_file.write_text(key + "\n")
        app_args = {
            "host": "127.0.0.1",  # where start_http listens: the default Host allow-list
            **dict(args or {}),
            "bundle_uri": str(bundle_uri),
            "api_key_file": str(key_file),
        }
        start_http("127.0.0.1", port)
        try:
            serve.run(
                build_graph(app_args, opts),
                name=APP_NAME,
                logging_config={"enable_access_log": False, "log_level": "WARNING"},
            )
            yield ServedApp(f"http://127.0.0.1:{port}", key, key_file)
        finally:
            serve.shutdown()


def serve_and_query(
    bundle_uri: str,
    study_files: Sequence[str | os.PathLike] | str | os.PathLike,
    api_key: str | None = None,
    *,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Serve the bundle inside the current Ray session, send one study over HTTP, stop Serve.

    Args:
        bundle_uri: the bundle to serve.
        study_files: the study's files (or a folder holding them).
        api_key: the key to protect the app with (default: a random one for this call only).
        options: per-deployment options (default: :data:`QUERY_OPTIONS`, 1.2 CPUs in all).
        timeout_s: the longest the request may take.

    Returns:
        The JSON answer of ``POST /v1/interpret`` (the study's ``StudyResult``).

    Raises:
        RuntimeError: no Ray session, Serve already running in it, or a non-200 answer.
    """
    study_paths(study_files)  # fail on missing files before starting anything
    with served_app(bundle_uri, api_key=api_key, options=options) as app:
        return query_study(app.url, app.key, study_files, timeout_s)
