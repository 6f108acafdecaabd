"""Synthetic studies and cohorts: patients, their videos, reports, labels, files and manifests.

A study is one synthetic patient (:class:`~echoprime.synth.state.PatientState`) imaged in
6-20 clips over the coarse views (always at least one apical and one Doppler view, plus the
parasternal long axis), with its structured report and its labels. Study ``index`` of cohort
``seed`` draws everything from ``np.random.default_rng([seed, index])``, so studies can be made
in parallel, in any order, and the same seed gives byte-identical files.

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
from echoprime.reports import StructuredReport, compose_report
from echoprime.synth.render import RenderedVideo, render_video
from echoprime.synth.state import PatientState, sample_state
from echoprime.synth.writers import atomic_write, write_dicom, write_mp4
from echoprime.taxonomy import DOPPLER_VIEWS, VIEWS

FORMATS = ("mp4", "dicom", "both")
SPLITS = ("train", "val", "test")
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
        split: ``train`` / ``val`` / ``test``, by patient.
        dicom_variant: per video, an index into :data:`DICOM_VARIANTS` used when it is
            written as DICOM.
        as_dicom: per video, whether it is written as DICOM in a mixed (``both``) archive.
    """

    seed: int
    index: int
    state: PatientState
    videos: list[RenderedVideo]
    report: StructuredReport
    split: str
    dicom_variant: list[int]
    as_dicom: list[bool]

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


def study_ids(seed: int, index: int) -> tuple[str, str]:
    """Patient and study id of study ``index`` of cohort ``seed``."""
    return f"p{seed}_{index:06d}", f"s{seed}_{index:06d}"


def make_study(
    seed: int, index: int, *, min_videos: int = 6, max_videos: int = 20, frames: int = 32, size: int = 112
) -> SynthStudy:
    """Make study ``index`` of cohort ``seed`` (state, clips, report, split) in memory.

    Raises:
        ValueError: negative seed or index, or an empty/inverted video-count range.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    if not 1 <= min_videos <= max_videos:
        raise ValueError(f"need 1 <= min_videos <= max_videos, got {min_videos}, {max_videos}")
    rng = np.random.default_rng([seed, index])
    patient_id, study_id = study_ids(seed, index)
    state = sample_state(rng, patient_id, study_id)
    report = compose_report(state, np.random.default_rng(rng.integers(0, 2**63 - 1)))
    n = int(rng.integers(min_videos, max_videos + 1))
    views = sample_views(rng, n)
    video_seeds = rng.integers(0, 2**63 - 1, size=n)
    variants = [int(v) for v in rng.integers(0, len(DICOM_VARIANTS), size=n)]
    as_dicom = [bool(u < 0.5) for u in rng.random(n)]
    videos = [
        render_video(state, v, np.random.default_rng(int(s)), frames=frames, size=size)
        for v, s in zip(views, video_seeds, strict=True)
    ]
    return SynthStudy(seed, index, state, videos, report, assign_split(patient_id), variants, as_dicom)


def _uid(study: SynthStudy, *parts: str) -> str:
    return generate_uid(entropy_srcs=["echoprime.synth", str(study.seed), str(study.index), *parts])


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


def write_manifest(rows: list[dict[str, Any]], out_dir: str | Path) -> None:
    """Write ``studies.parquet`` and then ``manifest.parquet`` (the completion marker).

    Args:
        rows: every clip's row from :func:`write_study` (any order).
        out_dir: the cohort folder.

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
    out = Path(out_dir)
    atomic_write(out / "studies.parquet", _parquet_bytes(pa.Table.from_pylist(list(studies.values()))))
    manifest = pa.Table.from_pylist([{k: r[k] for k in MANIFEST_COLUMNS} for r in rows])
    atomic_write(out / "manifest.parquet", _parquet_bytes(manifest))


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
) -> list[dict[str, Any]]:
    """Make and write ``n_studies`` studies serially, then the manifests; returns the rows.

    A manifest left by an earlier run is removed first, so an interrupted run never looks
    complete.

    Raises:
        ValueError: ``n_studies < 1`` or bad study parameters.
    """
    if n_studies < 1:
        raise ValueError(f"n_studies must be at least 1, got {n_studies}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "manifest.parquet").unlink(missing_ok=True)
    indices = range(n_studies)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="synth", unit="study")
    rows: list[dict[str, Any]] = []
    for i in indices:
        study = make_study(seed, i, min_videos=min_videos, max_videos=max_videos, frames=frames, size=size)
        rows.extend(write_study(study, out, fmt=fmt))
    write_manifest(rows, out)
    return rows
