"""The viewer's server-side parts without Ray: loops of what the model saw (echoprime/api/previews.py),
their size bound for a 50-video study, a synthetic example's truth (echoprime/api/examples.py), the
result schema with loops, and the viewer's finding -> section table against the taxonomy."""

from __future__ import annotations

import base64
import json
import re

import cv2
import numpy as np
import pytest

from echoprime.api import schemas
from echoprime.api.examples import synthetic_truth
from echoprime.api.previews import (
    LOOP_COLUMNS,
    LOOP_MAX_BYTES,
    clip_loop,
    filmstrip,
    first_frame_png,
    study_loops,
)
from echoprime.io import FileReport
from echoprime.taxonomy import FINDING_BY_NAME, GRADE_SCALES
from serve.routes import STATIC
from tests.fixtures_viewer import moving_clip, study_result

PAGE_WEIGHT_50 = 5_000_000
"""docs/viewer.md: a 50-video study's result JSON with its loops, plus the page's own files."""


def _decode(url: str) -> np.ndarray:
    assert url.startswith("data:image/webp;base64,")
    raw = base64.b64decode(url.split(",", 1)[1])
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _tile(strip: np.ndarray, i: int, cols: int, s: int) -> np.ndarray:
    r, c = divmod(i, cols)
    return strip[r * s : (r + 1) * s, c * s : (c + 1) * s]


def test_filmstrip_tiles_frames_row_by_row():
    frames = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(11)])
    strip = filmstrip(frames, columns=4)
    assert strip.shape == (12, 16, 3)  # 3 rows x 4 columns of 4 px
    for i in range(11):
        assert (_tile(strip, i, 4, 4) == i).all()
    assert (_tile(strip, 11, 4, 4) == 0).all()  # the unused tile is black


def test_a_small_clip_loops_losslessly_without_its_padding():
    clip = moving_clip(16, 32, seed=1)
    clip[12:] = 0  # padding past the end of a short file
    loop = clip_loop(clip, n_valid=12, source_fps=43.0, stride=2)
    assert loop["lossless"] and loop["frames"] == 12 and loop["size"] == 32
    assert loop["columns"] == LOOP_COLUMNS and loop["fps"] == pytest.approx(21.5) and loop["stride"] == 2
    strip = _decode(loop["image"])
    assert strip.shape == (2 * 32, LOOP_COLUMNS * 32, 3)
    for i in range(12):  # exactly the frames the model saw
        np.testing.assert_array_equal(_tile(strip, i, LOOP_COLUMNS, 32), clip[i])
    assert len({_tile(strip, i, LOOP_COLUMNS, 32).tobytes() for i in range(12)}) == 12  # it moves


def test_a_release_size_clip_stays_within_the_bound_and_unknown_fps_is_none():
    clip = moving_clip(16, 224, seed=2)
    loop = clip_loop(clip, source_fps=None, stride=2)
    assert loop["bytes"] <= LOOP_MAX_BYTES and loop["fps"] is None and loop["frames"] == 16
    strip = _decode(loop["image"])
    s = loop["size"]
    assert strip.shape == (2 * s, LOOP_COLUMNS * s, 3)
    # Lossy, yet the frames are still the clip's (a small mean error at the same side).
    if s == 224:
        assert np.abs(_tile(strip, 5, LOOP_COLUMNS, s).astype(int) - clip[5]).mean() < 6


def test_noise_the_worst_case_is_shrunk_until_it_fits():
    noise = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    loop = clip_loop(noise, source_fps=30.0, stride=2)
    assert loop["bytes"] <= LOOP_MAX_BYTES and loop["size"] < 224 and not loop["lossless"]
    assert len(base64.b64decode(loop["image"].split(",", 1)[1])) == loop["bytes"]


def test_long_clips_keep_every_nth_frame_and_scale_fps():
    loop = clip_loop(moving_clip(128, 16, seed=3), source_fps=60.0, stride=1)
    assert loop["frames"] == 64 and loop["stride"] == 2 and loop["fps"] == pytest.approx(30.0)


