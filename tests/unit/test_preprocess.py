"""Preprocessing: the spec, crop/scale against the release's steps 3-5, sampling, normalising."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from echoprime.io import read_dicom
from echoprime.io.writers import write_dicom
from echoprime.preprocess import (
    RELEASE_SPEC,
    PreprocessSpec,
    clip_indices,
    clip_offset,
    crop_and_scale,
    crop_box,
    mask_sector,
    normalise,
    preprocess_uint8,
    preprocess_video,
    sample_clip,
    valid_frames,
)
from echoprime.taxonomy import RELEASE_MEAN, RELEASE_STD


def speckle_fan(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """``n x h x w x 3`` uint8: a speckled sector (changing every frame), exactly 0 outside it."""
    yy, xx = np.mgrid[0:h, 0:w]
    ax, ay, radius = w / 2, 0.04 * h, 0.9 * h
    fan = (np.hypot(xx - ax, yy - ay) <= radius) & (np.abs(np.degrees(np.arctan2(xx - ax, yy - ay))) <= 40)
    speckle = rng.integers(1, 256, (n, h, w), dtype=np.uint8) * fan  # n x h x w, 0 outside the fan
    out = np.empty((n, h, w, 3), np.uint8)
    for c, gain in enumerate((256, 230, 205)):  # channels differ, so a channel mix-up would show
        out[..., c] = (speckle.astype(np.uint16) * gain) >> 8
    return out


def release_reference(frames: np.ndarray) -> np.ndarray:
    """Steps 3-5 of the release's preprocessing (docs/ingestion.md), written out independently and plainly."""
    out = []
    for f in frames:
        h, w = f.shape[:2]
        if w > h:  # centre-crop the longer side to 1:1
            start = (w - h) // 2
            f = f[:, start : start + h]
        elif h > w:
            start = (h - w) // 2
            f = f[start : start + w, :]
        side = f.shape[0]
        c = int(side * 0.1)  # 10 % of the cropped size on each side
        f = f[c : side - c, c : side - c]
        out.append(cv2.resize(f, (224, 224), interpolation=cv2.INTER_CUBIC))
    x = np.stack(out).astype(np.float32).transpose(3, 0, 1, 2)  # F x S x S x 3 -> 3 x F x S x S
    mean = np.array(RELEASE_MEAN, np.float32)[:, None, None, None]
    std = np.array(RELEASE_STD, np.float32)[:, None, None, None]
    x = (x - mean) / std
    if x.shape[1] < 32:  # pad with zeros (after normalising) to at least 32 frames
        x = np.concatenate([x, np.zeros((3, 32 - x.shape[1], 224, 224), np.float32)], axis=1)
    return x[:, 0:32:2]


# ---------------------------------------------------------------------------------------- spec


def test_spec_release_and_round_trip():
    spec = PreprocessSpec.release()
    assert spec == PreprocessSpec() == RELEASE_SPEC
    assert (spec.size, spec.frames, spec.stride, spec.crop_fraction, spec.mask) == (224, 16, 2, 0.1, True)
    assert spec.mean == RELEASE_MEAN and spec.std == RELEASE_STD
    d = json.loads(json.dumps(spec.to_dict()))
    assert PreprocessSpec.from_dict(d) == spec
    # a DataCfg dump names the mask flag mask_sector
    with pytest.raises(ValueError, match="both"):
        PreprocessSpec.from_dict({**d, "mask_sector": False})
    cfg_like = {k: v for k, v in d.items() if k != "mask"} | {"mask_sector": False}
    assert PreprocessSpec.from_dict(cfg_like).mask is False


@pytest.mark.parametrize(
    ("bad", "msg"),
    [
        ({"sise": 112}, "unknown PreprocessSpec keys"),
        ({"std": [1.0, 0.0, 1.0]}, "std must be > 0"),
        ({"crop_fraction": 0.5}, "crop_fraction"),
        ({"frames": 0}, ">= 1"),
        ({"mean": [1.0, 2.0]}, "3 values"),
    ],
)
def test_spec_rejects_bad_values(bad, msg):
    with pytest.raises(ValueError, match=msg):
        PreprocessSpec.from_dict(bad)


