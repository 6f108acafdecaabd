"""Synthetic studies and cohorts: patients, their videos, reports, labels, files and manifests.

A study is one synthetic patient (:class:`~echoprime.synth.state.PatientState`) imaged in
6-20 clips over the coarse views (always at least one apical and one Doppler view, plus the
parasternal long axis), with its structured report and its labels. Study ``index`` of cohort
``seed`` draws everything from ``np.random.default_rng([seed, index])``, so studies can be made
in parallel, in any order, and the same seed gives byte-identical files.

A cohort may also hold a separate **test set** (``test_studies``): studies drawn from their own
namespace, ``np.random.default_rng([seed, index, TEST_NAMESPACE])`` with ids ``p{seed}_t{index:06d}``
/ ``s{seed}_t{index:06d}``, which no ordinary study of any seed can reach (see :func:`study_rng`).
Every one of them is in split ``test``, and the ordinary studies are then split between ``train``
and ``val`` only, so a training stream made of ordinary studies never sees a test study.

Layout of a written cohort::

    out_dir/videos/<study_id>/<video_id>.mp4 | .dcm
    out_dir/studies.parquet    one row per study (report, labels, hidden labels, state, split)
    out_dir/manifest.parquet   one row per video; written last, so its presence means "complete"
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydicom.uid import generate_uid

from echoprime.data.shards import assign_split
from echoprime.reports import StructuredReport
from echoprime.synth.render import RenderedVideo, render_video
from echoprime.synth.report import compose_report
from echoprime.synth.state import PatientState, sample_state
from echoprime.synth.writers import atomic_write, write_dicom, write_mp4
from echoprime.taxonomy import DOPPLER_VIEWS, VIEWS

FORMATS = ("mp4", "dicom", "both")
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.15, 0.15)
"""Train / val / test shares of the ordinary studies of a cohort without a separate test set."""
TEST_NAMESPACE = 0x7E57
"""Third word of a test study's rng key ``[seed, index, TEST_NAMESPACE]``; non-zero, so no
two-word key ``[seed, index]`` of an ordinary study equals it (see :func:`study_rng`)."""
MAX_KEY = 2**32
"""Seeds and indices must be below this: each is one 32-bit word of the rng key."""
APICAL_VIEWS = ("A2C", "A3C", "A4C", "A5C")
# How often a sonographer records each view (relative weights).
VIEW_WEIGHTS: dict[str, float] = {
    "A2C": 2.0,
    "A3C": 2.0,
    "A4C": 3.0,
    "A5C": 1.5,
    "Apical_Doppler": 2.0,
    "Doppler_Parasternal_Long": 1.5,
    "Doppler_Parasternal_Short": 1.5,
    "Parasternal_Long": 3.0,
    "Parasternal_Short": 2.5,
    "SSN": 1.0,
    "Subcostal": 1.5,
}
# DICOM storage variants a mixed archive holds: (photometric interpretation, JPEG Baseline).
DICOM_VARIANTS: tuple[tuple[str, bool], ...] = (
    ("RGB", False),
    ("YBR_FULL_422", False),
    ("YBR_FULL_422", True),
)
MANIFEST_COLUMNS = (
    "study_id",
    "patient_id",
    "video_id",
    "path",
    "format",
    "dicom_variant",
    "view",
    "fps",
    "n_frames",
    "height",
    "width",
    "split",
)


@dataclass
class SynthStudy:
    """One synthetic study, in memory.

    Attributes:
        seed: the cohort seed.
        index: the study's index in the cohort.
        state: the patient.
        videos: the rendered clips (``video.view`` names each one's view).
        report: the structured report (never mentions the hidden diagnoses).
        split: ``train`` / ``val`` / ``test``, by patient (``test`` for every test study).
        dicom_variant: per video, an index into :data:`DICOM_VARIANTS` used when it is
            written as DICOM.
        as_dicom: per video, whether it is written as DICOM in a mixed (``both``) archive.
        test: a study of the cohort's separate test set (its own rng namespace and ids).
    """

    seed: int
    index: int
    state: PatientState
    videos: list[RenderedVideo]
    report: StructuredReport
    split: str
    dicom_variant: list[int]
    as_dicom: list[bool]
    test: bool = False

    @property
    def study_id(self) -> str:
        return self.state.study_id

    @property
    def patient_id(self) -> str:
        return self.state.patient_id

    def labels(self) -> dict[str, float]:
        """The 21 phenotypes of the release."""
        return self.state.labels()

    def hidden_labels(self) -> dict[str, float]:
        """Diagnoses that are never in the report."""
        return self.state.hidden_labels()

    def video_id(self, k: int) -> str:
        return f"{self.study_id}_v{k:02d}"


def sample_views(rng: np.random.Generator, n: int) -> list[str]:
    """``n`` views for one study: an apical, a Doppler and a parasternal long-axis view first,
    then the other views (weighted, without repeats until all 11 are used), in random order."""
    pick = lambda pool: str(rng.choice(pool, p=_weights(pool)))  # noqa: E731
    chosen = [pick(APICAL_VIEWS), pick(sorted(DOPPLER_VIEWS)), "Parasternal_Long"][:n]
    while len(chosen) < n:
        rest = [v for v in VIEWS if v not in chosen] or list(VIEWS)
        chosen.append(pick(rest))
    return [chosen[i] for i in rng.permutation(n)]


def _weights(pool) -> np.ndarray:
    w = np.array([VIEW_WEIGHTS[v] for v in pool])
    return w / w.sum()


def study_ids(seed: int, index: int, *, test: bool = False) -> tuple[str, str]:
    """Patient and study id of study ``index`` of cohort ``seed`` (``test``: of its separate test
    set; the ``t`` before the index keeps the two kinds of ids apart)."""
    t = "t" if test else ""
    return f"p{seed}_{t}{index:06d}", f"s{seed}_{t}{index:06d}"


def study_rng(seed: int, index: int, *, test: bool = False) -> np.random.Generator:
    """The generator study ``index`` of cohort ``seed`` draws everything from.

    Ordinary studies: ``default_rng([seed, index])``; test studies: ``default_rng([seed, index,
    TEST_NAMESPACE])``. NumPy's ``SeedSequence`` reads a key as 32-bit words and treats missing
    trailing words as zeros (``[s, i]`` is ``[s, i, 0]``), so with ``seed`` and ``index`` each
    one word (below :data:`MAX_KEY`, which :func:`make_study` enforces) an ordinary key never
    has a non-zero third word, and no ordinary study of any seed draws a test study's numbers.

    Raises:
        ValueError: ``seed`` or ``index`` negative or not below :data:`MAX_KEY`.
    """
    if not (0 <= seed < MAX_KEY and 0 <= index < MAX_KEY):
        raise ValueError(
            f"seed and index must be non-negative and below 2**32, got seed={seed}, index={index}"
        )
    return np.random.default_rng([seed, index, TEST_NAMESPACE] if test else [seed, index])


def ordinary_split(patient_id: str, *, separate_test: bool = False) -> str:
    """Split of an ordinary study's patient: :data:`SPLIT_FRACTIONS` by the patient hash, or with
    ``separate_test`` (the cohort has its own test set) train / val only, their shares
    renormalised (0.7 / 0.15 -> 0.8235 / 0.1765) by the same hash."""
    if not separate_test:
        return assign_split(patient_id, SPLIT_FRACTIONS)
    train = SPLIT_FRACTIONS[0] / (SPLIT_FRACTIONS[0] + SPLIT_FRACTIONS[1])
    return "train" if assign_split(patient_id, (train, 1.0 - train, 0.0)) == "train" else "val"


def _state_and_report(
    seed: int, index: int, test: bool
) -> tuple[np.random.Generator, PatientState, StructuredReport]:
    """What a study draws first: its patient and report (the generator continues with the videos)."""
    rng = study_rng(seed, index, test=test)
    patient_id, study_id = study_ids(seed, index, test=test)
    state = sample_state(rng, patient_id, study_id)
    report = compose_report(state, np.random.default_rng(rng.integers(0, 2**63 - 1)))
    return rng, state, report


def study_report(seed: int, index: int, *, test: bool = False) -> tuple[PatientState, StructuredReport]:
    """The patient and report of study ``index`` of cohort ``seed``, as :func:`make_study` draws
    them, without rendering a video (a report bank of thousands of studies in seconds).

    Raises:
        ValueError: seed or index negative or not below 2**32 (:func:`study_rng`).
    """
    _, state, report = _state_and_report(seed, index, test)
    return state, report


def _video_count(rng: np.random.Generator, min_videos: int, max_videos: int) -> int:
    """How many videos a study has: the draw that follows its patient and report."""
    return int(rng.integers(min_videos, max_videos + 1))


def study_video_count(seed: int, index: int, *, min_videos: int, max_videos: int, test: bool = False) -> int:
    """The number of videos :func:`make_study` gives study ``index`` of cohort ``seed``, without
    rendering them (e.g. to plan the steps of an epoch over a stream of studies)."""
    rng, _, _ = _state_and_report(seed, index, test)
    return _video_count(rng, min_videos, max_videos)


def make_study(
    seed: int,
    index: int,
    *,
    min_videos: int = 6,
    max_videos: int = 20,
    frames: int = 32,
    size: int = 112,
    test: bool = False,
    separate_test: bool = False,
) -> SynthStudy:
    """Make study ``index`` of cohort ``seed`` (state, clips, report, split) in memory.

    Args:
        test: a study of the cohort's separate test set (its own rng namespace and ids, split
            ``test``), not an ordinary one.
        separate_test: for an ordinary study, the cohort has a separate test set, so the study is
            split between train and val only (:func:`ordinary_split`).

    Raises:
        ValueError: seed or index negative or not below 2**32, or an empty/inverted video-count range.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    if not 1 <= min_videos <= max_videos:
        raise ValueError(f"need 1 <= min_videos <= max_videos, got {min_videos}, {max_videos}")
    rng, state, report = _state_and_report(seed, index, test)
    patient_id = state.patient_id
    n = _video_count(rng, min_videos, max_videos)
    views = sample_views(rng, n)
    video_seeds = rng.integers(0, 2**63 - 1, size=n)
    variants = [int(v) for v in rng.integers(0, len(DICOM_VARIANTS), size=n)]
    as_dicom = [bool(u < 0.5) for u in rng.random(n)]
    videos = [
        render_video(state, v, np.random.default_rng(int(s)), frames=frames, size=size)
        for v, s in zip(views, video_seeds, strict=True)
    ]
    split = "test" if test else ordinary_split(patient_id, separate_test=separate_test)
    return SynthStudy(seed, index, state, videos, report, split, variants, as_dicom, test)


