"""Serve a model bundle over HTTP on a local Ray: the echoprime Serve graph in one command.

Starts a local Ray, deploys the graph (Ingress -> Preprocess -> ViewClassifier + VideoEncoder ->
AnatomicalAttention -> RAIRetriever) with the per-deployment settings of a Serve config, and
serves on 127.0.0.1 until Ctrl-C or SIGTERM, which stop Serve and Ray cleanly. The API key comes
from the file named by $ECHOPRIME_API_KEY_FILE or from $ECHOPRIME_API_KEY; --no-auth switches
authentication off for local use (refused on a --host other machines can reach, unless forced
with --allow-no-auth-off-loopback). Only the Host names of --allowed-host (default: the loopback
names and --host) are answered. The API is described in docs/api.md, the hardening in
docs/privacy.md.

Example:
  ECHOPRIME_API_KEY=$(openssl rand -hex 16) echoprime serve --bundle quickstart-out/bundle
  echoprime serve --bundle s3://echoprime-models/bundles/v1 --config configs/serve.yaml --port 8080
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serve.args import APP_NAME


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ray_jobs.common import default_config_path

    p.add_argument("--bundle", required=True, help="model bundle: a local folder or s3://bucket/prefix")
    p.add_argument(
        "--config",
        default=default_config_path("serve.yaml"),
        metavar="YAML",
        help="Serve config whose per-deployment settings apply (default: configs/serve.yaml)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    p.add_argument(
        "--no-auth",
        action="store_true",
        help="serve WITHOUT an API key (loopback --host only, unless forced; the log says so)",
    )
    p.add_argument(
        "--allow-no-auth-off-loopback",
        action="store_true",
        help="allow --no-auth on a --host other machines can reach (logged as a warning; docs/privacy.md)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name clients use (repeatable; default: the loopback names and --host); '*' allows any",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help="another origin (https://viewer.example.org) whose pages may call the API (repeatable)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="logical CPUs of the local Ray (default: max(4, cores))"
    )
    p.add_argument(
        "--dicomweb",
        default=None,
        metavar="URL",
        help="a DICOMweb archive for POST /v1/interpret/dicomweb (credentials from ECHOPRIME_DICOMWEB_TOKEN, "
        "or _USER and _PASSWORD, in this environment); see docs/integration.md",
    )


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
    from echoprime.api.auth import ApiKeyAuth
    from echoprime.api.security import check_no_auth
    from echoprime.bundle import fetch as fetch_bundle
    from echoprime.bundle import read_manifest
    from serve.args import ServeArgs, read_serve_config

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
    from ray import serve

    http: dict[str, Any] = {"host": host, "port": port}
    if request_timeout_s:
        http["request_timeout_s"] = request_timeout_s
    serve.start(http_options=http, logging_config={"enable_access_log": False, "log_level": "WARNING"})


def serve_running() -> bool:
    """Whether Serve is already running in the current Ray session."""
    import ray

    return any(a["name"] == "SERVE_CONTROLLER_ACTOR" for a in ray.util.list_named_actors(all_namespaces=True))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (handlers restored afterwards)."""
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(args: argparse.Namespace) -> int:
    from echoprime.api.auth import ApiKeyAuth
    from echoprime.api.security import is_loopback
    from echoprime.config import RayCfg
    from ray_jobs.common import ray_session
    from serve.app import build_graph, deployment_options, min_cpus

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
    print(f"echoprime serve: {auth.describe()}", flush=True)
    if auth.disabled and not is_loopback(args.host):
        print(
            f"echoprime serve: WARNING: no API key on {args.host}, which other machines can reach "
            "(--allow-no-auth-off-loopback)",
            flush=True,
        )
    num_cpus = args.num_cpus or max(4, os.cpu_count() or 1)
    t0 = time.perf_counter()
    with ray_session(RayCfg(num_cpus=num_cpus)), _stop_signals() as stop:
        import ray
        from ray import serve

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
    import ray
    from ray import serve

    from serve.app import build_graph, deployment_options, min_cpus

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


def query_study(
    url: str, key: str, study_files: Sequence[str | os.PathLike] | str | os.PathLike, timeout_s: float = 300.0
) -> dict[str, Any]:
    """``POST /v1/interpret`` with a study's files (or a folder holding them); the JSON answer.

    Raises:
        RuntimeError: a non-200 answer (with its code and reason).
    """
    import requests

    files = [("files", (p.name, p.read_bytes())) for p in _study_paths(study_files)]
    r = requests.post(
        f"{url}/v1/interpret", files=files, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
    )
    if r.status_code != 200:
        raise RuntimeError(f"POST /v1/interpret answered {r.status_code}: {r.text[:500]}")
    return r.json()


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
    _study_paths(study_files)  # fail on missing files before starting anything
    with served_app(bundle_uri, api_key=api_key, options=options) as app:
        return query_study(app.url, app.key, study_files, timeout_s)


def _study_paths(study_files: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    if isinstance(study_files, (str, os.PathLike)):
        folder = Path(study_files)
        if not folder.is_dir():
            raise FileNotFoundError(f"study folder {str(folder)!r} does not exist")
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    else:
        paths = [Path(p) for p in study_files]
    if missing := [str(p) for p in paths if not p.is_file()]:
        raise FileNotFoundError(f"study files not found: {missing[:5]}")
    if not paths:
        raise ValueError("the study has no files")
    return paths


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["serve", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
