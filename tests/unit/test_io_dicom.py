"""DICOM reading: real scanner files, every encoding and colour space we claim, typed errors."""

from __future__ import annotations

import io
import pickle

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import (
    HEVCMP51,
    JPEG2000,
    MPEG4HP41,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    RLELossless,
)

from echoprime.io import (
    DicomDecodeError,
    EchoIOError,
    NotAVideoError,
    NotUltrasoundError,
    UnsupportedTransferSyntax,
    dicom_header,
    group_by_study,
    read_dicom,
)
from echoprime.io.writers import dicom_dataset, write_dicom
from echoprime.sector import sector_mask

# MANIFEST.md of ../shared/data/real-echo: frames, rows, cols of every clip.
REAL_CLIPS = {
    "examples_ybr_color.dcm": (30, 240, 320),
    "US-PAL-8-10x-echo.dcm": (10, 430, 600),
    "IM00001.implicit_little_endian.dcm": (8, 240, 320),
    "OBXXXX1A_rle_2frame.dcm": (2, 600, 800),
}
REAL_STILLS = ["color-pl.dcm", "US1_J2KR.dcm"]


def colour_clip(n: int = 4, h: int = 48, w: int = 64) -> np.ndarray:
    """``n x h x w x 3`` uint8 with smooth gradients and flat pure red / green / blue blocks that
    move, so channel order, colour conversion and frame order are all visible."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // (w - 1), yy * 255 // (h - 1), np.full_like(xx, 90)], -1).astype(np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    for t in range(n):
        frames[t, 8:24, 4 + 2 * t : 20 + 2 * t] = (255, 0, 0)
        frames[t, 26:42, 24:40] = (0, 255, 0)
        frames[t, 8:24, 44:60] = (0, 0, 255)
    return frames


def block_colours(frames: np.ndarray) -> np.ndarray:
    """Mean RGB of the inner part of the red, green and blue blocks of frame 0: 3 x 3."""
    f = frames[0].astype(float)
    return np.stack([f[11:21, 9:15].mean((0, 1)), f[29:39, 27:37].mean((0, 1)), f[11:21, 47:57].mean((0, 1))])


# --------------------------------------------------------------------------- real scanner files


@pytest.mark.parametrize("name", sorted(REAL_CLIPS))
def test_real_clips_decode_to_manifest_shape(real_echo_dir, name):
    clip = read_dicom(real_echo_dir / name)
    n, h, w = REAL_CLIPS[name]
    assert clip.frames.shape == (n, h, w, 3)
    assert clip.frames.dtype == np.uint8 and clip.frames.flags.c_contiguous
    assert clip.meta["Modality"] == "US" and clip.meta["n_frames"] == n
    assert clip.meta["StudyInstanceUID"] and clip.meta["SOPInstanceUID"]
    assert clip.frames.max() > 100  # real content, not a black decode


@pytest.mark.parametrize("name", REAL_STILLS)
def test_real_stills_are_not_videos(real_echo_dir, name):
    with pytest.raises(NotAVideoError, match="single frame") as e:
        read_dicom(real_echo_dir / name)
    assert e.value.path.endswith(name) and "still" in e.value.reason


def test_real_frame_rates(real_echo_dir):
    assert read_dicom(real_echo_dir / "US-PAL-8-10x-echo.dcm").fps == pytest.approx(1000 / 76)
    ybr = read_dicom(real_echo_dir / "examples_ybr_color.dcm")
    assert ybr.fps == pytest.approx(30.0, rel=1e-3) and ybr.meta["fps_source"] == "FrameTime"
    # IM00001 has only a FrameTimeVector (ms between frames; first entry 0 by definition)
    im = read_dicom(real_echo_dir / "IM00001.implicit_little_endian.dcm")
    assert im.meta["fps_source"] == "FrameTimeVector"
    assert 15 < im.fps < 35


def test_ybr_full_422_jpeg_has_no_colour_cast(real_echo_dir):
    """The SonoSite clip is greyscale inside the fan: R, G, B must agree (a second YBR->RGB
    conversion tints it green, a BGR swap would not show here but does in the palette test)."""
    clip = read_dicom(real_echo_dir / "examples_ybr_color.dcm")
    # the fan without its rim (the probe's orientation marker sits on the rim at the apex)
    fan = cv2.erode(sector_mask(clip.frames).mask.view(np.uint8), np.ones((15, 15), np.uint8)).astype(bool)
    px = clip.frames[:, fan].reshape(-1, 3).astype(float)  # F x N x 3 -> (F N) x 3
    px = px[px.mean(1) > 30]
    assert len(px) > 10_000
    r, g, b = px.mean(0)
    assert abs(r - g) < 1.0 and abs(g - b) < 1.0, (r, g, b)
    assert np.abs(px - px.mean(1, keepdims=True)).max() <= 6  # no pixel has a colour cast


@pytest.mark.parametrize("max_frames", [None, 7])
def test_ybr_to_rgb_equals_pydicoms_own_conversion_in_a_fraction_of_the_memory(real_echo_dir, max_frames):
    """read_dicom converts YBR_FULL(_422) frame by frame; the values must be exactly pydicom's
    ``as_rgb=True`` (a whole-clip float32 conversion), and the peak memory a small multiple of
    the clip instead of the ~8x the whole-clip conversion needs."""
    import tracemalloc

    from pydicom.pixels import get_decoder

    path = real_echo_dir / "examples_ybr_color.dcm"  # JPEG Baseline, YBR_FULL_422, 30 frames
    ds = pydicom.dcmread(path)
    decoder = get_decoder(ds.file_meta.TransferSyntaxUID)
    if max_frames is None:
        want, _ = decoder.as_array(ds, as_rgb=True)
    else:
        want = np.stack([f for f, _ in decoder.iter_array(ds, indices=range(max_frames), as_rgb=True)])
    tracemalloc.start()
    got = read_dicom(path, max_frames=max_frames).frames
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_array_equal(got, want)
    assert peak < 2.5 * got.nbytes + 2 * 1024**2, (peak, got.nbytes)
    # The same for native and RLE YCbCr written here.
    frames = colour_clip(n=4, h=48, w=64)
    for ts in (ExplicitVRLittleEndian, RLELossless):
        data = write_dicom(frames, photometric="YBR_FULL", transfer_syntax=ts)
        ds = pydicom.dcmread(io.BytesIO(data))
        want, _ = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, as_rgb=True)
        np.testing.assert_array_equal(read_dicom(data).frames, want)


@pytest.mark.parametrize("n_src,keep", [(40, 32), (6, 3)])
def test_native_ybr_422_keeps_the_right_frames_when_only_the_first_are_read(tmp_path, n_src, keep):
    """Native 4:2:2 frames take 2 bytes a pixel. pydicom 3.0's frame iterator reads them at the
    offsets of 3-byte frames, so reading the first ``keep`` of a longer clip gave frames from the
    wrong bytes (6 -> 3) or failed with "insufficient pixel data" (40 -> 32)."""
    from echoprime.io import dicom as dicom_mod
    from echoprime.synth.writers import write_dicom as write_native_422

    h, w = 48, 64
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.stack(
        [
            np.stack([(xx * 2 + 3 * i) % 256, (yy * 3 + 2 * i) % 256, np.full_like(xx, 5 * i)], -1)
            for i in range(n_src)
        ]
    ).astype(np.uint8)  # gradients that move frame to frame
    path = tmp_path / "n422.dcm"
    uids = {"study_uid": "1.2.3", "series_uid": "1.2.3.4", "sop_uid": "1.2.3.4.5", "patient_id": "p"}
    write_native_422(path, frames, 30.0, photometric="YBR_FULL_422", **uids)
    full = read_dicom(path).frames
    part = read_dicom(path, max_frames=keep).frames
    assert part.shape == (keep, h, w, 3)
    np.testing.assert_array_equal(part, full[:keep])
    assert np.abs(part.astype(int) - frames[:keep]).mean(axis=(1, 2, 3)).max() < 2  # 4:2:2 chroma only
    np.testing.assert_array_equal(read_dicom(path, max_frames=keep, step=3).frames, full[:keep:3])
    ds = pydicom.dcmread(path)
    before = (ds.NumberOfFrames, len(ds.PixelData))
    dicom_mod._some_frames(ds, range(0, keep, 2), len(ds.PixelData) // n_src)
    assert (ds.NumberOfFrames, len(ds.PixelData)) == before  # the caller's data set is untouched


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"transfer_syntax": ImplicitVRLittleEndian},
        {"transfer_syntax": ExplicitVRBigEndian},
        {"planar_configuration": 1},
        {"photometric": "YBR_FULL"},
        {"transfer_syntax": RLELossless},
        {"transfer_syntax": RLELossless, "photometric": "YBR_FULL"},
        {"transfer_syntax": JPEG2000Lossless},
        {"transfer_syntax": JPEG2000, "photometric": "YBR_ICT", "j2k_cr": [4]},
        {"transfer_syntax": JPEGBaseline8Bit},
        {"transfer_syntax": JPEGBaseline8Bit, "fragments_per_frame": 3, "has_bot": False},
        {"transfer_syntax": MPEG4HP41},
    ],
    ids=[
        "le",
        "implicit",
        "be",
        "planar1",
        "ybr",
        "rle",
        "rle-ybr",
        "j2k",
        "j2k-ict",
        "jpeg",
        "jpeg-frag",
        "h264",
    ],
)
def test_first_frames_read_alone_equal_the_whole_clips_first_frames(kw, tmp_path):
    """...and so do every ``step``-th of them, the others never decoded (what a clip reads), from
    bytes and from a path (where a native file's frames are read at their offsets alone)."""
    frames = colour_clip(n=12, h=48, w=64)
    data = write_dicom(frames, fps=30, **kw)
    path = tmp_path / "clip.dcm"
    path.write_bytes(data)
    whole = read_dicom(data).frames
    np.testing.assert_array_equal(read_dicom(path).frames, whole)
    for src in (data, path):
        for keep in (2, 5, 11):
            np.testing.assert_array_equal(read_dicom(src, max_frames=keep).frames, whole[:keep])
            for step in (2, 3):
                got = read_dicom(src, max_frames=keep, step=step)
                np.testing.assert_array_equal(got.frames, whole[:keep:step])
                assert got.meta["n_frames"] == 12
        np.testing.assert_array_equal(read_dicom(src, step=5).frames, whole[::5])  # no max_frames: all


@pytest.mark.parametrize(
    "kw",
    [
        {"planar_configuration": 1},
        {"transfer_syntax": ExplicitVRBigEndian},
        {"transfer_syntax": ImplicitVRLittleEndian},
        {"photometric": "YBR_FULL"},
    ],
    ids=["planar1", "be", "implicit", "ybr"],
)
def test_deferred_native_pixel_data_of_every_layout(kw, tmp_path, monkeypatch):
    """Deferred Pixel Data read through pydicom (planar) or taken at offsets: the same frames."""
    from echoprime.io import dicom as dicom_mod

    monkeypatch.setattr(dicom_mod, "DEFER_BYTES", 1024)
    data = write_dicom(colour_clip(n=12, h=48, w=64), fps=30, **kw)
    path = tmp_path / "clip.dcm"
    path.write_bytes(data)
    whole = read_dicom(data).frames
    for max_frames, step in ((None, 1), (9, 2), (12, 3), (5, 1)):
        np.testing.assert_array_equal(
            read_dicom(path, max_frames=max_frames, step=step).frames, whole[:max_frames:step]
        )


def test_a_large_native_file_read_from_a_path_reads_only_the_kept_frames(tmp_path, monkeypatch):
    """Pixel Data over DEFER_BYTES is left unread by the parser; the kept frames are read at
    their offsets. A file cut inside its Pixel Data is still refused as truncated."""
    from echoprime.io import dicom as dicom_mod

    monkeypatch.setattr(dicom_mod, "DEFER_BYTES", 1024)
    frames = colour_clip(n=12, h=48, w=64)
    path = tmp_path / "clip.dcm"
    write_dicom(frames, path, fps=30)
    whole = read_dicom(path.read_bytes()).frames
    ds = pydicom.dcmread(path, defer_size=1024)
    assert ds.get_item("PixelData", keep_deferred=True).value is None  # what read_dicom relies on
    np.testing.assert_array_equal(read_dicom(path, max_frames=9, step=4).frames, whole[0:9:4])
    np.testing.assert_array_equal(read_dicom(path).frames, whole)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(path.read_bytes()[: -48 * 64 * 3 * 2])
    with pytest.raises(DicomDecodeError, match="truncated"):
        read_dicom(cut, max_frames=3, step=2)
    with pytest.raises(DicomDecodeError, match="truncated"):
        read_dicom(cut)


def test_the_test_writer_refuses_native_ybr_422():
    with pytest.raises(ValueError, match="YBR_FULL_422.*only with JPEG Baseline"):
        write_dicom(colour_clip(), photometric="YBR_FULL_422")


def test_palette_16bit_lut_scaled_and_coloured(real_echo_dir):
    clip = read_dicom(real_echo_dir / "US-PAL-8-10x-echo.dcm")
    f = clip.frames
    assert f.max() == 255  # 16-bit LUT (max 0xFF00) mapped to full 8-bit range, not 254 or 0-1
    grey = (f[..., 0] == f[..., 1]) & (f[..., 1] == f[..., 2])
    assert grey.mean() > 0.8  # tissue and background are grey entries of the palette
    # the ECG trace (bottom left) is green; the Doppler box has red and blue flow
    ecg = f[:, 360:400, 50:340].reshape(-1, 3)
    ecg = ecg[ecg.max(1) > 100].astype(float).mean(0)
    assert ecg[1] > 2 * ecg[0] and ecg[1] > 2 * ecg[2]
    box = f[:, 120:260, 250:400].reshape(-1, 3).astype(int)
    assert ((box[:, 0] > 150) & (box[:, 2] < 80)).mean() > 0.03
    assert ((box[:, 2] > 150) & (box[:, 0] < 80)).mean() > 0.03


def test_meta_has_no_patient_identifiers():
    ds = dicom_dataset(colour_clip())
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-99887766", "19700101"
    ds.InstitutionName = "St Elsewhere"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    clip = read_dicom(buf.getvalue())
    text = repr(clip.meta) + repr(dicom_header(buf.getvalue()))
    for secret in ("Doe", "MRN-99887766", "19700101", "Elsewhere"):
        assert secret not in text
    assert clip.meta["SOPInstanceUID"] == ds.SOPInstanceUID


# ------------------------------------------------------------------- encodings and colour spaces

LOSSLESS = [
    dict(),
    dict(transfer_syntax=ImplicitVRLittleEndian),
    dict(transfer_syntax=ExplicitVRBigEndian),
    dict(planar_configuration=1),
    dict(transfer_syntax=RLELossless),
    dict(transfer_syntax=JPEG2000Lossless),
    dict(transfer_syntax=JPEG2000Lossless, photometric="YBR_RCT"),
]


@pytest.mark.parametrize(
    "kw", LOSSLESS, ids=lambda kw: "-".join(str(v) for v in kw.values()) or "explicit-le"
)
def test_lossless_rgb_encodings_round_trip_exactly(kw):
    frames = colour_clip()
    clip = read_dicom(write_dicom(frames, fps=25, **kw))
    np.testing.assert_array_equal(clip.frames, frames)
    assert clip.fps == pytest.approx(25.0)


@pytest.mark.parametrize(
    "kw",
    [
        dict(photometric="YBR_FULL"),
        dict(photometric="YBR_FULL", transfer_syntax=RLELossless),
        dict(transfer_syntax=JPEG2000, photometric="YBR_ICT", j2k_cr=[4]),
        dict(transfer_syntax=JPEGBaseline8Bit),
        dict(transfer_syntax=JPEGBaseline8Bit, fragments_per_frame=3, has_bot=False),
        dict(transfer_syntax=MPEG4HP41),
        dict(transfer_syntax=HEVCMP51),
    ],
    ids=["ybr-full", "ybr-full-rle", "j2k-ict", "jpeg-422", "jpeg-fragmented-no-bot", "h264", "hevc"],
)
def test_ycbcr_and_lossy_encodings_keep_colours(kw):
    frames = colour_clip(n=4, h=48, w=64)
    clip = read_dicom(write_dicom(frames, **kw))
    assert clip.frames.shape == frames.shape
    assert np.abs(clip.frames.astype(int) - frames).mean() < 4
    # pure red, green, blue blocks come back as themselves (no swap, no double conversion)
    np.testing.assert_allclose(block_colours(clip.frames), np.eye(3) * 255, atol=24)
    # frames stay in order: the red block moves right by 2 px per frame
    assert clip.frames[3, 16, 21, 0] > 200 and clip.frames[0, 16, 21, 0] < 120


def test_monochrome1_and_monochrome2():
    grey = colour_clip()[..., 1].copy()  # F x H x W
    m2 = read_dicom(write_dicom(grey, photometric="MONOCHROME2")).frames
    m1 = read_dicom(write_dicom(grey, photometric="MONOCHROME1")).frames
    np.testing.assert_array_equal(m2, np.repeat(grey[..., None], 3, -1))
    np.testing.assert_array_equal(m1, m2)  # stored inverted, shown as the same image


@pytest.mark.parametrize(
    ("bits", "word"),
    [(8, 1), (8, 2), (16, 2)],
    ids=["8bit-lut-bytes", "8bit-lut-in-16bit-words", "16bit-lut"],
)
def test_palette_lut_depths(bits, word):
    idx = (np.arange(4 * 24 * 32).reshape(4, 24, 32) % 256).astype(np.uint8)  # F x H x W indices
    table = np.stack([np.arange(256), 255 - np.arange(256), (np.arange(256) * 7) % 256], -1)  # 256 x 3
    ds = dicom_dataset(idx, transfer_syntax=RLELossless)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for c, colour in enumerate(("Red", "Green", "Blue")):
        entries = table[:, c] * 257 if bits == 16 else table[:, c]  # 16-bit: full range 0..65535
        data = entries.astype("<u2" if word == 2 else np.uint8).tobytes()
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, bits])
        setattr(ds, f"{colour}PaletteColorLookupTableData", data)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    clip = read_dicom(buf.getvalue())
    np.testing.assert_array_equal(clip.frames, table[idx].astype(np.uint8))


