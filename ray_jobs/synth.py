"""``echoprime synth`` on Ray: a synthetic cohort's chunks as parallel Ray tasks.

The command's arguments, checks and output are :mod:`echoprime.commands.synth`; a chunk's
studies are made by :func:`echoprime.synth.chunked.make_chunk`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import ray
from tqdm import tqdm

from echoprime.commands import command_main
from echoprime.commands.synth import add_arguments, print_cohort, run_standin, synth_config
from echoprime.config import EchoPrimeConfig
from echoprime.runlog import ensure_writable_dir
from echoprime.synth.chunked import cohort_chunks, finish_cohort, make_chunk
from ray_jobs.common import ray_session, wait_with_progress


def generate(cfg: EchoPrimeConfig, out: str | Path, use_ray: bool = True, chunk: int = 4) -> dict[str, Any]:
    """Generate ``cfg.synth.studies`` studies (and ``cfg.synth.test_studies`` of the separate
    test set) into ``out``; returns headline numbers.

    Inside a running Ray (or with ``use_ray``) studies are made by Ray tasks in chunks; the
    manifest is written by the driver once every study is on disk.
    """
    out_dir = ensure_writable_dir(out)
    synth = cfg.synth.model_dump()
    chunks = cohort_chunks(cfg, chunk)
    t0 = time.perf_counter()
    rows: list[dict] = []
    if use_ray:
        with ray_session(cfg.ray):
            task = ray.remote(num_cpus=1)(make_chunk)
            refs = [task.remote(cfg.seed, c, str(out_dir), synth) for c in chunks]
            for part in wait_with_progress(refs, desc="synth", unit="chunk"):
                rows.extend(part)
    else:
        for c in tqdm(chunks, desc="synth", unit="chunk", leave=False):
            rows.extend(make_chunk(cfg.seed, c, str(out_dir), synth))
    return finish_cohort(cfg, out_dir, rows, t0)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "as_dataset", None):
        return run_standin(args)
    res = generate(synth_config(args), args.out, use_ray=not args.no_ray)
    print_cohort(res)
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("synth", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
