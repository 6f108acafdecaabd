"""How many synthetic echo videos one core makes per second.

Times, for clips of 32 frames of 112 x 150 (the cohort default), over every view in turn:

* ``render``: :func:`echoprime.synth.render.render_video` alone;
* ``render_mp4``: render + :func:`echoprime.synth.writers.write_mp4` (H.264, one thread);
* ``render_dicom``: render + :func:`echoprime.synth.writers.write_dicom` (the three storage
  variants in turn: RGB, native YBR_FULL_422, JPEG Baseline).

Target: ``render`` >= 20 videos/s per core. Everything runs on one thread (``cv2.setNumThreads(1)``,
one encoder thread) and is timed in CPU seconds of this process (best of the repeats), which
stays stable on a machine shared with other jobs; videos/s means videos per CPU-second.

Usage::

    python bench/synth_speed.py [--out bench/out/synth_speed.json] [--videos 66] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from echoprime.synth.cohort import DICOM_VARIANTS
from echoprime.synth.render import render_video
from echoprime.synth.state import sample_state
from echoprime.synth.writers import write_dicom, write_mp4
from echoprime.taxonomy import VIEWS

FRAMES, SIZE = 32, 112
UIDS = dict(study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.5", patient_id="p0")


def _time(fn: Callable[[int], None], n: int, repeats: int) -> float:
    """Best CPU seconds per call of ``fn(i)`` over ``n`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t0) / n)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/synth_speed.json", help="where to write the JSON result")
    ap.add_argument("--videos", type=int, default=66, help="videos per repeat (cycled over the 11 views)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the best is reported")
    args = ap.parse_args(argv)
    if args.videos < 1 or args.repeats < 1:
        raise ValueError(f"--videos and --repeats must be >= 1, got {args.videos}, {args.repeats}")
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    states = [sample_state(rng, f"p{i}", f"s{i}") for i in range(args.videos)]

    def render(i: int):
        return render_video(
            states[i], VIEWS[i % len(VIEWS)], np.random.default_rng(i), frames=FRAMES, size=SIZE
        )

    render(0)  # warm the geometry caches and imports
    with tempfile.TemporaryDirectory() as tmp:
        mp4, dcm = Path(tmp) / "x.mp4", Path(tmp) / "x.dcm"

        def render_mp4(i: int) -> None:
            v = render(i)
            write_mp4(mp4, v.frames, v.fps)

        def render_dicom(i: int) -> None:
            v = render(i)
            photometric, jpeg = DICOM_VARIANTS[i % len(DICOM_VARIANTS)]
            write_dicom(dcm, v.frames, v.fps, photometric=photometric, compress=jpeg, **UIDS)

        secs = {
            name: _time(fn, args.videos, args.repeats)
            for name, fn in (("render", render), ("render_mp4", render_mp4), ("render_dicom", render_dicom))
        }
    per_view = {}
    for view in VIEWS:
        t0 = time.process_time()
        for i in range(3):
            render_video(states[i], view, np.random.default_rng(100 + i), frames=FRAMES, size=SIZE)
        per_view[view] = round((time.process_time() - t0) / 3 * 1000, 2)
    result = {
        "clip": {"frames": FRAMES, "height": SIZE, "width": render(0).frames.shape[2]},
        "videos_per_cpu_s": {k: round(1.0 / v, 1) for k, v in secs.items()},
        "ms_per_video": {k: round(v * 1000, 2) for k, v in secs.items()},
        "render_ms_by_view": per_view,
        "target_render_videos_per_s": 20,
        "videos": args.videos,
        "repeats": args.repeats,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["videos_per_cpu_s"].items():
        print(f"{k:>13}: {v:6.1f} videos/s per core ({result['ms_per_video'][k]:.1f} ms/video)")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