def _lossless_jpeg(img: np.ndarray) -> bytes:
    """A minimal ITU T.81 process-14 (lossless, predictor 1) JPEG of an 8-bit greyscale image,
    written here because no Python package encodes it (pylibjpeg only decodes)."""
    x = img.astype(np.int32)
    pred = np.empty_like(x)
    pred[0, 0] = 128  # 2 ** (P - 1)
    pred[0, 1:] = x[0, :-1]  # first row: left neighbour
    pred[1:, 0] = x[:-1, 0]  # first column: neighbour above
    pred[1:, 1:] = x[1:, :-1]  # predictor 1: left neighbour
    bits: list[str] = []
    for d in (x - pred).ravel():
        ssss = int(abs(int(d))).bit_length()
        bits.append(format(ssss, "05b"))  # canonical table: symbols 0..16 all 5-bit codes
        if ssss:
            bits.append(format(int(d) if d > 0 else int(d) + (1 << ssss) - 1, f"0{ssss}b"))
    s = "".join(bits)
    s += "1" * (-len(s) % 8)  # pad with ones
    data = bytearray()
    for i in range(0, len(s), 8):
        byte = int(s[i : i + 8], 2)
        data.append(byte)
        if byte == 0xFF:
            data.append(0x00)  # byte stuffing
    h, w = img.shape
    sof = b"\xff\xc3\x00\x0b\x08" + h.to_bytes(2, "big") + w.to_bytes(2, "big") + b"\x01\x01\x11\x00"
    counts = bytes([0, 0, 0, 0, 17] + [0] * 11)
    dht = b"\xff\xc4" + (2 + 1 + 16 + 17).to_bytes(2, "big") + b"\x00" + counts + bytes(range(17))
    sos = b"\xff\xda\x00\x08\x01\x01\x00\x01\x00\x00"
    return b"\xff\xd8" + sof + dht + sos + bytes(data) + b"\xff\xd9"


