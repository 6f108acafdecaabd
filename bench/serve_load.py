"""Load on the Serve graph over loopback HTTP, the graph's overhead, and CPU encoder cost.

1. **Graph load** (tiny random-weights bundle, 64-px synthetic studies of 3-4 videos, MP4 and
   DICOM mixed; a local Ray with 4 logical CPUs on the machine's cores; deployments as in
   configs/serve.yaml): studies/s and p50/p95/p99 latency at 1, 4 and 16 concurrent clients,
   with 1 and with 2 VideoEncoder replicas. Each level is bounded in time and count.
2. **Direct**: the same studies through ``StudyInterpreter.interpret`` in this one process,
   the same numbers of client threads (torch on all cores); the graph's overhead is
   ``direct studies/s / graph studies/s - 1`` and the p50 latency ratio.
   With ``--towers release`` the same comparison runs with the release-size towers (random
   weights): the graph's fixed cost per study against a realistic model cost on CPU (results
   under ``load_release``). ``--videos MIN MAX`` sets the study size (default 3-4 videos) to see
   how the graph's fixed cost per request compares with larger studies (``load_v48-52`` ...).
3. **CPU encoder cost** (``--cpu-cost``): the release-size video encoder (mViT v2 S, random
   weights, 3 x 16 x 224 x 224 clips) and view classifier (ConvNeXt-base on the first frame),
   seconds per clip by batch size on 2 threads, with glibc's allocator and with tcmalloc
   preloaded (Debian's libtcmalloc-minimal4), each in a fresh process.

Usage::

    python bench/serve_load.py [--out bench/out/serve_load.json] [--levels 1 4 16]
        [--per-level-s 40] [--per-level-n 64] [--bundle DIR] [--cpu-cost] [--skip-load]
        [--encoder-replicas 1 2] [--skip-direct] [--towers tiny|release] [--videos MIN MAX]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"


def percentiles(lat: list[float]) -> dict[str, float]:
    q = statistics.quantiles(lat, n=100, method="inclusive") if len(lat) > 1 else [lat[0]] * 99
    return {"p50_s": round(q[49], 4), "p95_s": round(q[94], 4), "p99_s": round(q[98], 4)}


def drive(
    call: Any, studies: list[Any], clients: int, per_level_s: float, per_level_n: int
) -> dict[str, Any]:
    """``clients`` threads call ``call(study)`` round-robin until the time or count budget is spent."""
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = [0]
    deadline = time.perf_counter() + per_level_s

    def worker(c: int) -> None:
        while True:
            with lock:
                if issued[0] >= per_level_n or time.perf_counter() > deadline:
                    return
                i = issued[0]
                issued[0] += 1
            t = time.perf_counter()
            try:
                call(studies[(c + i) % len(studies)])
            except Exception as e:  # noqa: BLE001 - a failed request is counted and reported, not fatal
                with lock:
                    errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            with lock:
                lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {
        "clients": clients,
        "studies": len(lat),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": round(wall, 2),
        "studies_per_s": round(len(lat) / wall, 3),
        **(percentiles(lat) if lat else {}),
    }


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of every process on the machine, by pid, with a short name
    (Ray's process title, e.g. ``ray::ServeReplica:echoprime:Preprocess``, or the command)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        secs = (int(fields[11]) + int(fields[12])) / tick
        name = (
            cmd.split(" ")[0]
            if cmd.startswith("ray::")
            else Path(cmd.split(" ")[0]).name + " " + " ".join(a for a in cmd.split(" ")[1:3])
        )
        out[int(d.name)] = (name.strip() or stat[stat.index("(") + 1 : stat.rindex(")")], secs)
    return out


def cpu_breakdown(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], n: int
) -> dict[str, float]:
    """CPU seconds per study by process name between two snapshots (largest first)."""
    by: dict[str, float] = {}
    for pid, (name, secs) in after.items():
        used = secs - before.get(pid, (name, 0.0))[1]
        if used > 0.005 * max(n, 1):
            key = "this process (clients)" if pid == os.getpid() else name
            by[key] = by.get(key, 0.0) + used
    return {k: round(v / max(n, 1), 4) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}


def make_studies(n: int, videos: tuple[int, int] = (3, 4)) -> list[list[tuple[str, bytes]]]:
    """``n`` synthetic 64-px studies of ``videos`` (min, max) files each, MP4 and DICOM mixed."""
    from echoprime.synth.cohort import make_study, write_study

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(n):
            st = make_study(31, i, min_videos=videos[0], max_videos=videos[1], size=64)
            write_study(st, tmp, fmt="both")
            folder = Path(tmp) / "videos" / st.study_id
            out.append([(p.name, p.read_bytes()) for p in sorted(folder.iterdir())])
    return out


def load_bench(args: argparse.Namespace) -> dict[str, Any]:
    import requests
    import torch

    from echoprime.inference import StudyInterpreter

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    bundle = args.bundle
    if bundle is None:
        from tests.fixtures_bundle import make_random_bundle

        torch.set_num_threads(1)
        bundle = str(make_random_bundle(work / "bundle", towers=args.towers))
    studies = make_studies(8, tuple(args.videos))
    res: dict[str, Any] = {
        "bundle": f"tests/fixtures_bundle.py random {args.towers}" if args.bundle is None else bundle
    }
    res["videos_per_study"] = [len(s) for s in studies]

    # -- direct, in this process
    torch.set_num_threads(os.cpu_count() or 1)
    interp = StudyInterpreter.from_bundle(bundle, device="cpu")
    for s in studies[:2]:
        interp.interpret(s)  # warm-up
    res["direct"] = []
    for c in [] if args.skip_direct else args.levels:
        before = cpu_snapshot()
        r = drive(interp.interpret, studies, c, args.per_level_s, args.per_level_n)
        r["cpu_s_per_study"] = cpu_breakdown(before, cpu_snapshot(), r["studies"])
        res["direct"].append(r)
    for r in res["direct"]:
        print(
            f"direct  clients {r['clients']:>2}: {r['studies_per_s']:.2f} studies/s p50 {r.get('p50_s')}",
            flush=True,
        )
    del interp
    torch.set_num_threads(1)

    # -- the graph, over loopback HTTP
    import ray
    from ray import serve

    from ray_jobs.serve_query import served_app
    from serve.args import read_serve_config

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=512 << 20,
        logging_level="WARNING",
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}},
    )
    _, options, _ = read_serve_config(ROOT / "configs" / "serve.yaml")
    res["graph"] = {}
    for replicas in args.encoder_replicas:
        opts = {k: dict(v) for k, v in options.items()}
        for name in opts:  # fixed replica counts: autoscaling would change them mid-level
            opts[name].pop("autoscaling_config", None)
            opts[name]["num_replicas"] = 1
        opts["VideoEncoder"]["num_replicas"] = replicas
        t = time.perf_counter()
        with served_app(bundle, options=opts) as app:
            startup = time.perf_counter() - t
            session = threading.local()

            def call(items: list[tuple[str, bytes]], app=app, session=session) -> None:
                s = getattr(session, "s", None) or requests.Session()
                session.s = s
                r = s.post(
                    f"{app.url}/v1/interpret",
                    files=[("files", it) for it in items],
                    headers=app.headers(),
                    timeout=300,
                )
                if r.status_code != 200:
                    raise RuntimeError(f"{r.status_code} {r.text[:200]}")

            for s in studies[:2]:
                call(s)  # warm-up
            levels = []
            for c in args.levels:
                before = cpu_snapshot()
                r = drive(call, studies, c, args.per_level_s, args.per_level_n)
                # Where the CPU went, per study: which hop of the graph costs what.
                r["cpu_s_per_study"] = cpu_breakdown(before, cpu_snapshot(), r["studies"])
                levels.append(r)
            enc = serve.get_deployment_handle("VideoEncoder", app_name="echoprime")
            batches = enc.stats.remote().result(timeout_s=60)["batches"]
        res["graph"][f"encoder_replicas_{replicas}"] = {
            "startup_s": round(startup, 1),
            "levels": levels,
            "encoder_batch_clips_max": max(batches) if batches else 0,
            "encoder_batch_clips_mean": round(statistics.mean(batches), 2) if batches else 0,
        }
        for r in levels:
            print(
                f"graph ({replicas} enc) clients {r['clients']:>2}: {r['studies_per_s']:.2f} studies/s "
                f"p50 {r.get('p50_s')} p95 {r.get('p95_s')} errors {r['errors']}",
                flush=True,
            )
    ray.shutdown()
    # The overhead of each graph configuration over the direct path, level by level.
    res["overhead_vs_direct"] = [
        {
            "encoder_replicas": int(name.rsplit("_", 1)[1]),
            "clients": d["clients"],
            "throughput_overhead": round(d["studies_per_s"] / g["studies_per_s"] - 1, 3),
            "p50_latency_ratio": round(g["p50_s"] / d["p50_s"], 2),
        }
        for name, run in res["graph"].items()
        for d, g in zip(res["direct"], run["levels"], strict=False)  # no direct run: no overhead
        if g["studies"] and d["studies"]
    ]
    return res


def cost_worker(batches: list[int], threads: int, budget_s: float, reps: int) -> dict[str, Any]:
    """In a fresh process: seconds per clip of the release-size towers by batch size."""
    import resource

    import torch

    from echoprime.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    enc = create_model("echoprime_mvit_v2_s").eval()
    views = create_model("echoprime_convnext_base_views").eval()
    out: dict[str, Any] = {"threads": threads, "encoder": {}, "views": {}}

    def timed(fn: Any, x: torch.Tensor, reps: int) -> dict[str, float]:
        # Wall and CPU time (all threads) per clip, the best of `reps` runs: on a shared machine
        # the other processes only ever add time, so the minimum is the machine's own speed.
        walls, cpus = [], []
        for _ in range(reps):
            w, c = time.perf_counter(), time.process_time()
            fn(x)
            walls.append((time.perf_counter() - w) / x.shape[0])
            cpus.append((time.process_time() - c) / x.shape[0])
        return {"wall_s_per_clip": round(min(walls), 3), "cpu_s_per_clip": round(min(cpus), 3)}

    with torch.inference_mode():
        enc(torch.randn(1, 3, 16, 224, 224))  # warm-up: first-call allocations
        views(torch.randn(1, 3, 16, 224, 224))
        t_end = time.perf_counter() + budget_s
        for b in batches:
            if time.perf_counter() > t_end:
                break
            x = torch.randn(b, 3, 16, 224, 224)
            out["encoder"][str(b)] = timed(enc, x, reps)
            out["views"][str(b)] = timed(views, x, max(reps, 3))
    out["load_average"] = [round(v, 2) for v in os.getloadavg()]
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    return out


def cpu_cost(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    allocators = {"glibc": None, "tcmalloc": TCMALLOC if Path(TCMALLOC).is_file() else None}
    for name, preload in allocators.items():
        if name == "tcmalloc" and preload is None:
            res[name] = {"skipped": f"{TCMALLOC} missing: apt-get install libtcmalloc-minimal4"}
            continue
        env = {**os.environ, "OMP_NUM_THREADS": str(args.cost_threads)}
        if preload:
            env["LD_PRELOAD"] = preload
        cmd = [sys.executable, __file__, "--cost-worker", "--batches", *map(str, args.batches)]
        cmd += ["--cost-threads", str(args.cost_threads), "--cost-reps", str(args.cost_reps)]
        cmd += ["--cost-budget-s", str(args.cost_budget_s)]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if p.returncode != 0:
            raise RuntimeError(f"cost worker ({name}) failed:\n{p.stderr[-2000:]}")
        res[name] = json.loads(p.stdout.strip().splitlines()[-1])
        print(f"{name}: {res[name]}", flush=True)
    return res


def result_key(towers: str, videos: list[int]) -> str:
    """Where a load run is kept in the output: ``load`` for the default (tiny towers, 3-4-video
    studies), ``load_release``, ``load_v48-52`` ...: runs of other kinds sit beside it, not over it."""
    key = "load" if towers == "tiny" else f"load_{towers}"
    return key if list(videos) == [3, 4] else f"{key}_v{videos[0]}-{videos[1]}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="bench/out/serve_load.json")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--per-level-s", type=float, default=40.0)
    ap.add_argument("--per-level-n", type=int, default=64)
    ap.add_argument(
        "--encoder-replicas", type=int, nargs="+", default=[1, 2], help="VideoEncoder replica counts to run"
    )
    ap.add_argument(
        "--videos",
        type=int,
        nargs=2,
        default=[3, 4],
        metavar=("MIN", "MAX"),
        help="videos per study (default 3 4; a clinical study has dozens): the graph's fixed cost "
        "per request against a study's size",
    )
    ap.add_argument("--skip-direct", action="store_true", help="only the graph (no in-process baseline)")
    ap.add_argument("--bundle", default=None, help="a bundle to serve (default: a random tiny one)")
    ap.add_argument(
        "--towers",
        choices=["tiny", "release"],
        default="tiny",
        help="towers of the random bundle: tiny, or the release-size mViT v2 S + ConvNeXt-base "
        "(minutes per level on CPU: use e.g. --levels 4 --per-level-n 8 --encoder-replicas 1)",
    )
    ap.add_argument("--cpu-cost", action="store_true", help="also time the release-size towers on CPU")
    ap.add_argument("--skip-load", action="store_true", help="only the CPU cost")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--cost-threads", type=int, default=2)
    ap.add_argument("--cost-budget-s", type=float, default=600.0)
    ap.add_argument("--cost-reps", type=int, default=2, help="runs per batch size (the best counts)")
    ap.add_argument("--cost-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.cost_worker:
        print(json.dumps(cost_worker(args.batches, args.cost_threads, args.cost_budget_s, args.cost_reps)))
        return 0
    out = Path(args.out)
    result: dict[str, Any] = {}
    if out.is_file():
        result = json.loads(out.read_text())  # keep the other part when re-running one
    result["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    if not args.skip_load:
        # The release-size run is kept beside the tiny one, not over it.
        result[result_key(args.towers, args.videos)] = load_bench(args)
    if args.cpu_cost or args.skip_load:
        result["cpu_cost"] = cpu_cost(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
