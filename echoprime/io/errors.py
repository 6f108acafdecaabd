"""Typed errors for reading echo files: every one names the file and says what was wrong.

Ingestion turns each of these into a row of the rejects table (``code`` + ``reason``) and goes on
with the next file; Serve turns them into a per-file error in the JSON answer. They subclass
``ValueError`` so a caller that only knows "bad input" still catches them, and they pickle with
their fields so that they cross process boundaries (Ray tasks) intact.
"""

from __future__ import annotations

from os import PathLike


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


__all__ = [
    "DicomDecodeError",
    "EchoIOError",
    "FrameTooLargeError",
    "NotAVideoError",
    "NotUltrasoundError",
    "UnknownFormatError",
    "UnsupportedTransferSyntax",
    "VideoDecodeError",
]
