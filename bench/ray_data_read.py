"""Ray Data's two Parquet read paths on ingested shards: V1 (what our jobs use) against V2 (Ray's default).

Reads every shard of the train, val and test splits (clips and the pass-through columns, as
``ray_jobs.evaluate`` does), first alone and then through the bundle's video encoder in an actor
pool of two (``ray_jobs.evaluate.EmbedForEval``), once with ``DataContext.use_datasource_v2``
off and once on, alternating, ``--repeats`` times, in one local Ray session. It reports the wall
time of each pass and the number of blocks that came out (V2 hands a short file list to the
next operator as a single block, so an actor pool gets one input).

Usage (after `make demo`, or with any shards + bundle pair):
  python bench/ray_data_read.py --shards quickstart-out/shards --bundle quickstart-out/bundle
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

COLUMNS = ("study_id", "video_id", "view", "labels", "report")


def _pass(files: list[str], fs, bundle: str | None, v2: bool) -> dict:
    import ray

    from ray_jobs.evaluate import EmbedForEval

    ray.data.DataContext.get_current().use_datasource_v2 = v2
    t0 = time.perf_counter()
    ds = ray.data.read_parquet(
        files, filesystem=fs, include_paths=True, override_num_blocks=max(len(files), 8)
    )
    ds = ds.select_columns(["clip", "n_valid", *COLUMNS, "path"])
    if bundle is not None:
        ds = ds.map_batches(
            EmbedForEval,
            fn_constructor_args=(bundle, (*COLUMNS, "path")),
            batch_size=64,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=2),
        )
    rows = blocks = 0
    for ref in ds.iter_internal_ref_bundles():
        blocks += len(ref.block_refs)
        rows += ref.num_rows() or 0
    return {"wall_s": round(time.perf_counter() - t0, 2), "rows": rows, "blocks": blocks}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", required=True, help="ingest output (train/val/test splits)")
    p.add_argument("--bundle", help="a committed bundle: also time read + embed (default: read only)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--num-cpus",
        type=int,
        default=4,
        help="logical CPUs of the local Ray (default 4, as configs/tiny-cpu.yaml: the pool of two "
        "1-CPU actors needs room for the read tasks beside it)",
    )
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "ray_data_read.json"))
    args = p.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from echoprime import storage
    from echoprime.data.shards import validate_split
    from ray_jobs.common import configure_ray_data

    locs = [storage.locate(f) for s in ("train", "val", "test") for f in validate_split(args.shards, s)]
    files = [loc.path for loc in locs]
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, logging_level="WARNING")
    configure_ray_data()
    modes = [("read", None)] + ([("read+embed", args.bundle)] if args.bundle else [])
    runs: dict[str, list[dict]] = {}
    try:
        for _ in range(args.repeats):
            for name, bundle in modes:
                for v2 in (False, True):
                    r = _pass(files, locs[0].fs, bundle, v2)
                    runs.setdefault(f"{name} V{2 if v2 else 1}", []).append(r)
                    print(f"{name:10s} V{2 if v2 else 1}: {r}", flush=True)
    finally:
        ray.shutdown()
    summary = {
        k: {
            "median_wall_s": statistics.median(r["wall_s"] for r in v),
            "blocks": v[0]["blocks"],
            "rows": v[0]["rows"],
        }
        for k, v in runs.items()
    }
    out = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "ray": ray.__version__},
        "shards": args.shards,
        "files": len(files),
        "summary": summary,
        "runs": runs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
