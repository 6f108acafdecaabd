"""Video reading (PyAV) and read_any's dispatch by content and name."""

from __future__ import annotations

import io

import av
import numpy as np
import pytest

import echoprime.io.video as video_mod
from echoprime.io import (
    DicomDecodeError,
    FrameTooLargeError,
    NotAVideoError,
    UnknownFormatError,
    VideoDecodeError,
    read_any,
    read_dicom,
    read_video,
)
from echoprime.io.writers import dicom_dataset, write_dicom, write_video


def colour_clip(n: int = 6, h: int = 64, w: int = 96) -> np.ndarray:
    """Flat pure red, green and blue blocks (codec-friendly) on grey, the red one moving."""
    frames = np.full((n, h, w, 3), 60, np.uint8)
    for t in range(n):
        frames[t, 8:32, 4 + 4 * t : 28 + 4 * t] = (255, 0, 0)
    frames[:, 36:60, 24:48] = (0, 255, 0)
    frames[:, 8:32, 64:88] = (0, 0, 255)
    return frames


def assert_colours(frames: np.ndarray) -> None:
    f = frames[0].astype(float)
    got = np.stack([f[14:26, 10:22].mean((0, 1)), f[42:54, 30:42].mean((0, 1)), f[14:26, 70:82].mean((0, 1))])
    np.testing.assert_allclose(got, np.eye(3) * 255, atol=30)  # RGB order, not BGR


