"""Folder helpers: every file is reported, bad files never stop the batch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from pydicom.data import get_testdata_file

from echoprime.io.files import clip_reader, prepare_clip
from echoprime.io.folders import process_dicoms, process_mp4s
from echoprime.io.writers import write_dicom, write_video
from echoprime.preprocess import PreprocessSpec, normalise

SPEC = PreprocessSpec(size=32, frames=4, stride=2)


def moving_clip(n: int = 6, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_process_dicoms(tmp_path, real_echo_dir):
    shutil.copy(real_echo_dir / "US-PAL-8-10x-echo.dcm", tmp_path / "a_pal.dcm")
    shutil.copy(real_echo_dir / "color-pl.dcm", tmp_path / "b_still.dcm")
    shutil.copy(get_testdata_file("test-SR.dcm"), tmp_path / "c_report.dcm")
    (tmp_path / "d_notes.txt").write_text("not dicom")
    (tmp_path / "sub").mkdir()
    write_dicom(moving_clip(), tmp_path / "sub" / "IM0001", fps=40)  # no suffix, in a sub-folder

    clips, reports = process_dicoms(tmp_path, SPEC)
    assert isinstance(clips, torch.Tensor) and clips.dtype == torch.float32
    assert clips.shape == (2, 3, 4, 32, 32)
    by_name = {r.path.split("/")[-1]: r for r in reports}
    assert list(by_name) == ["a_pal.dcm", "b_still.dcm", "c_report.dcm", "d_notes.txt", "IM0001"]
    assert (by_name["a_pal.dcm"].status, by_name["a_pal.dcm"].n_frames) == ("used", 10)
    assert by_name["a_pal.dcm"].fps == pytest.approx(1000 / 76)
    assert by_name["IM0001"].status == "used" and by_name["IM0001"].fps == pytest.approx(40)
    assert (by_name["b_still.dcm"].status, by_name["b_still.dcm"].code) == ("skipped", "not_a_video")
    assert "still" in by_name["b_still.dcm"].reason
    assert (
        by_name["c_report.dcm"].code == "not_ultrasound"
        and "structured report" in by_name["c_report.dcm"].reason
    )
    assert (
        by_name["d_notes.txt"].code == "dicom_decode_error" and "not DICOM" in by_name["d_notes.txt"].reason
    )
    # the clips are exactly the per-file preprocessing of the clip's own frames, in file order
    u8, n_valid = prepare_clip(clip_reader(SPEC)(tmp_path / "a_pal.dcm"), SPEC)
    want = normalise(u8, SPEC.mean, SPEC.std, n_valid=n_valid)
    np.testing.assert_array_equal(clips[0].numpy(), want)


def test_process_mp4s(tmp_path):
    write_video(moving_clip(8), tmp_path / "a.mp4", fps=25)
    write_video(moving_clip(8), tmp_path / "b.avi", fps=25, codec="mjpeg")
    write_video(moving_clip(1), tmp_path / "c_one_frame.mp4")
    (tmp_path / "d_broken.mp4").write_bytes(b"\x00" * 100)
    (tmp_path / "e_readme.md").write_text("hello")
    clips, reports = process_mp4s(tmp_path, SPEC, recursive=False)
    assert clips.shape == (2, 3, 4, 32, 32)
    got = [(r.path.split("/")[-1], r.status, r.code) for r in reports]
    assert got == [
        ("a.mp4", "used", None),
        ("b.avi", "used", None),
        ("c_one_frame.mp4", "skipped", "not_a_video"),
        ("d_broken.mp4", "skipped", "video_decode_error"),
        ("e_readme.md", "skipped", "not_selected"),
    ]
    assert reports[0].n_frames == 8 and reports[0].fps == pytest.approx(25)


def test_empty_and_missing_folders(tmp_path):
    clips, reports = process_dicoms(tmp_path, SPEC)
    assert clips.shape == (0, 3, 4, 32, 32) and reports == []
    with pytest.raises(ValueError, match="not a directory"):
        process_mp4s(tmp_path / "nope", SPEC)
