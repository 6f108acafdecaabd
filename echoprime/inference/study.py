"""A study's input -> its clips: the one reader of study files for interpretation.

A study is a folder, a list of files, a list of ``(name, bytes)`` uploads, or (past this step)
model clips. :func:`read_study` reads every file into the clip the model sees, in its uint8
storage form (a quarter of the float32 input's size: what the Serve graph passes between replicas
and the batch readers hold), decoding only the frames the clip samples. A bad file is a report,
never an exception.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from echoprime.io import FileReport, VideoData
from echoprime.io.files import clip_reader, load_file, prepare_clip
from echoprime.preprocess import PreprocessSpec

StudyInput = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[tuple[str, bytes]] | torch.Tensor
"""A folder, a list of files, a list of ``(name, bytes)`` uploads, or preprocessed clips ``N x 3 x T x S x S``."""


class StudyClips(NamedTuple):
    """A study read into clips (:func:`read_study`).

    Attributes:
        clips: ``N x T x S x S x 3`` uint8 clips of the usable files.
        n_valid: ``N`` int64 counts of each clip's frames that come from its file (the rest is
            padding, see :func:`echoprime.preprocess.valid_frames`).
        files: one report per file, in the order read.
    """

    clips: np.ndarray
    n_valid: np.ndarray
    files: list[FileReport]


def study_items(study: str | os.PathLike | Sequence[Any]) -> list[tuple[str, Any]]:
    """A study folder, a list of paths or a list of ``(name, bytes)`` -> ``(name, source)``
    items for :func:`echoprime.io.files.load_file` (a folder's files sorted, hidden ones left out).

    Raises:
        TypeError: a tensor (model clips are past this step).
        FileNotFoundError: a study folder that does not exist.
    """
    if isinstance(study, torch.Tensor):
        raise TypeError("reading a study takes files; got a tensor of model clips")
    if isinstance(study, (str, os.PathLike)):
        folder = Path(study)
        if not folder.is_dir():
            raise FileNotFoundError(f"study folder {str(folder)!r} does not exist")
        return [(str(p), p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return [(it[0], it[1]) if isinstance(it, tuple) else (str(it), Path(it)) for it in study]


def read_study(study: str | os.PathLike | Sequence[Any], spec: PreprocessSpec) -> StudyClips:
    """Read a study's files into :class:`StudyClips` (only the frames each clip samples are
    decoded); a bad file is a report, never a raise.

    Raises:
        TypeError: ``study`` is a tensor.
        FileNotFoundError: a study folder that does not exist.
    """
    clips, n_valid, reports = [], [], []
    read = clip_reader(spec)

    def prepare(vid: VideoData) -> tuple[np.ndarray, int]:
        # T x S x S x 3 from frame 0, and how many of its frames come from the file
        return prepare_clip(vid, spec)

    for name, src in study_items(study):
        prepared, report = load_file(name, src, prepare, reader=read)
        reports.append(report)
        if prepared is not None:
            clips.append(prepared[0])
            n_valid.append(prepared[1])
    shape = (spec.frames, spec.size, spec.size, 3)
    u8 = np.stack(clips) if clips else np.zeros((0, *shape), np.uint8)
    return StudyClips(u8, np.asarray(n_valid, np.int64), reports)


def within_frame_limit(one: StudyClips, limit: int) -> StudyClips:
    """One file's :class:`StudyClips`, or that file skipped (``too_many_frames``) when it has more
    frames than ``limit``: a file over a limit never fails its study."""
    (report,) = one.files
    if report.status != "used" or report.n_frames <= limit:
        return one
    why = f"the file has {report.n_frames} frames; the limit is {limit} (max_frames_per_file)"
    skipped = FileReport(report.path, "skipped", why, report.n_frames, report.fps, code="too_many_frames")
    return StudyClips(one.clips[:0], one.n_valid[:0], [skipped])


def join_studies(parts: Sequence[StudyClips], spec: PreprocessSpec) -> StudyClips:
    """Files read one by one (each a :class:`StudyClips`) -> the study's :class:`StudyClips`."""
    shape = (spec.frames, spec.size, spec.size, 3)
    clips = np.concatenate([p.clips for p in parts]) if parts else np.zeros((0, *shape), np.uint8)
    n_valid = np.concatenate([p.n_valid for p in parts]) if parts else np.zeros(0, np.int64)
    return StudyClips(clips, n_valid, [r for p in parts for r in p.files])
