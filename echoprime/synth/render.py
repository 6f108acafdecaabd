"""Render one synthetic echocardiography video of a patient in a view.

A video is a speckled B-mode fan (apex at the top centre) whose chambers, walls, valves and
devices are laid out as in the named view (``layouts.py``), moving with the patient's cardiac
cycle; Doppler views add colour-flow jets inside a colour box; text, depth marks, an ECG with
a sweeping cursor and (Doppler) a colour bar are burned in outside the fan.

Each finding is drawn only in the views that :data:`~echoprime.synth.state.VISIBILITY` lists
for it: the layouts receive :func:`visible_state`, in which every other finding is reset to
normal. Randomness comes from five child generators (geometry, speckle, texture, Doppler
noise, annotations) whose draws never depend on the findings, so rendering the same state with
and without a finding from the same generator differs only where that finding is drawn.

Example::

    rng = np.random.default_rng(0)
    video = render_video(sample_state(rng, "P1", "S1"), "A4C", rng)
    video.frames.shape  # (32, 112, 150, 3)
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from echoprime.synth.anatomy import TISSUE, Scene, make_cycle
from echoprime.synth.annotations import annotate
from echoprime.synth.canvas import ALIAS, BLUE, MOSAIC, RED, Painter, Placement
from echoprime.synth.layouts import LAYOUTS
from echoprime.synth.state import VISIBILITY, PatientState
from echoprime.taxonomy import DOPPLER_VIEWS, VIEWS

APEX_Y = 0.02  # fan apex row, as a fraction of the height
REFERENCE_DEPTH_CM = 16.0  # at this depth one heart unit is the fan radius


@dataclass
class RenderedVideo:
    """One rendered clip.

    Attributes:
        frames: ``F x H x W x 3`` uint8 RGB; greyscale (R = G = B) except colour flow.
        fps: frame rate.
        sector_mask: ``H x W`` bool, the fan.
        annotation_mask: ``H x W`` bool, the burned-in pixels (all outside the fan).
        view: the coarse view drawn.
        lv_area: ``F`` LV cavity area in pixels per frame, from the renderer's geometry
            (``None`` where the view shows no LV).
    """

    frames: np.ndarray
    fps: float
    sector_mask: np.ndarray
    annotation_mask: np.ndarray
    view: str
    lv_area: np.ndarray | None = None


def frame_width(size: int) -> int:
    """Width of a frame of height ``size``: 4/3 of it, rounded to an even number.

    Even because H.264 (yuv420p) and native YBR_FULL_422 DICOM need even widths.
    """
    return 2 * int(round(size * 2 / 3))


_DEFAULTS = {
    f.name: f.default for f in dataclasses.fields(PatientState) if f.default is not dataclasses.MISSING
}


def visible_state(state: PatientState, view: str) -> PatientState:
    """A copy of ``state`` with every finding that ``view`` cannot show reset to normal."""
    out = dataclasses.replace(state)
    for key, views in VISIBILITY.items():
        if view not in views:
            setattr(out, key, _DEFAULTS[key])
            if key == "stemi":
                out.stemi_territory = None
    return out


def visibility_table() -> str:
    """:data:`VISIBILITY` as a Markdown table (finding rows, view columns, ``x`` = drawn)."""
    lines = ["| finding | " + " | ".join(VIEWS) + " |", "| --- |" + " :-: |" * len(VIEWS)]
    for key, views in VISIBILITY.items():
        lines.append(f"| `{key}` | " + " | ".join("x" if v in views else "" for v in VIEWS) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Geometry:
    half_angle: float  # degrees
    radius: float  # fan radius / height
    depth_cm: float
    gain: float
    atten: float
    tilt: float
    shift: tuple[float, float]
    fps: int
    phase_u: float
    resp0: float


def _draw_geometry(rng: np.random.Generator) -> _Geometry:
    """Imaging settings of one clip; always the same number of draws."""
    return _Geometry(
        half_angle=float(rng.uniform(36.0, 45.0)),
        radius=float(rng.uniform(0.8, 0.86)),
        depth_cm=float(rng.uniform(14.5, 18.0)),
        gain=float(rng.uniform(0.8, 1.2)),
        atten=float(rng.uniform(0.05, 0.35)),
        tilt=float(rng.uniform(-4.0, 4.0)),
        shift=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03))),
        fps=int(rng.integers(30, 51)),
        phase_u=float(rng.random()),
        resp0=float(rng.random()),
    )


@functools.lru_cache(maxsize=16)
def _polar(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Distance (pixels) and beam angle (degrees, 0 = down) of every pixel from the fan apex."""
    y = np.arange(h, dtype=np.float32)[:, None] + 0.5 - np.float32(APEX_Y * h)
    x = np.arange(w, dtype=np.float32)[None, :] + 0.5 - np.float32(w / 2)
    r = np.sqrt(x * x + y * y)
    psi = np.degrees(np.arctan2(x, y))
    r.flags.writeable = False
    psi.flags.writeable = False
    return r, psi