def test_jpeg_lossless_sv1():
    grey = colour_clip(n=3, h=24, w=32)[..., 0].copy()
    grey[1, 5:9, 5:9] = 255  # frames differ
    ds = dicom_dataset(grey)
    ds.PixelData = encapsulate([_lossless_jpeg(f) for f in grey])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLosslessSV1
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    clip = read_dicom(buf.getvalue())
    np.testing.assert_array_equal(clip.frames[..., 0], grey)


def _two_frame_us(name: str) -> bytes:
    """A pydicom test image (single frame) as a 2-frame US clip, keeping its encoding."""
    ds = pydicom.dcmread(get_testdata_file(name))
    ds.Modality = "US"
    if ds.file_meta.TransferSyntaxUID.is_compressed:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
        ds.PixelData = encapsulate([frame, frame])
    else:
        ds.PixelData = ds.PixelData * 2
    ds.NumberOfFrames = 2
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_jpeg_ls_and_big_endian_16bit_match_uncompressed():
    ref = read_dicom(_two_frame_us("MR_small.dcm")).frames
    assert ref.shape == (2, 64, 64, 3) and ref.std() > 1
    np.testing.assert_array_equal(read_dicom(_two_frame_us("MR_small_jpeg_ls_lossless.dcm")).frames, ref)
    np.testing.assert_array_equal(read_dicom(_two_frame_us("MR_small_bigendian.dcm")).frames, ref)