# -------------------------------------------------------------------------------- crop / scale


def test_crop_box():
    assert crop_box(600, 800) == (60, 540, 160, 640)
    assert crop_box(800, 600) == (160, 640, 60, 540)
    assert crop_box(224, 225) == (22, 202, 22, 202)  # within a pixel of square: offset 0
    assert crop_box(225, 224) == (22, 202, 22, 202)
    assert crop_box(5, 5) == (0, 5, 0, 5)  # int(0.5) == 0
    assert crop_box(600, 800, 0.0) == (0, 600, 100, 700)


@pytest.mark.parametrize(("h", "w"), [(600, 800), (480, 360), (300, 301), (301, 300), (224, 224)])
def test_crop_and_scale_near_square_and_dtypes(h, w):
    rng = np.random.default_rng(h + w)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    out = crop_and_scale(frame, 224)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    grey = crop_and_scale(frame[..., 0], 112)
    assert grey.shape == (112, 112)
    as_float = crop_and_scale(frame.astype(np.float32), 224)
    # uint8 output is the float result rounded and saturated (bicubic overshoots on noise)
    assert as_float.dtype == np.float32 and np.abs(np.clip(as_float, 0, 255) - out).max() <= 1.0


@pytest.mark.parametrize(("n", "h", "w"), [(34, 480, 640), (17, 480, 360), (33, 300, 301), (5, 224, 300)])
def test_matches_release_steps_on_uncompressed_dicom(n, h, w):
    """Content wholly inside the sector: masking changes nothing, so the whole pipeline
    (DICOM decode, mask, crop, scale, normalise, pad, sample) equals the release's steps 3-5."""
    frames = speckle_fan(np.random.default_rng(n), n, h, w)
    clip = read_dicom(write_dicom(frames))
    np.testing.assert_array_equal(clip.frames, frames)
    got = preprocess_video(clip.frames, RELEASE_SPEC)
    want = release_reference(frames)
    assert got.shape == want.shape == (3, 16, 224, 224) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-3


def test_float_path_is_uint8_path_plus_normalise():
    rng = np.random.default_rng(0)
    frames = speckle_fan(rng, 23, 240, 320)
    spec = PreprocessSpec(size=96, frames=8, stride=3)
    for offset in (0, 2, 9):
        u8 = preprocess_uint8(frames, spec, offset=offset)
        assert u8.shape == (8, 96, 96, 3) and u8.dtype == np.uint8
        n_valid = valid_frames(23, spec, offset)
        assert n_valid == len(range(offset, 23, 3)[:8])
        assert not u8[n_valid:].any()  # padding frames are zero
        f32 = preprocess_video(frames, spec, offset=offset)
        np.testing.assert_array_equal(normalise(u8, spec.mean, spec.std, n_valid=n_valid), f32)
        assert not f32[:, n_valid:].any()  # padding is zero after normalising, as the release pads
    # random offsets come from the generator, reproducibly
    a = preprocess_video(frames, spec, np.random.default_rng(5))
    b = preprocess_video(frames, spec, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)


def test_short_clip_is_padded():
    frames = speckle_fan(np.random.default_rng(1), 2, 120, 160)
    x = preprocess_video(frames, RELEASE_SPEC)
    assert x.shape == (3, 16, 224, 224)
    assert np.abs(x[:, 0]).sum() > 0 and not x[:, 1:].any()  # frame 0 real, 2..30 padding


# ---------------------------------------------------------------------------------- sampling


def test_clip_indices_and_sample_clip():
    np.testing.assert_array_equal(clip_indices(40, 16, 2), np.arange(0, 32, 2))
    np.testing.assert_array_equal(clip_indices(7, 5, 2), [0, 2, 4, 6, -1])
    np.testing.assert_array_equal(clip_indices(7, 3, 2, offset=3), [3, 5, -1])
    frames = np.arange(7, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)  # 7 x 2 x 2
    s = sample_clip(frames, 5, 2)
    assert s.shape == (5, 2, 2) and list(s[:, 0, 0]) == [0, 2, 4, 6, 0]
    assert list(sample_clip(frames, 2, 3, offset=1)[:, 0, 0]) == [1, 4]
    with pytest.raises(ValueError, match="needs 9 frames, the source has 7"):
        sample_clip(frames, 5, 2, pad=False)
    with pytest.raises(ValueError, match="offset"):
        clip_indices(7, 2, 2, offset=-1)


