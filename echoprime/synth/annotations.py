"""Burned-in annotations outside the fan: text blocks, an ECG with a sweeping cursor, a colour bar.

Real echo clips carry vendor text, imaging settings, depth marks and an ECG strip; a model must
learn to ignore them (and the sector mask must cut them away). Everything drawn here lies
outside the fan (a one-pixel guard band is kept clear) and is exactly what the returned mask
marks: every masked pixel is non-black in at least one frame, and no other pixel outside the
fan is ever non-black.
"""

from __future__ import annotations

import cv2
import numpy as np

VENDORS = ("SYNTHSONIC", "ECHOLAB", "CARDIOSIM", "ULTRAVIEW", "SONOGEN")
PROBES = ("P4-2", "S5-1", "M5Sc", "X5-1", "P5-1")
TEXT = (205, 205, 205)
ECG = (40, 210, 90)
CURSOR = (250, 250, 160)
SWEEP_S = 2.5  # seconds of ECG shown across the strip


def ecg_wave(phase: np.ndarray) -> np.ndarray:
    """A P-QRS-T complex per cardiac cycle; the R peak at phase 0 (end-diastole)."""
    d = (phase + 0.5) % 1.0 - 0.5  # phase relative to the R wave, in [-0.5, 0.5)
    return (
        np.exp(-((d / 0.012) ** 2))
        - 0.15 * np.exp(-(((d + 0.03) / 0.01) ** 2))
        - 0.22 * np.exp(-(((d - 0.03) / 0.012) ** 2))
        + 0.28 * np.exp(-(((d - 0.3) / 0.05) ** 2))
        + 0.12 * np.exp(-(((d + 0.14) / 0.03) ** 2))
    )


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def annotate(
    frames: np.ndarray,
    fan: np.ndarray,
    rng: np.random.Generator,
    *,
    doppler: bool,
    fps: float,
    heart_rate: int,
    depth_cm: float,
    phase0: float,
    fan_bottom: int,
) -> np.ndarray:
    """Burn annotations into ``frames`` (``F x H x W x 3``, in place) outside ``fan``.

    Args:
        frames: the video; pixels outside the fan must be black on entry.
        fan: ``H x W`` bool sector mask.
        rng: draws the vendor, the probe and the text placement.
        doppler: draw a colour-velocity bar.
        fps: frame rate (printed, and drives the ECG cursor).
        heart_rate: beats per minute (printed; drives the ECG).
        depth_cm: imaging depth (printed, with depth marks).
        phase0: cardiac phase of the first frame (the ECG is in step with the heart).
        fan_bottom: last pixel row of the fan; the ECG strip goes below it.

    Returns:
        ``H x W`` bool annotation mask.
    """
    f, h, w = frames.shape[:3]
    vendor = VENDORS[int(rng.integers(len(VENDORS)))]
    probe = PROBES[int(rng.integers(len(PROBES)))]
    mi = rng.uniform(0.8, 1.4)
    dx, dy = (int(v) for v in rng.integers(0, 3, size=2))
    layer = np.zeros((h, w, 3), dtype=np.uint8)
    font, scale = cv2.FONT_HERSHEY_PLAIN, h / 300.0
    line = max(int(round(h * 0.055)), 4)
    for i, txt in enumerate((vendor, probe, f"{fps:.0f}Hz", f"{depth_cm:.0f}cm")):
        cv2.putText(layer, txt, (2 + dx, line * (i + 1) + dy), font, scale, TEXT, 1, cv2.LINE_8)
    for i, txt in enumerate((f"HR{heart_rate}", f"MI{mi:.1f}")):
        cv2.putText(layer, txt, (int(w * 0.8) - dx, line * (i + 1) + dy), font, scale, TEXT, 1, cv2.LINE_8)
    # depth marks down the right edge, one per 5 cm
    for k in range(0, int(depth_cm) + 1, 5):
        y = int(round(h * 0.02 + k / depth_cm * (fan_bottom - h * 0.02)))
        layer[max(y - 1, 0) : y + 1, w - 3 : w - 1] = TEXT
    if doppler:  # velocity scale: red (towards) above, blue (away) below; never black
        y0, y1 = int(h * 0.28), int(h * 0.62)
        ramp = np.linspace(1.0, -1.0, y1 - y0)
        red = np.where(ramp > 0, 60 + 195 * ramp, 30).astype(np.uint8)
        blue = np.where(ramp <= 0, 60 - 195 * ramp, 30).astype(np.uint8)
        layer[y0:y1, w - 9 : w - 5] = np.stack([red, np.full_like(red, 20), blue], -1)[:, None, :]
    # ECG strip below the fan, in step with the cardiac cycle
    s0 = max(fan_bottom + 3, int(h * 0.9))
    mid, amp = (s0 + h - 1) / 2.0, max((h - 1 - s0) / 2.0 - 0.5, 1.0)
    x0, x1 = 3, w - 4
    xs = np.arange(x0, x1 + 1)
    t = (xs - x0) / (x1 - x0) * SWEEP_S
    ys = mid + amp * 0.4 - amp * 1.1 * ecg_wave(phase0 + t * heart_rate / 60.0)
    pts = np.stack([xs, np.clip(np.round(ys), s0, h - 1)], -1).astype(np.int32)[:, None, :]  # N x 1 x 2
    cv2.polylines(layer, [pts], False, ECG, 1, cv2.LINE_8)

    guard = _dilate(fan)
    static = layer.any(-1) & ~guard
    frames[:, static] = layer[static]
    mask = static
    cursor_x = x0 + np.round(((np.arange(f) / fps) % SWEEP_S) / SWEEP_S * (x1 - x0)).astype(int)
    rows = np.arange(s0, h)
    keep = ~guard[s0:h]
    for i, x in enumerate(cursor_x):
        sel = rows[keep[:, x]]
        frames[i, sel, x] = CURSOR
        mask[sel, x] = True
    return mask
