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
from pathlib import Path
from typing import Any

from echoprime.config import EchoPrimeConfig


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
    from echoprime.datasets import dataset_names

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
    from echoprime.cli import add_config_arguments

    add_config_arguments(p)


def _cfg_from_args(args: argparse.Namespace) -> EchoPrimeConfig:
    from ray_jobs.common import resolve_config

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
    return resolve_config(args)


def _make_chunk(
    seed: int, indices: list[tuple[int, bool]], out_dir: str, synth: dict[str, Any]
) -> list[dict]:
    """Make and write the studies ``(index, test)`` of one chunk; returns their manifest rows."""
    from echoprime.synth.cohort import make_study, write_study

    rows: list[dict] = []
    for i, test in indices:
        study = make_study(
            seed,
            i,
            min_videos=synth["min_videos"],
            max_videos=synth["max_videos"],
            frames=synth["frames"],
            size=synth["size"],
            test=test,
            separate_test=synth.get("test_studies", 0) > 0,
        )
        rows.extend(write_study(study, out_dir, fmt=synth["format"]))
    return rows


def generate(cfg: EchoPrimeConfig, out: str | Path, use_ray: bool = True, chunk: int = 4) -> dict[str, Any]:
    """Generate ``cfg.synth.studies`` studies (and ``cfg.synth.test_studies`` of the separate
    test set) into ``out``; returns headline numbers.

    Inside a running Ray (or with ``use_ray``) studies are made by Ray tasks in chunks; the
    manifest is written by the driver once every study is on disk.
    """
    from echoprime.runlog import ensure_writable_dir

    out_dir = ensure_writable_dir(out)
    from echoprime.synth.cohort import cohort_plan, write_manifest

    synth = cfg.synth.model_dump()
    plan = cohort_plan(cfg.synth.studies, cfg.synth.test_studies)
    chunks = [plan[s : s + chunk] for s in range(0, len(plan), chunk)]
    t0 = time.perf_counter()
    rows: list[dict] = []
    if use_ray:
        import ray

        from ray_jobs.common import ray_session, wait_with_progress

        with ray_session(cfg.ray):
            task = ray.remote(num_cpus=1)(_make_chunk)
            refs = [task.remote(cfg.seed, c, str(out_dir), synth) for c in chunks]
            for part in wait_with_progress(refs, desc="synth", unit="chunk"):
                rows.extend(part)
    else:
        from tqdm import tqdm

        for c in tqdm(chunks, desc="synth", unit="chunk", leave=False):
            rows.extend(_make_chunk(cfg.seed, c, str(out_dir), synth))
    rows.sort(key=lambda r: (r["study_id"], r["video_id"]))
    write_manifest(rows, out_dir, label_only=cfg.synth.label_only)
    cfg.save(out_dir)
    wall = time.perf_counter() - t0
    studies = {r["study_id"] for r in rows}
    per_split: dict[str, set] = {}
    for r in rows:
        per_split.setdefault(r["split"], set()).add(r["study_id"])
    return {
        "studies": len(studies),
        "videos": len(rows),
        "videos_per_s": round(len(rows) / max(wall, 1e-9), 1),
        "splits": {k: len(v) for k, v in sorted(per_split.items())},
        "out": str(out_dir),
    }


def _run_standin(args: argparse.Namespace) -> int:
    """``--as NAME``: a public dataset's stand-in (echoprime.datasets.standins), made serially."""
    from echoprime.datasets.standins import DEFAULT_STUDIES, write_standin
    from ray_jobs.common import resolve_config

    given = [
        f for f, v in (("--format", args.format), ("--test-studies", args.test_studies)) if v is not None
    ]
    if given or args.label_only:
        raise ValueError(
            f"--as writes a dataset's own layout: {', '.join(given) or '--label-only'} does not apply"
        )
    cfg = resolve_config(args)
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


def run(args: argparse.Namespace) -> int:
    if getattr(args, "as_dataset", None):
        return _run_standin(args)
    cfg = _cfg_from_args(args)
    res = generate(cfg, args.out, use_ray=not args.no_ray)
    print(
        f"synth: wrote {res['studies']} studies, {res['videos']} videos ({res['videos_per_s']} videos/s) to {res['out']}; "
        f"splits {res['splits']}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["synth", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
