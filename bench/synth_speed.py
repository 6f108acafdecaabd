"""How many synthetic echo videos one core makes per second.

Times, for clips of 32 frames of 112 x 150 (the cohort default), over every view in turn:

* ``render``: :func:`echoprime.synth.render.render_video` alone;
* ``render_mp4``: render + :func:`echoprime.synth.writers.write_mp4` (H.264, one thread);
* ``render_dicom``: render + :func:`echoprime.synth.writers.write_dicom` (the three storage
  variants in turn: RGB, native YBR_FULL_422, JPEG Baseline).

Also measured (``signal_32px``, skip with ``--no-signal``): how strongly each finding shows after
the model's preprocessing at 32 px (release crop, bicubic resize): the mean absolute grey-level
difference per pixel and frame between the same clip (same generator) rendered at the grade just
below the label's threshold and at the threshold (e.g. mild vs moderate MR), in each view
``VISIBILITY`` lists for it; the largest over those views is the finding's figure.

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

from echoprime.preprocess import crop_and_scale
from echoprime.synth.cohort import DICOM_VARIANTS
from echoprime.synth.render import render_video
from echoprime.synth.state import VISIBILITY, PatientState, sample_state
from echoprime.synth.writers import write_dicom, write_mp4
from echoprime.taxonomy import VIEWS

FRAMES, SIZE = 32, 112
UIDS = dict(study_uid="1.2.3", series_uid="1.2.3.4", sop_uid="1.2.3.4.5", patient_id="p0")
# finding -> (value below the label threshold, value at it); regressions: two typical values
CONTRASTS = {
    "ef": (60, 35),
    "lv_size": (1, 2),
    "amyloidosis": (False, True),
    "stemi": (False, True),
    "impella": (False, True),
    "rv_size": (1, 2),
    "rv_function": (1, 2),
    "pacemaker": (False, True),
    "la_size": (1, 2),
    "ra_size": (1, 2),
    "pfo": (False, True),
    "mitraclip": (False, True),
    "mac": (False, True),
    "ms": (1, 2),
    "mr": (2, 3),
    "tavr": (False, True),
    "bicuspid": (False, True),
    "as_": (1, 2),
    "ar": (2, 3),
    "ts": (1, 2),
    "tr": (2, 3),
    "pr": (2, 3),
    "effusion": (2, 3),
    "aortic_root": (1, 2),
    "ivc_dilated": (False, True),
    "pasp": (30, 50),
}


def _time(fn: Callable[[int], None], n: int, repeats: int) -> float:
    """Best CPU seconds per call of ``fn(i)`` over ``n`` calls."""
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        for i in range(n):
            fn(i)
        best = min(best, (time.process_time() - t0) / n)
    return best


def _state(finding: str, value) -> PatientState:
    if finding == "stemi":
        return PatientState("p", "s", stemi=bool(value), stemi_territory="LAD" if value else None)
    return PatientState("p", "s", **{finding: value})


def signal_32px(seeds: int = 2) -> dict[str, dict]:
    """Per finding: mean |difference| at 32 px between its two contrast values, per view."""
    out = {}
    for finding, (lo, hi) in CONTRASTS.items():
        per_view = {}
        for view in VISIBILITY[finding]:
            diffs = []
            for seed in range(seeds):
                a, b = (
                    render_video(
                        _state(finding, v), view, np.random.default_rng([seed, 1]), frames=FRAMES, size=SIZE
                    )
                    for v in (lo, hi)
                )
                small = [
                    np.stack([crop_and_scale(f, 32) for f in x.frames]).astype(np.float32) for x in (a, b)
                ]
                diffs.append(float(np.abs(small[0] - small[1]).mean()))
            per_view[view] = round(float(np.mean(diffs)), 2)
        out[finding] = {"contrast": [lo, hi], "max": max(per_view.values()), "by_view": per_view}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/out/synth_speed.json", help="where to write the JSON result")
    ap.add_argument("--videos", type=int, default=66, help="videos per repeat (cycled over the 11 views)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the best is reported")
    ap.add_argument("--no-signal", action="store_true", help="skip the 32 px signal table")
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
        "signal_32px": None if args.no_signal else signal_32px(),
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
    for k, v in (result["signal_32px"] or {}).items():
        print(f"{k:>13}: {v['contrast']} -> {v['max']:5.2f} grey levels at 32 px (best view)")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