def test_clip_offset():
    spec = PreprocessSpec(frames=4, stride=2)  # needs 7 frames
    assert clip_offset(100, spec, None) == 0
    assert (
        clip_offset(7, spec, np.random.default_rng(0)) == 0
        and clip_offset(3, spec, np.random.default_rng(0)) == 0
    )
    offsets = {clip_offset(10, spec, np.random.default_rng(s)) for s in range(200)}
    assert offsets == {0, 1, 2, 3}  # every offset where the clip fits, and no other


# --------------------------------------------------------------------------------- normalise


def test_normalise_numpy_torch_batched():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (2, 5, 8, 8, 3), dtype=np.uint8)  # B x T x H x W x 3
    x = normalise(clip, RELEASE_MEAN, RELEASE_STD, n_valid=[5, 3])
    assert x.shape == (2, 3, 5, 8, 8) and x.dtype == np.float32
    ref = (clip[0, 2, 4, 5].astype(np.float32) - np.array(RELEASE_MEAN, np.float32)) / np.array(
        RELEASE_STD, np.float32
    )
    np.testing.assert_allclose(x[0, :, 2, 4, 5], ref, rtol=0, atol=1e-6)
    assert not x[1, :, 3:].any() and x[1, :, :3].any()
    t = normalise(torch.from_numpy(clip), RELEASE_MEAN, RELEASE_STD, n_valid=torch.tensor([5, 3]))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and t.shape == (2, 3, 5, 8, 8)
    np.testing.assert_allclose(t.numpy(), x, rtol=0, atol=1e-6)
    single = normalise(clip[0])
    np.testing.assert_array_equal(single, x[0])
    with pytest.raises(ValueError, match="T x H x W x 3"):
        normalise(clip[..., :2])
    with pytest.raises(ValueError, match="2 values for a batch of 2|batch"):
        normalise(clip, n_valid=[1])


def test_normalise_torch_path_is_bit_identical_and_leaves_its_input_alone():
    # The Serve towers normalise uint8 clips with the torch path; the one-process path uses numpy:
    # the two must agree exactly. A float tensor given in is not changed in place.
    rng = np.random.default_rng(1)
    clip = rng.integers(0, 256, (3, 6, 10, 12, 3), dtype=np.uint8)
    want = normalise(clip, n_valid=[6, 2, 1])
    for given in (torch.from_numpy(clip), torch.from_numpy(clip).permute(0, 1, 3, 2, 4)):
        got = normalise(given, n_valid=[6, 2, 1])
        ref = want if given.shape == clip.shape else normalise(given.numpy(), n_valid=[6, 2, 1])
        assert got.is_contiguous() and torch.equal(got, torch.from_numpy(ref))
    as_float = torch.from_numpy(clip.astype(np.float32))
    before = as_float.clone()
    assert torch.equal(normalise(as_float, n_valid=[6, 2, 1]), torch.from_numpy(want))
    assert torch.equal(as_float, before)


def test_bad_frames_rejected():
    for bad in (
        np.zeros((4, 8, 8, 3), np.float32),
        np.zeros((4, 8, 8), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
    ):
        with pytest.raises(ValueError, match="F x H x W x 3|at least one frame"):
            preprocess_video(bad)
    with pytest.raises(ValueError, match="sector mask has shape"):
        preprocess_uint8(np.zeros((2, 8, 8, 3), np.uint8), sector=np.ones((4, 4), bool))


def test_mask_sector_returns_copy_and_mask():
    frames = speckle_fan(np.random.default_rng(3), 6, 120, 160)
    frames[:, 2:10, 2:30] = 255  # a static text block outside the fan
    masked, mask = mask_sector(frames)
    assert mask.shape == (120, 160) and mask.dtype == bool
    assert not masked[:, 2:10, 2:30].any() and frames[:, 2:10, 2:30].all()  # input untouched
    np.testing.assert_array_equal(masked[:, mask], frames[:, mask])
