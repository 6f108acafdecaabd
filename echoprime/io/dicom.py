"""DICOM echo clips to ``F x H x W x 3`` uint8 RGB, with typed errors for everything else.

Decoding goes through pydicom 3's pixel decoders (pylibjpeg plugins for JPEG Baseline/Extended,
JPEG Lossless, JPEG-LS, JPEG 2000; pydicom or pylibjpeg-rle for RLE; numpy for uncompressed
little/big endian, implicit/explicit VR). MPEG-2 / H.264 / HEVC encapsulated clips are handed to
PyAV. The header is checked (object type, modality, frame count, frame size) before any pixel
buffer is allocated.

Example::

    clip = read_dicom("study/IM0001.dcm", max_frames=512)
    clip.frames.shape  # (F, H, W, 3), uint8 RGB
    clip.fps, clip.meta["StudyInstanceUID"]
"""

from __future__ import annotations

import copy
import io
import os
import warnings
from collections.abc import Iterable
from typing import Any, BinaryIO

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MPEGTransferSyntaxes,
)

from echoprime.io.deflate import DeflatedPixels, read_deflated
from echoprime.io.dicom_checks import (
    PARSE_ERRORS,
    check_decoded_size,
    check_encapsulated,
    check_object,
    check_pixels,
    decoder_for,
    geometry,
    header_str,
)
from echoprime.io.dicom_pixels import to_rgb
from echoprime.io.errors import (
    DicomDecodeError,
    EchoIOError,
    file_boundary,
    public_text,
)
from echoprime.io.types import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    FileReport,
    Source,
    VideoData,
    check_frame_limits,
    is_bytes,
    source_name,
)
from echoprime.io.video import read_video

_META_STR = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "PhotometricInterpretation",
)
_META_INT = (
    "NumberOfFrames",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "BitsStored",
    "SeriesNumber",
    "InstanceNumber",
)


def _sniff(head: bytes) -> str:
    """A hint for errors about what a non-DICOM file seems to be."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return " (its content looks like an MP4/MOV video)"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return " (its content looks like an AVI video)"
    if head[:3] == b"\xff\xd8\xff":
        return " (its content looks like a JPEG image)"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return " (its content looks like a PNG image)"
    return ""


def _peek_file_meta(fh: BinaryIO) -> tuple[FileMetaDataset | None, int]:
    """The file meta group and where the data set starts, without reading the data set (a
    deflated data set must not reach pydicom, which inflates it whole); ``(None, 0)`` when the
    start of the file does not parse (the full read then says precisely why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_preamble(fh, True)
            # pydicom's own file-meta reader (private in pydicom 3.0, which pyproject pins): the
            # group-2 rules (explicit VR, implicit fallback) are not worth a second copy here.
            meta = _read_file_meta_info(fh)
            return meta, fh.tell()
    except Exception:  # noqa: BLE001  (a peek: any failure falls through to the full read)
        return None, 0
    finally:
        fh.seek(0)


NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian})

DEFER_BYTES = 1 << 20
"""A native file read from a path leaves elements larger than this (its Pixel Data) unread:
:func:`_native_8bit` reads only the frames it keeps, at their offsets in the file."""


