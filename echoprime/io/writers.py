"""Write clips as DICOM or video files: synthetic studies, test fixtures and benchmarks.

The readers are tested against files written here in every encoding they claim to read, and
against real scanner files (``../shared/data/real-echo``); files written here are standard
(pydicom validates them on write; ffmpeg writes the video).

Example::

    write_dicom(frames, "clip.dcm", fps=30, transfer_syntax=JPEGBaseline8Bit)
    write_video(frames, "clip.mp4", fps=30)
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    HEVCMP51,
    MPEG4HP41,
    MPEG4HP41BD,
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UltrasoundMultiFrameImageStorage,
    generate_uid,
)

_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
# Encapsulated video: the fragments hold one elementary stream ("h264" / "hevc" raw formats).
_MPEG = {
    MPEG4HP41: ("libx264", "h264"),
    MPEG4HP41BD: ("libx264", "h264"),
    HEVCMP51: ("libx265", "hevc"),
}


def dicom_dataset(
    frames: np.ndarray,
    *,
    fps: float | None = 30.0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    photometric: str | None = None,
    planar_configuration: int = 0,
    fragments_per_frame: int = 1,
    has_bot: bool = True,
    jpeg_quality: int = 95,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    modality: str = "US",
    manufacturer: str = "echoprime-synth",
    **compress_options: object,
) -> Dataset:
    """An Ultrasound Multi-frame Image data set holding ``frames``.

    Args:
        frames: ``F x H x W x 3`` uint8 RGB, or ``F x H x W`` uint8 greyscale.
        fps: Written as FrameTime (ms) and CineRate; ``None`` writes neither.
        transfer_syntax: Native (explicit/implicit little endian, explicit big endian), JPEG
            Baseline (encoded with OpenCV, 4:2:2 YCbCr), RLE Lossless or JPEG 2000 (pydicom's
            encoders), MPEG-4 AVC/H.264 or HEVC (PyAV; even ``H`` and ``W``).
        photometric: Photometric interpretation to store. Default: MONOCHROME2 for greyscale,
            YBR_FULL_422 for JPEG Baseline, RGB otherwise. ``"YBR_FULL"`` stores native YCbCr
            converted from ``frames``; ``"MONOCHROME1"`` stores inverted grey.
        planar_configuration: 1 stores native RGB colour-by-plane.
        fragments_per_frame: JPEG Baseline only: split each frame's codestream into this many
            fragments.
        has_bot: JPEG Baseline only: write a Basic Offset Table (``False``: empty table, so the
            reader must find frame boundaries itself).
        jpeg_quality: JPEG Baseline quality (0-100).
        study_uid: StudyInstanceUID (generated when ``None``).
        series_uid: SeriesInstanceUID (generated when ``None``).
        sop_uid: SOPInstanceUID (generated when ``None``).
        modality: Modality.
        manufacturer: Manufacturer.
        **compress_options: Passed to pydicom's encoder (e.g. ``j2k_cr=[10]`` for lossy JPEG 2000).

    Returns:
        The data set, with file meta, ready for ``dcmwrite``.
    """
    if frames.dtype != np.uint8 or frames.ndim not in (3, 4) or (frames.ndim == 4 and frames.shape[-1] != 3):
        raise ValueError(
            f"frames must be uint8 F x H x W x 3 or F x H x W, got {frames.dtype} {frames.shape}"
        )
    ts = UID(transfer_syntax)
    grey = frames.ndim == 3
    n, rows, cols = frames.shape[:3]
    if photometric is None:
        photometric = "MONOCHROME2" if grey else ("YBR_FULL_422" if ts == JPEGBaseline8Bit else "RGB")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    ds.Manufacturer = manufacturer
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    if fps:
        ds.FrameTime = f"{1000.0 / fps:.6g}"
        ds.CineRate = int(round(fps))
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTime")

    if ts == JPEGBaseline8Bit:
        _set_jpeg(ds, frames, photometric, fragments_per_frame, has_bot, jpeg_quality)
        return ds
    if ts in _MPEG:
        _set_mpeg(ds, frames, ts, fps or 30.0)
        return ds
    if photometric == "YBR_FULL_422":
        raise ValueError(
            f"photometric 'YBR_FULL_422' is written here only with JPEG Baseline, not {ts.name}; "
            "native 4:2:2 pixel data: echoprime.synth.writers.write_dicom"
        )
    stored = frames
    if photometric == "MONOCHROME1":
        stored = 255 - frames
    elif photometric == "YBR_FULL":
        stored = convert_color_space(frames, "RGB", "YBR_FULL")
    # YBR_FULL is stored converted; YBR_RCT/YBR_ICT are applied by the JPEG 2000 encoder (MCT).
    # keep the SOPInstanceUID set above (pydicom would otherwise replace it with a random one)
    pi = "RGB" if photometric in ("YBR_FULL", "YBR_RCT", "YBR_ICT") else photometric
    ds.set_pixel_data(stored, pi, 8, generate_instance_uid=False)
    ds.PhotometricInterpretation = photometric
    if ts in _NATIVE:
        if not grey and planar_configuration == 1:
            ds.PlanarConfiguration = 1
            # F x H x W x 3 -> F x 3 x H x W: each frame's R plane, then G, then B
            ds.PixelData = np.ascontiguousarray(stored.transpose(0, 3, 1, 2)).tobytes()
        ds.file_meta.TransferSyntaxUID = ts
    else:
        ds.compress(ts, stored, photometric_interpretation=photometric, **compress_options)
    return ds


def _set_jpeg(
    ds: Dataset, frames: np.ndarray, photometric: str, fragments: int, has_bot: bool, quality: int
) -> None:
    """JPEG Baseline frames with OpenCV (4:2:2 chroma subsampling, like ultrasound scanners)."""
    params = [
        cv2.IMWRITE_JPEG_QUALITY,
        quality,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    ]
    blobs = []
    for f in frames:
        img = f if f.ndim == 2 else cv2.cvtColor(f, cv2.COLOR_RGB2BGR)  # OpenCV encodes BGR input
        ok, buf = cv2.imencode(".jpg", img, params)
        if not ok:
            raise ValueError("OpenCV failed to JPEG-encode a frame")
        blobs.append(buf.tobytes())
    grey = frames.ndim == 3
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if grey else photometric
    if not grey:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.NumberOfFrames = frames.shape[0]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate(blobs, fragments_per_frame=fragments, has_bot=has_bot)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


def _set_mpeg(ds: Dataset, frames: np.ndarray, ts: UID, fps: float) -> None:
    """H.264 / HEVC in DICOM: the whole clip as one elementary stream, split into fragments."""
    if frames.ndim == 3:
        frames = np.repeat(frames[..., None], 3, axis=-1)  # F x H x W -> F x H x W x 3
    codec, fmt = _MPEG[ts]
    stream = write_video(frames, fps=fps, codec=codec, container=fmt)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.NumberOfFrames = frames.shape[0]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = encapsulate([stream], has_bot=False)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = ts


def write_dicom(frames: np.ndarray, path: str | os.PathLike[str] | None = None, **kwargs: object) -> bytes:
    """Write ``frames`` as a DICOM file (see :func:`dicom_dataset` for the options).

    Args:
        frames: ``F x H x W x 3`` or ``F x H x W`` uint8.
        path: Where to write; ``None`` only returns the bytes.
        **kwargs: Options of :func:`dicom_dataset`.

    Returns:
        The file's bytes.
    """
    ds = dicom_dataset(frames, **kwargs)  # type: ignore[arg-type]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def write_video(
    frames: np.ndarray | Sequence[np.ndarray],
    path: str | os.PathLike[str] | None = None,
    *,
    fps: float = 30.0,
    codec: str = "libx264",
    container: str | None = None,
    crf: int = 18,
    threads: int = 0,
    preset: str | None = None,
    options: Mapping[str, str] | None = None,
) -> bytes:
    """Encode RGB frames as a video with PyAV (ffmpeg).

    Args:
        frames: ``F x H x W x 3`` uint8 RGB (even ``H`` and ``W`` for yuv420p codecs).
        path: Where to write; ``None`` only returns the bytes.
        fps: Frame rate (rounded to a rational with denominator 1000).
        codec: ``"libx264"`` (H.264), ``"mpeg4"``, ``"mjpeg"``, ``"libx265"``, ``"mpeg2video"``.
        container: ffmpeg format name; default from the path's suffix, else ``"mp4"`` (``"avi"``
            for mjpeg).
        crf: H.264/H.265 constant rate factor (lower is better quality).
        threads: encoder threads; 0 lets ffmpeg choose. x264 writes its thread count into the
            stream, so identical bytes need 1; that alone is not enough for x264 (see the
            ``cpu-independent`` option in :func:`echoprime.synth.writers.write_mp4`).
        preset: H.264/H.265 speed preset (e.g. ``"veryfast"``); ``None`` keeps the encoder's default.
        options: further encoder options (ffmpeg AVOptions), applied last, e.g.
            ``{"x264-params": "cpu-independent=1"}``.

    Returns:
        The file's bytes.
    """
    from fractions import Fraction

    if container is None:
        suffix = Path(path).suffix.lower().lstrip(".") if path is not None else ""
        container = suffix or ("avi" if codec == "mjpeg" else "mp4")
        if container == "m4v":
            container = "mp4"
    buf = io.BytesIO()
    with av.open(buf, mode="w", format=container) as out:
        stream = out.add_stream(codec, rate=Fraction(round(fps * 1000), 1000))
        first = frames[0]
        stream.height, stream.width = int(first.shape[0]), int(first.shape[1])
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.thread_count = threads
        opts: dict[str, str] = {}
        if codec == "libx264":
            opts = {"crf": str(crf)} | ({"preset": preset} if preset else {})
        elif codec == "libx265":
            opts = {"crf": str(crf), "x265-params": "log-level=none"} | ({"preset": preset} if preset else {})
        opts |= dict(options or {})
        if opts:
            stream.options = opts
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = buf.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data
