"""The sector mask removes burned-in annotations (text, ECG trace and its moving cursor, colour
bars, calipers, a ticking clock) and keeps the fan, in colour and greyscale, long and short clips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from echoprime.io import read_dicom, read_video
from echoprime.preprocess import mask_sector
from echoprime.sector import sector_mask


def annotated_clip(
    rng: np.random.Generator,
    n: int,
    h: int = 240,
    w: int = 320,
    *,
    grey: bool = False,
    still: bool = False,
    gap: int = 4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A synthetic echo clip drawn here: a speckled sector with a dark cavity, and around it
    static text, a colour bar with ruler ticks, a caliper mark, a clock that ticks every frame and
    an ECG trace with a sweeping cursor ``gap`` pixels below the fan.

    Returns:
        ``(frames n x h x w x 3 uint8, fan h x w bool, annotations h x w bool)``.
    """
    yy, xx = np.mgrid[0:h, 0:w]
    ax, ay = w / 2, 10
    radius = h - ay - 32 - gap
    fan = (np.hypot(xx - ax, yy - ay) <= radius) & (np.abs(np.degrees(np.arctan2(xx - ax, yy - ay))) <= 38)
    cavity = ((xx - ax) / 28) ** 2 + ((yy - h * 0.45) / 45) ** 2 <= 1
    speck = rng.integers(10, 220, (1 if still else n, h, w), dtype=np.uint8)
    speck = np.where(cavity, speck // 16, speck) * fan  # dark blood pool: barely changes; 0 outside
    frames = np.empty((n, h, w, 3), np.uint8)
    frames[..., 0] = frames[..., 2] = speck
    frames[..., 1] = speck if grey else (speck.astype(np.uint16) * 218 >> 8)
    annotations = np.zeros((h, w), bool)
    for t in range(n):
        layer = np.zeros((h, w, 3), np.uint8)
        cv2.putText(layer, "GEN 2.5MHz 16cm", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (255, 255, 255), 1)
        cv2.putText(
            layer,
            f"11:{t // 30:02d}:{t % 30:02d}",
            (w - 66, 12),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.33,
            (255, 255, 0),
            1,
        )
        cv2.rectangle(layer, (w - 14, 40), (w - 6, 140), (0, 140, 255), -1)  # colour bar
        for k in range(5):
            cv2.line(layer, (w - 24, 40 + 25 * k), (w - 18, 40 + 25 * k), (255, 255, 255), 1)  # ruler ticks
        cv2.drawMarker(layer, (24, 110), (255, 255, 0), cv2.MARKER_CROSS, 8, 1)  # caliper outside the fan
        top = h - 30
        xs = np.arange(8, w - 8)
        ys = (top + 14 - 10 * np.exp(-((((xs - 8) % 64) - 32) ** 2) / 6.0)).astype(np.int32)
        cv2.polylines(layer, [np.stack([xs, ys], -1)[:, None, :]], False, (0, 255, 0), 1)  # ECG trace
        cx = 8 + (t * 37) % (w - 16)
        cv2.line(layer, (cx, top), (cx, h - 2), (255, 255, 0), 2)  # sweeping cursor
        drawn = layer.any(-1)
        frames[t][drawn] = layer[drawn]
        annotations |= drawn
    return frames, fan, annotations & ~fan


@pytest.mark.parametrize("n", [2, 3, 16, 40])
@pytest.mark.parametrize("grey", [False, True], ids=["colour", "grey"])
def test_annotations_removed_fan_kept(n, grey):
    for seed in range(2):
        frames, fan, ann = annotated_clip(np.random.default_rng(seed), n, grey=grey)
        masked, mask = mask_sector(frames)
        assert not masked[:, ann].any(), "an annotation pixel survived"
        assert (mask & fan).sum() >= 0.99 * fan.sum()
        assert mask.sum() <= 1.05 * fan.sum()  # and not much else
        np.testing.assert_array_equal(masked[:, fan & mask], frames[:, fan & mask])


def test_still_clip_falls_back_to_intensity():
    # the fan is frozen while the clock and the ECG cursor move: motion alone finds no sector
    frames, fan, ann = annotated_clip(np.random.default_rng(0), 12, still=True, gap=6)
    found = sector_mask(frames)
    assert found.method == "intensity"
    assert (found.mask & fan).sum() >= 0.99 * fan.sum() and not (found.mask & ann).any()
    one = sector_mask(frames[:1])  # a single frame: intensity only
    assert one.method == "intensity" and (one.mask & fan).sum() >= 0.99 * fan.sum()


def test_black_clip_keeps_whole_frame_and_says_so():
    found = sector_mask(np.zeros((4, 60, 80, 3), np.uint8))
    assert found.method == "full" and found.mask.all() and found.fraction == 1.0
    tiny_text = np.zeros((4, 60, 80, 3), np.uint8)
    tiny_text[:, 2:6, 2:20] = 255  # only a small static label: too small to be a sector
    assert sector_mask(tiny_text).method == "full"


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        sector_mask(np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="F >= 1"):
        sector_mask(np.zeros((0, 8, 8, 3), np.uint8))


def test_real_palette_clip_loses_text_and_ecg(real_echo_dir):
    clip = read_dicom(real_echo_dir / "US-PAL-8-10x-echo.dcm")  # 430 x 600, ECG bottom left
    masked, mask = mask_sector(clip.frames)
    assert sector_mask(clip.frames).method == "motion"
    assert not masked[:, 360:400, 50:340].any()  # ECG trace
    assert not masked[:, 0:70, 0:150].any()  # scanner text, date, time
    assert not masked[:, 20:190, 540:600].any()  # colour bar and grey scale
    assert mask[120:260, 250:400].mean() > 0.98  # the Doppler box in the fan is kept
    assert 0.15 < mask.mean() < 0.45


@pytest.mark.parametrize("name", ["examples_ybr_color.dcm", "echo_a4c_h264.mp4"])
def test_real_apical_clips_lose_toolbar_and_labels(real_echo_dir, name):
    p = real_echo_dir / name
    clip = read_video(p) if name.endswith(".mp4") else read_dicom(p)
    f = clip.frames
    h, w = f.shape[1:3]
    masked, mask = mask_sector(f)
    assert not masked[:, int(0.93 * h) :, :].any()  # the toolbar along the bottom
    assert not masked[:, : int(0.1 * h), : int(0.15 * w)].any()  # the mode label top left
    assert not masked[:, : int(0.45 * h), int(0.92 * w) :].any()  # the parameter column top right
    assert not masked[:, int(0.78 * h) : int(0.9 * h), int(0.88 * w) :].any()  # the depth label
    assert mask[int(0.35 * h) : int(0.6 * h), int(0.4 * w) : int(0.6 * w)].all()  # the heart is kept
    assert 0.25 < mask.mean() < 0.45
