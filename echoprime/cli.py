"""The ``echoprime`` command.

Every subcommand has ``--help``. This module is the one place that names every command: the
table below says, as strings, where each command's arguments are described (a module with
``add_arguments``, which must import cheaply) and where its ``run`` lives. The Ray jobs
(``ray_jobs/``) are imported by name only when their command runs, so the library and
``--help`` stay fast, ``echoprime`` itself never imports Ray, and nothing a job imports names
the jobs (no import cycle: the jobs use :mod:`echoprime.commands`, never this module). Errors in
what the user passed (a missing config, a bad value, an unwritable folder) print one line and
exit with status 2, without a traceback; set ``ECHOPRIME_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from echoprime import __version__
from echoprime.commands import Run, add_config_arguments, run_reported
from echoprime.config import load_config

# subcommand -> (module with add_arguments(parser) and the description as its docstring,
#                "module:function" that runs it, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "synth": (
        "echoprime.commands.synth",
        "ray_jobs.synth:run",
        "generate a synthetic cohort of echo studies (videos, reports, labels)",
    ),
    "ingest": (
        "echoprime.commands.ingest",
        "ray_jobs.ingest:run",
        "turn an archive of DICOM/MP4 studies into Parquet study shards (Ray Data; local or s3://)",
    ),
    "pretrain": (
        "echoprime.commands.pretrain",
        "ray_jobs.pretrain:run",
        "contrastive video-report pretraining on Ray Train (DDP; checkpoints survive worker failures)",
    ),
    "finetune": (
        "echoprime.commands.finetune",
        "ray_jobs.finetune:run",
        "fit a supervised head (EF, a finding, its grade, views) on a bundle's video tower; label-only shards work",
    ),
    "probe": (
        "echoprime.commands.probe",
        "ray_jobs.probe:run",
        "score a bundle's frozen video tower on a labelled dataset: attentive, linear and kNN probes, report.md, a head",
    ),
    "train-views": (
        "echoprime.commands.train_views",
        "ray_jobs.train_views:run",
        "train the view classifier on Ray Train (accuracy, confusion matrix)",
    ),
    "fit-mil": (
        "echoprime.commands.fit_mil",
        "ray_jobs.fit_mil:run",
        "fit the anatomical attention over a study's videos, per report section",
    ),
    "build-bank": (
        "echoprime.commands.build_bank",
        "ray_jobs.build_bank:run",
        "embed the report bank, fit thresholds and commit the model bundle",
    ),
    "import-release": (
        "echoprime.commands.import_release",
        "echoprime.commands.import_release:run",
        "convert a copy of the published EchoPrime release into a pickle-free bundle",
    ),
    "batch-interpret": (
        "echoprime.commands.batch_interpret",
        "ray_jobs.batch_interpret:run",
        "interpret every study of an archive (local or s3://) with Ray Data: Parquet results + rejects, resumable",
    ),
    "evaluate": (
        "echoprime.commands.evaluate",
        "ray_jobs.evaluate:run",
        "evaluate a bundle on held-out shards: retrieval, phenotypes, ablation, views, zero-shot (report.md)",
    ),
    "interpret": (
        "echoprime.interpret_cli",
        "echoprime.interpret_cli:run",
        "interpret one study folder with a bundle (views, report, metrics)",
    ),
    "serve": (
        "echoprime.commands.serve",
        "ray_jobs.serve_app:run",
        "serve a bundle over HTTP on a local Ray (Serve graph, API key, study viewer at /)",
    ),
    "sign-bundle": (
        "echoprime.sign_cli",
        "echoprime.sign_cli:run",
        "sign a committed bundle (or --check one) with the bundle key of the environment",
    ),
    "quickstart": (
        "echoprime.commands.quickstart",
        "ray_jobs.quickstart:run",
        "run the whole pipeline end to end on a local Ray (the main job)",
    ),
}


def _entry(target: str) -> Run:
    """The function ``"module:function"`` names, imported now (when its command runs)."""
    module, _, func = target.partition(":")
    run: Run = getattr(importlib.import_module(module), func)
    return run


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

    for name, (spec_name, target, helptext) in COMMANDS.items():
        spec = importlib.import_module(spec_name)
        p = sub.add_parser(
            name,
            help=helptext,
            description=(spec.__doc__ or helptext).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        spec.add_arguments(p)
        p.set_defaults(func=lambda a, target=target: _entry(target)(a))
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
    return run_reported(args.command, func, args)


if __name__ == "__main__":
    sys.exit(main())
