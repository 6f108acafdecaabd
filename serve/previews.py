"""First-frame previews for the study viewer: what the model saw, as small PNG data URLs."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from echoprime.preprocess import PreprocessSpec


def first_frame_png(clip: np.ndarray, spec: PreprocessSpec, min_side: int = 128) -> str:
    """A ``data:image/png`` URL of a model clip's first frame, un-normalised.

    Args:
        clip: ``3 x T x S x S`` float32 model input (per-channel normalised).
        spec: the bundle's preprocessing, for its mean and std.
        min_side: upscale (nearest neighbour) small clips to at least this many pixels.
    """
    mean = np.asarray(spec.mean, np.float32)[:, None, None]
    std = np.asarray(spec.std, np.float32)[:, None, None]
    frame = clip[:, 0] * std + mean  # 3 x S x S in pixel units
    rgb = np.clip(np.rint(frame), 0, 255).astype(np.uint8).transpose(1, 2, 0)  # 3 x S x S -> S x S x 3
    if rgb.shape[0] < min_side:
        f = -(-min_side // rgb.shape[0])
        rgb = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for a {rgb.shape} frame")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
