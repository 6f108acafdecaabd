"""Typed errors for reading echo files: every one names the file and says what was wrong.

Ingestion turns each of these into a row of the rejects table (``code`` + ``reason``) and goes on
with the next file; Serve turns them into a per-file error in the JSON answer. They subclass
``ValueError`` so a caller that only knows "bad input" still catches them, and they pickle with
their fields so that they cross process boundaries (Ray tasks) intact.
"""

from __future__ import annotations

import logging
import re
import zlib
from os import PathLike
from types import TracebackType

log = logging.getLogger("echoprime.io")


def log_name(path: str | PathLike[str]) -> str:
    """How a log line at INFO and above names a file: a digest and the extension, never the path,
    whose folder and file names can hold patient identifiers (docs/privacy.md). The digest is the
    first 12 hex digits of the path's sha256, so an operator who has the paths can find the file;
    DEBUG lines carry the path itself."""
    import hashlib
    import os

    text = os.fspath(path)
    ext = os.path.splitext(text)[1][:8]
    return f"file:{hashlib.sha256(text.encode('utf-8', 'surrogateescape')).hexdigest()[:12]}{ext}"


class EchoIOError(ValueError):
    """A file that cannot be turned into a video.

    Attributes:
        path: The file (or the name given for in-memory bytes, ``"<bytes>"`` when none was given).
        reason: What was wrong, in words a person can act on.
        code: A stable snake_case name of the failure kind, for rejects tables and HTTP errors.
    """

    code = "io_error"

    def __init__(self, path: str | PathLike[str] | None, reason: str) -> None:
        self.path = "<bytes>" if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self) -> tuple[type[EchoIOError], tuple[str, str]]:
        # Default exception pickling replays ``args`` (the joined message) into ``__init__``,
        # which takes two arguments: rebuild from the fields instead.
        return (type(self), (self.path, self.reason))


class DicomDecodeError(EchoIOError):
    """A DICOM file that cannot be parsed or whose pixel data cannot be decoded.

    Also raised for a file named like DICOM (``.dcm``) whose content is not DICOM, for truncated
    files and for files without a Pixel Data element.
    """

    code = "dicom_decode_error"


class NotAVideoError(EchoIOError):
    """A readable image that is not a cine clip: a still (one frame, 2-D or ``H x W x 3``) or no frames."""

    code = "not_a_video"


class UnsupportedTransferSyntax(DicomDecodeError):
    """A DICOM transfer syntax for which no decoder is installed or known."""

    code = "unsupported_transfer_syntax"


class NotUltrasoundError(EchoIOError):
    """A DICOM object that is not an ultrasound image: another modality, a structured report,
    a waveform, a directory, or any other object without pixel data meant for display."""

    code = "not_ultrasound"


class VideoDecodeError(EchoIOError):
    """A video container (MP4, AVI, ...) that cannot be opened or decoded."""

    code = "video_decode_error"


class UnknownFormatError(EchoIOError):
    """A file that is neither DICOM nor a video container this package reads."""

    code = "unknown_format"


class FrameTooLargeError(EchoIOError):
    """A header claiming frames (or a clip) larger than the configured limits.

    Raised from the header alone, before any pixel buffer is allocated, so that a hostile or
    corrupt file cannot exhaust memory.
    """

    code = "frame_too_large"


class PreprocessError(EchoIOError):
    """A file that decoded but whose clip cannot be prepared for the model (say frames too small
    to crop)."""

    code = "preprocess_failed"


# ------------------------------------------------------------------------------ the boundary
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.\-~]+){2,}")
_IN_FILE = re.compile(r"\s+in file\s+\S.*$")


def public_text(message: object, limit: int = 200) -> str:
    """A library's error message made fit for a reason a client sees.

    The message stays (it is often the most precise words for what is wrong), but file system
    paths (pydicom and FFmpeg append the file they read) become ``<file>``, line breaks (a C++
    backtrace, a traceback) go, and it is cut at ``limit`` characters.
    """
    lines = str(message).strip().splitlines()
    text = _PATH.sub("<file>", _IN_FILE.sub("", lines[0] if lines else ""))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(exc: BaseException, error: type[EchoIOError] = EchoIOError) -> str:
    """See :func:`_describe`; the words only."""
    return _describe(exc, error)[0]