def test_jpeg_ls_rgb_and_raw_dataset_without_preamble():
    clip = read_dicom(_two_frame_us("SC_rgb_jls_lossy_line.dcm"))
    assert clip.frames.shape == (2, 100, 100, 3)
    frames = colour_clip()
    ds = dicom_dataset(frames, transfer_syntax=ImplicitVRLittleEndian)
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    raw = buf.getvalue()
    assert raw[128:132] != b"DICM"
    np.testing.assert_array_equal(read_dicom(raw, name="raw").frames, frames)


def test_max_frames_decodes_only_the_start():
    frames = colour_clip(n=6)
    for kw in (dict(), dict(transfer_syntax=JPEGBaseline8Bit, has_bot=False)):
        clip = read_dicom(write_dicom(frames, **kw), max_frames=3)
        assert clip.frames.shape[0] == 3 and clip.meta["n_frames"] == 6
        assert np.abs(clip.frames.astype(int) - frames[:3]).mean() < 4


# ----------------------------------------------------------------------------------- bad input


def test_truncated_dicom(tmp_path):
    data = write_dicom(colour_clip(n=8, h=64, w=64))
    for cut in (len(data) // 2, len(data) - 7, 200):
        p = tmp_path / f"cut{cut}.dcm"
        p.write_bytes(data[:cut])
        with pytest.raises(DicomDecodeError) as e:
            read_dicom(p)
        assert e.value.path == str(p)
        assert "truncated" in e.value.reason or "no Pixel Data" in e.value.reason


def test_missing_pixel_data():
    ds = dicom_dataset(colour_clip())
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(DicomDecodeError, match=r"no Pixel Data element \(7FE0,0010\)"):
        read_dicom(buf.getvalue(), name="nopix.dcm")


def test_one_frame_and_zero_frame_dicom():
    with pytest.raises(NotAVideoError, match="single frame"):
        read_dicom(write_dicom(colour_clip(n=1)))
    ds = dicom_dataset(colour_clip(n=2))
    ds.NumberOfFrames = 0
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    with pytest.raises(NotAVideoError, match="no frames"):
        read_dicom(buf.getvalue())


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, JPEGBaseline8Bit])
def test_absurd_frame_size_refused_before_allocating(ts):
    import time
    import tracemalloc

    ds = dicom_dataset(colour_clip(n=2, h=16, w=16), transfer_syntax=ts)
    ds.Rows = ds.Columns = 20000  # the header lies: the pixel data is tiny
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    tracemalloc.start()
    t0 = time.perf_counter()
    with pytest.raises(EchoIOError) as e:
        read_dicom(buf.getvalue(), name="huge.dcm")
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert e.value.code == "frame_too_large" and "20000 x 20000" in e.value.reason
    assert elapsed < 1.0 and peak < 20 * 1024**2  # one 20000^2 RGB frame would be 1.2 GB
    # the limit is configurable
    small = write_dicom(colour_clip(n=2, h=40, w=40))
    with pytest.raises(EchoIOError, match="limit of 1000 pixels"):
        read_dicom(small, max_pixels=1000)
    with pytest.raises(EchoIOError, match="max_frames"):
        read_dicom(small, max_bytes=5000)


