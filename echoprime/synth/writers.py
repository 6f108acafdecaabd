"""Deterministic files of synthetic clips: H.264 MP4 and Ultrasound Multi-frame DICOM.

Both build on :mod:`echoprime.io.writers` (the encoders the readers are tested against) and
add what a reproducible synthetic archive needs: identical bytes for identical input (one
x264 thread and its CPU-independent code, fixed dates, UIDs chosen by the caller), native
YBR_FULL_422 storage, and atomic writes (a temporary name renamed into place, so an
interrupted run leaves no half-written file under the final name).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from pydicom.pixels import convert_color_space
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit

from echoprime.io.writers import dicom_dataset, write_video

PHOTOMETRICS = ("RGB", "YBR_FULL_422")
# Fixed acquisition date and time: the same cohort seed must give the same bytes.
STUDY_DATE, STUDY_TIME = "20240101", "120000"


def patient_attributes(patient_id: str) -> dict[str, str]:
    """The identifying attributes a synthetic DICOM carries, as a scanner's would: the patient's
    id, a name and a birth date made from the id (deterministic), an accession number, the
    institution, physicians and operator, and free-text descriptions. De-identification at
    ingest must keep every one of them out of the shards (tests/ray/test_privacy.py searches for
    them)."""
    n = int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16)
    year, month, day = 1930 + n % 60, 1 + (n >> 8) % 12, 1 + (n >> 12) % 28
    tag = patient_id.upper()
    return {
        "PatientID": patient_id,
        "PatientName": f"SYNTH^{tag}",
        "PatientBirthDate": f"{year:04d}{month:02d}{day:02d}",
        "PatientSex": "FM"[n % 2],
        "OtherPatientIDs": f"MRN-{tag}",
        "AccessionNumber": f"ACC{n % 10**8:08d}",
        "InstitutionName": "Synthetic General Hospital",
        "ReferringPhysicianName": "SYNTH^REFERRER",
        "OperatorsName": "SYNTH^SONOGRAPHER",
        "StudyDescription": f"TTE COMPLETE FOR {tag}",
        "SeriesDescription": "ECHO CINE",
    }


JPEG_QUALITY = 92
# x264 options for identical bytes on every run and CPU (see write_mp4)
X264_DETERMINISTIC = {"x264-params": "cpu-independent=1"}


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 F x H x W x 3 RGB, got {frames.dtype} {frames.shape}")
    if frames.shape[1] % 2 or frames.shape[2] % 2:
        raise ValueError(
            f"frame height and width must be even (yuv420p, YBR_FULL_422), got {frames.shape[1:3]}"
        )


def write_mp4(path: str | os.PathLike[str], frames: np.ndarray, fps: float) -> None:
    """Write an H.264 (yuv420p) MP4 whose bytes depend only on ``frames`` and ``fps``.

    Args:
        path: destination file.
        frames: ``F x H x W x 3`` uint8 RGB with even ``H`` and ``W``.
        fps: frame rate.

    Raises:
        ValueError: frames of the wrong type or shape, or ``fps <= 0``.
    """
    _check_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # one thread: x264 records its thread count in the stream. cpu-independent: x264's SIMD
    # macroblock-tree propagation (mbtree, on in every preset but ultrafast) reads uninitialised
    # memory, so even one thread gave different bytes from run to run (a few decoded values in a
    # thousand, up to 50 grey levels) and may differ between CPUs; this option uses the C version,
    # no measured cost, 0.1 % more bytes (docs/benchmarks.md). "veryfast" encodes speckle 2.5x
    # faster than the default preset at the same error.
    data = write_video(
        frames,
        fps=fps,
        codec="libx264",
        container="mp4",
        crf=18,
        threads=1,
        preset="veryfast",
        options=X264_DETERMINISTIC,
    )
    atomic_write(path, data)


def pack_ybr_full_422(frames: np.ndarray) -> bytes:
    """Native YBR_FULL_422 pixel data: per pair of pixels ``Y1 Y2 Cb Cr`` (PS3.3 C.7.6.3.1.2).

    Args:
        frames: ``F x H x W x 3`` uint8 RGB, ``W`` even.
    """
    ybr = convert_color_space(frames, "RGB", "YBR_FULL").astype(np.uint16)
    f, h, w, _ = ybr.shape
    pairs = ybr.reshape(f, h, w // 2, 2, 3)  # F x H x W x 3 -> F x H x W/2 x 2 x 3 (horizontal pixel pairs)
    chroma = (pairs[..., 1:].sum(axis=3) + 1) // 2  # F x H x W/2 x 2: mean Cb, Cr of each pair
    packed = np.concatenate([pairs[..., 0], chroma], axis=-1)  # F x H x W/2 x 4: Y1 Y2 Cb Cr
    return packed.astype(np.uint8).tobytes()


def write_dicom(
    path: str | os.PathLike[str],
    frames: np.ndarray,
    fps: float,
    *,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    patient_id: str,
    photometric: str = "RGB",
    compress: bool = False,
    series_number: int = 1,
) -> None:
    """Write an Ultrasound Multi-frame Image Storage file (Modality US).

    Args:
        path: destination file.
        frames: ``F x H x W x 3`` uint8 RGB with even ``H`` and ``W``.
        fps: frame rate (written as FrameTime in ms, CineRate).
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        sop_uid: SOPInstanceUID.
        patient_id: PatientID; the other identifying attributes are made from it (:func:`patient_attributes`).
        photometric: ``"RGB"`` or ``"YBR_FULL_422"``; the pixels are stored in this colour space.
        compress: JPEG Baseline (Process 1), one codestream per frame, 4:2:2 chroma; DICOM
            requires ``photometric="YBR_FULL_422"`` for it.
        series_number: SeriesNumber.

    Raises:
        ValueError: bad frames, an unknown photometric interpretation, JPEG with RGB, or
            ``fps <= 0``.
    """
    _check_frames(frames)
    if photometric not in PHOTOMETRICS:
        raise ValueError(f"photometric must be one of {PHOTOMETRICS}, got {photometric!r}")
    if compress and photometric != "YBR_FULL_422":
        raise ValueError(
            "JPEG Baseline DICOM stores YCbCr: use photometric='YBR_FULL_422' with compress=True"
        )
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    uids = dict(study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid)
    if compress:
        ds = dicom_dataset(
            frames,
            fps=fps,
            transfer_syntax=JPEGBaseline8Bit,
            photometric="YBR_FULL_422",
            jpeg_quality=JPEG_QUALITY,
            **uids,
        )
    else:
        ds = dicom_dataset(frames, fps=fps, transfer_syntax=ExplicitVRLittleEndian, photometric="RGB", **uids)
        if photometric == "YBR_FULL_422":
            ds.PixelData = pack_ybr_full_422(frames)
            ds.PhotometricInterpretation = "YBR_FULL_422"
    for keyword, value in patient_attributes(patient_id).items():
        setattr(ds, keyword, value)
    ds.StudyID = patient_id[-16:]
    ds.SeriesNumber = series_number
    for prefix in ("Study", "Series", "Content", "Acquisition"):
        setattr(ds, f"{prefix}Date", STUDY_DATE)
        setattr(ds, f"{prefix}Time", STUDY_TIME)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    atomic_write(path, buf.getvalue())
