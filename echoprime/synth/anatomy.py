"""Heart parts shared by the views: the cardiac cycle, chambers, ventricles, valves, jets.

A :class:`Scene` wraps the painter of one video with the patient's (view-filtered) state, the
placement and the cardiac cycle; the view layouts in ``views.py`` call its methods with
coordinates in heart units (see :class:`~echoprime.synth.canvas.Placement`).

Ventricle motion: the cavity is an ellipse scaled about an anchor near the base by ``s(t)``
with ``s(t)^2 = 1 - FAC * e(t)``, where ``e`` is the contraction curve (0 at end-diastole, 1 at
end-systole), so the cavity *area* falls by exactly the fractional area change FAC between
end-diastole and end-systole. For the LV, FAC is the ejection fraction: the renderer treats
the 2-D cavity area as the volume proxy (V proportional to A). The myocardium keeps its area
(it thickens as the cavity shrinks); an infarcted segment keeps its end-diastolic position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from echoprime.synth.canvas import (
    ALIAS,
    MOSAIC,
    Painter,
    Placement,
    anchored_inside,
    ellipse,
    region,
    segment_dist,
    unit_vec,
)
from echoprime.synth.state import PatientState

# Echo levels (before speckle and gain): what a sonographer sees as dark ... bright.
BLOOD = 0.03
EFFUSION = 0.0
TISSUE = 0.14  # far-field tissue around the heart
HEART = 0.3  # tissue between chambers (inside the pericardium)
LIVER = 0.38
MYO = 0.72  # myocardium
THIN_WALL = 0.6  # atrial and right-ventricular walls
VALVE = 0.85
PERICARDIUM = 0.85
CALCIUM = 1.6
DEVICE = 1.9

# Effusion: echo-free gap between heart and pericardium, heart units, by grade.
EFFUSION_GAP = (0.0, 0.015, 0.035, 0.065, 0.1)
# Regurgitant jet size as fractions of the receiving chamber (length, width), by grade.
REGURG_SIZE = ((0.0, 0.0), (0.3, 0.4), (0.5, 0.5), (0.82, 0.78), (1.1, 1.0))
# Jets are drawn this much larger than the chamber sizes passed in (visible at 32 px).
JET_SCALE = 1.35
# Stenotic jet size as fractions of the receiving chamber (length, width), by grade.
STENOSIS_JET = ((0.0, 0.0), (0.35, 0.3), (0.6, 0.45), (0.9, 0.6))
DILATION = 0.13  # chamber scale per size grade
RV_FAC = (0.5, 0.36, 0.22, 0.08)  # RV fractional area change by function grade


def _bump(phase: np.ndarray, start: float, end: float) -> np.ndarray:
    """Half-sine from 0 at ``start`` to 1 mid-way and back to 0 at ``end`` (phases in [0, 1))."""
    x = (phase - start) / (end - start)
    return np.where((x > 0) & (x < 1), np.sin(np.pi * np.clip(x, 0, 1)), 0.0)


@dataclass(frozen=True)
class Cycle:
    """The cardiac (and respiratory) cycle sampled at the video's frames.

    Phase 0 is end-diastole (the ECG's R wave), systole lasts until phase 0.35 (end-systole),
    rapid filling until 0.6, the atrial kick is around 0.9. All arrays have one value per frame.

    Attributes:
        times: frame times in seconds.
        phase: cardiac phase in [0, 1).
        contraction: 0 at end-diastole, 1 at end-systole.
        systole: holosystolic gate (mitral/tricuspid regurgitation), 0..1.
        ejection: ejection gate (aortic/pulmonic forward flow), 0..1.
        diastole: holodiastolic gate (aortic/pulmonic regurgitation), 0..1.
        mv_open: atrioventricular valve opening (E and A waves), 0..1.
        av_open: semilunar valve opening, 0..1.
        resp: respiratory inspiration amount, 0..1 (IVC collapse).
    """

    times: np.ndarray
    phase: np.ndarray
    contraction: np.ndarray
    systole: np.ndarray
    ejection: np.ndarray
    diastole: np.ndarray
    mv_open: np.ndarray
    av_open: np.ndarray
    resp: np.ndarray


def make_cycle(frames: int, fps: float, heart_rate: float, phase0: float, resp0: float) -> Cycle:
    """Sample the cycle at ``frames`` frames of ``fps`` starting at cardiac phase ``phase0``."""
    t = np.arange(frames) / fps
    ph = (phase0 + t * heart_rate / 60.0) % 1.0
    contraction = np.where(
        ph < 0.35,
        0.5 - 0.5 * np.cos(np.pi * ph / 0.35),
        np.where(ph < 0.6, 0.5 + 0.5 * np.cos(np.pi * (ph - 0.35) / 0.25), 0.0),
    )
    resp = 0.5 - 0.5 * np.cos(2 * np.pi * (resp0 + t / 4.0))  # 15 breaths per minute
    return Cycle(
        times=t,
        phase=ph,
        contraction=contraction,
        systole=_bump(ph, 0.02, 0.4) ** 0.35,
        ejection=_bump(ph, 0.04, 0.34),
        diastole=_bump(ph, 0.38, 1.0) ** 0.3,
        mv_open=np.maximum(_bump(ph, 0.4, 0.66), 0.6 * _bump(ph, 0.8, 0.97)),
        av_open=_bump(ph, 0.04, 0.34) ** 0.5,
        resp=resp,
    )


@dataclass(frozen=True)
class Ventricle:
    """A drawn ventricle: its cavity area per frame and how to find points on its wall."""

    area: np.ndarray  # F cavity pixels
    anchor: np.ndarray  # (2,) heart units
    axis: np.ndarray  # (2,) unit vector base -> apex
    perp: np.ndarray  # (2,) axis turned +90 degrees
    pc: float
    a: float
    b: float
    scale: np.ndarray  # F linear scale of the cavity

    def point(self, alpha_deg: float) -> np.ndarray:
        """``F x 2``: the endocardial point at angle ``alpha`` (0 = apex, 180 = base), moving."""
        al = math.radians(alpha_deg)
        rel = (self.pc + self.a * math.cos(al)) * self.axis + self.b * math.sin(al) * self.perp
        return self.anchor[None, :] + self.scale[:, None] * rel[None, :]


class Scene:
    """Drawing calls of one video: painter + placement + cycle + view-filtered state.

    Args:
        painter: where levels and colour codes go.
        pl: placement of the heart in the frame.
        state: the patient's state with the findings not visible in this view reset.
        cycle: the cardiac cycle at the video's frames.
        sparkle: ``H x W`` uniform [0, 1) texture (amyloid myocardium sparkles where it is high).
    """

    def __init__(
        self, painter: Painter, pl: Placement, state: PatientState, cycle: Cycle, sparkle: np.ndarray
    ):
        self.p = painter
        self.pl = pl
        self.s = state
        self.cyc = cycle
        self.sparkle = sparkle
        self.lv_area: np.ndarray | None = None  # LV cavity pixels per frame, set by the layout

    # -- static shapes ---------------------------------------------------------------
    def blob(self, centre, a: float, b: float, level: float, axis_deg: float = 0.0) -> None:
        """A filled ellipse of one level."""
        reg, r2 = ellipse(self.pl, centre, a, b, axis_deg)
        if reg is not None:
            self.p.paint(reg, r2 < 1, level)

    def envelope(self, centre, a: float, b: float, axis_deg: float = 0.0) -> None:
        """Heart tissue inside the pericardium; an effusion opens an echo-free ring before it."""
        gap = EFFUSION_GAP[self.s.effusion]
        peri = 0.024
        self.blob(centre, a + gap + peri, b + gap + peri, PERICARDIUM, axis_deg)
        if gap > 0:
            self.blob(centre, a + gap, b + gap, EFFUSION, axis_deg)
        self.blob(centre, a, b, HEART, axis_deg)

    def chamber(self, centre, a: float, b: float, axis_deg: float = 0.0, wall: float = 0.022) -> None:
        """A static chamber or vessel: blood inside a wall."""
        self.blob(centre, a + wall, b + wall, THIN_WALL, axis_deg)
        self.blob(centre, a, b, BLOOD, axis_deg)

    def line(self, points, width: float, level: float) -> None:
        """A bright polyline (leads, stents, septa) of half-width ``width``."""
        for p0, p1 in zip(points[:-1], points[1:], strict=False):
            reg, d = segment_dist(self.pl, np.asarray(p0), np.asarray(p1), width)
            if reg is not None:
                self.p.paint(reg, d < width, level)

    def tube(self, p0, p1, radius: float, wall: float = 0.015) -> None:
        """A vessel drawn along a segment: blood lumen of ``radius`` inside a bright wall."""
        reg, d = segment_dist(self.pl, np.asarray(p0), np.asarray(p1), radius + wall)
        if reg is not None:
            self.p.paint(reg, d < radius + wall, THIN_WALL + 0.15)
            self.p.paint(reg, d < radius, BLOOD)

    # -- moving shapes ---------------------------------------------------------------
    def ventricle(
        self,
        centre,
        apex_deg: float,
        a: float,
        b: float,
        *,
        fac: float,
        wall: float,
        anchor: float = 0.6,
        gap_deg: float | None = 30.0,
        akinetic: tuple[tuple[float, float], ...] = (),
        amyloid: bool = False,
        wall_level: float = MYO,
    ) -> Ventricle:
        """A contracting ventricle.

        Args:
            centre: cavity centre at end-diastole (heart units).
            apex_deg: direction from base to apex.
            a: cavity half-length (along the axis) at end-diastole.
            b: cavity half-width.
            fac: fractional area change end-diastole -> end-systole (the LV's EF / 100).
            wall: myocardial thickness at end-diastole (heart units).
            anchor: where the cavity shrinks to, as a fraction of ``a`` from the centre
                towards the base (the base moves less than the apex).
            gap_deg: no wall within this angle of the base (the valve plane); ``None``: closed.
            akinetic: wall angles (degrees, 0 = apex, positive towards ``+Q``) that do not move.
            amyloid: thick, bright, sparkling myocardium.
            wall_level: echo level of normal myocardium.
        """
        axis = unit_vec(apex_deg)
        perp = unit_vec(apex_deg + 90.0)
        c = np.asarray(centre, dtype=np.float64)
        pc = anchor * a
        anc = c - pc * axis
        A, B = a + wall, b + wall
        scale = np.sqrt(np.clip(1.0 - fac * self.cyc.contraction, 0.02, 1.0))
        reg = region(self.pl, (float(anc[0]), float(anc[1])), apex_deg, pc + A + 0.01, B + 0.01)
        if reg is None:
            return Ventricle(np.zeros(len(scale)), anc, axis, perp, pc, a, b, scale)
        alpha = np.degrees(np.arctan2(reg.Q / np.float32(b), (reg.P - np.float32(pc)) / np.float32(a)))
        s = scale.astype(np.float32)[:, None, None]  # F x 1 x 1
        if akinetic:
            still = np.zeros(alpha.shape, dtype=bool)
            for lo, hi in akinetic:
                still |= (alpha >= lo) & (alpha <= hi)
            s = np.where(still[None], np.float32(1.0), s)  # F x h x w
        # myocardial area is conserved: outer ellipse area = cavity area + wall area
        so = np.sqrt((s * s * (a * b) + (A * B - a * b)) / (A * B))
        cav = anchored_inside(reg, pc, a, b, s)
        myo = anchored_inside(reg, pc, A, B, so) & ~cav
        if gap_deg is not None:
            myo &= (np.abs(alpha) < 180.0 - gap_deg)[None]
        if amyloid:
            level = np.where(self.sparkle[reg.sy, reg.sx] > 0.7, np.float32(1.6), np.float32(0.95))
        else:
            level = wall_level
        self.p.paint(reg, myo, level)
        self.p.paint(reg, cav, BLOOD)
        return Ventricle(cav.sum(axis=(1, 2)).astype(np.float64), anc, axis, perp, pc, a, b, scale)

    def leaflets(
        self,
        h1: np.ndarray,
        h2: np.ndarray,
        open_deg: float,
        opening: np.ndarray,
        *,
        stenosis: int = 0,
        thick: float = 0.011,
        level: float = VALVE,
    ) -> None:
        """Two valve leaflets hinged at ``h1`` and ``h2`` (``F x 2`` or ``(2,)``).

        Closed, the leaflets meet between the hinges; open, they swing towards ``open_deg``.
        A stenotic valve (grade 1-3) has thick, bright leaflets that open less.
        """
        f = len(opening)
        h1 = np.broadcast_to(np.asarray(h1, dtype=np.float64), (f, 2))
        h2 = np.broadcast_to(np.asarray(h2, dtype=np.float64), (f, 2))
        o = (opening * (1.0 - 0.28 * stenosis))[:, None]
        thick = thick * (1.0 + 0.9 * stenosis)
        level = level + 0.3 * stenosis
        span = np.linalg.norm(h2 - h1, axis=1, keepdims=True) + 1e-9
        od = unit_vec(open_deg)[None, :]
        for hinge, other in ((h1, h2), (h2, h1)):
            closed = (other - hinge) / span
            d = (1 - o) * closed + o * od
            d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-9
            tip = hinge + 0.55 * span * d
            reg, dist = segment_dist(self.pl, hinge, tip, thick)
            if reg is not None:
                self.p.paint(reg, dist < thick, level)

    def jet(
        self,
        origin,
        dir_deg: float,
        length: float,
        width: float,
        gate: np.ndarray,
        code: int,
        *,
        core: int | None = MOSAIC,
    ) -> None:
        """A colour-flow jet growing from ``origin`` along ``dir_deg`` while ``gate`` > 0.

        Args:
            origin: where the jet starts (heart units).
            dir_deg: jet direction.
            length: full length at gate 1.
            width: full width at gate 1.
            gate: ``F`` jet extent over the cycle, 0..1.
            code: colour of the jet's laminar fringe (``RED`` towards, ``BLUE`` away from the
                transducer).
            core: colour of the high-velocity core (``MOSAIC`` turbulence, ``ALIAS``), or
                ``None`` for laminar flow.
        """
        if length <= 0 or width <= 0 or self.p.colour is None:
            return
        a, b = length / 2, width / 2
        reg = region(self.pl, tuple(np.asarray(origin, dtype=np.float64)), dir_deg, 2 * a + 0.01, b + 0.01)
        if reg is None:
            return
        g = gate.astype(np.float32)[:, None, None]  # F x 1 x 1
        self.p.flow(reg, anchored_inside(reg, a, a, b, g), code)
        if core is not None:
            self.p.flow(reg, anchored_inside(reg, 0.8 * a, 0.8 * a, 0.5 * b, g), core)

    def velocity_core(self, origin, dir_deg: float, length: float, width: float, gate: np.ndarray) -> None:
        """A narrow aliasing core (the TR velocity from which PASP is estimated)."""
        self.jet(origin, dir_deg, length, width, gate, ALIAS, core=None)


def scale_for(grade: int) -> float:
    """Linear size factor of a chamber dilated by ``grade`` (0..3)."""
    return 1.0 + DILATION * grade
