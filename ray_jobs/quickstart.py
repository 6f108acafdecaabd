"""The main job: the whole echoprime pipeline end to end on a local Ray, in minutes.

Starts a local Ray (or joins the one in the config), then runs each stage into its own folder
under --out and records its status, wall time and headline numbers in DIR/summary.json:

  synth/     a synthetic cohort of echo studies (parallel Ray tasks)

Every later capability of the project joins this job as a stage. With configs/tiny-cpu.yaml
(the default) it runs on a 2-core laptop without a GPU in under 10 minutes.

Example:
  echoprime quickstart --out quickstart-out
  echoprime quickstart --out /tmp/qs synth.studies=40 train.epochs=2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart-out", help="output folder (default: ./quickstart-out)")
    p.add_argument("--clean", action="store_true", help="delete the output folder first")
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def run_pipeline(cfg: EchoPrimeConfig, out: Path) -> dict:
    """Run every stage under ``out``; returns the summary dict (also in ``out/summary.json``)."""
    from echoprime.runlog import RunSummary
    from ray_jobs import synth as synth_job
    from ray_jobs.common import ray_session

    summary = RunSummary(out / "summary.json", job="quickstart", config=cfg.name, seed=cfg.seed)
    cfg.save(out)
    with ray_session(cfg.ray):
        with summary.stage("synth") as st:
            res = synth_job.generate(cfg, out / "synth", use_ray=True)
            st.record(**{k: v for k, v in res.items() if k != "out"})
            print(
                f"[synth] {res['studies']} studies, {res['videos']} videos, splits {res['splits']} "
                f"({res['videos_per_s']} videos/s)",
                flush=True,
            )
    return summary.to_dict()


def run(args: argparse.Namespace) -> int:
    from echoprime.runlog import ensure_writable_dir
    from ray_jobs.common import resolve_config

    cfg = resolve_config(args)
    out = Path(args.out)
    if args.clean and out.exists():
        shutil.rmtree(out)
    ensure_writable_dir(out)
    t0 = time.perf_counter()
    print(f"echoprime quickstart: config {cfg.name}, output {out.resolve()}", flush=True)
    result = run_pipeline(cfg, out)
    wall = time.perf_counter() - t0
    print(
        f"\nquickstart finished in {wall:.0f} s; status {result['status']}; summary: {out / 'summary.json'}"
    )
    for name, st in result["stages"].items():
        nums = {k: v for k, v in st.items() if k not in ("status", "wall_s")}
        print(f"  {name:<12} {st['status']:<7} {st['wall_s']:>7.1f} s  {json.dumps(nums)[:150]}")
    return 0 if result["status"] == "ok" else 1


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["quickstart", *(argv or [])])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
