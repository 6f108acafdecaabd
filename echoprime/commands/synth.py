"""Generate a synthetic cohort of echocardiography studies.

Each study is one synthetic patient: a latent cardiac state, 6-20 videos over the 11 coarse
views (MP4 and/or DICOM) in which each finding is drawn only where a sonographer would see it,
its structured report and its labels. Studies are generated in parallel Ray tasks on a local
Ray (or serially with --no-ray); the same seed gives byte-identical files.

Writes DIR/videos/..., DIR/manifest.parquet (one row per video) and DIR/studies.parquet (one
row per study: report, labels, hidden diagnoses, split), the manifest last. With --test-studies N
the cohort also holds N test studies from a separate seed namespace (docs/synthetic-data.md).

With --as NAME it writes a stand-in of a public dataset instead: synthetic studies in that
dataset's exact layout and formats, for `echoprime ingest --dataset NAME` (docs/datasets/).

Example:
  echoprime synth --studies 50 --out synth-out --format both --size 112
  echoprime synth --as echonet-dynamic --studies 120 --out dynamic-standin
  echoprime synth --as camus --dataset-option release=mhd --out camus-2019-standin
  echoprime synth --studies 300 --test-studies 200 --out synth-out   # + a separate test set
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from echoprime.commands import add_config_arguments, config_of
from echoprime.config import EchoPrimeConfig
from echoprime.datasets import dataset_names
from echoprime.datasets.standins import DEFAULT_STUDIES, write_standin


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--studies", type=int, default=None, help="number of studies (default: synth.studies of the config)"
    )
    p.add_argument("--out", required=True, help="output folder (created; must be writable)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: seed of the config)")
    p.add_argument(
        "--format",
        choices=["mp4", "dicom", "both"],
        default=None,
        help="video file format (default: synth.format)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="frame height in pixels (width is 4/3 of it; default: synth.size)",
    )
    p.add_argument("--frames", type=int, default=None, help="frames per video (default: synth.frames)")
    p.add_argument(
        "--test-studies",
        type=int,
        default=None,
        help="also make N test studies from a separate seed namespace (all split test; the "
        "--studies are then split train/val only; default: 0 when --studies is given, else "
        "synth.test_studies of the config)",
    )
    p.add_argument(
        "--no-ray", action="store_true", help="generate serially in this process instead of Ray tasks"
    )
    p.add_argument(
        "--label-only",
        action="store_true",
        help="write no reports, only each study's findings as labels (a labels-only archive, for "
        "echoprime finetune; synth.label_only)",
    )
    p.add_argument(
        "--as",
        dest="as_dataset",
        choices=dataset_names(),
        default=None,
        metavar="DATASET",
        help="write a stand-in of this public dataset instead of a cohort: synthetic studies in its exact "
        f"layout and formats ({', '.join(dataset_names())}; default 48 studies; --seed, --size, --frames "
        "apply); see docs/datasets/",
    )
    p.add_argument(
        "--dataset-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="with --as camus: release=nifti (default, CAMUS_public) or release=mhd (the 2019 release)",
    )
    add_config_arguments(p)


def synth_config(args: argparse.Namespace) -> EchoPrimeConfig:
    """The config with the command's flags applied as ``synth.*`` (and ``seed``) overrides.

    Raises:
        ValueError: ``--studies`` below 1 or a negative ``--test-studies``.
    """
    overrides = list(args.overrides or [])
    for key, val in (
        ("studies", args.studies),
        ("seed", args.seed),
        ("format", args.format),
        ("size", args.size),
        ("frames", args.frames),
        ("label_only", True if getattr(args, "label_only", False) else None),
        # "--studies 50" means 50 studies: the config's separate test set (the quickstart's 200)
        # joins only when asked for, or when the cohort size comes from the config as well.
        ("test_studies", args.test_studies if args.test_studies is not None or args.studies is None else 0),
    ):
        if val is not None:
            overrides.append(f"{'seed' if key == 'seed' else 'synth.' + key}={val}")
    if args.studies is not None and args.studies < 1:
        raise ValueError(f"--studies must be at least 1, got {args.studies}")
    if args.test_studies is not None and args.test_studies < 0:
        raise ValueError(f"--test-studies must be non-negative, got {args.test_studies}")
    args.overrides = overrides
    return config_of(args)


def run_standin(args: argparse.Namespace) -> int:
    """``--as NAME``: a public dataset's stand-in (echoprime.datasets.standins), made serially."""
    given = [
        f for f, v in (("--format", args.format), ("--test-studies", args.test_studies)) if v is not None
    ]
    if given or args.label_only:
        raise ValueError(
            f"--as writes a dataset's own layout: {', '.join(given) or '--label-only'} does not apply"
        )
    cfg = config_of(args)
    t0 = time.perf_counter()
    res = write_standin(
        args.as_dataset,
        args.out,
        studies=args.studies if args.studies is not None else DEFAULT_STUDIES,
        seed=args.seed if args.seed is not None else cfg.seed,
        frames=args.frames,
        size=args.size,
        options=args.dataset_option,
    )
    print(
        f"synth --as {args.as_dataset}: wrote {res['studies']} studies, {res['videos']} videos to {res['out']} "
        f"({time.perf_counter() - t0:.1f} s); read it with: echoprime ingest --dataset {args.as_dataset} "
        f"--input {res['out']} --out SHARDS"
    )
    return 0


def print_cohort(res: dict[str, Any]) -> None:
    """The line ``echoprime synth`` prints for a cohort it wrote."""
    print(
        f"synth: wrote {res['studies']} studies, {res['videos']} videos ({res['videos_per_s']} videos/s) to {res['out']}; "
        f"splits {res['splits']}"
    )