def _uid(study: SynthStudy, *parts: str) -> str:
    key = [str(study.seed), str(study.index)] + (["test"] if study.test else [])
    return generate_uid(entropy_srcs=["echoprime.synth", *key, *parts])


def write_study(study: SynthStudy, out_dir: str | Path, fmt: str = "mp4") -> list[dict[str, Any]]:
    """Write a study's clips under ``out_dir/videos/<study_id>/``; return its manifest rows.

    Args:
        study: from :func:`make_study`.
        out_dir: the cohort folder.
        fmt: ``mp4``, ``dicom`` (the storage variants of :data:`DICOM_VARIANTS` mixed) or
            ``both`` (a mixed archive: each clip written once, about half as DICOM).

    Returns:
        One dict per clip: the :data:`MANIFEST_COLUMNS` plus the study-level ``report``
        (text), ``labels``, ``hidden_labels`` and ``state`` (dicts).

    Raises:
        ValueError: unknown ``fmt``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    folder = Path(out_dir) / "videos" / study.study_id
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid = _uid(study, "study"), _uid(study, "series")
    report, labels, hidden, state = (
        study.report.to_text(),
        study.labels(),
        study.hidden_labels(),
        study.state.to_dict(),
    )
    rows = []
    for k, video in enumerate(study.videos):
        vid = study.video_id(k)
        dicom = fmt == "dicom" or (fmt == "both" and study.as_dicom[k])
        rel = f"videos/{study.study_id}/{vid}.{'dcm' if dicom else 'mp4'}"
        variant = ""
        if dicom:
            photometric, jpeg = DICOM_VARIANTS[study.dicom_variant[k]]
            variant = photometric + ("/JPEG" if jpeg else "")
            write_dicom(
                Path(out_dir) / rel, video.frames, video.fps, study_uid=study_uid, series_uid=series_uid,
                sop_uid=_uid(study, "sop", str(k)), patient_id=study.patient_id, photometric=photometric, compress=jpeg,
            )  # fmt: skip
        else:
            write_mp4(Path(out_dir) / rel, video.frames, video.fps)
        f, h, w = video.frames.shape[:3]
        rows.append(
            {
                "study_id": study.study_id,
                "patient_id": study.patient_id,
                "video_id": vid,
                "path": rel,
                "format": "dicom" if dicom else "mp4",
                "dicom_variant": variant,
                "view": video.view,
                "fps": float(video.fps),
                "n_frames": int(f),
                "height": int(h),
                "width": int(w),
                "split": study.split,
                "report": report,
                "labels": labels,
                "hidden_labels": hidden,
                "state": state,
            }
        )
    return rows


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def write_manifest(rows: list[dict[str, Any]], out_dir: str | Path, *, label_only: bool = False) -> None:
    """Write ``studies.parquet`` and then ``manifest.parquet`` (the completion marker).

    Args:
        rows: every clip's row from :func:`write_study` (any order).
        out_dir: the cohort folder.
        label_only: no report column; ``labels`` holds everything the report states
            (``echoprime.reports.extract_findings``: phenotypes, ``<phenotype>_grade``, heart rate).

    Raises:
        ValueError: no rows, or rows of one study that disagree on study-level fields.
    """
    if not rows:
        raise ValueError("write_manifest needs at least one row")
    rows = sorted(rows, key=lambda r: (r["study_id"], r["video_id"]))
    studies: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = studies.setdefault(
            r["study_id"],
            {
                "study_id": r["study_id"],
                "patient_id": r["patient_id"],
                "split": r["split"],
                "report": r["report"],
                "labels": json.dumps(r["labels"], sort_keys=True),
                "hidden_labels": json.dumps(r["hidden_labels"], sort_keys=True),
                "state": json.dumps(r["state"], sort_keys=True),
                "views": [],
            },
        )
        if s["report"] != r["report"] or s["split"] != r["split"]:
            raise ValueError(f"rows of study {r['study_id']} disagree on its report or split")
        s["views"].append(r["view"])
    for s in studies.values():
        s["n_videos"] = len(s["views"])
        if label_only:
            from echoprime.data.shards import dump_labels
            from echoprime.reports import extract_findings

            found = {k: v for k, v in extract_findings(s.pop("report")).items() if v == v}
            s["labels"] = dump_labels(found)
    out = Path(out_dir)
    atomic_write(out / "studies.parquet", _parquet_bytes(pa.Table.from_pylist(list(studies.values()))))
    manifest = pa.Table.from_pylist([{k: r[k] for k in MANIFEST_COLUMNS} for r in rows])
    atomic_write(out / "manifest.parquet", _parquet_bytes(manifest))


def cohort_plan(n_studies: int, test_studies: int = 0) -> list[tuple[int, bool]]:
    """The ``(index, test)`` pairs a cohort is made of: the ordinary studies, then the test set."""
    return [(i, False) for i in range(n_studies)] + [(i, True) for i in range(test_studies)]


def generate_cohort(
    out_dir: str | Path,
    n_studies: int,
    seed: int = 0,
    fmt: str = "mp4",
    size: int = 112,
    frames: int = 32,
    progress: bool = True,
    *,
    min_videos: int = 6,
    max_videos: int = 20,
    test_studies: int = 0,
) -> list[dict[str, Any]]:
    """Make and write ``n_studies`` studies serially, then the manifests; returns the rows.

    With ``test_studies > 0`` the cohort also holds that many studies of its separate test set
    (all split ``test``) and the ordinary studies are split between train and val only.

    A manifest left by an earlier run is removed first, so an interrupted run never looks
    complete.

    Raises:
        ValueError: ``n_studies < 1``, ``test_studies < 0`` or bad study parameters.
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be at least 1, got {n_studies}")
    if test_studies < 0:
        raise ValueError(f"test_studies must be non-negative, got {test_studies}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.parquet").unlink(missing_ok=True)
    todo = cohort_plan(n_studies, test_studies)
    if progress:
        from tqdm import tqdm

        todo = tqdm(todo, desc="synth", unit="study")
    rows: list[dict[str, Any]] = []
    for i, test in todo:
        study = make_study(
            seed, i, min_videos=min_videos, max_videos=max_videos, frames=frames, size=size,
            test=test, separate_test=test_studies > 0,
        )  # fmt: skip
        rows.extend(write_study(study, out, fmt=fmt))
    write_manifest(rows, out)
    return rows
