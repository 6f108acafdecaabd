"""What deterministic MP4 encoding of synthetic clips costs, and whether each variant repeats.

Renders the clips of ``--studies`` studies of cohort ``--seed`` once per size, then encodes
every clip as MP4 (H.264 yuv420p, crf 18, preset veryfast: the synth settings) with three
encoder variants, interleaved within each repeat so that load on a shared machine hits all alike:

* ``threads_auto``: ffmpeg picks the encoder threads (``threads=0``);
* ``threads_1``: one x264 thread (the synth writer before this benchmark's change);
* ``deterministic``: one thread and x264's ``cpu-independent=1`` (C macroblock-tree
  propagation instead of the SIMD one, which reads uninitialised memory):
  :data:`echoprime.synth.writers.X264_DETERMINISTIC`, what ``write_mp4`` uses now.

Reports, per size and variant: median wall seconds over the repeats to encode all clips, the
ratio to ``threads_1``, total bytes, and how many clips gave bytes that differ between repeats.

Usage::

    python bench/synth_encode_determinism.py [--studies 20] [--seed 0] [--sizes 112 64] \\
        [--repeats 3] [--out bench/out/synth_encode_determinism.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

import av

from echoprime.io.writers import write_video
from echoprime.synth.cohort import make_study
from echoprime.synth.writers import X264_DETERMINISTIC

VARIANTS = {
    "threads_auto": dict(threads=0),
    "threads_1": dict(threads=1),
    "deterministic": dict(threads=1, options=X264_DETERMINISTIC),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sizes", type=int, nargs="+", default=[112, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/out/synth_encode_determinism.json")
    args = ap.parse_args()
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "av": av.__version__},
        "studies": args.studies,
        "seed": args.seed,
        "repeats": args.repeats,
        "sizes": {},
    }
    for size in args.sizes:
        clips = [v for i in range(args.studies) for v in make_study(args.seed, i, size=size).videos]
        secs: dict[str, list[float]] = {k: [] for k in VARIANTS}
        digests: dict[str, list[set[str]]] = {k: [set() for _ in clips] for k in VARIANTS}
        nbytes: dict[str, int] = {}
        for _ in range(args.repeats):
            for name, kw in VARIANTS.items():
                t0, total = time.perf_counter(), 0
                for c, clip in enumerate(clips):
                    data = write_video(
                        clip.frames,
                        fps=clip.fps,
                        codec="libx264",
                        container="mp4",
                        crf=18,
                        preset="veryfast",
                        **kw,
                    )
                    total += len(data)
                    digests[name][c].add(hashlib.sha256(data).hexdigest())
                secs[name].append(time.perf_counter() - t0)
                nbytes[name] = total
        base = statistics.median(secs["threads_1"])
        rows = {
            name: {
                "median_s": round(statistics.median(s), 3),
                "all_s": [round(x, 3) for x in s],
                "ratio_to_threads_1": round(statistics.median(s) / base, 3),
                "bytes": nbytes[name],
                "clips_differing_between_repeats": sum(len(d) > 1 for d in digests[name]),
            }
            for name, s in secs.items()
        }
        shape = clips[0].frames.shape
        result["sizes"][str(size)] = {"clips": len(clips), "clip_shape": list(shape), "variants": rows}
        print(f"size {size}: {len(clips)} clips of {shape}")
        for name, r in rows.items():
            print(
                f"  {name:14s} median {r['median_s']:7.2f} s  x{r['ratio_to_threads_1']:.2f}  "
                f"{r['bytes']:>10d} B  differing {r['clips_differing_between_repeats']}"
            )
    result["load_avg_after"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
