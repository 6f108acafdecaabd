"""Where a whole study's time goes on CPU: preprocess, view classifier, encoder, attention, report.

A study of ``--videos`` files (the synthetic 600 x 800 echo of bench/preprocess_speed.py, 60
frames, different seeds; a mix of JPEG Baseline DICOM, H.264 MP4 and uncompressed DICOM, what
scanners export) interpreted in one process by ``StudyInterpreter`` stage by stage, wall time
of each stage and its share. Run it from two checkouts (``PYTHONPATH=...``) for before / after;
it uses only public methods both have. The bundle: a converted stand-in of the published
release (``python bench/startup.py --make DIR [--candidates N]``: the real towers' shapes,
random weights), so the encoder and view classifier cost what the release's do.

    python bench/study_stages.py --bundle /tmp/startup-release/bundle [--videos 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from pydicom.uid import JPEGBaseline8Bit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preprocess_speed import synthetic_echo  # noqa: E402

from echoprime.inference import StudyEncoding, StudyInterpreter  # noqa: E402
from echoprime.io.writers import write_dicom, write_video  # noqa: E402


def make_study(folder: Path, n: int, frames: int) -> list[str]:
    """``n`` files: 3 of every 5 JPEG Baseline DICOM, 1 H.264 MP4, 1 uncompressed RGB DICOM."""
    paths = []
    for i in range(n):
        clip = synthetic_echo(np.random.default_rng(i), n=frames)
        kind = ("jpeg", "jpeg", "mp4", "jpeg", "rgb")[i % 5]
        if kind == "mp4":
            p = folder / f"v{i:02d}.mp4"
            write_video(clip, p, fps=30, codec="libx264", crf=20)
        else:
            p = folder / f"v{i:02d}.dcm"
            extra = {"transfer_syntax": JPEGBaseline8Bit, "jpeg_quality": 90} if kind == "jpeg" else {}
            write_dicom(clip, p, fps=30, **extra)
        paths.append(str(p))
    return paths


def run(interp: StudyInterpreter, files: list[str]) -> dict[str, float]:
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    u8, n_valid, reports = interp.read_study(files)
    t["preprocess (read + clip)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = interp.normalise_clips(u8, n_valid)
    t["normalise"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = interp.towers.classify(x)
    t["view classifier"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = interp.towers.embed_with_tasks(x)
    t["video encoder"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    d = interp.towers.embed_dim
    sections, weights = interp.attend(emb[:, :d], probs.argmax(1))
    t["attention"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    tasks = emb[:, d:].numpy() if interp.parts.heads else None
    (result,) = interp.results.build([StudyEncoding(sections, weights, probs.numpy(), tasks)], [reports])
    t["findings + report"] = time.perf_counter() - t0
    assert result.status == "ok", result.status
    return t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--videos", type=int, default=50)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the timings as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)
    interp = StudyInterpreter.from_bundle(args.bundle, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        files = make_study(Path(tmp), args.videos, args.frames)
        t = run(interp, files)
    total = sum(t.values())
    import echoprime

    print(f"{args.videos} videos, {args.frames} frames 600 x 800, {args.threads} torch threads; "
          f"code: {Path(echoprime.__file__).parent}")  # fmt: skip
    for k, v in t.items():
        print(f"  {k:<26}{v:>8.2f} s {100 * v / total:>6.1f} %")
    print(f"  {'total':<26}{total:>8.2f} s")
    if args.out:
        Path(args.out).write_text(
            json.dumps({"videos": args.videos, "threads": args.threads, "stages_s": t, "total_s": total,
                        "code": str(Path(echoprime.__file__).parent), "load": os.getloadavg()[0]}, indent=2)
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
