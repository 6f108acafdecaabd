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
import signal
import socket
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from echoprime.commands import default_config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def app_arguments(
    config_args: Mapping[str, Any],
    bundle: str,
    no_auth: bool,
    *,
    host: str | None,
    allow_no_auth_off_loopback: bool,
    allowed_hosts: Sequence[str] | None,
    allowed_origins: Sequence[str] | None,
    dicomweb_url: str | None,
) -> dict[str, Any]:
    """The Serve graph's arguments: a Serve config's ``args`` with ``bundle_uri`` set to
    ``bundle`` and the other arguments given here (those not None) in place of theirs."""
    app_args = dict(config_args)
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
    return app_args


def print_auth(auth_description: str, disabled: bool, host: str, loopback: bool) -> None:
    """What ``echoprime serve`` says about its API key before it starts (a warning when no key
    guards an address other machines can reach)."""
    print(f"echoprime serve: {auth_description}", flush=True)
    if disabled and not loopback:
        print(
            f"echoprime serve: WARNING: no API key on {host}, which other machines can reach "
            "(--allow-no-auth-off-loopback)",
            flush=True,
        )


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT or SIGTERM (handlers restored afterwards)."""
    stop = threading.Event()
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def query_study(
    url: str, key: str, study_files: Sequence[str | os.PathLike] | str | os.PathLike, timeout_s: float = 300.0
) -> dict[str, Any]:
    """``POST /v1/interpret`` with a study's files (or a folder holding them); the JSON answer.

    Raises:
        RuntimeError: a non-200 answer (with its code and reason).
    """
    files = [("files", (p.name, p.read_bytes())) for p in study_paths(study_files)]
    r = requests.post(
        f"{url}/v1/interpret", files=files, headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s
    )
    if r.status_code != 200:
        raise RuntimeError(f"POST /v1/interpret answered {r.status_code}: {r.text[:500]}")
    return r.json()


def study_paths(study_files: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Path]:
    """The files of a study given as files or as a folder holding them (hidden files left out).

    Raises:
        FileNotFoundError: the folder or a file does not exist.
        ValueError: no file at all.
    """
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
