"""What the model saw, for the study viewer: each clip's first frame (a PNG data URL) and each
clip as a moving loop (a filmstrip image the page plays, pauses and steps frame by frame).

A loop is one WebP image holding the clip's frames as they were given to the model (the
preprocessed uint8 frames, before normalising; the padding frames past the end of a short file
left out) in a grid of ``columns`` tiles of ``size`` pixels, row by row. One image per clip
instead of an animated WebP or a ``<video>``: the page draws any frame of it on demand, so
pausing, stepping and keeping every loop in step ("play all") are exact, and a browser decodes
one still image per clip.

Size is bounded: a loop is at most :data:`LOOP_MAX_BYTES` before base64 (lossless where that
fits, as a tiny bundle's 32 px clips do; else lossy WebP, at lower quality and then at half the
side until it fits), so a 50-video study's loops weigh at most 50 x 64 KiB x 4/3 = 4.3 MB in
the JSON (docs/viewer.md states the page's bound; tests/serve/test_previews.py checks it on
noise, the worst case for a codec).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from echoprime.io import FileReport

LOOP_MAX_BYTES = 64 << 10
"""A loop's WebP bytes at most (before base64)."""
LOOP_MAX_SIDE = 224
"""Larger clips are scaled down to this side first (the release's clips are 224 px)."""
LOOP_MAX_FRAMES = 64
"""At most this many frames per loop (longer clips keep every n-th frame; fps scales to match)."""
LOOP_COLUMNS = 8
"""Tiles per row of the filmstrip (WebP allows at most 16383 px a side)."""
LOOP_QUALITIES = (80, 60, 40, 25)
"""Lossy WebP qualities tried in turn, at each side, before the side is halved."""
MIN_SIDE = 8


def first_frame_png(clip: np.ndarray, min_side: int = 128) -> str:
    """A ``data:image/png`` URL of a clip's first frame, as the model sees it before normalising.

    Args:
        clip: ``T x S x S x 3`` uint8 RGB (a clip in its storage form, as Preprocess makes it).
        min_side: upscale (nearest neighbour) small clips to at least this many pixels.

    Raises:
        ValueError: not a ``T x S x S x 3`` uint8 clip.
    """
    _check_clip(clip)
    rgb = np.ascontiguousarray(clip[0])  # S x S x 3
    if rgb.shape[0] < min_side:
        f = -(-min_side // rgb.shape[0])
        rgb = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for a {rgb.shape} frame")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _check_clip(clip: np.ndarray) -> None:
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8 or clip.shape[1] != clip.shape[2]:
        raise ValueError(f"expected a uint8 T x S x S x 3 clip, got {clip.dtype} {tuple(clip.shape)}")


def filmstrip(frames: np.ndarray, columns: int = LOOP_COLUMNS) -> np.ndarray:
    """Tile ``n`` frames row by row into one image (unused tiles of the last row are black).

    Args:
        frames: ``n x S x S x 3`` uint8.
        columns: tiles per row (fewer when ``n`` is smaller).

    Returns:
        ``rows*S x cols*S x 3`` uint8, frame ``i`` at tile ``(i // cols, i % cols)``.
    """
    n, s = frames.shape[0], frames.shape[1]
    cols = max(1, min(columns, n))
    rows = math.ceil(n / cols)
    pad = np.zeros((rows * cols - n, s, s, 3), np.uint8)
    grid = np.concatenate([frames, pad]).reshape(rows, cols, s, s, 3)  # rows x cols x S x S x 3
    return np.ascontiguousarray(grid.transpose(0, 2, 1, 3, 4).reshape(rows * s, cols * s, 3))


def _webp(rgb: np.ndarray, quality: int) -> bytes:
    """``quality`` above 100 is lossless (OpenCV's convention)."""
    ok, buf = cv2.imencode(".webp", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, quality])
    if not ok:
        raise ValueError(f"WebP encoding failed for a {rgb.shape} image")
    return buf.tobytes()


def _resized(frames: np.ndarray, side: int) -> np.ndarray:
    if frames.shape[1] == side:
        return frames
    return np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in frames])


def clip_loop(
    clip: np.ndarray,
    n_valid: int | None = None,
    source_fps: float | None = None,
    stride: int = 1,
    max_bytes: int = LOOP_MAX_BYTES,
) -> dict[str, Any]:
    """One clip as a loop: a WebP filmstrip data URL and how to play it.

    Args:
        clip: ``T x S x S x 3`` uint8 RGB, the clip as the model got it (before normalising).
        n_valid: how many leading frames come from the file (the rest is padding); all when
            ``None``; at least one frame is kept.
        source_fps: the file's frame rate, ``None`` when unknown.
        stride: every ``stride``-th source frame is in the clip (the preprocessing spec's).
        max_bytes: the WebP's size at most.

    Returns:
        ``{"image": data URL, "frames": n, "columns": c, "size": tile side px, "fps": the loop's
        real-time frame rate (``source_fps / stride``, ``None`` when the file's is unknown),
        "source_fps", "stride", "lossless": whether the pixels are exactly the model's,
        "bytes": the WebP's size}``.

    Raises:
        ValueError: not a ``T x S x S x 3`` uint8 clip, or ``stride`` < 1.
    """
    _check_clip(clip)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    n = clip.shape[0] if n_valid is None else max(1, min(int(n_valid), clip.shape[0]))
    frames = clip[:n]
    every = math.ceil(n / LOOP_MAX_FRAMES)
    frames = frames[::every]
    side = min(clip.shape[1], LOOP_MAX_SIDE)
    blob, lossless = b"", False
    while True:
        small = _resized(frames, side)
        strip = filmstrip(small)
        # Lossless only while it can fit (raw bytes under 8 x the budget; echo is mostly black).
        tries = ((101,) if side == clip.shape[1] and small.nbytes <= 8 * max_bytes else ()) + LOOP_QUALITIES
        for q in tries:
            blob = _webp(strip, q)
            if len(blob) <= max_bytes:
                lossless = q > 100
                break
        if len(blob) <= max_bytes or side <= MIN_SIDE:
            break
        side = max(MIN_SIDE, side // 2)
    if len(blob) > max_bytes:
        raise ValueError(f"a {tuple(clip.shape)} clip does not fit {max_bytes} bytes even at {side} px")
    fps = None if not source_fps or source_fps <= 0 else float(source_fps) / (stride * every)
    return {
        "image": "data:image/webp;base64," + base64.b64encode(blob).decode("ascii"),
        "frames": int(frames.shape[0]),
        "columns": max(1, min(LOOP_COLUMNS, int(frames.shape[0]))),
        "size": int(side),
        "fps": fps,
        "source_fps": None if not source_fps else float(source_fps),
        "stride": int(stride * every),
        "lossless": bool(lossless),
        "bytes": len(blob),
    }


def study_loops(
    clips: np.ndarray, n_valid: np.ndarray, reports: Sequence[FileReport], stride: int
) -> list[dict[str, Any]]:
    """:func:`clip_loop` of each clip of a study, with its file's frame rate.

    Args:
        clips: ``N x T x S x S x 3`` uint8 (``StudyInterpreter.load_study_uint8``).
        n_valid: ``N`` counts of each clip's frames from its file.
        reports: every file's report; the ``used`` ones are the clips' files, in order.
        stride: the preprocessing spec's stride.
    """
    used = [r for r in reports if r.status == "used"]
    return [clip_loop(c, int(n), r.fps, stride) for c, n, r in zip(clips, n_valid, used, strict=True)]
