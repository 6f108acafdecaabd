"""``echoprime quickstart`` on Ray: every stage of the pipeline in one Ray session.

The command's arguments, the stages' records and progress lines, the held-out interpretation
and the closing summary are :mod:`echoprime.commands.quickstart`; this module runs the stages
in order (each a Ray job's entry point) inside one local Ray.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from echoprime.commands import command_main, config_of
from echoprime.commands.quickstart import (
    add_arguments,
    cohort_secret,
    interpret_held_out,
    prepare_output,
    print_summary,
    report_served,
    report_stage,
    say,
    stage_config,
)
from echoprime.config import EchoPrimeConfig
from echoprime.runlog import RunSummary
from ray_jobs.build_bank import run_build_bank
from ray_jobs.common import ray_session
from ray_jobs.evaluate import run_evaluate
from ray_jobs.fit_mil import run_fit_mil
from ray_jobs.ingest import run_ingest
from ray_jobs.pretrain import run_pretrain
from ray_jobs.serve_query import serve_and_query
from ray_jobs.synth import generate
from ray_jobs.train_views import run_train_views


def run_pipeline(cfg: EchoPrimeConfig, out: Path) -> dict:
    """Run every stage under ``out``; returns the summary dict (also in ``out/summary.json``)."""
    summary = RunSummary(out / "summary.json", job="quickstart", config=cfg.name, seed=cfg.seed)
    cfg.save(out)
    synth_dir, shards, bundle = out / "synth", out / "shards", out / "bundle"
    cfg = stage_config(cfg, out)
    with ray_session(cfg.ray):
        with summary.stage("synth") as st:
            report_stage("synth", st, generate(cfg, synth_dir, use_ray=True))
        with summary.stage("ingest") as st:
            res = run_ingest(cfg, str(synth_dir), str(shards), secret=cohort_secret(cfg.seed))
            report_stage("ingest", st, res)
        with summary.stage("pretrain") as st:
            report_stage("pretrain", st, run_pretrain(cfg, str(shards), str(bundle / "pretrained")))
        with summary.stage("views") as st:
            report_stage("views", st, run_train_views(cfg, str(shards), str(bundle)))
        with summary.stage("mil") as st:
            embedded: dict = {}
            report_stage("mil", st, run_fit_mil(cfg, str(shards), str(bundle), keep_embeddings=embedded))
        with summary.stage("bank") as st:
            res = run_build_bank(cfg, str(shards), str(bundle), val_embeddings=embedded.get("val"))
            report_stage("bank", st, res)
        with summary.stage("interpret") as st:
            sid, files, result = interpret_held_out(st, synth_dir, bundle, out)
        with summary.stage("evaluate") as st:
            report_stage(
                "evaluate", st, run_evaluate(cfg, str(bundle), str(shards), out / "eval", n_boot=100, draws=1)
            )
            say("evaluate", f"report: {out / 'eval' / 'report.md'}")
        with summary.stage("serve") as st:
            t_serve = time.perf_counter()
            answer = serve_and_query(str(bundle), [str(f) for f in files])
            report_served(st, sid, answer, result, out, t_serve)
    return summary.to_dict()


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    out = Path(args.out)
    prepare_output(cfg, out, args.clean)
    t0 = time.perf_counter()
    result = run_pipeline(cfg, out)
    return print_summary(result, out, time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    return command_main("quickstart", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
