"""Ray stages on 1 and 2 CPUs: ingest throughput and memory, pretraining throughput and data wait.

1. **Ingest** (`ray_jobs.ingest.run_ingest`) of one synthetic archive and of a third of it,
   each with 1 and with 2 decode actors: files/s, and the steady-state rate (the files the whole
   archive adds over the third, per extra second: what every run pays once drops out). If the
   peak memory in use (the machine's MemTotal - MemAvailable, sampled every 0.2 s,
   minus what was in use before) does not grow with the archive, Ray Data streams it instead of
   holding it, so an archive larger than RAM goes through the same way.
2. **Pretraining** (`ray_jobs.pretrain.run_pretrain`) with 1 and 2 Ray Train workers (per-worker
   batch 32, 3 epochs, the tiny towers): clips/s over all workers and the fraction of step time
   spent waiting for data, as the job reports them.

Everything runs in one local Ray with the config's logical CPUs (4 for 2 cores, see
configs/tiny-cpu.yaml). Results in docs/benchmarks.md.

Usage::

    python bench/ray_scaling.py [--out bench/out/ray_scaling.json] [--studies 300] [--work /tmp/rs]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest_scaling import replicate_archive  # noqa: E402 - a bench/ sibling, found through sys.path


def mem_in_use_gb() -> float:
    info = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        info[k] = int(v.split()[0])
    return (info["MemTotal"] - info["MemAvailable"]) / 2**20


class PeakMemory:
    """Samples the machine's memory in use in a thread; ``peak_gb`` above the starting level."""

    def __enter__(self) -> PeakMemory:
        self.base = mem_in_use_gb()
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, mem_in_use_gb())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.peak_gb = round(self.peak - self.base, 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/out/ray_scaling.json")
    ap.add_argument("--studies", type=int, default=300)
    ap.add_argument("--work", default="/tmp/echoprime-ray-scaling", help="scratch folder (deleted first)")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--skip-pretrain", action="store_true", help="only the ingest runs")
    args = ap.parse_args(argv)

    from echoprime.config import load_config
    from ray_jobs import synth as synth_job
    from ray_jobs.common import ray_session
    from ray_jobs.ingest import run_ingest
    from ray_jobs.pretrain import run_pretrain

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    # --studies is the whole cohort: no separate test set on top of it
    cfg = load_config(args.config, [f"synth.studies={args.studies}", "synth.test_studies=0"])
    res: dict = {"config": args.config, "studies": args.studies, "ingest": [], "pretrain": []}
    t_all = time.perf_counter()
    with ray_session(cfg.ray):
        synth_job.generate(cfg, work / "cohort", use_ray=True)
        third = work / "cohort_third"
        n_third = replicate_archive(work / "cohort", third, 1, fraction=1 / 3)["studies"]
        runs = [
            ("all", work / "cohort", 1),
            ("third", third, 1),
            ("all", work / "cohort", 2),
            ("third", third, 2),
        ]
        for name, src, actors in runs:
            c = cfg.replace(ingest={**cfg.ingest.model_dump(), "decode_actors": actors})
            out = work / f"shards_{name}_{actors}"
            t0 = time.perf_counter()
            with PeakMemory() as pm:
                r = run_ingest(c, str(src), str(out))
            wall = time.perf_counter() - t0
            rows = sum(r["rows"].values())
            row = {
                "archive": name,
                "studies": n_third if name == "third" else args.studies,
                "decode_actors": actors,
                "files": r["files"],
                "clips": rows,
                "wall_s": round(wall, 1),
                "files_per_s": round(r["files"] / wall, 2),
                "peak_mem_gb": pm.peak_gb,
            }
            res["ingest"].append(row)
            print("ingest", json.dumps(row), flush=True)
        # Steady-state rate: the files the full archive adds over the third, per extra second. It
        # leaves out what every run pays once (Ray Data start-up, listing, the actors' start, the
        # manifest), which the plain files/s above includes.
        for actors in (1, 2):
            a, t = (
                next(r for r in res["ingest"] if r["archive"] == n and r["decode_actors"] == actors)
                for n in ("all", "third")
            )
            res.setdefault("ingest_marginal_files_per_s", {})[actors] = round(
                (a["files"] - t["files"]) / max(a["wall_s"] - t["wall_s"], 1e-9), 2
            )
        print("ingest marginal files/s", json.dumps(res["ingest_marginal_files_per_s"]), flush=True)
        shards = work / "shards_all_2"
        for workers in () if args.skip_pretrain else (1, 2):
            c = cfg.replace(
                train={
                    **cfg.train.model_dump(),
                    "num_workers": workers,
                    "epochs": 3,
                    "time_budget_s": None,
                    "storage_path": str(work / f"runs{workers}"),
                    "checkpoint_every_steps": 10_000,
                }
            )
            t0 = time.perf_counter()
            r = run_pretrain(c, str(shards), str(work / f"bundle{workers}" / "pretrained"))
            row = {
                "workers": workers,
                "per_worker_batch": c.train.batch_size,
                "steps": r["steps"],
                "clips_per_s": round(r["clips_per_s"], 1),
                "data_wait_frac": round(r["data_wait_frac"], 3),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
            res["pretrain"].append(row)
            print("pretrain", json.dumps(row), flush=True)
    res["wall_s"] = round(time.perf_counter() - t_all, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
