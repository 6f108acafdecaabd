"""echoprime.io: DICOM and video files to ``F x H x W x 3`` uint8 RGB clips, with typed errors.

``read_any`` decides by content (DICOM or video container); ``read_dicom`` / ``read_video`` read one
kind; ``dicom_header`` and ``group_by_study`` read headers only. Folder helpers that also
preprocess (``process_dicoms``, ``process_mp4s``) live in :mod:`echoprime.io.folders`.
"""

from __future__ import annotations

from echoprime.io.dicom import dicom_fps, dicom_header, group_by_study, read_dicom
from echoprime.io.errors import (
    DicomDecodeError,
    EchoIOError,
    FrameTooLargeError,
    NotAVideoError,
    NotUltrasoundError,
    UnknownFormatError,
    UnsupportedTransferSyntax,
    VideoDecodeError,
)
from echoprime.io.types import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, FileReport, VideoData
from echoprime.io.video import read_any, read_video

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "DicomDecodeError",
    "EchoIOError",
    "FileReport",
    "FrameTooLargeError",
    "NotAVideoError",
    "NotUltrasoundError",
    "UnknownFormatError",
    "UnsupportedTransferSyntax",
    "VideoData",
    "VideoDecodeError",
    "dicom_fps",
    "dicom_header",
    "group_by_study",
    "read_any",
    "read_dicom",
    "read_video",
]