def test_non_dicom_content_with_dcm_name(tmp_path):
    p = tmp_path / "notes.dcm"
    p.write_text("this is a text file, not DICOM\n" * 20)
    with pytest.raises(DicomDecodeError, match="not DICOM") as e:
        read_dicom(p)
    assert e.value.path == str(p)
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    with pytest.raises(DicomDecodeError, match="empty"):
        read_dicom(empty)


def test_unreadable_paths(tmp_path):
    # chmod 000 does not stop root (tests may run as root), so use paths no one can read a file from
    folder = tmp_path / "folder.dcm"
    folder.mkdir()
    broken = tmp_path / "broken.dcm"
    broken.symlink_to(tmp_path / "does-not-exist.dcm")
    for p in (folder, broken, tmp_path / "missing.dcm"):
        with pytest.raises(DicomDecodeError, match="cannot read the file") as e:
            read_dicom(p)
        assert e.value.path == str(p)
    with pytest.raises(DicomDecodeError, match="cannot read the file"):
        dicom_header(folder)


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("test-SR.dcm", "structured report"),
        ("waveform_ecg.dcm", "waveform"),
        ("CT_small.dcm", "modality 'CT'"),
    ],
)
def test_not_ultrasound(name, what):
    with pytest.raises(NotUltrasoundError, match=what):
        read_dicom(get_testdata_file(name))