def _describe(exc: BaseException, error: type[EchoIOError]) -> tuple[str, bool]:
    """Words for an exception no reader foresaw: specific where the kind of failure says what is
    wrong with the file, else the last resort ``could not be read (<ExceptionClass>)``.

    Args:
        exc: The exception.
        error: The typed error it will become (the words name DICOM for DICOM readers).

    Returns:
        ``(reason, known)``: ``known`` is False for the last resort.
    """
    what = "DICOM" if issubclass(error, DicomDecodeError) else "file"
    if isinstance(exc, RecursionError):
        reason = (
            f"{what} structures (sequences within sequences) are nested too deeply to read; "
            "expected at most a few levels of nesting"
        )
    elif isinstance(exc, MemoryError):
        reason = "decoding needs more memory than this process can get; the file declares an implausibly large image"
    elif isinstance(exc, zlib.error):
        reason = f"{what} compressed (deflate) data is corrupt: {public_text(exc).split(': ')[-1]}"
    elif isinstance(exc, (EOFError, StopIteration)):
        reason = f"the {what} ends inside a structure (truncated or corrupt); expected the structure to be complete"
    elif isinstance(exc, UnicodeError):
        reason = f"a text value of the {what} is not valid in its character set"
    elif isinstance(exc, OverflowError):
        reason = f"a value in the {what} header is out of range"
    else:
        return f"could not be read ({type(exc).__name__})", False
    return reason, True


class file_boundary:  # noqa: N801  (used as a context manager, like contextlib's lower-case ones)
    """Turn any exception raised while reading one file into that file's typed error.

    A reader raises :class:`EchoIOError` for every failure it foresees. Decoder libraries can
    still raise what nobody foresaw (``RecursionError`` from pydicom on sequences nested
    thousands deep, ``zlib.error``, ``MemoryError``, a ``KeyError`` inside a plugin): one file
    must never take down its study, a Serve replica or a batch job, so the public readers run
    their body inside this boundary. A typed error passes through unchanged; any other
    ``Exception`` becomes ``error(path, describe(exc))``, chained to the original and logged for
    the operator (one line for the kinds :func:`describe` names, the traceback for the rest); the
    reason itself carries no traceback and no server path.
    ``BaseException`` (KeyboardInterrupt, SystemExit) is never caught.

    Example::

        with file_boundary(path, DicomDecodeError):
            ds = pydicom.dcmread(fh)
    """

    def __init__(self, path: str | None, error: type[EchoIOError] = EchoIOError) -> None:
        self.path, self.error = path, error

    def __enter__(self) -> file_boundary:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None or isinstance(exc, EchoIOError) or not isinstance(exc, Exception):
            return False  # nothing happened, already typed, or not ours to catch
        reason, known = _describe(exc, self.error)
        log.debug("%s is %s", log_name(self.path), self.path)
        if known:  # a kind of failure the reason already names: one line for the operator
            log.info(
                "%s: %s while reading (%s): %s",
                log_name(self.path),
                type(exc).__name__,
                self.error.code,
                reason,
            )
        else:  # nobody foresaw it: the traceback is what fixes it
            log.warning(
                "%s: %s while reading, reported as %s",
                log_name(self.path),
                type(exc).__name__,
                self.error.code,
                exc_info=exc,
            )
        raise self.error(self.path, reason) from exc


__all__ = [
    "DicomDecodeError",
    "EchoIOError",
    "FrameTooLargeError",
    "NotAVideoError",
    "NotUltrasoundError",
    "PreprocessError",
    "UnknownFormatError",
    "UnsupportedTransferSyntax",
    "VideoDecodeError",
    "describe",
    "file_boundary",
    "public_text",
]
