"""MP4/AVI/MOV clips to ``F x H x W x 3`` uint8 RGB (:func:`read_video`).

Decoding is PyAV's (FFmpeg), one frame at a time from the start: the container's header is probed
first, so that absurd frame sizes and frame counts are refused before anything is decoded; then
every decoded frame's size is checked before its RGB copy is made, and decoding stops at
``max_frames``. (decord was tried first until a hostile MP4, a chunk offset past the end of the
file, made it crash the process from bytes: a segmentation fault, which no exception handler
catches. For the first ``max_frames`` frames PyAV is as fast.)

Example::

    clip = read_video("a4c.mp4", max_frames=32)
    clip.frames.shape, clip.fps
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, BinaryIO

import av
import numpy as np

from echoprime.io.errors import (
    EchoIOError,
    FrameTooLargeError,
    NotAVideoError,
    VideoDecodeError,
    file_boundary,
    public_text,
)
from echoprime.io.types import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    Source,
    VideoData,
    check_frame_limits,
    is_bytes,
    source_name,
)

VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv"})


@dataclass(frozen=True)
class _Probe:
    rows: int
    cols: int
    n_frames: int  # 0 when the container does not say
    fps: float | None
    codec: str
    container: str


def _open(src: Source, path: str | None) -> BinaryIO:
    if is_bytes(src):
        fh: BinaryIO = io.BytesIO(bytes(src))
    else:
        try:
            fh = open(src, "rb")  # type: ignore[arg-type]  # noqa: SIM115
        except OSError as e:
            raise VideoDecodeError(path, f"cannot read the file: {e.strerror or e}") from e
    if fh.seek(0, io.SEEK_END) == 0:
        fh.close()
        raise VideoDecodeError(path, "the file is empty (0 bytes)")
    fh.seek(0)
    return fh


def _probe(src: Source, path: str | None) -> _Probe:
    """Read the container header (no frame decoding)."""
    with _open(src, path) as fh:
        try:
            with av.open(fh, mode="r") as c:
                if not c.streams.video:
                    raise NotAVideoError(path, f"the {c.format.name} container has no video stream")
                s = c.streams.video[0]
                rate = s.average_rate or s.guessed_rate
                return _Probe(
                    rows=int(s.codec_context.height or 0),
                    cols=int(s.codec_context.width or 0),
                    n_frames=int(s.frames or 0),
                    fps=float(rate) if rate else None,
                    codec=str(s.codec_context.name),
                    container=str(c.format.name),
                )
        except EchoIOError:
            raise
        except (av.FFmpegError, OSError, ValueError) as e:
            raise VideoDecodeError(path, f"not a readable video: {_av_text(e)}") from e


def _av_text(e: BaseException) -> str:
    """FFmpeg's words for an error, without the ``[Errno n]`` and the input's name it appends."""
    text = getattr(e, "strerror", None) or str(e)
    return public_text(text)


def _decode_pyav(
    src: Source, path: str | None, n: int | None, step: int, threads: int, max_pixels: int, max_bytes: int
) -> tuple[np.ndarray, int, float | None]:
    """Frames ``0, step, ...`` of the first ``n`` as RGB, how many were decoded, the stream's rate."""
    out: list[np.ndarray] = []
    used = seen = 0
    size: tuple[int, int] | None = None
    with _open(src, path) as fh, av.open(fh, mode="r") as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        s.codec_context.thread_count = threads
        rate = s.average_rate or s.guessed_rate
        for frame in c.decode(s):
            # Checked on the decoder's frame, before its RGB copy: a stream may change size midway.
            h, w = int(frame.height), int(frame.width)
            if h * w > max_pixels:
                raise FrameTooLargeError(
                    path,
                    f"frame {seen} is {h} x {w} ({h * w} pixels), more than the limit of {max_pixels}",
                )
            if size is None:
                size = (h, w)
            elif (h, w) != size:
                raise VideoDecodeError(
                    path, f"frame {seen} is {h} x {w} where the stream began at {size[0]} x {size[1]}"
                )
            if seen % step == 0:  # the others are decoded (later frames refer to them), never converted
                used += h * w * 3
                if used > max_bytes:
                    raise FrameTooLargeError(
                        path,
                        f"decoded frames exceed the limit of {max_bytes} bytes after {len(out)} frames; "
                        "pass max_frames to read the start of the clip",
                    )
                out.append(frame.to_ndarray(format="rgb24"))  # H x W x 3, RGB
            seen += 1
            if n is not None and seen >= n:
                break
    fps = float(rate) if rate else None
    if not out:
        return np.zeros((0, 1, 1, 3), np.uint8), seen, fps
    return np.stack(out), seen, fps  # F x (H x W x 3) -> F x H x W x 3


