"""Training-time clip augmentation (echoprime.training.batch): shift, reversal, noise, seeding."""

from __future__ import annotations

import pytest
import torch

from echoprime.training.batch import Augmentation, augment_clip, prepare_batch, shift_clip

SPEC = {"mean": [30.0, 30.0, 30.0], "std": [50.0, 50.0, 50.0]}


def _batch(n: int = 4, t: int = 4, s: int = 16) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    clip = torch.randint(0, 255, (n, t, s, s, 3), dtype=torch.uint8, generator=g)
    return {
        "clip": clip,
        "input_ids": torch.ones(n, 5, dtype=torch.long),
        "attention_mask": torch.ones(n, 5, dtype=torch.long),
        "token_type_ids": torch.zeros(n, 5, dtype=torch.long),
        "study_idx": torch.arange(n),
    }


def test_shift_translates_each_clip_as_a_whole_and_fills_black():
    x = torch.arange(2 * 3 * 2 * 8 * 8, dtype=torch.float32).reshape(2, 3, 2, 8, 8)
    fill = torch.tensor([-1.0, -2.0, -3.0])
    y = shift_clip(x, 2, fill, torch.Generator().manual_seed(3))
    assert y.shape == x.shape
    for i in range(2):
        # find the (dy, dx) that reproduces the clip: one translation for every frame and channel
        found = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ref = torch.empty_like(x[i])
                ref[:] = fill.view(3, 1, 1, 1)
                ys, yd = slice(max(0, dy), 8 + min(0, dy)), slice(max(0, -dy), 8 + min(0, -dy))
                xs, xd = slice(max(0, dx), 8 + min(0, dx)), slice(max(0, -dx), 8 + min(0, -dx))
                ref[:, :, yd, xd] = x[i][:, :, ys, xs]
                if torch.equal(ref, y[i]):
                    found.append((dy, dx))
        assert len(found) == 1, found


def test_shift_zero_is_identity_and_too_large_is_an_error():
    x = torch.randn(2, 3, 2, 8, 8)
    assert shift_clip(x, 0) is x
    with pytest.raises(ValueError, match="smaller than the clip side"):
        shift_clip(x, 8)


def test_reverse_plays_clips_backwards():
    x = torch.randn(6, 3, 5, 4, 4)
    y = augment_clip(x, Augmentation(reverse=1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(y, x.flip(2))
    assert torch.equal(augment_clip(x, Augmentation(reverse=0.0)), x)


def test_augmentation_is_seeded_and_changes_the_clip():
    b = _batch()
    kw = dict(augmentation=Augmentation(shift=2, noise=0.1, reverse=0.5, brightness=0.1, contrast=0.1))
    a1 = prepare_batch(b, SPEC, "cpu", generator=torch.Generator().manual_seed(7), **kw)["video"]
    a2 = prepare_batch(b, SPEC, "cpu", generator=torch.Generator().manual_seed(7), **kw)["video"]
    a3 = prepare_batch(b, SPEC, "cpu", generator=torch.Generator().manual_seed(8), **kw)["video"]
    plain = prepare_batch(b, SPEC, "cpu")["video"]
    assert torch.equal(a1, a2)
    assert not torch.equal(a1, a3)
    assert not torch.equal(a1, plain)


def test_prepare_batch_shift_brings_in_black_pixels():
    b = _batch(n=8)
    b["clip"][:] = 200  # a bright clip: any pixel shifted in must be black (0 in pixel units)
    out = prepare_batch(
        b, SPEC, "cpu", augmentation=Augmentation(shift=3), generator=torch.Generator().manual_seed(1)
    )["video"]
    black = (0 - 30.0) / 50.0
    bright = (200 - 30.0) / 50.0
    is_black = torch.isclose(out, torch.tensor(black), atol=1e-5)
    is_bright = torch.isclose(out, torch.tensor(bright), atol=1e-5)
    assert bool((is_black | is_bright).all())
    assert bool(is_black.any())  # at least one clip moved
