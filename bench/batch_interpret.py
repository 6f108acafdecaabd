"""batch-interpret throughput: studies/s with 1 and 2 interpreter actors on a local Ray (CPU).

Builds a random-weight tiny bundle (tests/fixtures_bundle.py) and a synthetic archive of N studies
(3-5 videos each, 64 px, DICOM and MP4 mixed), then runs ray_jobs.batch_interpret over it with
1 and 2 actors (alternating, each twice, each into a fresh output), plus the same studies through
StudyInterpreter.interpret_many in this process (no Ray) as the single-process reference.
studies/s counts the interpretation pipeline (actor start, bundle load, decode, encode, retrieval,
writing the Parquet parts), not Ray's start or the listing; "steady" counts from the first chunk's
start to the last chunk's end on any actor (the pool's rate once its actors are up).

Usage: python bench/batch_interpret.py [--studies 40] [--chunk 4] [--out bench/out/batch_interpret.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--studies", type=int, default=40)
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "batch_interpret.json"))
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from echoprime.config import load_config
    from echoprime.synth.cohort import make_study, write_study
    from ray_jobs.batch_interpret import run_batch_interpret
    from ray_jobs.common import configure_ray_data, ray_session
    from tests.fixtures_bundle import make_random_bundle

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    t = time.perf_counter()
    bundle = make_random_bundle(work / "bundle", n_bank=300)
    archive = work / "archive"
    n_videos = 0
    for i in range(args.studies):
        n_videos += len(
            write_study(
                make_study(11, i, min_videos=3, max_videos=5, frames=32, size=64), archive, fmt="both"
            )
        )
    print(f"setup: bundle + {args.studies} studies ({n_videos} videos) in {time.perf_counter() - t:.1f} s")

    cfg = load_config(Path(__file__).parents[1] / "configs" / "tiny-cpu.yaml")
    runs = []
    load0 = os.getloadavg()
    with ray_session(cfg.ray):
        configure_ray_data()
        for rep in range(args.repeats):
            for actors in (1, 2):
                out = work / f"out-{actors}-{rep}"
                res = run_batch_interpret(
                    cfg, str(bundle), str(archive), str(out), actors=actors, chunk=args.chunk
                )
                assert res["ok"] == args.studies, res
                runs.append(
                    {
                        "actors": actors,
                        "repeat": rep,
                        **{k: v for k, v in res.items() if k.endswith("_s")},
                    }
                )
                print(runs[-1])
                shutil.rmtree(out)

    from echoprime.inference import StudyInterpreter

    interp = StudyInterpreter.from_bundle(bundle, device="cpu", k=cfg.interpret.k)
    folders = sorted((archive / "videos").iterdir())
    t = time.perf_counter()
    for i in range(0, len(folders), args.chunk):
        interp.interpret_many([str(f) for f in folders[i : i + args.chunk]])
    serial_s = time.perf_counter() - t

    def best(a: int) -> float:
        return max(r["studies_per_s"] for r in runs if r["actors"] == a)

    def steady(a: int) -> float:
        return max(r["processing_studies_per_s"] for r in runs if r["actors"] == a)

    result = {
        "bench": "batch_interpret",
        "studies": args.studies,
        "videos": n_videos,
        "chunk": args.chunk,
        "bundle": "random-weight echoprime_tiny, 32 px x 16 frames, bank of 300",
        "ray_num_cpus": cfg.ray.num_cpus,
        "runs": runs,
        "studies_per_s_1_actor": best(1),
        "studies_per_s_2_actors": best(2),
        "speedup_2_over_1": round(best(2) / best(1), 2),
        # First chunk start to last chunk end (actors started): the rate a long archive sees.
        "steady_studies_per_s_1_actor": steady(1),
        "steady_studies_per_s_2_actors": steady(2),
        "steady_speedup_2_over_1": round(steady(2) / steady(1), 2),
        "busy_actor_studies_per_s": round(args.studies * len(runs) / sum(r["actor_busy_s"] for r in runs), 3),
        "in_process_interpret_many_studies_per_s": round(args.studies / serial_s, 3),
        "cpu_cores": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "machine": platform.platform(),
        "torch_threads_per_actor": 1,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
