"""``echoprime serve`` on Ray: the echoprime Serve graph on a local Ray until Ctrl-C or SIGTERM.

The command's arguments and messages are :mod:`echoprime.commands.serve` (its docstring is the
command's help). Here: resolving a Serve config into the graph's arguments (:mod:`serve.args`),
starting Serve's HTTP proxy and running the graph. A bundle served inside a job's own Ray
session (the quickstart, the tests) is :mod:`ray_jobs.serve_query`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import ray
from ray import serve

from echoprime.api.auth import ApiKeyAuth
from echoprime.api.security import check_no_auth, is_loopback
from echoprime.bundle import fetch as fetch_bundle
from echoprime.bundle import read_manifest
from echoprime.commands import command_main
from echoprime.commands.serve import (
    add_arguments,
    app_arguments,
    print_auth,
    stop_signals,
)
from echoprime.config import RayCfg
from ray_jobs.common import ray_session
from serve.app import build_graph, deployment_options, min_cpus
from serve.args import APP_NAME, ServeArgs, read_serve_config


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
    config_args, options, http = read_serve_config(config) if config else ({}, {}, {})
    app_args = app_arguments(
        config_args,
        bundle,
        no_auth,
        host=host,
        allow_no_auth_off_loopback=allow_no_auth_off_loopback,
        allowed_hosts=allowed_hosts,
        allowed_origins=allowed_origins,
        dicomweb_url=dicomweb_url,
    )
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


def main(argv: list[str] | None = None) -> int:
    return command_main("serve", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
