"""echoprime.io: DICOM and video files to ``F x H x W x 3`` uint8 RGB clips, with typed errors.

``read_any`` decides by content (DICOM or video container); ``read_dicom`` / ``read_video`` read one
kind; ``dicom_header`` and ``group_by_study`` read headers only. Every one of them raises only
:class:`EchoIOError` for whatever a file's content does (``file_boundary``), and checks declared
sizes before the allocations they would cause. ``load_file`` is the per-file step of every study
reader (a report instead of an exception). Folder helpers that also preprocess
(``process_dicoms``, ``process_mp4s``) live in :mod:`echoprime.io.folders`.
"""

from __future__ import annotations

from echoprime.io.dicom import dicom_fps, dicom_header, group_by_study, read_dicom
from echoprime.io.errors import (
    DicomDecodeError,
    EchoIOError,
    FrameTooLargeError,
    NotAVideoError,
    NotUltrasoundError,
    PreprocessError,
    UnknownFormatError,
    UnsupportedTransferSyntax,
    VideoDecodeError,
    file_boundary,
)
from echoprime.io.files import load_file, read_any
from echoprime.io.types import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    MAX_DECLARED_FRAMES,
    FileReport,
    VideoData,
)
from echoprime.io.video import read_video

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "MAX_DECLARED_FRAMES",
    "DicomDecodeError",
    "EchoIOError",
    "FileReport",
    "FrameTooLargeError",
    "NotAVideoError",
    "NotUltrasoundError",
    "PreprocessError",
    "UnknownFormatError",
    "UnsupportedTransferSyntax",
    "VideoData",
    "VideoDecodeError",
    "dicom_fps",
    "dicom_header",
    "file_boundary",
    "group_by_study",
    "load_file",
    "read_any",
    "read_dicom",
    "read_video",
]
