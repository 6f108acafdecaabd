"""What every ``echoprime`` command shares: config arguments, one-line errors, a standalone entry.

A command is described by a module with ``add_arguments(parser)`` whose docstring is the
command's ``--help`` description (``echoprime --help`` imports every such module, so they
import cheaply: no torch, no Ray); the work is a ``run(args) -> int`` beside it or, for the Ray
jobs, in ``ray_jobs/<job>.py``. ``echoprime <command>`` (:mod:`echoprime.cli`, which names every
command) and ``python -m ray_jobs.<job>`` (:func:`command_main`) parse and fail the same way.
Nothing here names a job, so a job may import this module without an import cycle.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from echoprime.config import ConfigError, EchoPrimeConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]

Run = Callable[[argparse.Namespace], int]


def default_config_path(name: str = "tiny-cpu.yaml") -> str:
    """``configs/<name>`` in the working directory, else in the source tree beside this package."""
    here = Path("configs") / name
    return str(here if here.is_file() else REPO_ROOT / "configs" / name)


def add_config_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--config PATH`` plus trailing ``key=value`` overrides, shared by every job."""
    p.add_argument(
        "--config",
        default=default,
        metavar="YAML",
        help=f"config file (default: {default or 'built-in defaults'}); see configs/",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="override any config key, e.g. train.epochs=3 seed=1",
    )


def config_of(args: Any, default: str | None = None) -> EchoPrimeConfig:
    """The config named by ``args.config`` (or ``default``) with ``args.overrides`` applied."""
    path = getattr(args, "config", None) or default
    return load_config(path, list(getattr(args, "overrides", []) or []))


def add_dicomweb_arguments(p: argparse.ArgumentParser, source: Any) -> None:
    """``--dicomweb URL`` (into the ``source`` group: the input's alternatives) and its QIDO-RS
    query, ``--study``, ``--modality`` and ``--dates`` (read back by :func:`dicomweb_query`)."""
    source.add_argument(
        "--dicomweb",
        metavar="URL",
        help="a DICOMweb archive instead: the studies a QIDO-RS query finds (--study, --modality, "
        "--dates); credentials from ECHOPRIME_DICOMWEB_TOKEN, or _USER and _PASSWORD",
    )
    p.add_argument(
        "--study",
        action="append",
        default=None,
        metavar="UID",
        help="with --dicomweb: this study (repeatable)",
    )
    p.add_argument("--modality", default="US", help="with --dicomweb: modality in the study (default US)")
    p.add_argument(
        "--dates",
        default=None,
        metavar="FROM-TO",
        help="with --dicomweb: study dates, e.g. 20260101-20260131",
    )


def dicomweb_query(args: argparse.Namespace) -> dict[str, Any] | None:
    """The QIDO-RS query of ``--study``, ``--modality`` and ``--dates``
    (``Archive.search_studies``' arguments); None without ``--dicomweb``.

    Raises:
        ValueError: ``--dates`` is not ``YYYYMMDD-YYYYMMDD``, or ``--study`` / ``--dates`` were
            given without ``--dicomweb`` (they would be ignored).
    """
    if not args.dicomweb:
        if args.study or args.dates:
            raise ValueError(
                "--study and --dates choose the studies of a --dicomweb archive; add --dicomweb URL"
            )
        return None
    dates = None
    if args.dates:
        a, sep, b = args.dates.partition("-")
        if not (sep and len(a) == len(b) == 8 and (a + b).isdigit()):
            raise ValueError(f"--dates takes FROM-TO as YYYYMMDD-YYYYMMDD, got {args.dates!r}")
        dates = (a, b)
    return {"modality": args.modality or None, "date_range": dates, "uids": args.study}


def run_reported(command: str, func: Run, args: argparse.Namespace) -> int:
    """``func(args)``'s exit status; bad input (a missing config, a bad value, an unwritable
    folder) is printed as one line ``echoprime <command>: error: ...`` and gives status 2
    (``ECHOPRIME_DEBUG=1`` prints the traceback too); Ctrl-C gives 130."""
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("echoprime: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, ValueError, FileNotFoundError, PermissionError) as e:
        if os.environ.get("ECHOPRIME_DEBUG"):
            traceback.print_exc()
        msg = str(e).strip() or type(e).__name__
        print(f"echoprime {command}: error: {msg}", file=sys.stderr)
        return 2


def command_main(
    command: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    func: Run,
    argv: Sequence[str] | None,
) -> int:
    """``python -m ray_jobs.<job> ARGS``: parse with ``add_arguments`` (the description is its
    module's docstring, as in :mod:`echoprime.cli`) and run ``func`` exactly as ``echoprime
    <command> ARGS`` does."""
    parser = argparse.ArgumentParser(
        prog=f"echoprime {command}",
        description=(sys.modules[add_arguments.__module__].__doc__ or "").strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run_reported(command, func, parser.parse_args(list(argv or [])))
