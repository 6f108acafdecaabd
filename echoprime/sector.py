"""Find the ultrasound sector (the fan) in a clip, so that everything else can be zeroed.

The release's idea: pixels that change over the clip belong to the image; burned-in text,
colour bars, calipers and rulers do not change. Its recipe (changing and non-zero pixels,
eroded, dilated, convex hull, filled) also keeps whatever else moves: an ECG trace and its
sweeping cursor, a running clock, a heart-rate readout. This module makes that robust:

1. ``changing``: a pixel differs (any of R, G, B by more than ``change_threshold``, 1 level) in
   at least half of up to 8 pairs of frames half a clip apart. Tissue speckle and colour Doppler
   differ in nearly every pair; a pixel under a sweeping ECG cursor or a ticking clock digit
   differs only in the pairs where the cursor or digit sits on it (what the plain max - min range
   over the clip cannot tell apart); static pixels do not differ at all, even in JPEG / H.264
   clips, whose unchanged blocks decode identically. No colour conversions: colour and
   greyscale clips are treated alike, and only ``2 x pairs`` frames are read.
2. Dense regions only: a box-filtered density of ``changing`` above ``density``. Speckle inside the
   fan is dense; thin structures (ECG trace, text strokes, caliper marks, cursor lines) are not,
   whatever their length. A closing (a disc of 8 % of the short side) then bridges still, black
   bands that split a fan into pieces (a dark near field, pericardial space).
3. The fan is the largest dense connected component; other dense components join it when they
   cover at least 1 % of the frame and are at least 5 % of the short side thick both ways.
4. The convex hull of the changing pixels near the kept components (plus a margin of
   ``margin_fraction`` of the short side) is filled. A fan sector is convex, so the hull restores
   dark blood pools and still parts of the far field.

When the clip does not change enough to find a sector (one or two identical frames, a frozen
loop, a synthetic still), the same steps run on *bright* pixels of the middle frame
(``method="intensity"``). When that also finds nothing (a black clip), the mask is the whole
frame (``method="full"``): masking never empties a clip silently; the method says what happened.

Pixels of the fan that are black in every frame (an echo-free rim at the far edge) carry no
signal and leave no trace to find; the hull keeps them only where they lie between pixels that
change. Zeroing them changes nothing in the clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np


@dataclass(frozen=True)
class SectorMask:
    """A sector mask and how it was found.

    Attributes:
        mask: ``H x W`` bool, True inside the sector.
        method: ``"motion"`` (pixels that change), ``"intensity"`` (bright pixels; still-ish
            clips) or ``"full"`` (nothing found: the whole frame is kept).
    """

    mask: np.ndarray
    method: Literal["motion", "intensity", "full"]

    @property
    def fraction(self) -> float:
        """Fraction of the frame inside the mask."""
        return float(self.mask.mean())


def _odd(x: float) -> int:
    k = max(3, int(round(x)))
    return k if k % 2 else k + 1


def _row_extremes(binary: np.ndarray) -> np.ndarray:
    """Leftmost and rightmost set pixel of every row: the same convex hull as all set pixels,
    from at most ``2 H`` points instead of up to ``H W``.

    Args:
        binary: ``H x W`` 0/1.

    Returns:
        ``N x 1 x 2`` int32 ``(x, y)`` points, as OpenCV's hull functions take them.
    """
    rows = np.flatnonzero(binary.any(axis=1))
    if rows.size == 0:
        return np.zeros((0, 1, 2), np.int32)
    sub = binary[rows].astype(bool)
    left = sub.argmax(axis=1)
    right = binary.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    xs, ys = np.concatenate([left, right]), np.concatenate([rows, rows])
    return np.stack([xs, ys], axis=-1).astype(np.int32)[:, None, :]  # 2N x 2 -> 2N x 1 x 2


def _fan_from(
    candidate: np.ndarray,
    *,
    density: float,
    min_area_fraction: float,
    close_fraction: float,
    join_area_fraction: float,
    margin_fraction: float,
) -> np.ndarray | None:
    """Steps 2-4 on a binary ``H x W`` uint8 (0/1) candidate map; ``None`` when no fan is found.

    Which regions belong to the fan is decided on a grid of about 128 px on the short side (the
    density map is smooth, and large closings are costly at full size); the hull is then taken
    from the full-resolution candidate pixels, so the edge stays exact.
    """
    h, w = candidate.shape
    short = min(h, w)
    step = max(1, short // 128)
    cand = candidate.astype(np.float32)
    if step > 1:  # block means: a density map already, at 1 / step of the size
        cand = cv2.resize(cand, (w // step, h // step), interpolation=cv2.INTER_AREA)
    hs, ws = cand.shape
    short_s = min(hs, ws)
    box_s = _odd(short_s * 0.035)
    dens = cv2.boxFilter(cand, -1, (box_s, box_s), borderType=cv2.BORDER_CONSTANT)
    dense = (dens > density).astype(np.uint8)
    if close_fraction > 0:
        # Bridge still, black bands inside the fan (pericardial space, a dark near field) that
        # split it into pieces; only dense regions take part, so thin annotations stay apart.
        k = _odd(short_s * close_fraction)
        dense = cv2.morphologyEx(dense, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dense, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = int(np.argmax(areas)) + 1
    if areas[best - 1] < min_area_fraction * hs * ws:
        return None
    keep = [best]
    for i in range(1, n):
        bw, bh = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        if (
            i != best
            and stats[i, cv2.CC_STAT_AREA] >= join_area_fraction * hs * ws
            and min(bw, bh) >= 0.05 * short_s
        ):
            keep.append(i)
    lut = np.zeros(n, np.uint8)
    lut[keep] = 1
    kept = lut[labels]  # hs x ws label image -> hs x ws 0/1
    if step > 1:
        kept = cv2.resize(kept, (w, h), interpolation=cv2.INTER_NEAREST)  # hs x ws -> H x W
    box = _odd(short * 0.035)
    # Hull of the *changing* pixels near the kept regions: the density step moves boundaries by
    # up to half a box; the raw pixels put the hull on the fan's true edge.
    near = cv2.dilate(kept, cv2.getStructuringElement(cv2.MORPH_RECT, (box, box)))
    pts = _row_extremes(candidate & near)
    if len(pts) < 3:
        return None
    hull = cv2.convexHull(pts)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    # At least one pixel: between its vertices the hull's chords cut a pixel off the fan's arc.
    margin = max(1, int(round(short * margin_fraction)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    return cv2.dilate(mask, disc).astype(bool)


def change_count(frames: np.ndarray, threshold: int, pairs: int = 8) -> tuple[np.ndarray, int]:
    """How often each pixel changes between frames half a clip apart.

    Comparing distant frames (not the clip's range) is what separates tissue from annotations
    that also move: speckle differs in almost every such pair, while a pixel under a sweeping ECG
    cursor or a ticking clock differs only in the pairs where the cursor or the digit happens
    to sit on it.

    Args:
        frames: ``F x H x W x 3`` or ``F x H x W`` uint8, ``F >= 2``.
        threshold: A pair differs at a pixel when the absolute difference of any channel exceeds this.
        pairs: Number of frame pairs ``(i, i + F // 2)``, spread over the clip (fewer for short clips).

    Returns:
        ``(count, k)``: ``H x W`` uint8 counts and the number of pairs ``k`` compared.
    """
    f = frames.shape[0]
    gap = max(1, f // 2)
    k = max(1, min(pairs, f - gap))
    starts = np.linspace(0, f - 1 - gap, k).round().astype(np.int64)
    count = np.zeros(frames.shape[1:3], np.uint8)
    for i in starts:
        d = cv2.absdiff(frames[i], frames[i + gap])  # H x W (x 3)
        if d.ndim == 3:
            d = np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2])  # H x W x 3 -> H x W
        count += (d > threshold).view(np.uint8)
    return count, k


def sector_mask(
    frames: np.ndarray,
    *,
    change_threshold: int = 1,
    bright_threshold: int = 12,
    density: float = 0.4,
    min_area_fraction: float = 0.02,
    close_fraction: float = 0.08,
    join_area_fraction: float = 0.01,
    margin_fraction: float = 0.005,
    pairs: int = 8,
) -> SectorMask:
    """Find the ultrasound sector of a clip (see the module docstring for the method).

    Args:
        frames: ``F x H x W x 3`` (or ``F x H x W``) uint8; ``F >= 1``.
        change_threshold: A pixel differs between two frames when the absolute difference of any
            channel exceeds this (grey levels). Low on purpose: dim far-field speckle changes by a
            few levels only, while static pixels (even JPEG / H.264 coded ones, whose unchanged
            blocks decode identically) do not change at all.
        bright_threshold: A pixel is "bright" (still-clip fallback) above this value.
        density: Fraction of changing pixels in a box (3.5 % of the short side) that makes a pixel
            part of a dense region.
        min_area_fraction: A sector covers at least this fraction of the frame.
        close_fraction: Morphological closing of the dense regions with a disc of this fraction of
            the short side, which bridges still black bands that split a fan.
        join_area_fraction: Other dense regions join the largest if they cover at least this
            fraction of the frame and are at least 5 % of the short side thick in both directions.
        margin_fraction: Grow the filled hull by this fraction of the short side (at least 1 pixel).
        pairs: Frame pairs compared (:func:`change_count`); a pixel changes when it differs in
            at least half of them.

    Returns:
        A :class:`SectorMask` with an ``H x W`` bool mask that is never empty.
    """
    if frames.ndim not in (3, 4) or frames.dtype != np.uint8 or frames.shape[0] < 1:
        raise ValueError(f"expected uint8 F x H x W (x 3) with F >= 1, got {frames.dtype} {frames.shape}")
    kwargs = dict(
        density=density,
        min_area_fraction=min_area_fraction,
        close_fraction=close_fraction,
        join_area_fraction=join_area_fraction,
        margin_fraction=margin_fraction,
    )
    if frames.shape[0] >= 2:
        count, k = change_count(frames, change_threshold, pairs)
        found = _fan_from((count >= (k + 1) // 2).view(np.uint8), **kwargs)
        if found is not None:
            return SectorMask(found, "motion")
    mid = frames[frames.shape[0] // 2]
    bright = mid.max(axis=-1) if mid.ndim == 3 else mid  # H x W x 3 -> H x W
    # No closing here: static bright annotations (colour bars, text blocks) are dense too, and
    # closing would bridge them to the fan.
    found = _fan_from((bright > bright_threshold).view(np.uint8), **{**kwargs, "close_fraction": 0.0})
    if found is not None:
        return SectorMask(found, "intensity")
    return SectorMask(np.ones(frames.shape[1:3], bool), "full")