def test_bad_clips_are_refused():
    with pytest.raises(ValueError, match="uint8 T x S x S x 3"):
        clip_loop(np.zeros((4, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 T x S x S x 3"):
        clip_loop(np.zeros((4, 8, 9, 3), np.uint8))
    with pytest.raises(ValueError, match="stride"):
        clip_loop(np.zeros((4, 8, 8, 3), np.uint8), stride=0)


def test_study_loops_pair_clips_with_the_used_files():
    clips = np.stack([moving_clip(8, 16, seed=s) for s in range(2)])
    reports = [
        FileReport("a.mp4", "used", n_frames=16, fps=30.0),
        FileReport("bad.dcm", "skipped", "not a DICOM file", code="dicom_decode_error"),
        FileReport("b.mp4", "used", n_frames=8, fps=50.0),
    ]
    loops = study_loops(clips, np.array([8, 4]), reports, stride=2)
    assert [(lp["fps"], lp["frames"]) for lp in loops] == [(15.0, 8), (25.0, 4)]
    with pytest.raises(ValueError):  # one clip per used file, or it is a bug
        study_loops(clips[:1], np.array([8]), reports, stride=2)


def test_the_first_frame_preview_is_unchanged():
    clip = moving_clip(4, 32, seed=4)
    raw = base64.b64decode(first_frame_png(clip).split(",", 1)[1])
    img = cv2.cvtColor(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(img[::4, ::4], clip[0])


def test_a_fifty_video_study_weighs_at_most_the_stated_bound():
    # Every loop at the bound (the noise loop: the largest a clip can give) in a 50-video result.
    noise = np.random.default_rng(0).integers(0, 256, (16, 224, 224, 3), dtype=np.uint8)
    worst = clip_loop(noise, source_fps=30.0, stride=2)
    worst["image"] = "data:image/webp;base64," + base64.b64encode(b"\xff" * LOOP_MAX_BYTES).decode()
    result = study_result(50)
    result["loops"] = [dict(worst) for _ in range(50)]
    page = sum(len((STATIC / f).read_bytes()) for f in ("index.html", "viewer.js", "viewer.css"))
    weight = len(json.dumps(result).encode()) + page
    assert weight <= PAGE_WEIGHT_50, weight
    assert page <= 80_000
    schemas.StudyResultModel.model_validate(result)  # the OpenAPI schema knows loops


def test_a_synthetic_studys_truth_is_its_report_per_section_and_its_findings():
    from echoprime.synth.cohort import make_study

    st = make_study(2024, 7, min_videos=3, max_videos=3, frames=8, size=32)
    truth = synthetic_truth(st.report)
    assert [s["section"] for s in truth["sections"]] == list(st.report.sections)
    for s in truth["sections"]:
        assert "[SEP]" not in s["text"] and not s["text"].startswith(s["section"])
    assert set(truth["findings"]) == set(FINDING_BY_NAME)
    labels = st.labels()
    for name, f in truth["findings"].items():
        if name in labels and f["value"] is not None:
            assert f["value"] == pytest.approx(labels[name]), name
        if f["grade"] is not None:
            assert f["label"] == GRADE_SCALES[name].levels[f["grade"]]
            assert (f["grade"] >= GRADE_SCALES[name].positive_from) == (f["value"] == 1.0), name
    assert truth["findings"]["heart_rate"]["value"] is not None  # the report states it


def test_the_viewers_finding_sections_are_the_taxonomys():
    js = (STATIC / "viewer.js").read_text()
    block = js[js.index("const FINDING_SECTION = {") : js.index("};", js.index("const FINDING_SECTION"))]
    table = dict(re.findall(r"^\s+(\w+): \"([^\"]+)\",$", block, re.M))
    assert table == {n: f.section for n, f in FINDING_BY_NAME.items()}
