"""Decode only what the model sees: file -> model clip per video per core, against the release.

The model takes 16 frames at stride 2 from frame 0: source frames 0, 2, ..., 30. Inference now
reads only those (``PreprocessSpec.clip_reading`` + ``echoprime.io.files.clip_reader``): a native
or JPEG-family DICOM decodes the 16 frames' own bytes and nothing else; a video decodes frames
0-30 (later frames are predicted from earlier ones) and converts only the 16 to RGB. This script
times, per video, CPU seconds of one thread, best of the repeats, interleaved:

* ``release``: the published EchoPrime ``process_dicoms`` / ``process_mp4s``, run unmodified from
  the user's own checkout of its code (``--release-code``; academic licence: it is imported and
  run, never copied), on a folder holding the one file. Its MP4 path calls
  ``torchvision.io.read_video``, which torchvision 0.29 no longer has; where it is missing it is
  re-created here as torchvision's PyAV backend was (every frame decoded to RGB).
* ``all frames``: our release-compatible helpers before this change (every frame decoded).
* ``window``: our inference before this change (the first 32 frames decoded, every one converted).
* ``clip``: our inference now (the 16 sampled frames read, preprocessed and normalised).
* ``decode used``: the readers alone on the frames ``clip`` uses (its floor).

Also measured: how the sector mask found from the clip's own 16 frames differs from the one
found from all 32 frames of the window (the only way the clip can differ, docs/ingestion.md), on
rendered echoes whose true fan and annotation pixels are known, in four encodings.

Usage::

    git clone https://github.com/echonet/EchoPrime ~/EchoPrime     # optional, for the release column
    python bench/clip_reading.py --release-code ~/EchoPrime [--frames 60] [--repeats 5]
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # the release's progress bars, read when tqdm is imported

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from preprocess_speed import _cpu_model, synthetic_echo, timed
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from echoprime.io import read_any, read_video
from echoprime.io.files import clip_reader, prepare_clip
from echoprime.io.writers import write_dicom, write_video
from echoprime.preprocess import RELEASE_SPEC, normalise, preprocess_uint8, preprocess_video, valid_frames
from echoprime.sector import sector_mask

SPEC = RELEASE_SPEC


def _reader(kind: str) -> Callable[..., Any]:
    """One decoder thread for video, as the release's read is timed per core."""
    if kind == "mp4":
        return lambda src, name=None, **kw: read_video(src, name=name, threads=1, **kw)
    return read_any