def _read_dataset(
    src: Source, name: str | None, *, stop_before_pixels: bool
) -> tuple[Dataset, DeflatedPixels | None]:
    """Parse a DICOM data set from a path or bytes, with or without the 128-byte preamble.

    A path whose file meta names a native (uncompressed) transfer syntax is read with its
    large elements deferred (:data:`DEFER_BYTES`): pydicom reads them from the file when first
    used, and the native frame reader takes just the frames it needs.

    Returns:
        The data set, and for a deflated data set read with its pixels its Pixel Data element
        still deflated (:mod:`echoprime.io.deflate`: inflated only once the caller checked the
        header against its limits); ``None`` otherwise.
    """
    path = source_name(src, name)
    try:
        # Paths are parsed from the open file (no extra copy of a large cine in memory).
        fh: BinaryIO = io.BytesIO(bytes(src)) if is_bytes(src) else open(src, "rb")  # type: ignore[arg-type]  # noqa: SIM115
    except OSError as e:
        raise DicomDecodeError(path, f"cannot read the file: {e.strerror or e}") from e
    pixels: DeflatedPixels | None = None
    with fh:
        try:
            head = fh.read(132)
            size = fh.seek(0, io.SEEK_END)
            fh.seek(0)
        except OSError as e:
            raise DicomDecodeError(path, f"cannot read the file: {e.strerror or e}") from e
        if size == 0:
            raise DicomDecodeError(path, "the file is empty (0 bytes)")
        file_meta, body_at = _peek_file_meta(fh)
        # pydicom reports a file cut inside an element only as a warning and returns what it
        # has; record warnings so that truncation becomes an error that says so.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            notes: list[str] = []
            try:
                if (
                    file_meta is not None
                    and file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
                ):
                    fh.seek(body_at)
                    ds, pixels, notes = read_deflated(io.BytesIO(fh.read()), path, file_meta)
                elif head[128:132] == b"DICM":
                    native = (
                        not is_bytes(src)
                        and file_meta is not None
                        and file_meta.get("TransferSyntaxUID") in NATIVE_SYNTAXES
                    )
                    ds = pydicom.dcmread(
                        fh,
                        stop_before_pixels=stop_before_pixels,
                        defer_size=DEFER_BYTES if native and not stop_before_pixels else None,
                    )
                else:
                    ds = _read_without_preamble(fh, head, path, stop_before_pixels)
            except EchoIOError:
                raise
            except OSError as e:
                if e.errno is None:  # pydicom's parser raises OSError for malformed elements too
                    raise DicomDecodeError(path, f"not a readable DICOM file: {public_text(e)}") from e
                raise DicomDecodeError(path, f"cannot read the file: {e.strerror or e}") from e
            except PARSE_ERRORS as e:
                raise DicomDecodeError(
                    path, f"not a readable DICOM file: {type(e).__name__}: {public_text(e)}"
                ) from e
    for msg in [str(w.message) for w in caught] + notes:
        if "End of file reached" in msg or "truncated" in msg.lower():
            raise DicomDecodeError(path, f"the file is truncated ({size} bytes): {public_text(msg)}")
    if "TransferSyntaxUID" not in ds.file_meta:
        # Raw data sets (no file meta) carry their encoding only implicitly; the pixel decoders
        # need it spelled out.
        implicit, little = ds.original_encoding
        ts = (
            ImplicitVRLittleEndian
            if implicit
            else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
        )
        ds.file_meta.TransferSyntaxUID = ts
    return ds, (None if stop_before_pixels else pixels)


def _read_without_preamble(fh: BinaryIO, head: bytes, path: str | None, stop_before_pixels: bool) -> Dataset:
    """A raw DICOM data set (no preamble, no 'DICM'): force-read, then insist it looks like one."""
    reason = f"not DICOM: no 'DICM' marker at byte 128 and no DICOM data set at the start{_sniff(head)}"
    try:
        ds = pydicom.dcmread(fh, force=True, stop_before_pixels=stop_before_pixels)
        # Force-reading arbitrary bytes "succeeds" with nonsense elements; a real data set has an
        # SOP class or image geometry, and its elements parse.
        plausible = any(k in ds for k in ("SOPClassUID", "Rows", "PixelData", "StudyInstanceUID"))
        if plausible:
            for elem in ds:
                _ = elem.value
    except PARSE_ERRORS as e:
        raise DicomDecodeError(path, reason) from e
    if not plausible:
        raise DicomDecodeError(path, reason)
    return ds


def _int(ds: Dataset, key: str, default: int | None = None) -> int | None:
    try:
        v = ds.get(key)
        return default if v is None or v == "" else int(v)
    except (*PARSE_ERRORS, ArithmeticError):
        return default


