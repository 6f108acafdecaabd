"""The sector mask on the project's synthetic echo videos (echoprime.synth.render): the renderer
knows its fan and its burned-in annotations exactly, so the mask is checked against both."""

from __future__ import annotations

import numpy as np
import pytest

from echoprime.preprocess import mask_sector
from echoprime.synth.render import render_video
from echoprime.synth.state import sample_state
from echoprime.taxonomy import VIEWS


@pytest.mark.parametrize(("size", "frames"), [(112, 32), (224, 16), (112, 2), (64, 16)])
def test_mask_on_rendered_videos(size, frames):
    for seed in range(2):
        for view in VIEWS:
            rng = np.random.default_rng(seed)
            video = render_video(
                sample_state(rng, f"P{seed}", f"S{seed}"), view, rng, frames=frames, size=size
            )
            masked, mask = mask_sector(video.frames)
            fan, annotations = video.sector_mask, video.annotation_mask
            assert annotations.any()
            where = f"{view} seed {seed}"
            assert not masked[:, annotations].any(), f"{where}: an annotation pixel survived"
            # Every fan pixel that carries signal is kept. Some views have an echo-free rim at
            # the far edge (black in every frame): no method can see it, and zeroing it changes
            # nothing, so the geometric fan is held to a slightly lower bar.
            signal = fan & (video.frames.max(axis=(0, 3)) > 0)
            assert (mask & signal).sum() >= 0.99 * signal.sum(), where
            assert (mask & fan).sum() >= 0.97 * fan.sum(), where
            assert mask.sum() <= 1.15 * fan.sum(), where  # and little else (a 1-px margin at 64 px)
            np.testing.assert_array_equal(masked[:, fan & mask], video.frames[:, fan & mask])
