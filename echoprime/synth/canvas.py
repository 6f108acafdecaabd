"""Drawing primitives of the synthetic echo renderer: heart coordinates, shape fields, a painter.

Shapes are evaluated as numpy fields on the bounding box of the shape only (never per pixel
in Python), for all frames at once where the shape moves. The painter holds the echo
*level* of every pixel and frame (0 = no echo, ~1 = bright specular reflector) and, in
Doppler views, a colour code per pixel and frame; ``render.py`` turns both into RGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Colour-flow codes stored by the painter (0 = no colour).
RED, BLUE, MOSAIC, ALIAS = 1, 2, 3, 4


@dataclass(frozen=True)
class Placement:
    """Maps heart coordinates to pixels.

    Heart coordinates: ``u`` to the right, ``v`` down (away from the transducer), origin at the
    fan apex, in *heart units* (one unit is the fan radius at the reference depth). Directions
    are angles in degrees from ``+u`` towards ``+v``.

    Attributes:
        h: frame height in pixels.
        w: frame width in pixels.
        apex_x: fan apex column (pixels).
        apex_y: fan apex row (pixels).
        unit: pixels per heart unit (shrinks as the imaging depth grows).
        rot: probe tilt in degrees: the whole heart is rotated about the apex by this much.
    """

    h: int
    w: int
    apex_x: float
    apex_y: float
    unit: float
    rot: float

    def px(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel column and row of heart point(s) ``(u, v)``."""
        c, s = math.cos(math.radians(self.rot)), math.sin(math.radians(self.rot))
        u = np.asarray(u, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        return self.apex_x + self.unit * (c * u - s * v), self.apex_y + self.unit * (s * u + c * v)


@dataclass(frozen=True)
class Region:
    """A shape's bounding box and the pixel coordinates inside it, in heart units.

    ``P`` runs along the shape's axis and ``Q`` across it (``Q`` positive to the axis'
    left-hand side in the image, i.e. the axis turned by +90 degrees), both measured from the
    shape's reference point. Both are ``h x w`` float32 arrays of the box.
    """

    sy: slice
    sx: slice
    P: np.ndarray
    Q: np.ndarray


def unit_vec(angle_deg: float) -> np.ndarray:
    """Unit vector (u, v) of a direction in degrees."""
    a = math.radians(angle_deg)
    return np.array([math.cos(a), math.sin(a)])


def region(
    pl: Placement, ref: tuple[float, float], axis_deg: float, half_u: float, half_v: float
) -> Region | None:
    """Bounding box around heart point ``ref`` and local coordinates along ``axis_deg``.

    Args:
        pl: the video's placement.
        ref: reference point (heart units); ``P = Q = 0`` there.
        axis_deg: direction of the local ``P`` axis in heart coordinates.
        half_u: half extent of the box along ``P`` (heart units; the box is the axis-aligned
            bound of the rotated rectangle ``|P| <= half_u, |Q| <= half_v``).
        half_v: half extent of the box along ``Q``.

    Returns:
        The region, or ``None`` where the box falls outside the frame.
    """
    ang = math.radians(axis_deg + pl.rot)
    c, s = math.cos(ang), math.sin(ang)
    ex = (abs(half_u * c) + abs(half_v * s)) * pl.unit + 1.0
    ey = (abs(half_u * s) + abs(half_v * c)) * pl.unit + 1.0
    cx, cy = pl.px(*ref)
    x0, x1 = max(int(math.floor(cx - ex)), 0), min(int(math.ceil(cx + ex)) + 1, pl.w)
    y0, y1 = max(int(math.floor(cy - ey)), 0), min(int(math.ceil(cy + ey)) + 1, pl.h)
    if x0 >= x1 or y0 >= y1:
        return None
    # pixel centres relative to ref, in heart units, rotated into the shape's frame
    dx = ((np.arange(x0, x1, dtype=np.float32) + 0.5 - np.float32(cx)) / np.float32(pl.unit))[None, :]
    dy = ((np.arange(y0, y1, dtype=np.float32) + 0.5 - np.float32(cy)) / np.float32(pl.unit))[:, None]
    P = dx * np.float32(c) + dy * np.float32(s)
    Q = -dx * np.float32(s) + dy * np.float32(c)
    return Region(slice(y0, y1), slice(x0, x1), P, Q)


def ellipse(
    pl: Placement, centre: tuple[float, float], a: float, b: float, axis_deg: float = 0.0
) -> tuple[Region | None, np.ndarray | None]:
    """Normalised squared radius of an ellipse (< 1 inside) on its box.

    Args:
        pl: placement.
        centre: ellipse centre (heart units).
        a: semi-axis along ``axis_deg``.
        b: semi-axis across it.
        axis_deg: direction of the ``a`` axis.

    Returns:
        ``(region, rho2)`` with ``rho2`` an ``h x w`` float32 array, or ``(None, None)``.
    """
    reg = region(pl, centre, axis_deg, a, b)
    if reg is None:
        return None, None
    return reg, (reg.P / np.float32(a)) ** 2 + (reg.Q / np.float32(b)) ** 2


def anchored_inside(reg: Region, pc: float, a: float, b: float, scale: np.ndarray) -> np.ndarray:
    """Inside-test of an ellipse scaled about an anchor, for many scales at once.

    The ellipse has semi-axes ``a`` (along ``P``) and ``b``, centre at ``P = pc`` from the
    region's reference point, which is the anchor: at scale ``s`` the ellipse is shrunk
    towards it. ``(P - s pc)^2 / a^2 + Q^2 / b^2 < s^2`` avoids a division per pixel.

    Args:
        reg: region whose reference point is the anchor.
        pc: centre offset from the anchor along ``P``.
        a: semi-axis along ``P`` at scale 1.
        b: semi-axis along ``Q`` at scale 1.
        scale: ``F x 1 x 1`` (one scale per frame) or ``F x h x w`` (per pixel) scales.

    Returns:
        ``F x h x w`` bool.
    """
    s = scale.astype(np.float32, copy=False)
    x = reg.P[None] - s * np.float32(pc)
    return x * x * np.float32(1.0 / (a * a)) + (reg.Q * reg.Q)[None] * np.float32(1.0 / (b * b)) < s * s


def segment_dist(
    pl: Placement, p0: np.ndarray, p1: np.ndarray, reach: float
) -> tuple[Region | None, np.ndarray | None]:
    """Distance (heart units) from pixels to the segment(s) ``p0 -> p1``.

    Args:
        pl: placement.
        p0: start point ``(2,)`` or one per frame ``F x 2``.
        p1: end point, same shape as ``p0``.
        reach: only pixels within this distance of the segment's box are evaluated.

    Returns:
        ``(region, dist)`` with ``dist`` ``h x w`` (static) or ``F x h x w`` float32, or
        ``(None, None)`` where the box is outside the frame.
    """
    p0 = np.atleast_2d(np.asarray(p0, dtype=np.float64))
    p1 = np.atleast_2d(np.asarray(p1, dtype=np.float64))
    pts = np.concatenate([p0, p1])
    lo, hi = pts.min(0) - reach, pts.max(0) + reach
    ref = (float((lo[0] + hi[0]) / 2), float((lo[1] + hi[1]) / 2))
    # axis 0 deg makes (P, Q) heart-aligned offsets from ref: P = u - ref_u, Q = v - ref_v
    reg = region(pl, ref, 0.0, (hi[0] - lo[0]) / 2, (hi[1] - lo[1]) / 2)
    if reg is None:
        return None, None
    a = (p0 - ref).astype(np.float32)[:, :, None, None]  # F x 2 x 1 x 1
    d = (p1 - p0).astype(np.float32)[:, :, None, None]
    px, qy = reg.P[None], reg.Q[None]  # 1 x h x w
    dd = d[:, 0] ** 2 + d[:, 1] ** 2 + np.float32(1e-12)
    t = np.clip(((px - a[:, 0]) * d[:, 0] + (qy - a[:, 1]) * d[:, 1]) / dd, 0.0, 1.0)
    ex = px - a[:, 0] - t * d[:, 0]
    ey = qy - a[:, 1] - t * d[:, 1]
    dist = np.sqrt(ex * ex + ey * ey)  # F x h x w
    return reg, (dist[0] if dist.shape[0] == 1 else dist)


class Painter:
    """Echo level (and colour-flow code) of every pixel of every frame, painted in order.

    Attributes:
        level: ``F x H x W`` float32 echo level.
        colour: ``F x H x W`` uint8 colour-flow code (``RED``, ``BLUE``, ``MOSAIC``, ``ALIAS``),
            or ``None`` outside Doppler views.
    """

    def __init__(self, frames: int, h: int, w: int, background: float, doppler: bool):
        self.level = np.full((frames, h, w), background, dtype=np.float32)
        self.colour = np.zeros((frames, h, w), dtype=np.uint8) if doppler else None

    def paint(self, reg: Region | None, mask: np.ndarray, value: float | np.ndarray) -> None:
        """Set the level to ``value`` where ``mask`` (``h x w`` or ``F x h x w``) is true."""
        if reg is not None:
            np.copyto(self.level[:, reg.sy, reg.sx], np.asarray(value, dtype=np.float32), where=mask)

    def flow(self, reg: Region | None, mask: np.ndarray, code: int) -> None:
        """Set the colour-flow code where ``mask`` is true (ignored outside Doppler views)."""
        if reg is not None and self.colour is not None:
            np.copyto(self.colour[:, reg.sy, reg.sx], np.uint8(code), where=mask)
