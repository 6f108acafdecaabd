"""Hand-built DICOM, MP4 and AVI bytes for the hostile corpus and the readers' property tests.

Explicit VR little endian elements written byte by byte (:func:`element`), so that a test can
write what no DICOM writer would: a wrong VR, a length past the end of the file, sequences nested
100 000 deep, a pixel element declaring 2 GiB, a JPEG whose SOF header lies. Only the tests and
``bench/fuzz_readers.py`` use this module.
"""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np

STUDY_UID = "1.2.826.0.1.3680043.8.498.17"
"""StudyInstanceUID of every DICOM in the corpus that has a readable header."""

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
H264 = "1.2.840.10008.1.2.4.102"

ROWS, COLS = 64, 64
"""Geometry that most hand-built DICOMs of the corpus declare."""

WRITING_STUDY = [STUDY_UID]  # the StudyInstanceUID of the corpus being written (see write_hostile_corpus)


LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR"}
UNDEFINED = 0xFFFFFFFF


def pad(value: bytes, fill: bytes = b" ") -> bytes:
    return value + fill if len(value) % 2 else value


def element(tag: int, vr: str | bytes, value: bytes, length: int | None = None) -> bytes:
    """One explicit VR little endian element (``length`` overrides the encoded length)."""
    v = vr.encode() if isinstance(vr, str) else vr
    n = len(value) if length is None else length
    if v in LONG_VRS:
        return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, v, 0, n) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, v, n & 0xFFFF) + value


def ui(uid: str) -> bytes:
    return pad(uid.encode(), b"\0")


def txt(s: str) -> bytes:
    return pad(s.encode())


def us(*v: int) -> bytes:
    return struct.pack(f"<{len(v)}H", *v)


def file_meta(ts: str, sop_class: str = US_MULTIFRAME, sop: str = "1.2.3.4") -> bytes:
    """128-byte preamble, 'DICM' and the file meta group with its group length."""
    elems = (
        element(0x00020001, "OB", b"\0\1")
        + element(0x00020002, "UI", ui(sop_class))
        + element(0x00020003, "UI", ui(sop))
        + element(0x00020010, "UI", ui(ts))
        + element(0x00020012, "UI", ui("1.2.826.0.1.3680043.8.498.1"))
    )
    return b"\0" * 128 + b"DICM" + element(0x00020000, "UL", struct.pack("<I", len(elems))) + elems


def image_header(
    *,
    rows: int = ROWS,
    cols: int = COLS,
    frames: int | str | None = 4,
    spp: int = 1,
    bits: int = 8,
    stored: int | None = None,
    signed: int = 0,
    photometric: str = "MONOCHROME2",
    modality: str = "US",
    sop_class: str = US_MULTIFRAME,
    study_uid: str | None = None,
    index: int = 0,
    extra: dict[int, bytes] | None = None,
    drop: tuple[int, ...] = (),
) -> bytes:
    """The data set elements before Pixel Data of an ultrasound multi-frame image, ascending.

    Args:
        frames: NumberOfFrames (an int, a raw IS string, or ``None`` to leave it out).
        extra: Whole encoded elements to add (tag -> bytes), or to replace a default one.
        drop: Tags to leave out.
        study_uid: StudyInstanceUID (default: the one :func:`write_hostile_corpus` is writing).
    """
    study_uid = study_uid or WRITING_STUDY[0]
    stored = bits if stored is None else stored
    els: dict[int, bytes] = {
        0x00080016: element(0x00080016, "UI", ui(sop_class)),
        0x00080018: element(0x00080018, "UI", ui(f"1.2.826.0.1.3680043.8.498.17.{index}")),
        0x00080060: element(0x00080060, "CS", txt(modality)),
        0x00181063: element(0x00181063, "DS", txt("33.3")),
        0x0020000D: element(0x0020000D, "UI", ui(study_uid)),
        0x0020000E: element(0x0020000E, "UI", ui(f"1.2.826.0.1.3680043.8.498.18.{index}")),
        0x00280002: element(0x00280002, "US", us(spp)),
        0x00280004: element(0x00280004, "CS", txt(photometric)),
        0x00280010: element(0x00280010, "US", us(rows & 0xFFFF)),
        0x00280011: element(0x00280011, "US", us(cols & 0xFFFF)),
        0x00280100: element(0x00280100, "US", us(bits)),
        0x00280101: element(0x00280101, "US", us(stored)),
        0x00280102: element(0x00280102, "US", us(max(stored - 1, 0))),
        0x00280103: element(0x00280103, "US", us(signed)),
    }
    if spp > 1:
        els[0x00280006] = element(0x00280006, "US", us(0))
    if frames is not None:
        els[0x00280008] = element(0x00280008, "IS", txt(str(frames)))
    els.update(extra or {})
    for t in drop:
        els.pop(t, None)
    return b"".join(els[t] for t in sorted(els))


def native_pixels(data: bytes, vr: str = "OB", length: int | None = None) -> bytes:
    """A native Pixel Data element."""
    return element(0x7FE00010, vr, pad(data, b"\0"), length)


