"""One study from files or a DICOMweb archive to its result and its hospital outputs.

Used by ``echoprime interpret`` (``--dicomweb``, ``--sr``, ``--pdf``, ``--fhir``, ``--store``):

- :func:`interpret_archive_study` streams a study's instances from a DICOMweb archive through
  the interpreter one at a time (each instance's bytes are dropped once its clip is made);
- :func:`dicom_headers` reads the headers of local DICOM files (no pixel data);
- :func:`key_frames` decodes the one video per section the attention weighted most into a
  masked middle frame for the PDF;
- :func:`hospital_outputs` builds the SR, the PDF (plain and encapsulated) and the FHIR Bundle.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from echoprime.hospital.dicomweb import Archive
from echoprime.hospital.sr import Algorithm, build_sr

KEY_FRAME_MAX = 384
"""Longest side of a key frame in the PDF, in pixels."""


def algorithm_for(bundle: str) -> Algorithm:
    """The algorithm identification of a bundle: the package version, the bundle's name (its
    folder's) and its content hash (:func:`echoprime.bundle.manifest_sha256`), as Serve reports
    them in ``GET /v1/model``."""
    from echoprime import __version__
    from echoprime.bundle import manifest_sha256

    name = PurePosixPath(str(bundle).rstrip("/")).name or "bundle"
    return Algorithm("echoprime", str(__version__), manifest_sha256(bundle), name)


def dicom_headers(files: Iterable[str | Path]) -> dict[str, Dataset]:
    """The DICOM header (no pixel data) of each file that is a DICOM instance, by its path."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    out: dict[str, Dataset] = {}
    for f in files:
        try:
            ds = dcmread(str(f), stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        if "SOPInstanceUID" in ds and "StudyInstanceUID" in ds:
            out[str(f)] = ds
    return out


def load_archive_study(
    interp: Any, archive: Archive, study_uid: str, name_of: Mapping[str, str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[Any], dict[str, Dataset]]:
    """Read study ``study_uid`` of ``archive`` into clips, instance by instance as WADO-RS streams
    it (each instance's bytes are dropped once its clip is made).

    Args:
        interp: the :class:`~echoprime.inference.StudyInterpreter` whose preprocessing applies.
        name_of: the name each instance goes by, by SOPInstanceUID (its key in a de-identified
            output); an instance it does not list is ``unlisted-<n>``. Default: the UID itself.

    Returns:
        ``(uint8 clips, real-frame counts, one FileReport per instance, {name: header})``, as
        :meth:`StudyInterpreter.read_study` returns them; bad instances are reports.

    Raises:
        StudyNotFound, DicomwebError: from the archive.
    """
    clips, n_valid, reports, headers = [], [], [], {}
    for i, inst in enumerate(archive.iter_instances(study_uid)):
        name = inst.name if name_of is None else name_of.get(inst.name, f"unlisted-{i + 1}")
        c, n, r = interp.read_study([(name, inst.data)])
        clips.append(c)
        n_valid.append(n)
        reports += r
        if inst.header is not None:
            headers[name] = inst.header
    spec = interp.spec
    u8 = np.concatenate(clips) if clips else np.zeros((0, spec.frames, spec.size, spec.size, 3), np.uint8)
    nv = np.concatenate(n_valid) if n_valid else np.zeros(0, np.int64)
    return u8, nv, reports, headers


def interpret_archive_study(
    interp: Any, archive: Archive, study_uid: str, *, k: int | None = None
) -> tuple[dict[str, Any], dict[str, Dataset]]:
    """Interpret study ``study_uid`` of ``archive`` (:func:`load_archive_study`; files named by
    SOPInstanceUID). Returns ``(StudyResult.to_dict(), {SOPInstanceUID: header})``.

    Raises:
        StudyNotFound, DicomwebError: from the archive.
    """
    from echoprime.inference import StudyClips  # torch only where a study is interpreted

    u8, nv, reports, headers = load_archive_study(interp, archive, study_uid)
    return interp.interpret(StudyClips(u8, nv, reports), k=k).to_dict(), headers


def key_frames(result: Mapping[str, Any], source: Callable[[str], Any]) -> dict[str, np.ndarray]:
    """A masked middle frame of each section's most-weighted video (``source(name)`` gives its
    path or bytes), at most :data:`KEY_FRAME_MAX` pixels on a side. A file that fails is left out."""
    import cv2

    from echoprime.io import EchoIOError, read_any
    from echoprime.preprocess import mask_sector

    names = {e[0]["file"] for e in result.get("evidence", {}).values() if e}
    out: dict[str, np.ndarray] = {}
    for name in sorted(names):
        try:
            video = read_any(source(name), name=name, max_frames=64)
        except (EchoIOError, OSError, KeyError):
            continue
        frames, _ = mask_sector(video.frames)
        frame = frames[len(frames) // 2]
        scale = KEY_FRAME_MAX / max(frame.shape[:2])
        if scale < 1:
            frame = cv2.resize(
                frame,
                (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
                interpolation=cv2.INTER_AREA,
            )
        out[name] = np.ascontiguousarray(frame)
    return out


@dataclass
class HospitalOutputs:
    """What was made of one result (``None``: not asked for, or not possible and why in ``notes``)."""

    sr: Dataset | None = None
    pdf: bytes | None = None
    pdf_dicom: Dataset | None = None
    fhir: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def hospital_outputs(
    result: Mapping[str, Any],
    headers: Mapping[str, Dataset],
    algorithm: Algorithm,
    *,
    sr: bool = False,
    pdf: bool = False,
    fhir: bool = False,
    frames: Mapping[str, np.ndarray] | None = None,
) -> HospitalOutputs:
    """The SR, PDF (with its Encapsulated PDF instance when the study is DICOM) and FHIR Bundle
    asked for.

    Raises:
        echoprime.hospital.sr.SRError: an SR was asked for and the study has no DICOM instance.
        ValueError: the study has no usable video (nothing to report).
    """
    from echoprime.hospital.fhir import fhir_report
    from echoprime.hospital.pdf import encapsulated_pdf, report_pdf

    if result.get("status") != "ok":
        raise ValueError("the study has no usable echo video, so there is no report to write")
    out = HospitalOutputs()
    used = [v["file"] for v in result.get("videos", [])]
    dicom = [headers[f] for f in used if f in headers]
    if sr:
        out.sr = build_sr(result, headers, algorithm)
    if pdf:
        out.pdf = report_pdf(result, algorithm, key_frames=frames)
        if dicom:
            out.pdf_dicom = encapsulated_pdf(out.pdf, dicom[0], algorithm)
        else:
            out.notes.append("no DICOM instance among the videos: the PDF is not wrapped as DICOM")
    if fhir:
        out.fhir = fhir_report(result, algorithm, study_uid=str(dicom[0].StudyInstanceUID) if dicom else None)
    return out