def _start_phase(frames: int, fps: float, heart_rate: int, u: float) -> float:
    """Cardiac phase of frame 0 such that the clip holds a whole systole (ED and ES)."""
    cycles = frames / fps * heart_rate / 60.0
    if cycles >= 1.35 or cycles < 0.35:
        return u
    return (-u * (cycles - 0.35)) % 1.0  # end-diastole (phase 0) falls inside the clip early enough


def _lut() -> np.ndarray:
    """Colour of each flow code (rows) at each noise value (columns): ``5 x 256 x 3`` uint8."""
    t = np.linspace(0.0, 1.0, 256)
    lut = np.zeros((5, 256, 3), dtype=np.float64)
    lut[RED] = np.stack([130 + 125 * t, 15 + 60 * t**2, 10 * t], -1)
    lut[BLUE] = np.stack([10 * t, 40 + 110 * t**2, 140 + 115 * t], -1)
    mosaic = np.array(
        [[255, 235, 40], [60, 225, 80], [40, 230, 235], [255, 255, 255], [255, 130, 20], [110, 120, 255]]
    )
    lut[MOSAIC] = mosaic[np.arange(256) % len(mosaic)] * (0.8 + 0.2 * t[:, None])
    alias = np.array([[70, 245, 245], [250, 250, 90]])
    lut[ALIAS] = alias[np.arange(256) % 2]
    return lut.round().astype(np.uint8)


_LUT = _lut()
# frame-to-frame speckle decorrelation: a multiplicative factor per 8-bit noise value
_NOISE = (0.72 + 0.56 * np.arange(256) / 255.0).astype(np.float32)


def _box_mask(r: np.ndarray, psi: np.ndarray, box, unit: float, tilt: float, fan: np.ndarray):
    r0, r1, p0, p1 = box
    inside = (r >= r0 * unit) & (r <= r1 * unit) & (psi >= p0 + tilt) & (psi <= p1 + tilt) & fan
    core = inside.copy()
    core[1:] &= inside[:-1]
    core[:-1] &= inside[1:]
    core[:, 1:] &= inside[:, :-1]
    core[:, :-1] &= inside[:, 1:]
    return inside, inside & ~core