def _meta(ds: Dataset) -> dict[str, Any]:
    """Identifying-free facts of the header (UIDs, encoding, geometry); never patient fields."""
    meta: dict[str, Any] = {"format": "dicom"}
    for k in _META_STR:
        meta[k] = header_str(ds, k)
    for k in _META_INT:
        meta[k] = _int(ds, k)
    if meta["NumberOfFrames"] is None and meta["Rows"]:
        meta["NumberOfFrames"] = 1  # an image without the tag is a single frame
    ts = ds.file_meta.get("TransferSyntaxUID")
    meta["TransferSyntaxUID"] = None if ts is None else str(ts)
    meta["n_frames"] = meta["NumberOfFrames"] or 0
    meta["rows"] = meta["Rows"] or 0
    meta["cols"] = meta["Columns"] or 0
    return meta


def dicom_fps(ds: Dataset) -> tuple[float | None, str | None]:
    """Frame rate of a cine, from the first tag that gives a usable one.

    Order: FrameTime (ms per frame), FrameTimeVector (ms between frames; mean of all but the
    first entry, which is 0 by definition), CineRate, RecommendedDisplayFrameRate.

    Args:
        ds: The data set.

    Returns:
        ``(fps, tag keyword)``, or ``(None, None)`` when no tag gives a rate in (0, 1000].
    """

    def ok(f: float) -> bool:
        return 0.0 < f <= 1000.0 and np.isfinite(f)

    try:
        ft = ds.get("FrameTime")
        if ft is not None and ft != "" and float(ft) > 0 and ok(1000.0 / float(ft)):
            return 1000.0 / float(ft), "FrameTime"
    except (*PARSE_ERRORS, ArithmeticError):
        pass  # a malformed tag: try the next one
    try:
        ftv = ds.get("FrameTimeVector")
        if ftv is not None and not isinstance(ftv, (str, bytes)):
            steps = [float(v) for v in list(ftv)[1:] if float(v) > 0]
            if steps and ok(1000.0 / float(np.mean(steps))):
                return 1000.0 / float(np.mean(steps)), "FrameTimeVector"
    except (*PARSE_ERRORS, ArithmeticError):
        pass
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        try:
            v = ds.get(key)
            if v is not None and v != "" and ok(float(v)):
                return float(v), key
        except (*PARSE_ERRORS, ArithmeticError):
            pass
    return None, None


def dicom_header(src: Source, *, name: str | None = None) -> dict[str, Any]:
    """Read a DICOM header without its pixel data (for grouping, listing, rejecting early).

    Args:
        src: Path or bytes.
        name: Name for errors when ``src`` is bytes.

    Returns:
        The same ``meta`` dict :func:`read_dicom` puts in its :class:`VideoData`, plus ``fps`` and
        ``fps_source``.

    Raises:
        DicomDecodeError: Not DICOM, unreadable or truncated header (and anything else the
            file's content makes a library raise: :class:`~echoprime.io.errors.file_boundary`).
    """
    with file_boundary(source_name(src, name), DicomDecodeError):
        ds, _ = _read_dataset(src, name, stop_before_pixels=True)
        meta = _meta(ds)
        meta["fps"], meta["fps_source"] = dicom_fps(ds)
        return meta


