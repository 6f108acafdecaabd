"""MP4 and DICOM files of synthetic clips: readable, right tags, byte-identical when repeated."""

from __future__ import annotations

import hashlib

import av
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, UltrasoundMultiFrameImageStorage

from echoprime.io.dicom import read_dicom
from echoprime.synth.render import render_video
from echoprime.synth.state import PatientState
from echoprime.synth.writers import pack_ybr_full_422, write_dicom, write_mp4

UIDS = dict(
    study_uid="1.2.826.0.1.3680043.8.498.1",
    series_uid="1.2.826.0.1.3680043.8.498.2",
    sop_uid="1.2.826.0.1.3680043.8.498.3",
)


@pytest.fixture(scope="module")
def clip():
    return render_video(
        PatientState("P", "S", mr=3), "Apical_Doppler", np.random.default_rng(0), frames=10, size=64
    )


def test_mp4_decodes_to_the_frames_and_is_deterministic(tmp_path, clip):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    write_mp4(a, clip.frames, clip.fps)
    write_mp4(b, clip.frames.copy(), clip.fps)
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob("*.part"))
    with av.open(str(a)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert float(s.average_rate) == pytest.approx(clip.fps)
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    assert frames.shape == clip.frames.shape
    assert np.abs(frames.astype(int) - clip.frames).mean() < 6


def test_mp4_bytes_repeat_at_the_default_size(tmp_path):
    """x264's SIMD macroblock-tree read uninitialised memory: one thread was not enough, and about
    half of 112 px / 32-frame clips changed bytes within five encodes in one process."""
    state = PatientState("P", "S")
    for seed, view in enumerate(["A4C", "A4C", "Parasternal_Long", "Subcostal"]):
        clip = render_video(state, view, np.random.default_rng(seed), frames=32, size=112)
        digests = set()
        for _ in range(5):
            write_mp4(tmp_path / "x.mp4", clip.frames, clip.fps)
            digests.add(hashlib.sha256((tmp_path / "x.mp4").read_bytes()).hexdigest())
        assert len(digests) == 1, f"{view} seed {seed}: {len(digests)} different files"


@pytest.mark.parametrize(
    "photometric,compress,ts,max_err",
    [
        ("RGB", False, ExplicitVRLittleEndian, 0.0),
        ("YBR_FULL_422", False, ExplicitVRLittleEndian, 2.0),
        ("YBR_FULL_422", True, JPEGBaseline8Bit, 4.0),
    ],
)
def test_dicom_variants_read_back(tmp_path, clip, photometric, compress, ts, max_err):
    p = tmp_path / "x.dcm"
    write_dicom(
        p, clip.frames, clip.fps, patient_id="p0_000001", photometric=photometric, compress=compress, **UIDS
    )
    ds = pydicom.dcmread(p)
    assert ds.SOPClassUID == UltrasoundMultiFrameImageStorage == ds.file_meta.MediaStorageSOPClassUID
    assert ds.Modality == "US" and ds.PatientID == "p0_000001"
    assert (ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID) == tuple(UIDS.values())
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.PhotometricInterpretation == photometric
    assert int(ds.NumberOfFrames) == 10 and (ds.Rows, ds.Columns) == clip.frames.shape[1:3]
    assert float(ds.FrameTime) == pytest.approx(1000.0 / clip.fps, rel=1e-4)
    pixels = ds.pixel_array  # pydicom 3 converts YBR to RGB
    assert pixels.shape == clip.frames.shape
    assert np.abs(pixels.astype(int) - clip.frames).mean() <= max_err
    assert read_dicom(p.read_bytes()).frames.shape == clip.frames.shape  # the project's reader too
    again = tmp_path / "y.dcm"
    write_dicom(
        again,
        clip.frames,
        clip.fps,
        patient_id="p0_000001",
        photometric=photometric,
        compress=compress,
        **UIDS,
    )
    assert again.read_bytes() == p.read_bytes()


def test_ybr_422_packing_layout():
    rgb = np.zeros((1, 1, 2, 3), dtype=np.uint8)
    rgb[0, 0, 0] = (255, 255, 255)  # white then black: Y = 255, 0; Cb = Cr = 128
    assert list(pack_ybr_full_422(rgb)) == [255, 0, 128, 128]
    red = np.zeros((1, 1, 2, 3), dtype=np.uint8)
    red[..., 0] = 255
    y1, y2, cb, cr = pack_ybr_full_422(red)
    assert y1 == y2 == 76 and cb < 128 < cr


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(photometric="RGB", compress=True), "YBR_FULL_422"),
        (dict(photometric="MONOCHROME2"), "photometric must be one of"),
        (dict(fps=0), "fps must be positive"),
    ],
)
def test_dicom_rejects_bad_options(tmp_path, clip, kw, match):
    args = dict(fps=clip.fps, patient_id="p", **UIDS)
    args.update(kw)
    fps = args.pop("fps")
    with pytest.raises(ValueError, match=match):
        write_dicom(tmp_path / "x.dcm", clip.frames, fps, **args)
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.parametrize(
    "frames,match",
    [
        (np.zeros((2, 64, 86, 3), dtype=np.float32), "uint8"),
        (np.zeros((2, 64, 86), dtype=np.uint8), "F x H x W x 3"),
        (np.zeros((2, 64, 85, 3), dtype=np.uint8), "even"),
    ],
)
def test_writers_reject_bad_frames(tmp_path, frames, match):
    with pytest.raises(ValueError, match=match):
        write_mp4(tmp_path / "x.mp4", frames, 30)
    with pytest.raises(ValueError, match=match):
        write_dicom(tmp_path / "x.dcm", frames, 30, patient_id="p", **UIDS)
