"""One file of a study: read it and prepare its clip, or say why not, never more than that.

Every path that reads a study's files goes through :func:`load_file`, one file at a time: the
interpreter (``echoprime interpret``, the Serve graph's Preprocess replica, batch-interpret's
workers, all through :meth:`~echoprime.interpret.StudyInterpreter.load_study_uint8`) and the
release-compatible folder helpers (:func:`echoprime.io.folders.process_files`). Whatever the file
makes the reader, a decoder library or the preprocessing raise becomes the file's
:class:`~echoprime.io.types.FileReport` with a reason, and the study goes on with the next file.

Example::

    clip, report = load_file("a4c.dcm", data, lambda v: preprocess_uint8(v.frames, spec), max_frames=32)
    if clip is None:
        print(report.code, report.reason)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from echoprime.io.errors import EchoIOError, PreprocessError, file_boundary, log, log_name, public_text
from echoprime.io.types import FileReport, Source, VideoData
from echoprime.io.video import read_any

T = TypeVar("T")


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
