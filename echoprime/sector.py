"""Find the ultrasound sector (the fan) in a clip, so that everything else can be zeroed.

The release's idea: pixels that change over the clip belong to the image; burned-in text,
colour bars, calipers and rulers do not change. Its recipe (changing and non-zero pixels,
eroded, dilated, convex hull, filled) also keeps whatever else moves: an ECG trace and its
sweeping cursor, a running clock, a heart-rate readout. This module makes that robust:

1. ``changing``: a pixel differs (any of R, G, B by more than a small threshold) in at least half of up to 8 pairs of frames half a clip apart. Tissue speckle and
   colour Doppler differ in nearly every pair; a pixel under a sweeping ECG cursor or a ticking
   clock digit differs only in the pairs where the cursor or digit sits on it (that is what the
   plain max - min range over the clip cannot tell apart). No colour conversions: colour and
   greyscale clips are treated alike, and only ``2 x pairs`` frames are read.
2. Dense regions only: a box-filtered density of ``changing`` above ``density``. Speckle inside the
   fan is dense; thin structures (ECG trace, text strokes, caliper marks, cursor lines) are not,
   whatever their length.
3. The fan is the largest dense connected component; other components join it only if they are
   both large (>= ``join_fraction`` of it) and thick in both directions, so that a fan split by a
   dark cavity stays whole while an ECG band swept by its cursor (large but flat) does not.
4. The convex hull of the changing pixels of the kept components (plus a margin of
   ``margin_fraction`` of the frame) is filled. A fan sector is convex, so the hull restores
   dark blood pools and the far field that did not change.

When the clip does not change enough to find a sector (one or two identical frames, a frozen
loop, a synthetic still), the same steps run on *bright* pixels of the brightest-over-time image
(``method="intensity"``). When that also finds nothing (a black clip), the mask is the whole
frame (``method="full"``): masking never empties a clip silently; the method says what happened.
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
    join_fraction: float,
    margin_fraction: float,
) -> np.ndarray | None:
    """Steps 2-4 on a binary ``H x W`` uint8 (0/1) candidate map; ``None`` when no fan is found."""
    h, w = candidate.shape
    short = min(h, w)
    box = _odd(short * 0.035)
    dens = cv2.boxFilter(candidate.astype(np.float32), -1, (box, box), borderType=cv2.BORDER_CONSTANT)
    dense = (dens > density).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(dense, connectivity=8)
    if n <= 1:
        return None
    areas = stats[1:, cv2.CC_STAT_AREA]
    best = int(np.argmax(areas)) + 1
    if areas[best - 1] < min_area_fraction * h * w:
        return None
    keep = [best]
    for i in range(1, n):
        if i == best:
            continue
        bw, bh = stats[i, cv2.CC_STAT_WIDTH], stats[i, cv2.CC_STAT_HEIGHT]
        if stats[i, cv2.CC_STAT_AREA] >= join_fraction * areas[best - 1] and min(bw, bh) >= 0.15 * short:
            keep.append(i)
    lut = np.zeros(n, np.uint8)
    lut[keep] = 1
    kept = lut[labels]  # H x W label image -> H x W 0/1
    # Hull of the *changing* pixels near the kept regions: the density step moves boundaries by
    # up to half a box; the raw pixels put the hull on the fan's true edge.
    near = cv2.dilate(kept, cv2.getStructuringElement(cv2.MORPH_RECT, (box, box)))
    pts = _row_extremes(candidate & near)
    if len(pts) < 3:
        return None
    hull = cv2.convexHull(pts)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    margin = int(round(short * margin_fraction))
    if margin > 0:
        mask = cv2.dilate(
            mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
        )
    return mask.astype(bool)


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
    change_threshold: int = 3,
    bright_threshold: int = 12,
    density: float = 0.4,
    min_area_fraction: float = 0.02,
    join_fraction: float = 0.25,
    margin_fraction: float = 0.005,
    pairs: int = 8,
) -> SectorMask:
    """Find the ultrasound sector of a clip (see the module docstring for the method).

    Args:
        frames: ``F x H x W x 3`` (or ``F x H x W``) uint8; ``F >= 1``.
        change_threshold: A pixel differs between two frames when the absolute difference of any
            channel exceeds this (grey levels): above lossy-compression noise, far below speckle.
        bright_threshold: A pixel is "bright" (still-clip fallback) above this value.
        density: Fraction of changing pixels in a box (3.5 % of the short side) that makes a pixel
            part of a dense region.
        min_area_fraction: A sector covers at least this fraction of the frame.
        join_fraction: Other regions join the largest if at least this large relative to it (and
            at least 15 % of the short side thick in both directions).
        margin_fraction: Grow the filled hull by this fraction of the short side.
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
        join_fraction=join_fraction,
        margin_fraction=margin_fraction,
    )
    if frames.shape[0] >= 2:
        count, k = change_count(frames, change_threshold, pairs)
        found = _fan_from((count >= (k + 1) // 2).view(np.uint8), **kwargs)
        if found is not None:
            return SectorMask(found, "motion")
    mid = frames[frames.shape[0] // 2]
    bright = mid.max(axis=-1) if mid.ndim == 3 else mid  # H x W x 3 -> H x W
    found = _fan_from((bright > bright_threshold).view(np.uint8), **kwargs)
    if found is not None:
        return SectorMask(found, "intensity")
    return SectorMask(np.ones(frames.shape[1:3], bool), "full")
