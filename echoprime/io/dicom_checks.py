"""What a DICOM header must say before any of its pixels is decoded.

:func:`echoprime.io.dicom.read_dicom` runs these checks in order, each from the header alone: the
object is an ultrasound image (:func:`check_object`), Rows/Columns/NumberOfFrames are single
integers (:func:`geometry`), Pixel Data is there (:func:`check_pixels`), the decoder's array fits
the limit (:func:`check_decoded_size`), a decoder exists (:func:`decoder_for`), and each
encapsulated frame's own codestream header agrees with Rows/Columns (:func:`check_encapsulated`).
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
    MPEGTransferSyntaxes,
)

from echoprime.io.codestream import CodestreamError, j2k_frame_size, jpeg_frame_size
from echoprime.io.errors import (
    DicomDecodeError,
    FrameTooLargeError,
    NotAVideoError,
    NotUltrasoundError,
    UnsupportedTransferSyntax,
    public_text,
)

# SOP classes that can never hold an ultrasound clip: reports, waveforms, directories,
# presentation states, encapsulated documents, raw data. Checked by UID prefix.
NON_IMAGE_SOP_PREFIXES = {
    "1.2.840.10008.5.1.4.1.1.88.": "a structured report",
    "1.2.840.10008.5.1.4.1.1.9.": "a waveform (ECG, audio, ...)",
    "1.2.840.10008.5.1.4.1.1.11.": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.104.": "an encapsulated document",
    "1.2.840.10008.5.1.4.1.1.66": "raw data",
    "1.2.840.10008.1.3.10": "a DICOMDIR (media storage directory)",
    "1.2.840.10008.5.1.4.1.1.481.": "a radiotherapy object",
}
# Errors pydicom raises on malformed input while parsing; turned into DicomDecodeError with the cause.
PARSE_ERRORS = (
    InvalidDicomError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    NotImplementedError,
    OverflowError,
    struct.error,
)


def header_str(ds: Dataset, key: str) -> str | None:
    """A text attribute stripped, or ``None`` when absent, empty or unreadable (for messages)."""
    try:
        v = ds.get(key)
    except PARSE_ERRORS:
        return None
    return None if v is None or v == "" else str(v).strip()


def check_object(ds: Dataset, path: str | None, modalities: tuple[str, ...] | None) -> None:
    """Refuse objects that are not ultrasound images, from the header alone."""
    sop = header_str(ds, "SOPClassUID") or ""
    for prefix, what in NON_IMAGE_SOP_PREFIXES.items():
        if sop.startswith(prefix):
            raise NotUltrasoundError(path, f"SOP class {sop} ({UID(sop).name}) is {what}, not an image")
    modality = header_str(ds, "Modality")
    if modality is not None and modalities is not None and modality.upper() not in modalities:
        raise NotUltrasoundError(path, f"modality {modality!r}, expected one of {list(modalities)}")


def check_pixels(ds: Dataset, path: str | None) -> None:
    """Refuse a data set without (or with empty) Pixel Data."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise NotUltrasoundError(path, "float pixel data (a parametric map), not an ultrasound image")
        image_class = (header_str(ds, "SOPClassUID") or "").startswith("1.2.840.10008.5.1.4.1.1.")
        hint = " (the file may be truncated)" if image_class or "Rows" in ds or len(ds) == 0 else ""
        raise DicomDecodeError(path, f"no Pixel Data element (7FE0,0010){hint}")
    raw = ds.get_item("PixelData", keep_deferred=True)
    # A value left unread (a native file read from a path, echoprime.io.dicom.DEFER_BYTES) is
    # judged by its stated length, not read here.
    deferred = raw is not None and getattr(raw, "value", b"") is None
    if (raw.length == 0) if deferred else not ds.PixelData:  # type: ignore[union-attr]
        hint = " (the file may be truncated)" if "Rows" in ds else ""
        raise DicomDecodeError(
            path, f"the Pixel Data element is empty (0 bytes){hint}; expected the frames' pixels"
        )


def _show(v: object) -> str:
    """A header value for an error message: its repr, cut short."""
    text = repr(v[:24] if isinstance(v, (bytes, bytearray)) else v)
    return text if len(text) <= 40 else text[:37] + "..."


def header_int(ds: Dataset, keyword: str, path: str | None, meaning: str) -> int | None:
    """An integer attribute of the image description, strictly: ``None`` when absent or empty,
    a :class:`DicomDecodeError` naming the attribute, its VR and value when it is there but not
    a single integer (a wrong VR, text, a sequence, several values)."""
    if keyword not in ds:
        return None
    try:
        elem = ds[keyword]
        value = elem.value
    except Exception as e:  # noqa: BLE001  (pydicom's value converters raise many kinds)
        raise DicomDecodeError(
            path, f"{keyword} cannot be decoded ({public_text(e)}); expected {meaning}"
        ) from None
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (bytes, bytearray, str)) and not str(value).strip().lstrip("+-").isdigit():
            raise ValueError
        number = int(value)  # type: ignore[call-overload]
        if number != float(value):  # type: ignore[arg-type]
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise DicomDecodeError(
            path, f"{keyword} is not an integer: VR {elem.VR}, value {_show(value)}; expected {meaning}"
        ) from None
    return number