def encapsulated(frames: list[bytes], *, bot: bool = True, delimiter: bool = True) -> bytes:
    """An encapsulated Pixel Data element: offset table item, one fragment per frame, delimiter."""
    item = lambda b: struct.pack("<HHI", 0xFFFE, 0xE000, len(b)) + b  # noqa: E731
    frags = [pad(f, b"\0") for f in frames]
    offsets, pos = [], 0
    for f in frags:
        offsets.append(pos)
        pos += 8 + len(f)
    table = struct.pack(f"<{len(offsets)}I", *offsets) if bot else b""
    out = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, UNDEFINED) + item(table)
    out += b"".join(item(f) for f in frags)
    return out + (struct.pack("<HHI", 0xFFFE, 0xE0DD, 0) if delimiter else b"")


def grey_clip(n: int = 4, rows: int = ROWS, cols: int = COLS, seed: int = 0) -> np.ndarray:
    """``n x rows x cols`` uint8: a bright moving disc on speckle, so decoding is visible."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    out = rng.integers(0, 60, (n, rows, cols), dtype=np.uint8)
    for t in range(n):
        disc = (yy - rows / 2) ** 2 + (xx - cols / 3 - t) ** 2 < (min(rows, cols) / 5) ** 2
        out[t][disc] = 220
    return out


def jpeg_frame(frame: np.ndarray) -> bytes:
    """A greyscale JPEG Baseline codestream of one ``H x W`` uint8 frame."""
    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG frame")
    return buf.tobytes()


def set_sof_size(jpeg: bytes, rows: int, cols: int) -> bytes:
    """The codestream with its SOF0 header's height and width replaced (nothing else changed)."""
    i = jpeg.index(b"\xff\xc0")
    return jpeg[: i + 5] + struct.pack(">HH", rows, cols) + jpeg[i + 9 :]


def dicom_file(ts: str, header: bytes, pixels: bytes, trailer: bytes = b"") -> bytes:
    return file_meta(ts) + header + pixels + trailer


def raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def zero_bomb(prefix: bytes, gib: float) -> bytes:
    """A raw deflate stream of ``prefix`` and then ``gib`` GiB of zero bytes, built in
    milliseconds: after a full flush, the compressed form of each 1 MiB of zeros is the same
    bytes, so one block is repeated."""
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    mib = bytes(1 << 20)
    block = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(mib) + c.flush(zlib.Z_FULL_FLUSH)
    if block != again:
        raise RuntimeError("zlib did not repeat its full-flush block; cannot build the bomb cheaply")
    return head + block * int(gib * 1024) + c.flush(zlib.Z_FINISH)


def nested_sequence(depth: int, defined: bool) -> bytes:
    """A sequence element nested ``depth`` levels deep, each level one item holding the next.

    Built as prefixes + innermost element + suffixes (one join, not ``depth`` growing copies)."""
    inner = element(0x00100010, "PN", txt("NESTED"))
    sq = struct.pack("<HH2sH", 0x0040, 0x0275, b"SQ", 0)
    if not defined:
        prefix = sq + struct.pack("<I", UNDEFINED) + struct.pack("<HHI", 0xFFFE, 0xE000, UNDEFINED)
        suffix = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return prefix * depth + inner + suffix * depth
    prefixes, n = [], len(inner)
    for _ in range(depth):  # innermost level first: each item holds n bytes, its sequence n + 8
        prefixes.append(sq + struct.pack("<I", n + 8) + struct.pack("<HHI", 0xFFFE, 0xE000, n))
        n += 8 + len(prefixes[-1]) - 8
    return b"".join(reversed(prefixes)) + inner


def j2k_frames(frames: np.ndarray) -> list[bytes]:
    """JPEG 2000 codestreams of ``F x H x W`` uint8 frames (pydicom's openjpeg encoder)."""
    from pydicom.encaps import generate_frames
    from pydicom.uid import JPEG2000Lossless

    from echoprime.io.writers import dicom_dataset

    ds = dicom_dataset(frames, transfer_syntax=JPEG2000Lossless)
    return list(generate_frames(ds.PixelData, number_of_frames=len(frames)))


def set_siz_size(j2k: bytes, rows: int, cols: int) -> bytes:
    i = j2k.index(b"\xff\x51")  # SIZ: marker, Lsiz, Rsiz, Xsiz, Ysiz, XOsiz, YOsiz
    return j2k[: i + 6] + struct.pack(">II", cols, rows) + j2k[i + 14 :]


def find_atom(data: bytes, name: bytes, start: int = 0) -> int:
    """Offset of the box ``name`` (its size field) at or after ``start``."""
    i = data.index(name, start)
    return i - 4


def rgb_clip(n: int, seed: int = 0) -> np.ndarray:
    return np.repeat(grey_clip(n, seed=seed)[..., None], 3, -1)  # n x H x W -> n x H x W x 3


def mp4_bytes(frames: int = 20) -> bytes:
    """H.264 in MP4 (moov after mdat, as ffmpeg writes it by default)."""
    from echoprime.io.writers import write_video

    return write_video(rgb_clip(frames), fps=30, container="mp4", threads=1)


def avi_bytes(frames: int = 6) -> bytes:
    """MJPEG in AVI."""
    from echoprime.io.writers import write_video

    return write_video(rgb_clip(frames), fps=30, codec="mjpeg", container="avi", threads=1)
