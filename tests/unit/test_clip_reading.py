"""Inference decodes only the frames its clip samples (``PreprocessSpec.clip_reading``): the clip
is the one a whole decode gives, bit for bit, wherever the sector mask does not enter; where it
does, the mask is found from the clip's own frames and keeps the same pixels as the whole decode's."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from pydicom.uid import JPEGBaseline8Bit, RLELossless

from echoprime.io import NotAVideoError, read_any
from echoprime.io.files import SHORT_CLIP, clip_reader, prepare_clip
from echoprime.io.folders import process_dicoms
from echoprime.io.writers import write_dicom, write_video
from echoprime.preprocess import RELEASE_SPEC, PreprocessSpec, preprocess_uint8, valid_frames
from echoprime.sector import sector_mask
from echoprime.synth.render import render_video
from echoprime.synth.state import sample_state


def _echo(seed: int, n: int, view: str = "A4C", size: int = 112):
    """A rendered echo (a moving fan, burned-in text, an ECG trace) with its true fan and
    annotation masks; ``.frames`` is ``n x size x W x 3``."""
    rng = np.random.default_rng(seed)
    return render_video(sample_state(rng, "P", "S"), view, rng, frames=n, size=size, fps=30)


def _old_way(src, spec, name=None):
    """What inference did before: decode every frame of the window, sample afterwards."""
    frames = read_any(src, name=name, max_frames=spec.frames * spec.stride).frames
    return preprocess_uint8(frames, spec), valid_frames(frames.shape[0], spec), frames


def prepare_clip_fails(path, spec) -> bool:
    try:
        clip_reader(spec)(path)
    except NotAVideoError:
        return True
    return False


def test_clip_reading_covers_exactly_the_sampled_frames():
    assert RELEASE_SPEC.clip_reading() == {"max_frames": 31, "step": 2}
    assert PreprocessSpec(frames=4, stride=3).clip_reading() == {"max_frames": 10, "step": 3}


def test_without_the_mask_the_clip_is_the_whole_decodes_bit_for_bit(real_echo_dir):
    """Every real scanner clip we have (JPEG, RLE, palette, native, H.264): same clip, same n_valid."""
    spec = dataclasses.replace(RELEASE_SPEC, mask=False)
    read, checked = clip_reader(spec), 0
    for path in sorted(p for p in real_echo_dir.iterdir() if p.suffix in (".dcm", ".mp4")):
        try:
            want, n_valid, _ = _old_way(path, spec)
        except NotAVideoError:
            assert prepare_clip_fails(path, spec)  # stills: refused by both ways alike
            continue
        video = read(path)
        got = prepare_clip(video, spec)
        np.testing.assert_array_equal(got[0], want, err_msg=path.name)
        assert got[1] == n_valid, path.name
        checked += 1
    assert checked >= 4


@pytest.mark.parametrize("ts", [None, RLELossless, JPEGBaseline8Bit, "h264"])
def test_with_the_mask_the_clips_own_frames_find_the_sector(ts):
    """A 40-frame rendered echo in four encodings: the 16 sampled frames are decoded alone (the same
    pixels as a whole decode's), and the sector they show keeps the fan. The mask all 32 frames of
    the window give differs at its edge in the black background, by a few pixels when lossless,
    more where codec noise moves (bench/clip_mask.py measures it, docs/ingestion.md): the clips
    differ in under 0.5 % / 2 % of their values."""
    echo = _echo(0, 40)
    frames = echo.frames
    if ts == "h264":
        data, name = write_video(frames, fps=30, threads=1), "a.mp4"
    else:
        data, name = write_dicom(frames, fps=30, **({"transfer_syntax": ts} if ts else {})), "a.dcm"
    video = clip_reader(RELEASE_SPEC)(data, name=name)
    assert video.frames.shape[0] == 16 and video.meta["step"] == 2 and video.meta["n_frames"] == 40
    want, _, whole = _old_way(data, RELEASE_SPEC, name)
    np.testing.assert_array_equal(video.frames, whole[0:31:2])  # the same decoded pixels
    old, new = sector_mask(whole), sector_mask(video.frames)
    assert old.method == new.method == "motion"
    assert (new.mask & echo.sector_mask).sum() >= 0.99 * echo.sector_mask.sum()
    got, n_valid = prepare_clip(video, RELEASE_SPEC)
    assert n_valid == 16
    if ts in (None, RLELossless):
        assert (new.mask != old.mask).mean() < 0.005 and (got != want).mean() < 0.005
    else:
        assert (got != want).mean() < 0.02


def test_a_short_source_is_read_whole_for_its_mask(tmp_path):
    """A source whose window samples fewer than SHORT_CLIP frames could not show its sector move
    (2 frames at stride 2 are one): it is read again at step 1, and the clip is the old way's."""
    frames = _echo(1, 2 * (SHORT_CLIP - 1) - 1, "Parasternal_Long", 64).frames  # 5 frames: 3 sampled
    path = tmp_path / "short.dcm"
    write_dicom(frames, path, fps=30)
    video = clip_reader(RELEASE_SPEC)(path)
    assert video.meta["step"] == 1 and video.frames.shape[0] == frames.shape[0]
    got = prepare_clip(video, RELEASE_SPEC)
    want, n_valid, _ = _old_way(path, RELEASE_SPEC)
    np.testing.assert_array_equal(got[0], want)
    assert got[1] == n_valid == SHORT_CLIP - 1
    # without a mask nothing needs the other frames: the short source is read once, sampled
    off = dataclasses.replace(RELEASE_SPEC, mask=False)
    assert clip_reader(off)(path).meta["step"] == 2


def test_the_release_folder_helper_reads_only_the_clips_frames(tmp_path):
    write_dicom(_echo(2, 50, size=64).frames, tmp_path / "a.dcm", fps=30)
    got, reports = process_dicoms(tmp_path)
    assert reports[0].status == "used" and reports[0].n_frames == 50
    video = read_any(tmp_path / "a.dcm", **RELEASE_SPEC.clip_reading())
    u8, n_valid = prepare_clip(video, RELEASE_SPEC)
    assert video.frames.shape[0] == n_valid == 16
    x = got[0].numpy()  # 3 x T x S x S
    want = (u8.transpose(3, 0, 1, 2).astype(np.float32) - np.float32(RELEASE_SPEC.mean[0])) / np.float32(
        RELEASE_SPEC.std[0]
    )
    np.testing.assert_array_equal(x[0], want[0])
