"""``echoprime serve`` on Ray: the echoprime Serve graph on a local Ray, and served_app for jobs.

The command's arguments and messages are :mod:`echoprime.commands.serve` (its docstring is the
command's help), as is the HTTP client (:func:`~echoprime.commands.serve.query_study`). Here:
resolving a Serve config into the graph's arguments (:mod:`serve.args`), starting Serve's HTTP
proxy and running the graph until Ctrl-C or SIGTERM, or (:func:`served_app`) inside a job's own
Ray session on a free port with small replicas.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import serve

from echoprime.bundle import fetch as fetch_bundle
from echoprime.bundle import read_manifest
from echoprime.commands import command_main
from echoprime.commands.serve import (
    add_arguments,
    free_port,
    print_auth,
    query_study,
    stop_signals,
    study_paths,
)
from echoprime.config import RayCfg
from ray_jobs.common import ray_session
from serve.app import build_graph, deployment_options, min_cpus
from serve.args import APP_NAME, ServeArgs, read_serve_config
from serve.auth import ApiKeyAuth
from serve.security import check_no_auth, is_loopback


def resolve(
    bundle: str,
    config: str | os.PathLike | None,
    no_auth: bool = False,
    *,
    host: str | None = None,
    allow_no_auth_off_loopback: bool = False,
    allowed_hosts: Sequence[str] | None = None,
    allowed_origins: Sequence[str] | None = None,
    dicomweb_url: str | None = None,
) -> tuple[Any, dict[str, dict[str, Any]], dict[str, Any]]:
    """``(ServeArgs, options by deployment, http_options)`` for a bundle and a Serve config.

    The config's ``args`` apply, except that ``bundle_uri`` is ``bundle`` and the other arguments
    given here replace theirs; the key must be configured (checked here, before Ray starts)
    unless ``no_auth``, which only a loopback ``host`` allows unless forced.

    Raises:
        ValueError: a bad config, an unreadable or untrusted bundle manifest, no API key (naming
            what to set), or no authentication on a non-loopback host.
    """
    app_args, options, http = read_serve_config(config) if config else ({}, {}, {})
    app_args.update(bundle_uri=str(bundle), auth_disabled=bool(no_auth or app_args.get("auth_disabled")))
    given = {
        "host": host,
        "allowed_hosts": list(allowed_hosts) if allowed_hosts else None,
        "allowed_origins": list(allowed_origins) if allowed_origins else None,
        "allow_no_auth_off_loopback": allow_no_auth_off_loopback or None,
        "dicomweb_url": dicomweb_url,
    }
    if host is not None and not allowed_hosts:
        # The config's list names the cluster's Service; this command's own --host decides the
        # defaults (loopback, the address, this machine's name) unless --allowed-host is given.
        app_args.pop("allowed_hosts", None)
    app_args.update({k: v for k, v in given.items() if v is not None})
    # Here, before pydantic wraps it: the refusal reads as one line.
    check_no_auth(
        app_args.get("host"), app_args["auth_disabled"], bool(app_args.get("allow_no_auth_off_loopback"))
    )
    args = ServeArgs.model_validate(app_args)
    ApiKeyAuth.from_env(key_file=args.api_key_file, key_env=args.api_key_env, disabled=args.auth_disabled)
    read_manifest(fetch_bundle(args.bundle_uri), verify=False)
    return args, options, http


def start_http(host: str, port: int, request_timeout_s: float | None = None) -> None:
    """Start Serve's HTTP proxy on ``host:port`` in the current Ray session (quiet access logs)."""
    http: dict[str, Any] = {"host": host, "port": port}
    if request_timeout_s:
        http["request_timeout_s"] = request_timeout_s
    serve.start(http_options=http, logging_config={"enable_access_log": False, "log_level": "WARNING"})


def serve_running() -> bool:
    """Whether Serve is already running in the current Ray session."""
    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(all_namespaces=True))


def run(args: argparse.Namespace) -> int:
    sargs, options, http = resolve(
        args.bundle,
        args.config,
        args.no_auth,
        host=args.host,
        allow_no_auth_off_loopback=args.allow_no_auth_off_loopback,
        allowed_hosts=args.allowed_host,
        allowed_origins=args.allowed_origin,
        dicomweb_url=args.dicomweb,
    )
    auth = ApiKeyAuth.from_env(
        key_file=sargs.api_key_file, key_env=sargs.api_key_env, disabled=sargs.auth_disabled
    )
    print_auth(auth.describe(), auth.disabled, args.host, is_loopback(args.host))
    num_cpus = args.num_cpus or max(4, os.cpu_count() or 1)
    t0 = time.perf_counter()
    with ray_session(RayCfg(num_cpus=num_cpus)), stop_signals() as stop:
        need, have = min_cpus(deployment_options(options)), ray.cluster_resources().get("CPU", 0.0)
        if need > have:  # serve.run would wait for them forever
            raise ValueError(
                f"{args.config}: the replicas ask for {need:g} CPUs; this Ray has {have:g} (--num-cpus)"
            )
        start_http(args.host, args.port, http.get("request_timeout_s"))
        try:
            serve.run(build_graph(sargs, options), name=APP_NAME, route_prefix="/")
            print(
                f"echoprime serve: {sargs.bundle_uri} on http://{args.host}:{args.port}/ "
                f"(ready in {time.perf_counter() - t0:.0f} s; viewer at /, API in docs/api.md); "
                "Ctrl-C or SIGTERM stops",
                flush=True,
            )
            while not stop.wait(0.5):
                pass
            print("echoprime serve: stopping", flush=True)
        finally:
            serve.shutdown()
    print("echoprime serve: stopped", flush=True)
    return 0


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


def main(argv: list[str] | None = None) -> int:
    return command_main("serve", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