def _pyav_read_video(path: Any, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """torchvision.io.read_video as its PyAV backend did it: every frame to RGB, T x H x W x 3."""
    import av

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.codec_context.thread_count = 1
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
        fps = float(s.average_rate or 0)
    return torch.from_numpy(np.stack(frames)), torch.zeros((1, 0)), {"video_fps": fps}


def release_processor(code: Path) -> Any:
    """The published class with only the attributes its process_* methods read (no weights)."""
    import torchvision.io

    if not hasattr(torchvision.io, "read_video"):
        torchvision.io.read_video = _pyav_read_video
    sys.path.insert(0, str(code))
    here = os.getcwd()
    os.chdir(code)  # its utils module reads assets/ relative to the working directory on import
    try:
        from echo_prime.model import EchoPrime
    finally:
        os.chdir(here)
    ep = EchoPrime.__new__(EchoPrime)
    ep.frames_to_take, ep.frame_stride, ep.video_size = SPEC.frames * SPEC.stride, SPEC.stride, SPEC.size
    ep.mean = torch.tensor(SPEC.mean).reshape(3, 1, 1, 1)
    ep.std = torch.tensor(SPEC.std).reshape(3, 1, 1, 1)
    return ep


def cases(frames: np.ndarray, tmp: Path) -> dict[str, tuple[str, Path]]:
    out = {
        "MP4, H.264": ("mp4", "clip.mp4"),
        "DICOM, uncompressed RGB": ("dcm", "rgb.dcm"),
        "DICOM, JPEG Baseline 4:2:2": ("dcm", "jpeg.dcm"),
        "DICOM, RLE Lossless": ("dcm", "rle.dcm"),
    }
    paths = {}
    for case, (kind, name) in out.items():
        folder = tmp / name.split(".")[0]
        folder.mkdir()
        path = folder / name
        if kind == "mp4":
            write_video(frames, path, fps=30, codec="libx264", crf=20, threads=1)
        elif "JPEG" in case:
            write_dicom(frames, path, fps=30, transfer_syntax=JPEGBaseline8Bit, jpeg_quality=90)
        elif "RLE" in case:
            write_dicom(frames, path, fps=30, transfer_syntax=RLELossless)
        else:
            write_dicom(frames, path, fps=30)
        paths[case] = (kind, path)
    return paths


def measure(kind: str, path: Path, release: Any, repeats: int) -> dict[str, Any]:
    read = _reader(kind)
    clip_read = clip_reader(SPEC, read)

    def now() -> np.ndarray:
        u8, n_valid = prepare_clip(clip_read(path), SPEC)
        return normalise(u8, SPEC.mean, SPEC.std, n_valid=n_valid)

    def window() -> np.ndarray:
        f = read(path, max_frames=SPEC.frames * SPEC.stride).frames
        return normalise(
            preprocess_uint8(f, SPEC), SPEC.mean, SPEC.std, n_valid=valid_frames(f.shape[0], SPEC)
        )

    fns: dict[str, Callable[[], object]] = {
        "clip": now,
        "decode_used": lambda: read(path, **SPEC.clip_reading()),
        "window": window,
        "all_frames": lambda: preprocess_video(read(path).frames, SPEC),
        "decode_all": lambda: read(path),
    }
    if release is not None:
        method = release.process_mp4s if kind == "mp4" else release.process_dicoms
        fns["release"] = lambda: method(str(path.parent))
    t = timed(fns, repeats)
    a, b = now(), window()
    row: dict[str, Any] = {f"{k}_s": v for k, v in t.items()}
    row["clip_over_decode_used"] = t["clip"] / t["decode_used"]
    row["window_over_clip"] = t["window"] / t["clip"]
    row["clip_vs_window_values_differing"] = float((a != b).mean())
    row["clip_vs_window_max_abs"] = float(np.abs(a - b).max())
    if release is not None:
        row["release_over_clip"] = t["release"] / t["clip"]
        row["release_over_window"] = t["release"] / t["window"]
        rel = (release.process_mp4s if kind == "mp4" else release.process_dicoms)(str(path.parent))
        row["release_shape"] = list(rel.shape)
    return row


def mask_agreement(size: int, seeds: int) -> list[dict[str, Any]]:
    """The sector from the clip's 16 frames against the one from the window's 32, on rendered
    echoes (every view, ``seeds`` patients, 40 frames) in four encodings, against the truth."""
    from echoprime.synth.render import render_video
    from echoprime.synth.state import sample_state
    from echoprime.taxonomy import VIEWS

    out = []
    for enc in ("native RGB", "RLE", "JPEG Baseline", "H.264"):
        acc: dict[str, list[float]] = {k: [] for k in ("ann_old", "ann_new", "fan_old", "fan_new", "diff")}
        for seed in range(seeds):
            for view in VIEWS:
                rng = np.random.default_rng([seed, VIEWS.index(view)])
                v = render_video(sample_state(rng, "P", "S"), view, rng, frames=40, size=size, fps=30)
                if enc == "H.264":
                    data, name = write_video(v.frames, fps=30, threads=1), "a.mp4"
                else:
                    ts = {"RLE": RLELossless, "JPEG Baseline": JPEGBaseline8Bit}.get(enc)
                    data, name = (
                        write_dicom(v.frames, fps=30, **({"transfer_syntax": ts} if ts else {})),
                        "a.dcm",
                    )
                whole = read_any(data, name=name, max_frames=32).frames
                sampled = whole[0:31:2]
                n_ann, n_fan = max(1, int(v.annotation_mask.sum())), int(v.sector_mask.sum())
                for tag, fr in (("old", whole), ("new", sampled)):
                    m = sector_mask(fr).mask
                    acc[f"ann_{tag}"].append(float((m & v.annotation_mask).sum()) / n_ann)
                    acc[f"fan_{tag}"].append(float((m & v.sector_mask).sum()) / n_fan)
                old_clip = preprocess_uint8(whole, SPEC)
                new_clip = prepare_clip(read_any(data, name=name, **SPEC.clip_reading()), SPEC)[0]
                acc["diff"].append(float((old_clip != new_clip).mean()))
        out.append(
            {
                "encoding": enc,
                "videos": len(acc["diff"]),
                "annotation_kept_window": float(np.mean(acc["ann_old"])),
                "annotation_kept_clip": float(np.mean(acc["ann_new"])),
                "fan_kept_window": float(np.mean(acc["fan_old"])),
                "fan_kept_clip": float(np.mean(acc["fan_new"])),
                "fan_kept_clip_worst": float(np.min(acc["fan_new"])),
                "clip_values_differing_mean": float(np.mean(acc["diff"])),
                "clip_values_differing_max": float(np.max(acc["diff"])),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--release-code", type=Path, help="a checkout of github.com/echonet/EchoPrime (optional)")
    ap.add_argument("--frames", type=int, default=60, help="frames in the 600 x 800 source clip")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mask-size", type=int, default=224, help="rendered echo height for the mask check")
    ap.add_argument("--mask-seeds", type=int, default=2)
    ap.add_argument("--out", default="bench/out/clip_reading.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    release = release_processor(args.release_code) if args.release_code else None
    frames = synthetic_echo(np.random.default_rng(0), n=args.frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case, (kind, path) in cases(frames, Path(tmp)).items():
            row = {"case": case, "bytes": path.stat().st_size, **measure(kind, path, release, args.repeats)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
    print(f"\n{args.frames} frames 600 x 800 -> 3 x 16 x 224 x 224; CPU ms per video, one thread\n")
    head = f"{'case':<28}{'release':>9}{'all frames':>11}{'window':>8}{'clip':>7}{'decode used':>12}{'release/clip':>14}{'clip/decode':>12}"
    print(head + "\n" + "-" * len(head))
    for r in rows:
        rel = f"{1000 * r['release_s']:>9.0f}" if "release_s" in r else f"{'-':>9}"
        ratio = f"{r['release_over_clip']:>13.1f}x" if "release_s" in r else f"{'-':>14}"
        print(
            f"{r['case']:<28}{rel}{1000 * r['all_frames_s']:>11.0f}{1000 * r['window_s']:>8.0f}"
            f"{1000 * r['clip_s']:>7.0f}{1000 * r['decode_used_s']:>12.0f}{ratio}{r['clip_over_decode_used']:>11.2f}x"
        )
    masks = mask_agreement(args.mask_size, args.mask_seeds) if args.mask_seeds > 0 else []
    if masks:
        print(f"\nSector from the clip's 16 frames vs the window's 32 ({args.mask_size} px rendered echoes)")
        for m in masks:
            print(
                f"  {m['encoding']:<14} annotation kept {m['annotation_kept_window']:.4f} -> {m['annotation_kept_clip']:.4f}"
                f", fan kept {m['fan_kept_window']:.4f} -> {m['fan_kept_clip']:.4f} (worst {m['fan_kept_clip_worst']:.4f})"
                f", clip values differing {m['clip_values_differing_mean']:.4f} (max {m['clip_values_differing_max']:.4f})"
            )
    result = {
        "frames": args.frames,
        "spec": SPEC.to_dict(),
        "timer": "time.process_time, one thread, best of the repeats, interleaved",
        "repeats": args.repeats,
        "release_code": str(args.release_code) if args.release_code else None,
        "cpu": _cpu_model(),
        "load_average_1min_at_end": os.getloadavg()[0],
        "rows": rows,
        "mask_agreement": masks,
    }
    with contextlib.suppress(FileExistsError):
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
