"""A study -> the clips the model sees: :func:`read_study`, the one reader for interpretation.

A study is a folder or ``s3://`` prefix, a list of paths, ``s3://`` URIs or ``(name, bytes)``
uploads (:func:`echoprime.io.sources.study_items` lists and fetches them, one set of error codes).
:func:`read_study` reads each file into the clip the model sees, in its uint8 storage form (a
quarter of the float32 input's size: what the Serve graph passes between replicas and the batch
readers hold), decoding only the frames the clip samples. A bad file is a report, never a raise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from echoprime.io import FileReport, VideoData
from echoprime.io.files import clip_reader, load_file, prepare_clip
from echoprime.io.sources import StudySource, study_items
from echoprime.preprocess import PreprocessSpec

StudyInput = StudySource | torch.Tensor
"""A :data:`StudySource`, or preprocessed model clips ``N x 3 x T x S x S``."""


class StudyClips(NamedTuple):
    """A study read into clips (:func:`read_study`).

    Attributes:
        clips: ``N x T x S x S x 3`` uint8 clips of the usable files.
        n_valid: ``N`` int64 counts of each clip's frames that come from its file (the rest is
            padding, see :func:`echoprime.preprocess.valid_frames`).
        files: one report per file: those of the input in order, then the objects that could not
            be read.
    """

    clips: np.ndarray
    n_valid: np.ndarray
    files: list[FileReport]


def read_study(study: StudySource, spec: PreprocessSpec, *, max_total_bytes: int | None = None) -> StudyClips:
    """Read a study's files into :class:`StudyClips` (only the frames each clip samples are
    decoded); a bad or unreadable file is a report, never a raise.

    Raises:
        TypeError: ``study`` is a tensor (model clips are past this step).
        FileNotFoundError: a study folder or prefix that does not exist.
        StudyTooLarge: its objects together exceed ``max_total_bytes``.
    """
    if isinstance(study, torch.Tensor):
        raise TypeError("reading a study takes files; got a tensor of model clips")
    items, failed = study_items(study, max_total_bytes=max_total_bytes)
    clips, n_valid, reports = [], [], []
    read = clip_reader(spec)

    def prepare(vid: VideoData) -> tuple[np.ndarray, int]:
        # T x S x S x 3 from frame 0, and how many of its frames come from the file
        return prepare_clip(vid, spec)

    for name, src in items:
        prepared, report = load_file(name, src, prepare, reader=read)
        reports.append(report)
        if prepared is not None:
            clips.append(prepared[0])
            n_valid.append(prepared[1])
    reports += [FileReport(name, "skipped", why, code=code) for name, (code, why) in failed.items()]
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
