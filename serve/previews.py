"""First-frame previews for the study viewer: what the model saw, as small PNG data URLs."""

from __future__ import annotations

import base64

import cv2
import numpy as np


def first_frame_png(clip: np.ndarray, min_side: int = 128) -> str:
    """A ``data:image/png`` URL of a clip's first frame, as the model sees it before normalising.

    Args:
        clip: ``T x S x S x 3`` uint8 RGB (a clip in its storage form, as Preprocess makes it).
        min_side: upscale (nearest neighbour) small clips to at least this many pixels.

    Raises:
        ValueError: not a ``T x S x S x 3`` uint8 clip.
    """
    if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8:
        raise ValueError(f"expected a uint8 T x S x S x 3 clip, got {clip.dtype} {tuple(clip.shape)}")
    rgb = np.ascontiguousarray(clip[0])  # S x S x 3
    if rgb.shape[0] < min_side:
        f = -(-min_side // rgb.shape[0])
        rgb = cv2.resize(rgb, None, fx=f, fy=f, interpolation=cv2.INTER_NEAREST)
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"PNG encoding failed for a {rgb.shape} frame")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")
