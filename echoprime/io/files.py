"""One file of a study: read it and prepare its clip, or say why not, never more than that.

:func:`read_any` reads any supported file, DICOM or video, deciding by content: it sits above
both readers (``dicom.py`` decodes MPEG-in-DICOM with ``video.py``'s reader, so the dispatch
cannot live in either without a cycle).

Every path that reads a study's files goes through :func:`load_file`, one file at a time: the
interpreter (``echoprime interpret``, the Serve graph's Preprocess replica, batch-interpret's
workers, all through :meth:`~echoprime.inference.StudyInterpreter.read_study`) and the
release-compatible folder helpers (:func:`echoprime.io.folders.process_files`). Whatever the file
makes the reader, a decoder library or the preprocessing raise becomes the file's
:class:`~echoprime.io.types.FileReport` with a reason, and the study goes on with the next file.

Example::

    clip = read_any(upload_bytes, name="a4c.mp4")   # DICOM or video, by content
    clip, report = load_file("a4c.dcm", data, lambda v: preprocess_uint8(v.frames, spec), max_frames=32)
    if clip is None:
        print(report.code, report.reason)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePath
from typing import Any, TypeVar

import numpy as np

from echoprime.io.dicom import read_dicom
from echoprime.io.errors import (
    DicomDecodeError,
    EchoIOError,
    PreprocessError,
    UnknownFormatError,
    VideoDecodeError,
    file_boundary,
    log,
    log_name,
    public_text,
)
from echoprime.io.types import FileReport, Source, VideoData, is_bytes, source_name
from echoprime.io.video import VIDEO_SUFFIXES, _looks_like_video, read_video
from echoprime.preprocess import PreprocessSpec, preprocess_sampled, preprocess_uint8, valid_frames

SHORT_CLIP = 4
"""A clip with fewer sampled frames than this, from a source with more, has its sector mask
found from every frame of its window: too few frames to see the sector move."""

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
"""Names read as DICOM whatever their first bytes (raw data sets without a preamble exist)."""

T = TypeVar("T")


def _head(src: Source, path: str | None, cls: type[EchoIOError]) -> bytes:
    if is_bytes(src):
        return bytes(src[:132])
    try:
        with open(src, "rb") as fh:  # type: ignore[arg-type]
            return fh.read(132)
    except OSError as e:
        raise cls(path, f"cannot read the file: {e.strerror or e}") from e


def read_any(src: Source, name: str | None = None, **kwargs: Any) -> VideoData:
    """Read a DICOM or video file, deciding by content first and by file name second.

    DICOM is recognised by its 'DICM' marker at byte 128; files named ``.dcm``/``.dicom`` or with
    no suffix are also read as DICOM (raw data sets without a preamble exist in archives), and a
    non-DICOM file under such a name fails with :class:`DicomDecodeError` saying what it seems
    to be. Video is recognised by container signature or suffix.

    Args:
        src: Path or the file's bytes.
        name: The file name (needed for the suffix when ``src`` is bytes; used in errors).
        **kwargs: ``max_frames``, ``step``, ``max_pixels``, ``max_bytes`` for either reader.

    Returns:
        The decoded clip.

    Raises:
        EchoIOError: The reader's typed error; :class:`UnknownFormatError` when the file is
            neither DICOM nor a known video.
    """
    path = source_name(src, name)
    suffix = PurePath(path).suffix.lower() if path else ""
    guess: type[EchoIOError] = VideoDecodeError if suffix in VIDEO_SUFFIXES else DicomDecodeError
    kw = {k: v for k, v in kwargs.items() if k in ("max_frames", "step", "max_pixels", "max_bytes")}
    if unknown := set(kwargs) - set(kw):
        raise TypeError(f"read_any got unexpected keyword arguments {sorted(unknown)}")
    if kw.get("max_frames") is not None and kw["max_frames"] < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {kw['max_frames']}")
    with file_boundary(path, guess):
        head = _head(src, path, guess)
        if (
            head[128:132] == b"DICM"
            or suffix in DICOM_SUFFIXES
            or (suffix == "" and not _looks_like_video(head))
        ):
            return read_dicom(src, name=name, **kw)
        if suffix in VIDEO_SUFFIXES or _looks_like_video(head):
            return read_video(src, name=name, **kw)
    raise UnknownFormatError(
        path,
        f"neither DICOM (no 'DICM' marker) nor a known video container; suffix {suffix!r} "
        f"(expected DICOM or one of {sorted(VIDEO_SUFFIXES)})",
    )


def load_file(
    name: str,
    src: Source,
    prepare: Callable[[VideoData], T],
    *,
    reader: Callable[..., VideoData] = read_any,
    **limits: Any,
) -> tuple[T | None, FileReport]:
    """Read one file and prepare its clip; a bad file is a skipped report, never an exception.

    Args:
        name: The file's name in reports (a path, an upload's name, a URI).
        src: Its path or bytes.
        prepare: Turns the decoded clip into what the caller keeps (e.g. the model clip).
        reader: Decodes the file (default :func:`~echoprime.io.read_any`, by content); called as
            ``reader(src, name=name, **limits)``.
        **limits: ``max_frames``, ``max_pixels``, ``max_bytes`` for the reader.

    Returns:
        ``(prepared, report)``: ``prepare``'s result and a ``used`` report, or ``None`` and a
        ``skipped`` report whose ``reason`` says what was wrong and ``code`` which kind of failure.
    """
    try:
        with file_boundary(name):  # the readers are guarded already; a custom reader may not be
            video = reader(src, name=name, **limits)
    except EchoIOError as e:
        return None, FileReport(name, "skipped", e.reason, code=e.code)
    try:
        prepared = prepare(video)
    except Exception as e:  # noqa: BLE001  (the file boundary: no file may stop its study)
        log.warning("%s: decoded but could not be prepared", log_name(name), exc_info=e)
        f, h, w = video.frames.shape[:3]
        err = PreprocessError(
            name,
            f"decoded to {f} frames of {h} x {w}, but the clip cannot be prepared for the model: "
            f"{public_text(e) or type(e).__name__}",
        )
        return None, FileReport(name, "skipped", err.reason, code=err.code)
    return prepared, FileReport(name, "used", "", int(video.meta.get("n_frames", 0)), video.fps)


def clip_reader(
    spec: PreprocessSpec, reader: Callable[..., VideoData] = read_any
) -> Callable[..., VideoData]:
    """A reader (for :func:`load_file`) that decodes only the frames ``spec``'s clip at offset 0
    samples (``spec.clip_reading()``); :func:`prepare_clip` turns what it returns into the clip.

    A source so short that fewer than :data:`SHORT_CLIP` frames are sampled is read again with
    every frame of the clip's window (``meta["step"]`` is then 1), so that its sector mask is
    found from all of them: a 2-frame cine sampled at stride 2 is one frame, and one frame does
    not move. Short files are cheap to read twice.
    """
    reading = spec.clip_reading()

    def read(src: Source, name: str | None = None, **limits: Any) -> VideoData:
        limits = {k: v for k, v in limits.items() if k not in reading}
        video = reader(src, name=name, **reading, **limits)
        kept = int(video.frames.shape[0])
        if (
            spec.mask
            and reading["step"] > 1
            and kept < SHORT_CLIP
            and int(video.meta.get("n_frames") or 0) > kept
        ):
            video = reader(src, name=name, max_frames=reading["max_frames"], **limits)
        return video

    return read


def prepare_clip(video: VideoData, spec: PreprocessSpec) -> tuple[np.ndarray, int]:
    """:func:`clip_reader`'s video -> ``(T x S x S x 3 uint8 clip at offset 0, n_valid)``.

    Frames read at ``spec.stride`` go through :func:`~echoprime.preprocess.preprocess_sampled`;
    a video read whole (``meta["step"]`` 1: a short source, or a plain reader) through
    :func:`~echoprime.preprocess.preprocess_uint8`. The mask of the first is found from the
    clip's own frames, of the second from every decoded frame.
    """
    step = int(video.meta.get("step", 1))
    if step == 1:
        return preprocess_uint8(video.frames, spec), valid_frames(int(video.frames.shape[0]), spec)
    if step != spec.stride:
        raise ValueError(f"frames were read at step {step}; the spec samples at stride {spec.stride}")
    return preprocess_sampled(video.frames, spec)