def geometry(ds: Dataset, path: str | None) -> tuple[int, int, int]:
    """``(rows, cols, frames)`` the header declares, each a checked integer (a missing
    NumberOfFrames means one frame)."""
    rows = header_int(ds, "Rows", path, "the frame height in pixels") or 0
    cols = header_int(ds, "Columns", path, "the frame width in pixels") or 0
    frames = header_int(ds, "NumberOfFrames", path, "the number of frames")
    if frames is not None and frames < 0:
        raise NotAVideoError(
            path, f"NumberOfFrames is {frames}; expected the number of frames (>= 2 for a cine)"
        )
    return rows, cols, 1 if frames is None else frames


def check_decoded_size(ds: Dataset, path: str | None, n: int, rows: int, cols: int, max_bytes: int) -> None:
    """Refuse, from the header, a clip whose decoded samples would exceed ``max_bytes``.

    :func:`check_frame_limits` bounds the uint8 RGB result; the decoder's own array comes first
    and can be several times larger (16- to 64-bit samples, 3 or 4 samples per pixel).
    """
    spp = header_int(ds, "SamplesPerPixel", path, "the samples per pixel (1 or 3)") or 1
    bits = header_int(ds, "BitsAllocated", path, "the bits per sample (1, 8, 16, 32 or 64)") or 8
    decoded = n * rows * cols * max(spp, 1) * max(1, -(-bits // 8))
    if decoded > max_bytes:
        raise FrameTooLargeError(
            path,
            f"decoding {n} frames of {rows} x {cols} x {spp} samples of {bits} bits needs {decoded} bytes, "
            f"more than the limit of {max_bytes}; refused before decoding",
        )


def check_encapsulated(
    ds: Dataset, path: str | None, ts: UID, n: int, n_src: int, rows: int, cols: int
) -> None:
    """Before any decoder runs: the encapsulated Pixel Data holds the first ``n`` frames, and
    each JPEG / JPEG-LS / JPEG 2000 frame's own header (SOF / SIZ, which the decoder sizes its
    output by) states exactly Rows x Columns."""
    if not ts.is_encapsulated or ts in MPEGTransferSyntaxes:
        return
    data = ds.PixelData
    if bytes(data[:4]) != b"\xfe\xff\x00\xe0":
        raise DicomDecodeError(
            path,
            f"Pixel Data is not encapsulated (no item tag (FFFE,E000) at its start) although the "
            f"transfer syntax {ts.name} requires it",
        )
    kind, size_of = None, None
    if ts in JPEGTransferSyntaxes or ts in JPEGLSTransferSyntaxes:
        kind, size_of = "JPEG", jpeg_frame_size
    elif ts in JPEG2000TransferSyntaxes:
        kind, size_of = "JPEG 2000", j2k_frame_size
    extended = None
    if "ExtendedOffsetTable" in ds and "ExtendedOffsetTableLengths" in ds:
        extended = (ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths)
    frames = generate_frames(data, number_of_frames=n_src, extended_offsets=extended)
    for k in range(n):
        try:
            frame = next(frames)
        except StopIteration:
            raise DicomDecodeError(
                path, f"encapsulated Pixel Data holds {k} frames; NumberOfFrames declares {n_src}"
            ) from None
        except Exception as e:  # noqa: BLE001  (pydicom's item parser: ValueError, struct.error, ...)
            raise DicomDecodeError(
                path, f"encapsulated Pixel Data is malformed at frame {k}: {public_text(e)}"
            ) from None
        if size_of is None:
            continue
        try:
            f_rows, f_cols = size_of(frame)
        except CodestreamError as e:
            raise DicomDecodeError(path, f"{kind} frame {k} {e}; expected a {kind} codestream") from None
        if f_rows > rows or f_cols > cols:
            raise DicomDecodeError(
                path,
                f"{kind} frame {f_rows}x{f_cols} exceeds Rows/Columns {rows}x{cols} (frame {k}); "
                "refused before decoding",
            )
        if (f_rows, f_cols) != (rows, cols):
            raise DicomDecodeError(
                path, f"{kind} frame {f_rows}x{f_cols} does not match Rows/Columns {rows}x{cols} (frame {k})"
            )


def decoder_for(ts: UID, path: str | None) -> Any:
    """pydicom's pixel data decoder for ``ts``, or why there is none."""
    try:
        decoder = get_decoder(ts)
    except (NotImplementedError, ValueError) as e:  # ValueError: the UID is no transfer syntax
        raise UnsupportedTransferSyntax(
            path, f"transfer syntax {ts} ({ts.name}) has no pixel data decoder in pydicom"
        ) from e
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "a decoding plugin"
        raise UnsupportedTransferSyntax(path, f"transfer syntax {ts} ({ts.name}) needs {needs}")
    return decoder