def test_unsupported_transfer_syntax():
    data = write_dicom(colour_clip(), transfer_syntax=JPEGBaseline8Bit)
    # JPEG 2000 Part 2 multi-component: a real transfer syntax with no decoder (same UID length)
    patched = data.replace(str(JPEGBaseline8Bit).encode(), b"1.2.840.10008.1.2.4.92")
    with pytest.raises(UnsupportedTransferSyntax, match="1.2.840.10008.1.2.4.92") as e:
        read_dicom(patched, name="j2k-part2.dcm")
    assert isinstance(e.value, DicomDecodeError) and e.value.code == "unsupported_transfer_syntax"


def test_errors_pickle_and_read_well():
    err = NotAVideoError("/data/a.dcm", "a single frame")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is NotAVideoError and back.path == "/data/a.dcm" and back.reason == "a single frame"
    assert str(back) == "/data/a.dcm: a single frame" and isinstance(back, ValueError)
    assert str(DicomDecodeError(None, "x")) == "<bytes>: x"


# ------------------------------------------------------------------------- headers and grouping


def test_header_and_group_by_study(tmp_path):
    studies = {"1.2.3.1": 2, "1.2.3.2": 1}
    paths = []
    for uid, n in studies.items():
        for i in range(n):
            p = tmp_path / f"{uid}-{i}.dcm"
            write_dicom(colour_clip(), p, study_uid=uid, fps=50)
            paths.append(p)
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"\x00" * 300)
    head = dicom_header(paths[0])
    assert head["StudyInstanceUID"] == "1.2.3.1" and head["fps"] == pytest.approx(50)
    assert head["NumberOfFrames"] == 4 and head["Rows"] == 48 and head["Columns"] == 64
    rejects: list = []
    groups = group_by_study([*paths, bad], rejects=rejects)
    assert {k: len(v) for k, v in groups.items()} == studies
    assert groups["1.2.3.1"] == [str(paths[0]), str(paths[1])]
    assert [(r.path, r.status, r.code) for r in rejects] == [(str(bad), "skipped", "dicom_decode_error")]
    with pytest.raises(DicomDecodeError):
        group_by_study([*paths, bad])


def test_fps_tag_order():
    ds = Dataset()
    from echoprime.io.dicom import dicom_fps

    assert dicom_fps(ds) == (None, None)
    ds.RecommendedDisplayFrameRate = 24
    assert dicom_fps(ds) == (24.0, "RecommendedDisplayFrameRate")
    ds.CineRate = 25
    assert dicom_fps(ds) == (25.0, "CineRate")
    ds.FrameTimeVector = [0, 20, 20, 20]
    assert dicom_fps(ds) == (50.0, "FrameTimeVector")
    ds.FrameTime = "0"  # unusable: falls through to the next tag
    assert dicom_fps(ds)[1] == "FrameTimeVector"
    ds.FrameTime = "40"
    assert dicom_fps(ds) == (25.0, "FrameTime")