def read_video(
    src: Source,
    *,
    name: str | None = None,
    max_frames: int | None = None,
    step: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    threads: int = 0,
) -> VideoData:
    """Decode a video file (MP4, AVI, MOV, MKV; H.264, HEVC, MPEG-4, MJPEG, ...) to RGB frames.

    Args:
        src: Path or the file's bytes.
        name: Name used in errors when ``src`` is bytes.
        max_frames: Decode at most this many frames from the start (``None``: all).
        step: Keep only frames ``0, step, 2 * step, ...`` of those; the others are decoded (later
            frames are predicted from them) but never converted to RGB or kept.
        max_pixels: Refuse frames with more than this many pixels (from the container header).
        max_bytes: Refuse clips whose decoded RGB frames would exceed this many bytes.
        threads: Decoder threads (0: the decoder's choice).

    Returns:
        ``VideoData`` with ``frames`` ``F x H x W x 3`` uint8 RGB, the container's frame rate and
        ``meta`` (format, codec, n_frames: the source's count, rows, cols, decoder, fps_source).

    Raises:
        VideoDecodeError: Unreadable, corrupt or undecodable.
        NotAVideoError: No video stream, or fewer than two frames.
        FrameTooLargeError: Frames or clip larger than the limits.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    path = source_name(src, name)
    with file_boundary(path, VideoDecodeError):
        return _read_video(src, path, max_frames, step, max_pixels, max_bytes, threads)


def _read_video(
    src: Source,
    path: str | None,
    max_frames: int | None,
    step: int,
    max_pixels: int,
    max_bytes: int,
    threads: int,
) -> VideoData:
    probe = _probe(src, path)
    if probe.n_frames:
        check_frame_limits(
            path, n_frames=probe.n_frames, rows=probe.rows, cols=probe.cols,
            max_frames=max_frames, max_pixels=max_pixels, max_bytes=max_bytes,
        )  # fmt: skip
    elif probe.rows * probe.cols > max_pixels:
        check_frame_limits(
            path, n_frames=2, rows=probe.rows, cols=probe.cols,
            max_frames=max_frames, max_pixels=max_pixels, max_bytes=max_bytes,
        )  # fmt: skip
    try:
        frames, seen, fps = _decode_pyav(src, path, max_frames, step, threads, max_pixels, max_bytes)
    except (av.FFmpegError, OSError, ValueError, IndexError) as e:
        if isinstance(e, EchoIOError):
            raise
        raise VideoDecodeError(path, f"{probe.codec} stream failed to decode: {_av_text(e)}") from e
    if seen < 2:
        kind = "no frames" if seen == 0 else "a single frame"
        raise NotAVideoError(path, f"{kind} in the {probe.codec} stream: not a cine clip")
    if fps is None and probe.fps:
        fps = probe.fps
    meta: dict[str, Any] = {
        "format": "mp4" if "mp4" in probe.container.split(",") else probe.container.split(",")[0],
        "codec": probe.codec,
        "n_frames": max(probe.n_frames, seen),
        "step": step,
        "rows": int(frames.shape[1]),
        "cols": int(frames.shape[2]),
        "decoder": "pyav",
        "fps_source": "container" if fps else None,
    }
    return VideoData(frames=np.ascontiguousarray(frames), fps=fps, meta=meta)


def _looks_like_video(head: bytes) -> bool:
    return (
        head[4:8] == b"ftyp"  # MP4 / MOV
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:4] == b"\x1a\x45\xdf\xa3"  # Matroska / WebM
        or head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG program / video stream
    )