def render_video(
    state: PatientState,
    view: str,
    rng: np.random.Generator,
    *,
    frames: int = 32,
    size: int = 112,
    fps: float | None = None,
) -> RenderedVideo:
    """Render ``state`` as seen in ``view``.

    Args:
        state: the patient.
        view: one of ``taxonomy.VIEWS``.
        rng: the only source of randomness; the same generator state gives the same video.
        frames: number of frames.
        size: frame height in pixels (even); the width is :func:`frame_width` of it.
        fps: frame rate; ``None`` draws one in 30-50.

    Returns:
        The video with its sector and annotation masks.

    Raises:
        ValueError: unknown view, fewer than 1 frame, an odd or too small size, or fps <= 0.
    """
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: expected one of {list(VIEWS)}")
    if frames < 1:
        raise ValueError(f"frames must be >= 1, got {frames}")
    if size < 16 or size % 2:
        raise ValueError(
            f"size must be an even number >= 16 (H.264 and YBR_FULL_422 need even sizes), got {size}"
        )
    if fps is not None and not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    h, w = size, frame_width(size)
    seeds = rng.integers(0, 2**63 - 1, size=5)
    geo = _draw_geometry(np.random.default_rng(seeds[0]))
    speckle_rng, texture_rng, doppler_rng, annot_rng = (np.random.default_rng(s) for s in seeds[1:])
    fps_v = float(fps if fps is not None else geo.fps)
    phase0 = _start_phase(frames, fps_v, state.heart_rate, geo.phase_u)
    cycle = make_cycle(frames, fps_v, state.heart_rate, phase0, geo.resp0)

    r, psi = _polar(h, w)
    radius = geo.radius * h
    fan = (r <= radius) & (np.abs(psi) <= geo.half_angle)
    unit = radius * REFERENCE_DEPTH_CM / geo.depth_cm
    shift_x, shift_y = geo.shift[0] * unit, geo.shift[1] * unit
    pl = Placement(h, w, w / 2 + shift_x, APEX_Y * h + shift_y, unit, geo.tilt)
    doppler = view in DOPPLER_VIEWS
    painter = Painter(frames, h, w, TISSUE, doppler)
    scene = Scene(
        painter, pl, visible_state(state, view), cycle, texture_rng.random((h, w), dtype=np.float32)
    )
    box = LAYOUTS[view](scene)

    # B-mode: level x multiplicative speckle (a grain fixed to the clip plus frame noise),
    # depth attenuation, edge fall-off and near-field clutter; black outside the fan.
    grain = speckle_rng.random((h, w), dtype=np.float32)
    grain = (grain + np.roll(grain, 1, axis=1) + np.roll(grain, -1, axis=1)) / np.float32(3.0)  # lateral blur
    noise = speckle_rng.integers(0, 256, size=(frames, h, w), dtype=np.uint8)
    edge = np.clip((geo.half_angle - np.abs(psi)) / 4.0, 0.35, 1.0)
    gain = geo.gain * (1.0 - geo.atten * r / radius) * edge * fan * 255.0
    static = ((0.5 + 1.2 * grain) * gain).astype(np.float32)
    clutter = (70.0 * np.exp(-r / (0.06 * h)) * fan).astype(np.float32)
    level = painter.level  # in-place arithmetic: these are the largest arrays of the render
    level *= static[None]
    level *= _NOISE[noise]
    level += clutter[None]
    np.clip(level, 0.0, 255.0, out=level)
    grey = level.astype(np.uint8)
    out = np.stack([grey, grey, grey], axis=-1)  # F x H x W -> F x H x W x 3

    # the noise of the colour pixels is drawn whatever the jets, to keep streams independent
    colour_noise = doppler_rng.integers(0, 256, size=(frames, h, w), dtype=np.uint8) if doppler else None
    if doppler and box is not None:
        inside, outline = _box_mask(r, psi, box, unit, geo.tilt, fan)
        out[:, outline] = 150
        code = painter.colour * inside[None]
        idx = np.nonzero(code)
        out[idx] = _LUT[code[idx], colour_noise[idx]]

    fan_rows = np.nonzero(fan.any(axis=1))[0]
    annotation = annotate(
        out,
        fan,
        annot_rng,
        doppler=doppler,
        fps=fps_v,
        heart_rate=state.heart_rate,
        depth_cm=geo.depth_cm,
        phase0=phase0,
        fan_bottom=int(fan_rows[-1]) if len(fan_rows) else 0,
    )
    return RenderedVideo(out, fps_v, fan, annotation, view, scene.lv_area)