def read_dicom(
    src: Source,
    *,
    name: str | None = None,
    max_frames: int | None = None,
    step: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    modalities: tuple[str, ...] | None = ("US",),
) -> VideoData:
    """Decode a DICOM cine clip to RGB frames.

    Every limit is checked from the header before the allocation it prevents: frame count and
    size (:func:`~echoprime.io.types.check_frame_limits`), the size of native pixel data, each
    JPEG / JPEG 2000 frame's own SOF / SIZ size against Rows/Columns, and a deflated data set's
    inflated size (:mod:`echoprime.io.deflate`). Whatever else the file makes a library raise
    becomes a :class:`DicomDecodeError` (:class:`~echoprime.io.errors.file_boundary`).

    Args:
        src: Path or the file's bytes.
        name: Name used in errors and reports when ``src`` is bytes.
        max_frames: Decode at most this many frames from the start (``None``: all).
        step: Keep only frames ``0, step, 2 * step, ...`` of those; the others are never decoded
            (each frame of a native or JPEG-family file is its own run of bytes) or, for MPEG
            streams, decoded but not converted (what a clip sampled at stride ``step`` needs:
            :meth:`~echoprime.preprocess.PreprocessSpec.clip_reading`).
        max_pixels: Refuse frames with more than this many pixels (rows x columns).
        max_bytes: Refuse clips whose decoded RGB frames would exceed this many bytes.
        modalities: Accepted values of Modality (``None`` accepts any). A missing Modality is accepted.

    Returns:
        ``VideoData`` with ``frames`` ``F x H x W x 3`` uint8 RGB (``F >= 2`` unless
        ``max_frames < 2`` or ``step > 1``), ``fps`` from the frame-timing tags and header
        ``meta`` (``n_frames``: the header's count, not ``F``).

    Raises:
        DicomDecodeError: Not DICOM, truncated, no pixel data, a header value of the wrong kind,
            or the pixel data fails to decode.
        UnsupportedTransferSyntax: No decoder for the transfer syntax.
        NotUltrasoundError: A report, waveform, directory or an image of another modality.
        NotAVideoError: A still image (one frame) or no frames.
        FrameTooLargeError: The header claims frames or a clip larger than the limits.
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    path = source_name(src, name)
    with file_boundary(path, DicomDecodeError):
        ds, deflated = _read_dataset(src, name, stop_before_pixels=False)
        check_object(ds, path, modalities)
        meta = _meta(ds)
        rows, cols, n_src = geometry(ds, path)
        if deflated is None:  # (a deflated data set's Pixel Data exists, still deflated)
            check_pixels(ds, path)
        n = check_frame_limits(
            path,
            n_frames=n_src,
            rows=rows,
            cols=cols,
            max_frames=max_frames,
            max_pixels=max_pixels,
            max_bytes=max_bytes,
        )
        keep = range(0, n, step)  # the frames decoded
        check_decoded_size(ds, path, len(keep), rows, cols, max_bytes)
        fps, fps_source = dicom_fps(ds)
        ts = UID(meta["TransferSyntaxUID"])
        if deflated is not None:
            ds = deflated.load(ds, n)
        if ts in MPEGTransferSyntaxes:
            frames, decoder_name = _decode_mpeg(ds, path, n, step, max_pixels, max_bytes), "pyav"
        else:
            decoder_for(ts, path)  # an unknown syntax is named before its pixel data is looked at
            check_encapsulated(ds, path, ts, n, n_src, rows, cols)
            frames, decoder_name = _decode_frames(ds, src, path, ts, keep), "pydicom"
        meta.update(decoder=decoder_name, fps_source=fps_source, step=step)
        return VideoData(frames=frames, fps=fps, meta=meta)


def _decode_frames(ds: Dataset, src: Source, path: str | None, ts: UID, keep: range) -> np.ndarray:
    """Decode frames ``keep`` (a range from 0) with pydicom's decoder for ``ts``, convert to RGB."""
    decoder = decoder_for(ts, path)
    n_src = _int(ds, "NumberOfFrames", 1) or 1
    n = len(keep)
    deferred = _deferred_pixels(ds, src)
    if decoder.is_native:
        try:
            expected = int(get_expected_length(ds, unit="bytes"))
        except PARSE_ERRORS as e:
            raise DicomDecodeError(path, f"inconsistent image header: {public_text(e)}") from e
        have = deferred[1] if deferred is not None else len(ds.PixelData)
        if have < expected:
            raise DicomDecodeError(
                path,
                f"the file is truncated: Pixel Data has {have} bytes, the header needs {expected} "
                f"({n_src} frames of {ds.get('Rows')} x {ds.get('Columns')})",
            )
    try:
        if keep.step == 1 and n >= n_src:
            # YBR -> RGB in to_rgb, frame by frame. No excess frames: pydicom would otherwise return
            # every frame the pixel bytes hold beyond NumberOfFrames (found by bench/fuzz_readers.py:
            # 37 frames out of a header declaring 11, past max_frames and the checked sizes).
            arr, info = decoder.as_array(ds, as_rgb=False, allow_excess_frames=False)
        elif (
            decoder.is_native
            and (fast := _native_8bit(ds, keep, n_src, expected, src, path, deferred)) is not None
        ):
            arr, info = fast
        elif decoder.is_native and expected % n_src == 0:
            # Native frames are fixed-size runs of bytes: decode the kept ones as a clip of n
            # frames. (pydicom 3.0's frame iterator places native 4:2:2 frames at the offsets of
            # full-size ones, reading frame 1 on from the wrong bytes.)
            arr, info = decoder.as_array(
                _some_frames(ds, keep, expected // n_src), as_rgb=False, allow_excess_frames=False
            )
        else:
            # Decode only what is kept; pydicom locates frames (offset table or JPEG markers).
            frames = decoder.iter_array(ds, indices=keep, as_rgb=False, allow_excess_frames=False)
            first, info = next(frames)
            arr = np.empty((n, *first.shape), first.dtype)  # n x H x W [x 3]
            arr[0] = first
            for i, (frame, _) in enumerate(frames, start=1):
                arr[i] = frame
    except (*PARSE_ERRORS, RuntimeError) as e:
        raise DicomDecodeError(path, f"pixel data ({ts.name}) failed to decode: {public_text(e)}") from e
    spp = int(info.get("samples_per_pixel", 1))
    if arr.ndim == (2 if spp == 1 else 3):  # one frame decoded while the header says more
        arr = arr[None]  # H x W [x 3] -> 1 x H x W [x 3]
    arr = arr[:n]  # never more frames than were checked against the limits
    return np.ascontiguousarray(to_rgb(arr, str(info["photometric_interpretation"]), ds, path))


def _deferred_pixels(ds: Dataset, src: Source) -> tuple[int, int] | None:
    """``(offset in the file, bytes there)`` of a Pixel Data value left unread (see
    :data:`DEFER_BYTES`); ``None`` when it was read with the data set. The byte count is what the
    file holds from the offset on, at most the element's stated length: a cut file says so."""
    if is_bytes(src):
        return None
    try:
        raw = ds.get_item("PixelData", keep_deferred=True)
    except PARSE_ERRORS:
        return None
    if raw is None or getattr(raw, "value", b"") is not None or getattr(raw, "value_tell", None) is None:
        return None
    try:
        size = os.stat(src).st_size  # type: ignore[arg-type]
    except OSError:
        return None
    offset = int(raw.value_tell)
    return offset, max(0, min(int(raw.length), size - offset))


def _native_8bit(
    ds: Dataset,
    keep: range,
    n_src: int,
    expected: int,
    src: Source,
    path: str | None,
    deferred: tuple[int, int] | None,
) -> tuple[np.ndarray, dict] | None:
    """Frames ``keep`` of native 8-bit unsigned pixel data with interleaved samples (what nearly
    every uncompressed echo is), taken straight from the Pixel Data bytes (read from the file at
    their offsets when the value was deferred): the values pydicom's ``as_array(as_rgb=False)``
    gives, without reading or copying the other frames. ``None`` for any other layout (planar,
    16-bit, signed, subsampled 4:2:2), which pydicom then decodes."""
    spp = _int(ds, "SamplesPerPixel", 1) or 1
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    if (
        _int(ds, "BitsAllocated", 0) != 8
        or _int(ds, "BitsStored", 8) != 8
        or _int(ds, "PixelRepresentation", 0) != 0
        or spp not in (1, 3)
        or (spp == 3 and _int(ds, "PlanarConfiguration", 0) != 0)
        or rows < 1
        or cols < 1
        or expected != n_src * rows * cols * spp
    ):
        return None
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric.endswith("_422") or photometric.endswith("_420"):
        return None
    shape = (n_src, rows, cols, spp) if spp == 3 else (n_src, rows, cols)
    info = {"samples_per_pixel": spp, "photometric_interpretation": photometric}
    if deferred is None:
        whole = np.frombuffer(ds.PixelData, np.uint8, count=expected).reshape(shape)  # a view, no copy
        return whole[keep.start : keep.stop : keep.step].copy(), info  # only the kept frames copied
    frame_bytes = expected // n_src
    arr = np.empty((len(keep), *shape[1:]), np.uint8)
    with open(src, "rb") as fh:  # type: ignore[arg-type]
        for k, i in enumerate(keep):
            fh.seek(deferred[0] + i * frame_bytes)
            if fh.readinto(memoryview(arr[k]).cast("B")) != frame_bytes:
                raise DicomDecodeError(path, f"the file is truncated: frame {i} ends past its end")
    return arr, info


def _some_frames(ds: Dataset, keep: range, frame_bytes: int) -> Dataset:
    """A new data set with ``ds``'s image pixel description (group 0028, copied) and only the
    native frames ``keep``; ``ds`` itself is not changed."""
    part = Dataset()
    part.file_meta = ds.file_meta
    for elem in ds.group_dataset(0x0028):
        part.add(copy.deepcopy(elem))
    part.NumberOfFrames = len(keep)
    data = ds.PixelData
    if keep.step == 1:
        part.PixelData = data[: len(keep) * frame_bytes]
    else:
        part.PixelData = b"".join(data[i * frame_bytes : (i + 1) * frame_bytes] for i in keep)
    return part


def _decode_mpeg(
    ds: Dataset, path: str | None, n: int, step: int, max_pixels: int, max_bytes: int
) -> np.ndarray:
    """MPEG-2 / H.264 / HEVC in DICOM: the fragments hold one elementary stream; PyAV decodes it."""
    from pydicom.encaps import generate_fragments

    try:
        stream = b"".join(generate_fragments(ds.PixelData))
    except PARSE_ERRORS as e:
        raise DicomDecodeError(path, f"encapsulated MPEG pixel data is malformed: {public_text(e)}") from e
    try:
        clip = read_video(
            stream, name=path, max_frames=n, step=step, max_pixels=max_pixels, max_bytes=max_bytes
        )
    except EchoIOError as e:
        raise DicomDecodeError(path, f"encapsulated video stream: {e.reason}") from e
    return clip.frames


def group_by_study(
    paths: Iterable[Source], *, rejects: list[FileReport] | None = None
) -> dict[str, list[str]]:
    """Group DICOM files by StudyInstanceUID, reading headers only.

    Args:
        paths: DICOM file paths.
        rejects: If given, files whose header cannot be read (or that have no StudyInstanceUID)
            are appended here as skipped :class:`FileReport` rows and grouping goes on; if
            ``None``, the first such file raises.

    Returns:
        ``{StudyInstanceUID: [path, ...]}``; studies and their files keep the input order.

    Raises:
        DicomDecodeError: A bad header, when ``rejects`` is ``None``.
    """
    groups: dict[str, list[str]] = {}
    for p in paths:
        try:
            meta = dicom_header(p)
            uid = meta["StudyInstanceUID"]
            if not uid:
                raise DicomDecodeError(str(p), "no StudyInstanceUID: cannot tell which study it belongs to")
        except EchoIOError as e:
            if rejects is None:
                raise
            rejects.append(FileReport(path=str(p), status="skipped", reason=e.reason, code=e.code))
            continue
        groups.setdefault(uid, []).append(str(p))
    return groups
