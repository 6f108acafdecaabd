"""What the readers return, and the limits they enforce before decoding."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import numpy as np

from echoprime.io.errors import FrameTooLargeError, NotAVideoError

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]
"""A file path or the file's bytes (an upload, an object fetched from S3)."""

DEFAULT_MAX_PIXELS = 4096 * 4096
"""Largest frame (rows x columns) read by default; larger headers are refused before decoding."""
DEFAULT_MAX_BYTES = 4 * 1024**3
"""Largest decoded clip (frames x rows x columns x 3 bytes) read by default."""
MAX_DECLARED_FRAMES = 100_000
"""Largest frame count a header may declare (DICOM NumberOfFrames, a container's frame count).

Not a configuration: no echo cine comes near it (a 60 s loop at 1000 frames per second is 60 000
frames), and a header above it is lying. Refused before decoding even when ``max_frames`` would
read only the start, so that no reader sizes a frame index, an offset table or a buffer by it.
"""


@dataclass(frozen=True)
class VideoData:
    """A decoded clip.

    Attributes:
        frames: ``F x H x W x 3`` uint8, RGB order, C-contiguous; ``F >= 2`` unless the reader
            was asked for fewer (``max_frames``, ``step``).
        fps: Frames per second from the file (DICOM frame time / cine rate, container rate), or
            ``None`` when the file does not say.
        meta: JSON-serialisable facts about the file. Every reader sets ``format`` (``"dicom"``,
            ``"mp4"``, ...), ``n_frames`` (frames in the source, which may exceed ``F`` when
            ``max_frames`` cut the clip), ``step`` (``frames`` are source frames ``0, step, ...``),
            ``rows``, ``cols``, ``decoder`` and ``fps_source``. DICOM
            adds StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID, SOPClassUID, TransferSyntaxUID,
            PhotometricInterpretation, Modality, Manufacturer, ManufacturerModelName, NumberOfFrames,
            Rows, Columns (DICOM keywords). No patient identifiers are ever copied.
    """

    frames: np.ndarray
    fps: float | None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3:
            raise ValueError(f"VideoData.frames must be uint8 F x H x W x 3, got {f.dtype} {f.shape}")


@dataclass(frozen=True)
class FileReport:
    """What happened to one file of a folder or a study.

    Attributes:
        path: The file.
        status: ``"used"`` or ``"skipped"``.
        reason: Why it was skipped (the error's reason), ``""`` when used.
        n_frames: Frames in the source (0 when unknown).
        fps: Frames per second, when known.
        code: The error's ``code`` (``"not_a_video"``, ...) when skipped, else ``None``.
    """

    path: str
    status: Literal["used", "skipped"]
    reason: str = ""
    n_frames: int = 0
    fps: float | None = None
    code: str | None = None


def source_name(src: Source, name: str | None) -> str | None:
    """The name to put in errors: ``name`` if given, the path for paths, ``None`` for bytes."""
    if name is not None:
        return name
    if isinstance(src, (bytes, bytearray, memoryview)):
        return None
    return str(src)


def is_bytes(src: Source) -> bool:
    """Whether ``src`` holds the file's content rather than naming a file."""
    return isinstance(src, (bytes, bytearray, memoryview))


def as_path(src: Source) -> Path:
    """``src`` as a :class:`Path` (only for non-bytes sources)."""
    return Path(os.fspath(src))  # type: ignore[arg-type]


def check_frame_limits(
    path: str | None,
    *,
    n_frames: int,
    rows: int,
    cols: int,
    max_frames: int | None,
    max_pixels: int,
    max_bytes: int,
) -> int:
    """Refuse a clip from its header before any pixel buffer exists.

    Args:
        path: The file, for the error message.
        n_frames: Frames the header claims.
        rows: Frame height the header claims.
        cols: Frame width the header claims.
        max_frames: Frames that will be decoded at most (``None``: all).
        max_pixels: Largest allowed ``rows * cols``.
        max_bytes: Largest allowed decoded RGB clip, in bytes.

    Returns:
        The number of frames that will be decoded.

    Raises:
        FrameTooLargeError: The frame or the decoded clip would be larger than allowed, or the
            header declares more than :data:`MAX_DECLARED_FRAMES` frames.
        NotAVideoError: Fewer than two frames.
    """
    if rows <= 0 or cols <= 0:
        raise NotAVideoError(path, f"header gives an empty frame size {rows} x {cols}")
    if n_frames > MAX_DECLARED_FRAMES:
        raise FrameTooLargeError(
            path,
            f"header declares {n_frames} frames, more than the {MAX_DECLARED_FRAMES} any echo cine has; "
            "refused before decoding",
        )
    if rows * cols > max_pixels:
        raise FrameTooLargeError(
            path,
            f"header claims {rows} x {cols} frames ({rows * cols} pixels), more than the limit of "
            f"{max_pixels} pixels; refused before decoding (raise max_pixels if this is genuine)",
        )
    if n_frames < 2:
        kind = "no frames" if n_frames < 1 else "a single frame (a still image)"
        raise NotAVideoError(path, f"{kind}, {rows} x {cols}: not a cine clip")
    n = n_frames if max_frames is None else min(n_frames, max_frames)
    if n * rows * cols * 3 > max_bytes:
        raise FrameTooLargeError(
            path,
            f"{n} frames of {rows} x {cols} would decode to {n * rows * cols * 3} bytes, more than the "
            f"limit of {max_bytes}; pass max_frames to read the start of the clip",
        )
    return n