def test_real_h264_mp4(real_echo_dir):
    clip = read_video(real_echo_dir / "echo_a4c_h264.mp4")
    assert clip.frames.shape == (30, 480, 640, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == pytest.approx(30.0)
    assert clip.meta["codec"] == "h264" and clip.meta["format"] == "mp4" and clip.meta["decoder"] == "pyav"
    # the source DICOM is greyscale echo: no colour cast after YUV -> RGB
    px = clip.frames.reshape(-1, 3).astype(float)
    px = px[px.mean(1) > 40]
    r, g, b = px.mean(0)
    assert abs(r - g) < 2 and abs(g - b) < 2


def test_bytes_and_path_decode_alike(real_echo_dir):
    path = real_echo_dir / "echo_a4c_h264.mp4"
    by_bytes = read_video(path.read_bytes(), name="a4c.mp4")  # an upload: bytes through BytesIO
    by_path, seen, fps = video_mod._decode_pyav(path, str(path), None, 1, 0, 1 << 31, 1 << 31)
    assert fps == pytest.approx(30.0) and by_bytes.fps == pytest.approx(30.0) and seen == 30
    np.testing.assert_array_equal(by_bytes.frames, by_path)


@pytest.mark.parametrize(
    ("codec", "suffix"), [("libx264", ".mp4"), ("mpeg4", ".mp4"), ("mjpeg", ".avi"), ("libx264", ".mov")]
)
def test_codecs_and_containers(tmp_path, codec, suffix):
    frames = colour_clip()
    p = tmp_path / f"clip{suffix}"
    write_video(frames, p, fps=24, codec=codec)
    clip = read_video(p)
    assert clip.frames.shape == frames.shape and clip.fps == pytest.approx(24.0)
    assert np.abs(clip.frames.astype(int) - frames).mean() < 6
    assert_colours(clip.frames)
    assert clip.frames[5, 20, 46, 0] > 200 and clip.frames[0, 20, 46, 0] < 120  # frame order kept


def test_raw_elementary_stream():
    # A raw H.264 elementary stream (no container) decodes too.
    stream = write_video(colour_clip(), fps=25, container="h264")
    clip = read_video(stream, name="clip.h264")
    assert clip.meta["decoder"] == "pyav" and clip.frames.shape == (6, 64, 96, 3)
    assert_colours(clip.frames)


def test_max_frames(real_echo_dir):
    clip = read_video(real_echo_dir / "echo_a4c_h264.mp4", max_frames=7)
    assert clip.frames.shape[0] == 7 and clip.meta["n_frames"] == 30


@pytest.mark.parametrize(("max_frames", "step"), [(31, 2), (7, 3), (None, 4), (2, 2)])
def test_every_step_th_frame_is_the_whole_decodes_frame(real_echo_dir, max_frames, step):
    """The frames a clip samples, read alone, are the whole decode's frames bit for bit."""
    path = real_echo_dir / "echo_a4c_h264.mp4"
    whole = read_video(path).frames
    got = read_video(path, max_frames=max_frames, step=step)
    np.testing.assert_array_equal(got.frames, whole[:max_frames:step])
    assert got.meta["n_frames"] == 30


def test_a_two_frame_video_read_at_step_two_is_still_a_video():
    clip = read_video(write_video(colour_clip(n=2)), name="two.mp4", step=2)
    assert clip.frames.shape[0] == 1 and clip.meta["n_frames"] == 2
    with pytest.raises(ValueError, match="step"):
        read_video(write_video(colour_clip(n=2)), name="two.mp4", step=0)


def test_one_frame_and_zero_frame_video():
    with pytest.raises(NotAVideoError, match="single frame"):
        read_video(write_video(colour_clip(n=1)), name="one.mp4")
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:  # header written, no frame ever encoded
        s = out.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        out.start_encoding()
    with pytest.raises(NotAVideoError, match="no video stream") as e:
        read_video(buf.getvalue(), name="zero.mp4")
    assert e.value.path == "zero.mp4"
    with pytest.raises(VideoDecodeError, match="empty"):
        read_video(b"", name="empty.mp4")


def test_corrupt_mp4(tmp_path):
    data = write_video(colour_clip(n=12), fps=24)
    start, end = data.find(b"mdat") + 4, data.find(b"moov") - 4  # the coded frames lie between
    assert 0 < start < end
    junk = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    cases = [
        ("random.mp4", junk, VideoDecodeError, "not a readable video"),
        ("truncated.mp4", data[: len(data) // 3], VideoDecodeError, "not a readable video"),
        ("no-codec-config.mp4", data.replace(b"avcC", b"xxxx"), VideoDecodeError, "not a readable video"),
        (
            "garbage-frames.mp4",
            data[:start] + junk[: end - start] + data[end:],
            VideoDecodeError,
            "failed to decode",
        ),
        ("no-sample-sizes.mp4", data.replace(b"stsz", b"xxxx"), NotAVideoError, "no frames"),
    ]
    for name, content, err, reason in cases:
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(err, match=reason) as e:
            read_video(p)
        assert e.value.path == str(p)


def test_frame_limits_from_container_header():
    data = write_video(colour_clip(), fps=24)
    with pytest.raises(FrameTooLargeError, match="limit of 1000 pixels"):
        read_video(data, max_pixels=1000)
    with pytest.raises(FrameTooLargeError, match="max_frames"):
        read_video(data, max_bytes=50_000)
    assert read_video(data, max_bytes=50_000, max_frames=2).frames.shape[0] == 2


def test_unreadable_video_paths(tmp_path):
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    broken = tmp_path / "broken.mp4"
    broken.symlink_to(tmp_path / "gone.mp4")
    for p in (folder, broken):
        with pytest.raises(VideoDecodeError, match="cannot read the file") as e:
            read_video(p)
        assert e.value.path == str(p)
        with pytest.raises(VideoDecodeError, match="cannot read the file"):
            read_any(p)


def test_read_any_dispatch(tmp_path, real_echo_dir):
    frames = colour_clip()
    dcm = write_dicom(frames)
    mp4 = write_video(frames, fps=24)
    # by content, with or without a name
    assert read_any(dcm).meta["format"] == "dicom"
    assert read_any(mp4).meta["codec"] == "h264"
    assert read_any(mp4, name="upload.bin").meta["codec"] == "h264"
    assert read_any(real_echo_dir / "US-PAL-8-10x-echo.dcm").frames.shape == (10, 430, 600, 3)
    # an extension-less DICOM file (common in archives) and a raw data set without preamble
    p = tmp_path / "IM0001"
    p.write_bytes(dcm)
    np.testing.assert_array_equal(read_any(p).frames, read_dicom(dcm).frames)
    import pydicom

    raw = io.BytesIO()
    pydicom.dcmwrite(
        raw,
        dicom_dataset(frames, transfer_syntax="1.2.840.10008.1.2"),
        implicit_vr=True,
        little_endian=True,
        enforce_file_format=False,
    )
    assert read_any(raw.getvalue(), name="IM0002").frames.shape == frames.shape
    # a video under a DICOM name is refused as DICOM, saying what it looks like
    with pytest.raises(DicomDecodeError, match="looks like an MP4") as e:
        read_any(mp4, name="clip.dcm")
    assert e.value.path == "clip.dcm"
    with pytest.raises(UnknownFormatError, match="neither DICOM"):
        read_any(b"hello" * 100, name="notes.txt")
    with pytest.raises(TypeError, match="unexpected keyword"):
        read_any(dcm, max_frame=3)
    assert read_any(dcm, max_frames=2).frames.shape[0] == 2
