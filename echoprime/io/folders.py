"""Folder of files -> batch of model clips, with a report per file (the release's helpers, fixed).

The published code prints "corrupt file" and moves on; here every file gets a
:class:`~echoprime.io.types.FileReport` saying whether it was used and, if not, why (the typed
error's code and reason), so that a study interpreted from a folder can say which files it left
out. Independent of any model: the output is what ``StudyInterpreter.encode_study`` takes. Only
the frames the clip samples are decoded (``spec.clip_reading()``; the release decodes, masks and
scales every frame of every file).

Example::

    clips, reports = process_dicoms("study_0001/")
    clips.shape                    # N x 3 x 16 x 224 x 224
    [r for r in reports if r.status == "skipped"]
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from echoprime.io.dicom import read_dicom
from echoprime.io.files import clip_reader, load_file, prepare_clip
from echoprime.io.sources import list_study
from echoprime.io.types import FileReport, VideoData
from echoprime.io.video import VIDEO_SUFFIXES, read_video
from echoprime.preprocess import RELEASE_SPEC, PreprocessSpec, normalise


def _files(folder: str | os.PathLike[str], recursive: bool) -> list[Path]:
    # every file, hidden ones too, as the release's helpers read a folder
    try:
        return [Path(p) for p in list_study(folder, recursive=recursive, hidden=True)]
    except FileNotFoundError:
        raise ValueError(f"{Path(folder)}: not a directory (expected a folder of a study's files)") from None


def process_files(
    paths: Iterable[str | os.PathLike[str]],
    reader: Callable[..., VideoData],
    spec: PreprocessSpec = RELEASE_SPEC,
    *,
    accept: Callable[[Path], str | None] | None = None,
) -> tuple[torch.Tensor, list[FileReport]]:
    """Read and preprocess files one by one; bad files are reported, never fatal.

    Args:
        paths: Files, in the order their clips should have.
        reader: Decodes one file, called as ``reader(path, max_frames=..., step=...)`` so that only
            the clip's frames are decoded (:func:`~echoprime.io.files.clip_reader`; raises :class:`EchoIOError` for a bad one; anything else
            it or the preprocessing raises is also the file's reason:
            :func:`~echoprime.io.files.load_file`).
        spec: Preprocessing spec.
        accept: Optional pre-filter: returns a reason to skip a file without reading it.

    Returns:
        ``(clips, reports)``: ``N x 3 x T x S x S`` float32 tensor for the ``N`` used files (in
        order), and one report per input path.
    """
    clips: list[np.ndarray] = []
    reports: list[FileReport] = []

    read = clip_reader(spec, lambda src, name=None, **limits: reader(src, **limits))

    def prepare(video: VideoData) -> np.ndarray:
        u8, n_valid = prepare_clip(video, spec)  # T x S x S x 3 uint8
        return normalise(u8, spec.mean, spec.std, n_valid=n_valid)  # 3 x T x S x S float32

    for p in map(Path, paths):
        if accept is not None and (why := accept(p)) is not None:
            reports.append(FileReport(str(p), "skipped", why, code="not_selected"))
            continue
        clip, report = load_file(
            str(p), p, prepare, reader=read
        )  # 3 x T x S x S, or a skipped report: a bad file never stops the folder
        reports.append(report)
        if clip is not None:
            clips.append(clip)
    if not clips:
        return torch.zeros((0, 3, spec.frames, spec.size, spec.size)), reports
    return torch.from_numpy(np.stack(clips)), reports  # N x (3 x T x S x S) -> N x 3 x T x S x S


def process_dicoms(
    folder: str | os.PathLike[str],
    spec: PreprocessSpec = RELEASE_SPEC,
    *,
    recursive: bool = True,
) -> tuple[torch.Tensor, list[FileReport]]:
    """Every DICOM cine in a folder as model clips.

    Every regular file is tried (DICOM files often have no suffix); stills, reports, other
    modalities and non-DICOM files are skipped with their reason.

    Args:
        folder: The folder (searched recursively unless ``recursive=False``), files in sorted order.
        spec: Preprocessing spec.
        recursive: Include sub-folders.

    Returns:
        ``(clips, reports)``: ``N x 3 x T x S x S`` float32 and one :class:`FileReport` per file.
    """
    return process_files(_files(folder, recursive), read_dicom, spec)


def process_mp4s(
    folder: str | os.PathLike[str],
    spec: PreprocessSpec = RELEASE_SPEC,
    *,
    recursive: bool = True,
) -> tuple[torch.Tensor, list[FileReport]]:
    """Every video file (MP4, AVI, MOV, ...) in a folder as model clips.

    Files without a video suffix are reported as skipped without being read.

    Args:
        folder: The folder (searched recursively unless ``recursive=False``), files in sorted order.
        spec: Preprocessing spec.
        recursive: Include sub-folders.

    Returns:
        ``(clips, reports)``: ``N x 3 x T x S x S`` float32 and one :class:`FileReport` per file.
    """

    def accept(p: Path) -> str | None:
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return None
        return f"not a video file name (suffix {p.suffix!r}; expected one of {sorted(VIDEO_SUFFIXES)})"

    return process_files(_files(folder, recursive), read_video, spec, accept=accept)
