"""Ingest on 1 core vs 2 cores, and ingest memory under a hard memory cap as the archive grows.

1. **Cores.** The same ingest job (`ray_jobs.ingest.run_ingest`, the config's Ray with its
   logical CPUs and decode actors unchanged) in a fresh process pinned to 1 core and to 2 cores
   (``sched_setaffinity``; Ray's daemons and workers inherit it), on a synthetic archive and on a
   third of it. Reported: files/s and the steady-state rate (the files the whole archive adds
   over the third, per extra second: start-up, listing and the manifest, paid once per job, drop
   out). This is the machine's cores changing under one unchanged job, not a change of settings.
   ``--repeats`` rounds, interleaved; medians of the wall times.
2. **Memory.** The ingest in a fresh process inside its own memory cgroup (v1, created under
   ``/sys/fs/cgroup/memory``; needs root) with a hard limit (``--cap-gb``), on an archive of
   larger frames replicated 1x and 3x (symbolic links under new study and patient ids, so the
   decoding work is real and the synthesis is paid once). Sampled every 0.2 s from the cgroup's
   ``memory.stat``: resident memory plus shared memory (Ray's object store), i.e. what the job
   holds and cannot drop; page cache from reading and writing files is left out (the kernel
   reclaims it under the limit). If the peak does not grow with the archive and the decoded
   archive is larger than the cap, the job streams it. The run fails loudly if the kernel had
   to kill a process (``oom_kill``) or an ingest lost a file.

Usage::

    python bench/ingest_scaling.py [--out bench/out/ingest_scaling.json] [--studies 300] [--repeats 3]
        [--decode-actors N]
        [--memory-studies 100] [--memory-size 160] [--cap-gb 3] [--skip-cores] [--skip-memory]

Results in docs/benchmarks.md ("Scaling on 1 and 2 cores" and "Memory while ingesting").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CGROUP_ROOT = Path("/sys/fs/cgroup/memory")


# ------------------------------------------------------------------------------ archives
def replicate_archive(src: Path, dst: Path, copies: int, fraction: float = 1.0) -> dict[str, int]:
    """An archive of ``copies`` replicas of the first ``fraction`` of ``src``'s studies: symbolic
    links to the same videos under ``r<k>/``, study and patient ids suffixed ``_r<k>`` (so the
    split by patient still holds within a replica). Returns the studies and files it holds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    studies = pq.read_table(src / "studies.parquet")
    ids = sorted(studies.column("study_id").to_pylist())
    keep = set(ids[: max(1, int(len(ids) * fraction))])
    videos = [r for r in pq.read_table(src / "manifest.parquet").to_pylist() if r["study_id"] in keep]
    st_rows = [r for r in studies.to_pylist() if r["study_id"] in keep]

    def renamed(r: dict[str, Any], k: int) -> dict[str, Any]:
        return {**r, "study_id": f"{r['study_id']}_r{k}", "patient_id": f"{r['patient_id']}_r{k}"}

    dst.mkdir(parents=True)
    out_v, out_s = [], []
    for k in range(copies):
        for r in videos:
            path = f"r{k}/{r['path']}"
            (dst / path).parent.mkdir(parents=True, exist_ok=True)
            (dst / path).symlink_to((src / r["path"]).resolve())
            out_v.append({**renamed(r, k), "path": path})
        out_s += [renamed(r, k) for r in st_rows]
    vschema = pq.read_schema(src / "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(out_v, schema=vschema), dst / "manifest.parquet")
    pq.write_table(pa.Table.from_pylist(out_s, schema=studies.schema), dst / "studies.parquet")
    return {"studies": len(out_s), "files": len(out_v)}


def decoded_bytes(src: Path) -> int:
    """Bytes of every frame of ``src``'s videos decoded to RGB uint8 (what a reader holds per file)."""
    import pyarrow.parquet as pq

    from echoprime.io import read_any

    videos = pq.read_table(src / "manifest.parquet").to_pylist()
    total, seen = 0, {}
    for r in videos:
        # Frame count and size per (view, format) are fixed by the generator; read one of each.
        key = (r.get("view"), Path(r["path"]).suffix)
        if key not in seen:
            v = read_any(str(src / r["path"]))
            seen[key] = int(v.frames.nbytes)
        total += seen[key]
    return total


# ------------------------------------------------------------------------------- the child
def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One ingest in this (fresh) process, pinned and/or in a memory cgroup as ``spec`` says."""
    if spec.get("cgroup"):
        (Path(spec["cgroup"]) / "cgroup.procs").write_text(str(os.getpid()))
    if spec.get("cores"):
        os.sched_setaffinity(0, set(range(spec["cores"])))
    from echoprime.config import load_config
    from ray_jobs.ingest import run_ingest

    cfg = load_config(spec["config"], spec.get("overrides", []))
    t0 = time.perf_counter()
    r = run_ingest(cfg, spec["src"], spec["out"], force=True)
    wall = time.perf_counter() - t0
    return {
        "files": r["files"],
        "clips": sum(r["rows"].values()),
        "rejects": r["rejects"],
        "wall_s": round(wall, 1),
        "files_per_s": round(r["files"] / wall, 2),
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def run_child(spec: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    p = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    if p.returncode != 0:
        raise RuntimeError(f"ingest child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ the cgroup
class MemoryCgroup:
    """A v1 memory cgroup with a hard limit; samples resident + shared memory of its processes."""

    def __init__(self, name: str, cap_bytes: int) -> None:
        self.path = CGROUP_ROOT / name
        if self.path.exists():
            self.path.rmdir()
        self.path.mkdir()
        (self.path / "memory.limit_in_bytes").write_text(str(cap_bytes))
        self.peak = 0
        self._stop = threading.Event()

    def held(self) -> int:
        stat = dict(line.split() for line in (self.path / "memory.stat").read_text().splitlines())
        return int(stat["total_rss"]) + int(stat["total_shmem"])

    def oom_kills(self) -> int:
        for line in (self.path / "memory.oom_control").read_text().splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def __enter__(self) -> MemoryCgroup:
        def sample() -> None:
            while not self._stop.wait(0.2):
                self.peak = max(self.peak, self.held())

        self._t = threading.Thread(target=sample, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()
        self.usage_max = int((self.path / "memory.max_usage_in_bytes").read_text())
        self.failcnt = int((self.path / "memory.failcnt").read_text())
        self.kills = self.oom_kills()
        for pid in (self.path / "cgroup.procs").read_text().split():  # stragglers, if any
            try:
                os.kill(int(pid), 9)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
        self.path.rmdir()


def cgroup_usable() -> str | None:
    """Why a memory cgroup cannot be made here (``None``: it can)."""
    if not (CGROUP_ROOT / "cgroup.procs").is_file():
        return f"no cgroup v1 memory hierarchy at {CGROUP_ROOT}"
    probe = CGROUP_ROOT / f"echoprime-probe-{os.getpid()}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        return f"cannot create a memory cgroup under {CGROUP_ROOT} ({e}); run as root"
    return None


# -------------------------------------------------------------------------------- the parts
def cores_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from echoprime.config import load_config
    from ray_jobs import synth as synth_job
    from ray_jobs.common import ray_session

    cfg = load_config(args.config, [f"synth.studies={args.studies}"])
    cohort = work / "cohort"
    with ray_session(cfg.ray):
        synth_job.generate(cfg, cohort, use_ray=True)
    archives = {
        "all": replicate_archive(cohort, work / "all", 1),
        "third": replicate_archive(cohort, work / "third", 1, fraction=1 / 3),
    }
    res: dict[str, Any] = {
        "archives": archives,
        "repeats": args.repeats,
        "decode_actors": args.decode_actors or cfg.ingest.decode_actors,
        "runs": [],
    }
    # Rounds interleave the configurations, so a slow spell of a shared machine hits all alike.
    for rnd in range(args.repeats):
        for cores in (1, 2):
            for name in ("all", "third"):
                out = str(work / f"shards_{name}_{cores}")
                spec = {"config": args.config, "src": str(work / name), "out": out, "cores": cores}
                if args.decode_actors:
                    spec["overrides"] = [f"ingest.decode_actors={args.decode_actors}"]
                row = {"round": rnd, "cores": cores, "archive": name, **run_child(spec)}
                res["runs"].append(row)
                print("cores", json.dumps(row), flush=True)
                shutil.rmtree(out, ignore_errors=True)

    def wall(cores: int, name: str) -> float:
        return statistics.median(
            r["wall_s"] for r in res["runs"] if r["cores"] == cores and r["archive"] == name
        )

    files = {n: archives[n]["files"] for n in archives}
    rate = {
        c: round((files["all"] - files["third"]) / max(wall(c, "all") - wall(c, "third"), 1e-9), 2)
        for c in (1, 2)
    }
    res["median_wall_s"] = {f"{c}_{n}": wall(c, n) for c in (1, 2) for n in ("all", "third")}
    res["steady_state_files_per_s"] = rate
    res["speedup_steady_state"] = round(rate[2] / rate[1], 2)
    res["speedup_whole_job"] = round(wall(1, "all") / wall(2, "all"), 2)
    return res


def memory_part(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    why = cgroup_usable()
    if why:
        return {"skipped": why}
    from echoprime.config import load_config
    from ray_jobs import synth as synth_job
    from ray_jobs.common import ray_session

    over = [f"synth.studies={args.memory_studies}", f"synth.size={args.memory_size}"]
    cfg = load_config(args.config, over)
    cohort = work / "cohort_mem"
    with ray_session(cfg.ray):
        synth_job.generate(cfg, cohort, use_ray=True)
    cap = int(args.cap_gb * 2**30)
    one_copy = decoded_bytes(cohort)
    res: dict[str, Any] = {"cap_gb": args.cap_gb, "synth_size": args.memory_size, "runs": []}
    for copies in args.copies:
        src = work / f"mem_x{copies}"
        arch = {**replicate_archive(cohort, src, copies), "decoded_gb": round(copies * one_copy / 2**30, 2)}
        spec = {"config": args.config, "src": str(src), "out": str(work / f"shards_mem_x{copies}")}
        with MemoryCgroup(f"echoprime-ingest-{os.getpid()}", cap) as cg:
            spec["cgroup"] = str(cg.path)
            got = run_child(spec)
        row = {
            "copies": copies,
            **arch,
            **got,
            "peak_held_gb": round(cg.peak / 2**30, 2),
            "cgroup_max_usage_gb": round(cg.usage_max / 2**30, 2),  # includes page cache
            "limit_hits": cg.failcnt,
            "oom_kills": cg.kills,
        }
        res["runs"].append(row)
        print("memory", json.dumps(row), flush=True)
        if cg.kills or got["files"] != arch["files"] or got["rejects"]:
            raise RuntimeError(f"ingest under the cap lost work or a process: {row}")
        shutil.rmtree(spec["out"], ignore_errors=True)
        shutil.rmtree(src, ignore_errors=True)
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/out/ingest_scaling.json")
    ap.add_argument("--config", default="configs/tiny-cpu.yaml")
    ap.add_argument("--studies", type=int, default=300, help="studies in the cores part's archive")
    ap.add_argument("--repeats", type=int, default=3, help="rounds of the cores part (medians reported)")
    ap.add_argument(
        "--decode-actors",
        type=int,
        default=None,
        help="ingest.decode_actors for the cores part (default: the config's)",
    )
    ap.add_argument("--memory-studies", type=int, default=100, help="studies before replication")
    ap.add_argument(
        "--memory-size", type=int, default=160, help="rendered frame size (px) for the memory part"
    )
    ap.add_argument(
        "--copies", type=int, nargs="+", default=[1, 3, 9], help="replications of the memory archive"
    )
    ap.add_argument("--cap-gb", type=float, default=3.0, help="the memory cgroup's hard limit")
    ap.add_argument("--work", default="/tmp/echoprime-ingest-scaling", help="scratch folder (deleted first)")
    ap.add_argument("--skip-cores", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    res: dict[str, Any] = {"config": args.config, "cpus": os.cpu_count()}
    if not args.skip_cores:
        res["cores"] = cores_part(args, work)
    if not args.skip_memory:
        res["memory"] = memory_part(args, work)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
