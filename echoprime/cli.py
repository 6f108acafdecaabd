"""The ``echoprime`` command.

Every subcommand has ``--help``. Commands that run on Ray (synth, ingest, pretrain, ...) live
in ``ray_jobs/`` and are imported only when they run, so the library and ``--help`` stay fast
and ``echoprime`` itself never imports Ray. Errors in what the user passed (a missing config,
a bad value, an unwritable folder) print one line and exit with status 2, without a traceback;
set ``ECHOPRIME_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from echoprime import __version__
from echoprime.config import ConfigError, load_config

# subcommand -> (module with add_arguments(parser) and run(args) -> int, one-line help)
JOBS: dict[str, tuple[str, str]] = {
    "synth": ("ray_jobs.synth", "generate a synthetic cohort of echo studies (videos, reports, labels)"),
    "ingest": (
        "ray_jobs.ingest",
        "turn an archive of DICOM/MP4 studies into Parquet study shards (Ray Data; local or s3://)",
    ),
    "pretrain": (
        "ray_jobs.pretrain",
        "contrastive video-report pretraining on Ray Train (DDP; checkpoints survive worker failures)",
    ),
    "finetune": (
        "ray_jobs.finetune",
        "fit a supervised head (EF, a finding, its grade, views) on a bundle's video tower; label-only shards work",
    ),
    "probe": (
        "ray_jobs.probe",
        "score a bundle's frozen video tower on a labelled dataset: attentive, linear and kNN probes, report.md, a head",
    ),
    "train-views": (
        "ray_jobs.train_views",
        "train the view classifier on Ray Train (accuracy, confusion matrix)",
    ),
    "fit-mil": ("ray_jobs.fit_mil", "fit the anatomical attention over a study's videos, per report section"),
    "build-bank": (
        "ray_jobs.build_bank",
        "embed the report bank, fit thresholds and commit the model bundle",
    ),
    "import-release": (
        "ray_jobs.import_release",
        "convert a copy of the published EchoPrime release into a pickle-free bundle",
    ),
    "batch-interpret": (
        "ray_jobs.batch_interpret",
        "interpret every study of an archive (local or s3://) with Ray Data: Parquet results + rejects, resumable",
    ),
    "evaluate": (
        "ray_jobs.evaluate",
        "evaluate a bundle on held-out shards: retrieval, phenotypes, ablation, views, zero-shot (report.md)",
    ),
    "interpret": (
        "echoprime.interpret_cli",
        "interpret one study folder with a bundle (views, report, metrics)",
    ),
    "serve": (
        "ray_jobs.serve_app",
        "serve a bundle over HTTP on a local Ray (Serve graph, API key, study viewer at /)",
    ),
    "sign-bundle": (
        "echoprime.sign_cli",
        "sign a committed bundle (or --check one) with the bundle key of the environment",
    ),
    "quickstart": ("ray_jobs.quickstart", "run the whole pipeline end to end on a local Ray (the main job)"),
}


class UsageError(ValueError):
    """Bad command-line input: reported as one line, exit status 2."""


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


def _config_show(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides)
    sys.stdout.write(cfg.to_yaml())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="echoprime",
        description=(
            "EchoPrime on Ray: ingest echo studies, pretrain the video-report model, build the "
            "report bank, interpret studies, evaluate and serve. Start with `echoprime quickstart`."
        ),
    )
    parser.add_argument("--version", action="version", version=f"echoprime {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    cfg_p = sub.add_parser("config", help="inspect configuration", description="Inspect configuration.")
    cfg_sub = cfg_p.add_subparsers(dest="config_command", metavar="ACTION")
    show = cfg_sub.add_parser(
        "show",
        help="print the resolved config (file + overrides), validated",
        description="Load a config file, apply key=value overrides, validate and print the result as YAML.",
    )
    add_config_arguments(show)
    show.set_defaults(func=_config_show)
    cfg_p.set_defaults(func=lambda a: _help_of(cfg_p))

    for name, (module, helptext) in JOBS.items():
        mod = importlib.import_module(module)
        p = sub.add_parser(
            name,
            help=helptext,
            description=(mod.__doc__ or helptext).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(func=mod.run)
    return parser


def _help_of(p: argparse.ArgumentParser) -> int:
    p.print_help()
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``echoprime`` console script."""
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("echoprime: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, UsageError, ValueError, FileNotFoundError, PermissionError) as e:
        if os.environ.get("ECHOPRIME_DEBUG"):
            traceback.print_exc()
        msg = str(e).strip() or type(e).__name__
        print(f"echoprime {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
