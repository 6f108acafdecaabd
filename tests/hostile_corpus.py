"""A hostile corpus of echo files, written on demand (no binary blobs in the repository).

Every file an attacker or a broken scanner could send in one study: DICOMs cut at the header,
pixel and fragment boundaries, sequences nested thousands deep, corrupt and bombing deflate
streams, JPEG and JPEG 2000 frames whose own headers claim 30000 x 30000 inside Rows/Columns of
64 x 64, wrong and unknown VRs, absurd Rows/Columns/NumberOfFrames, zero and one frame, palettes,
1/12/16/32-bit pixels, non-DICOM content named ``.dcm``, MP4s with a broken or missing ``moov``,
AVI junk, containers declaring billions of frames or 30000-pixel frames; and, in the same folder,
a few GOOD files (synthetic echo clips written by the project's own writers) that must still be
read.

API (used by the unit tests, the Serve abuse suite and batch-interpret tests; keep it stable):

* ``write_hostile_corpus(directory, *, study_uid=STUDY_UID) -> list[HostileFile]`` writes every
  file into ``directory`` (flat: the folder is one study; every DICOM that has a header carries
  ``study_uid`` so that grouping by StudyInstanceUID also sees one study) and returns one
  ``HostileFile(path, cls, expect_ok)`` per file, in a fixed order. The bytes are the same on
  every call (fixed seeds and UIDs), except the H.264/MJPEG good files, which are decoded, not
  compared.
* ``CLASSES``: class name -> one line saying what the files of that class are.
* ``EXPECTED_REASON``: class name -> regular expression that the skip reason of a refused file
  of that class matches (``re.search``, case-insensitive): a specific reason, not a generic one.
* ``GENERIC_REASON``: the regular expression of the last-resort reason ("could not be read
  (SomeError)") that no file of the corpus may get.

``expect_ok`` is True for files that are valid and must be read (the good files, the legal bit
depths, the palette and the odd-but-unambiguous ``tolerated`` class); every other file must be
skipped with a reason. The byte-level builders live in :mod:`tests.hostile_bytes`.

Example::

    from tests.hostile_corpus import write_hostile_corpus
    files = write_hostile_corpus(tmp_path / "study")
    bad = [f for f in files if not f.expect_ok]
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from tests.hostile_bytes import (
    COLS,
    DEFLATED,
    EXPLICIT_LE,
    H264,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    ROWS,
    STUDY_UID,
    UNDEFINED,
    WRITING_STUDY,
    avi_bytes,
    dicom_file,
    element,
    encapsulated,
    file_meta,
    find_atom,
    grey_clip,
    image_header,
    j2k_frames,
    jpeg_frame,
    mp4_bytes,
    native_pixels,
    nested_sequence,
    raw_deflate,
    set_siz_size,
    set_sof_size,
    txt,
    us,
    zero_bomb,
)


class HostileFile(NamedTuple):
    """One file of the corpus.

    Attributes:
        path: Where it was written.
        cls: Its class (a key of :data:`CLASSES`).
        expect_ok: Whether a reader must decode it (True) or skip it with a reason (False).
    """

    path: Path
    cls: str
    expect_ok: bool


CLASSES: dict[str, str] = {
    "good_dicom": "valid synthetic echo clips: native RGB, JPEG Baseline, deflated explicit VR",
    "good_video": "valid synthetic echo clips: H.264 MP4, MJPEG AVI",
    "pixel_bits": "legal bit depths: 1-bit, 12-in-16-bit, signed 16-bit, 32-bit, 64-bit samples",
    "bad_bits": "impossible bit depths: BitsAllocated 7 or 0, BitsStored > BitsAllocated",
    "palette": "a valid PALETTE COLOR clip",
    "palette_broken": "PALETTE COLOR without usable lookup tables",
    "truncated_header": "DICOM cut inside the preamble, the file meta or the data set header",
    "truncated_pixels": "native DICOM cut at or inside the pixel data",
    "truncated_fragments": "encapsulated JPEG cut inside a fragment, at an item boundary, before the delimiter",
    "nested_sequences": "sequences nested thousands of levels deep, plain and inside a deflated data set",
    "bad_deflate": "deflated transfer syntax with a garbage, truncated or zlib-wrapped payload",
    "inflate_bomb": "deflated data sets that inflate far beyond what their header declares",
    "jpeg_sof_bomb": "JPEG / JPEG 2000 frames whose SOF / SIZ header disagrees with Rows/Columns",
    "wrong_vr": "image attributes encoded with the wrong VR: text, a fraction, a sequence",
    "odd_vr": "unknown or malformed VR codes",
    "absurd_geometry": "absurd Rows/Columns (0, 65535 x 65535, 1 x 65535)",
    "absurd_frames": "absurd NumberOfFrames (2^31-1, negative, not a number, more than fragments)",
    "zero_frames": "no frames: NumberOfFrames 0, empty Pixel Data",
    "one_frame": "a single frame (a still image), native and JPEG",
    "not_dicom": "non-DICOM content named .dcm: empty, text, PNG, random bytes, an MP4",
    "not_ultrasound": "DICOM objects that are not ultrasound images: CT modality, a structured report",
    "bad_encapsulation": "encapsulated syntax with native data, bad item tags, an item longer than the file",
    "unsupported_syntax": "a transfer syntax no decoder knows",
    "mpeg_in_dicom": "H.264 transfer syntax whose fragments hold garbage",
    "mp4_broken_moov": "MP4 whose moov atom is corrupt, cut, too small, or points past the file",
    "mp4_missing_moov": "MP4 without a (recognisable) moov atom",
    "avi_junk": "AVI headers followed by junk, text named .avi",
    "video_huge_frames": "containers declaring 2^31-1 frames or frame-table entries",
    "video_huge_dims": "videos whose frames exceed the pixel limit, or whose JPEG headers claim 30000 x 30000",
    "video_short": "videos with one frame",
    "tolerated": "odd but unambiguous files that must still be read: excess pixel data, a wrong but clear "
    "VR, deep sequences never looked at, container headers that the stream contradicts",
}

EXPECTED_REASON: dict[str, str] = {
    "bad_bits": r"bits",
    "palette_broken": r"palette|lookup|colour table|LUT",
    "truncated_header": r"truncated|empty|not DICOM|ends",
    "truncated_pixels": r"truncated",
    "truncated_fragments": r"truncated|fragment|encapsulat|ends",
    "nested_sequences": r"nested",
    "bad_deflate": r"deflate",
    "inflate_bomb": r"inflat|deflate",
    "jpeg_sof_bomb": r"(JPEG|JPEG 2000) frame \d+x\d+ (exceeds|does not match) Rows/Columns",
    "wrong_vr": r"is not an integer: VR",
    "odd_vr": r"VR|Value Representation",
    "absurd_geometry": r"\d+ x \d+|Rows|Columns|empty frame size",
    "absurd_frames": r"NumberOfFrames|frames|truncated",
    "zero_frames": r"no frames|NumberOfFrames|empty",
    "one_frame": r"single frame|still",
    "not_dicom": r"not DICOM|empty",
    "not_ultrasound": r"modality|structured report",
    "bad_encapsulation": r"encapsulat|fragment|item|offset",
    "unsupported_syntax": r"transfer syntax",
    "mpeg_in_dicom": r"video stream|H\.264|h264|decode",
    "mp4_broken_moov": r"not a readable video|no video stream|no frames in the",
    "mp4_missing_moov": r"not a readable video",
    "avi_junk": r"not a readable video|no video stream|no frames in the",
    "video_huge_frames": r"declares \d+ frames|not a readable video: Cannot allocate",
    "video_huge_dims": r"more than the limit of \d+ pixels|mjpeg stream failed to decode",
    "video_short": r"single frame",
}

GENERIC_REASON = r"could not be read \("
"""The last-resort reason (an exception class no reader turned into words); no corpus file may get it."""


# ------------------------------------------------------------------------------ the classes
Spec = list[tuple[str, bytes, bool]]  # (file name, content, expect_ok)


def _synthetic_frames(seed: int = 0, n: int = 20) -> np.ndarray:
    from echoprime.synth.render import render_video
    from echoprime.synth.state import sample_state

    rng = np.random.default_rng(seed)
    return render_video(
        sample_state(rng, f"p{seed}", f"s{seed}"), "A4C", rng, frames=n, size=64, fps=30
    ).frames


def _good_dicom(study_uid: str) -> Spec:
    import io

    from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEGBaseline8Bit

    from echoprime.io.writers import dicom_dataset, write_dicom

    frames = _synthetic_frames(0)
    native = write_dicom(frames, study_uid=study_uid, sop_uid="1.2.826.0.1.3680043.8.498.17.900")
    jpeg = write_dicom(
        frames,
        transfer_syntax=JPEGBaseline8Bit,
        study_uid=study_uid,
        sop_uid="1.2.826.0.1.3680043.8.498.17.901",
    )
    ds = dicom_dataset(_synthetic_frames(1), study_uid=study_uid, sop_uid="1.2.826.0.1.3680043.8.498.17.902")
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return [
        ("good_native_rgb.dcm", native, True),
        ("good_jpeg.dcm", jpeg, True),
        ("good_deflated.dcm", buf.getvalue(), True),
    ]


def _good_video(study_uid: str) -> Spec:
    from echoprime.io.writers import write_video

    frames = _synthetic_frames(2)
    mp4 = write_video(frames, fps=30, codec="libx264", container="mp4", threads=1)
    avi = write_video(frames, fps=30, codec="mjpeg", container="avi", threads=1)
    return [("good_h264.mp4", mp4, True), ("good_mjpeg.avi", avi, True)]


def _pixel_bits(study_uid: str) -> Spec:
    clip = grey_clip(4)
    out: Spec = []
    bits1 = np.packbits((clip > 100).reshape(-1), bitorder="little").tobytes()
    out.append(
        ("bits_1.dcm", dicom_file(EXPLICIT_LE, image_header(bits=1, index=10), native_pixels(bits1)), True)
    )
    v12 = (clip.astype(np.uint16) << 4).astype("<u2").tobytes()
    out.append(
        (
            "bits_12.dcm",
            dicom_file(EXPLICIT_LE, image_header(bits=16, stored=12, index=11), native_pixels(v12, "OW")),
            True,
        )
    )
    s16 = (clip.astype(np.int16) * 100 - 12000).astype("<i2").tobytes()
    out.append(
        (
            "bits_16_signed.dcm",
            dicom_file(EXPLICIT_LE, image_header(bits=16, signed=1, index=12), native_pixels(s16, "OW")),
            True,
        )
    )
    u32 = (clip.astype(np.uint32) << 24).astype("<u4").tobytes()
    out.append(
        (
            "bits_32.dcm",
            dicom_file(EXPLICIT_LE, image_header(bits=32, index=13), native_pixels(u32, "OW")),
            True,
        )
    )
    u64 = (clip.astype(np.uint64) << 56).astype("<u8").tobytes()
    out.append(
        (
            "bits_64.dcm",
            dicom_file(EXPLICIT_LE, image_header(bits=64, index=14), native_pixels(u64, "OW")),
            True,
        )
    )
    return out


def _bad_bits(study_uid: str) -> Spec:
    clip = grey_clip(4).tobytes()
    return [
        (
            "bits_alloc_7.dcm",
            dicom_file(EXPLICIT_LE, image_header(bits=7, index=20), native_pixels(clip)),
            False,
        ),
        (
            "bits_stored_20_of_16.dcm",
            dicom_file(
                EXPLICIT_LE, image_header(bits=16, stored=20, index=21), native_pixels(clip * 2, "OW")
            ),
            False,
        ),
        (
            "bits_alloc_0.dcm",
            dicom_file(EXPLICIT_LE, image_header(bits=0, index=22), native_pixels(clip)),
            False,
        ),
    ]


def _palette_elements(
    entries: int = 256, data_entries: int | None = None, with_data: bool = True
) -> dict[int, bytes]:
    n = entries if data_entries is None else data_entries
    ramp = np.linspace(0, 65535, n).astype("<u2")
    els = {}
    for k, (desc, data) in enumerate(
        ((0x00281101, 0x00281201), (0x00281102, 0x00281202), (0x00281103, 0x00281203))
    ):
        els[desc] = element(desc, "US", us(entries % 65536, 0, 16))
        if with_data:
            lut = ramp if k != 1 else ramp[::-1].copy()
            els[data] = element(data, "OW", lut.tobytes())
    return els


def _palette(study_uid: str) -> Spec:
    hdr = image_header(photometric="PALETTE COLOR", index=30, extra=_palette_elements())
    return [("palette_8bit.dcm", dicom_file(EXPLICIT_LE, hdr, native_pixels(grey_clip(4).tobytes())), True)]


def _palette_broken(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    no_data = image_header(photometric="PALETTE COLOR", index=31, extra=_palette_elements(with_data=False))
    short = image_header(
        photometric="PALETTE COLOR", index=32, extra=_palette_elements(entries=256, data_entries=3)
    )
    no_luts = image_header(photometric="PALETTE COLOR", index=33)
    return [
        ("palette_no_lut_data.dcm", dicom_file(EXPLICIT_LE, no_data, px), False),
        ("palette_lut_too_short.dcm", dicom_file(EXPLICIT_LE, short, px), False),
        ("palette_no_luts.dcm", dicom_file(EXPLICIT_LE, no_luts, px), False),
    ]


def _native_good(index: int) -> bytes:
    return dicom_file(EXPLICIT_LE, image_header(index=index), native_pixels(grey_clip(4).tobytes()))


def _truncated_header(study_uid: str) -> Spec:
    full = _native_good(40)
    meta_end = len(file_meta(EXPLICIT_LE))
    return [
        ("cut_in_preamble.dcm", full[:100], False),
        ("cut_in_file_meta.dcm", full[: 132 + 40], False),
        ("cut_in_dataset_header.dcm", full[: meta_end + 60], False),
    ]


def _truncated_pixels(study_uid: str) -> Spec:
    full = _native_good(41)
    px = full.index(struct.pack("<HH", 0x7FE0, 0x0010))
    return [
        ("cut_at_pixel_element.dcm", full[: px + 12], False),
        ("cut_half_pixels.dcm", full[: px + 12 + ROWS * COLS * 2], False),
        ("cut_one_byte_short.dcm", full[:-1], False),
    ]


def _jpeg_dicom(index: int, n: int = 4, **kw: object) -> bytes:
    frames = [jpeg_frame(f) for f in grey_clip(n, seed=index)]
    return dicom_file(JPEG_BASELINE, image_header(frames=n, index=index), encapsulated(frames, **kw))  # type: ignore[arg-type]


def _truncated_fragments(study_uid: str) -> Spec:
    full = _jpeg_dicom(42)
    px = full.index(struct.pack("<HH", 0x7FE0, 0x0010))
    bot_end = px + 12 + 8 + 16  # element header, offset table item header, 4 offsets
    first_len = struct.unpack_from("<I", full, bot_end + 4)[0]
    return [
        ("cut_in_fragment.dcm", full[: bot_end + 8 + first_len // 2], False),
        ("cut_at_item_boundary.dcm", full[: bot_end + 8 + first_len], False),
        ("no_sequence_delimiter.dcm", full[:-8], False),
    ]


def _nested_sequences(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    out: Spec = []
    for name, depth, idx in (("5000", 5000, 50), ("100000", 100_000, 52)):
        hdr = image_header(index=idx, extra={0x00400275: nested_sequence(depth, defined=False)})
        out.append((f"nested_undefined_{name}.dcm", dicom_file(EXPLICIT_LE, hdr, px), False))
    # the same inside a deflated data set (parsed by the bounded inflater, not by pydicom's reader)
    hdr = image_header(index=51, extra={0x00400275: nested_sequence(5000, defined=False)})
    out.append(("nested_in_deflated.dcm", file_meta(DEFLATED) + raw_deflate(hdr + px), False))
    return out


def _deflated_body(index: int) -> bytes:
    return image_header(index=index) + native_pixels(grey_clip(4).tobytes())


def _bad_deflate(study_uid: str) -> Spec:
    rng = np.random.default_rng(60)
    good = raw_deflate(_deflated_body(61))
    return [
        (
            "deflate_garbage.dcm",
            file_meta(DEFLATED) + rng.integers(0, 256, 4000, dtype=np.uint8).tobytes(),
            False,
        ),
        ("deflate_truncated.dcm", file_meta(DEFLATED) + good[: len(good) // 2], False),
        ("deflate_zlib_wrapped.dcm", file_meta(DEFLATED) + zlib.compress(_deflated_body(62)), False),
    ]


def _inflate_bomb(study_uid: str) -> Spec:
    hdr = image_header(frames=2, index=70)
    pixels = native_pixels(grey_clip(2).tobytes())
    declared_huge = image_header(rows=4096, cols=4096, frames=100_000, index=73)
    return [
        # 64 x 64 x 2 frames declared; 2 GiB of zeros after the pixel data
        ("bomb_trailing_2gib.dcm", file_meta(DEFLATED) + zero_bomb(hdr + pixels, 2.0), False),
        # a Pixel Data element that declares 2 GiB where the header needs 8 KiB
        (
            "bomb_pixel_length_2gib.dcm",
            file_meta(DEFLATED) + zero_bomb(hdr + native_pixels(b"", length=1 << 31), 2.0),
            False,
        ),
        # no data set at all: 2 GiB of zeros where the header should be
        ("bomb_zeros_header.dcm", file_meta(DEFLATED) + zero_bomb(b"", 2.0), False),
        # a header that itself declares 100000 frames of 4096 x 4096 (1.6 TB)
        (
            "bomb_declared_huge.dcm",
            file_meta(DEFLATED) + zero_bomb(declared_huge + native_pixels(b"", length=UNDEFINED - 1), 1.0),
            False,
        ),
    ]


def _jpeg_sof_bomb(study_uid: str) -> Spec:
    frames = [jpeg_frame(f) for f in grey_clip(2, seed=80)]
    hdr = image_header(frames=2, index=80)
    j2k = j2k_frames(grey_clip(2, seed=81))
    return [
        (
            "sof_30000.dcm",
            dicom_file(JPEG_BASELINE, hdr, encapsulated([set_sof_size(f, 30000, 30000) for f in frames])),
            False,
        ),
        (
            "sof_65535_second_frame.dcm",
            dicom_file(JPEG_BASELINE, hdr, encapsulated([frames[0], set_sof_size(frames[1], 65535, 65535)])),
            False,
        ),
        (
            "sof_smaller.dcm",
            dicom_file(JPEG_BASELINE, hdr, encapsulated([set_sof_size(f, 32, 32) for f in frames])),
            False,
        ),
        (
            "j2k_siz_30000.dcm",
            dicom_file(JPEG_2000_LOSSLESS, hdr, encapsulated([set_siz_size(f, 30000, 30000) for f in j2k])),
            False,
        ),
    ]


def _wrong_vr(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    return [
        (
            "rows_as_text.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(index=90, extra={0x00280010: element(0x00280010, "LO", txt("sixty-four"))}),
                px,
            ),
            False,
        ),
        (
            "rows_as_float.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(
                    index=91, extra={0x00280010: element(0x00280010, "FD", struct.pack("<d", 64.5))}
                ),
                px,
            ),
            False,
        ),
        (
            "columns_as_sequence.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(index=92, extra={0x00280011: element(0x00280011, "SQ", b"\0" * 8)}),
                px,
            ),
            False,
        ),
    ]


def _odd_vr(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    return [
        (
            "vr_zz.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(index=100, extra={0x00280010: element(0x00280010, "ZZ", us(64))}),
                px,
            ),
            False,
        ),
        (
            "vr_nul.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(index=101, extra={0x00280010: element(0x00280010, b"\0\0", us(64))}),
                px,
            ),
            False,
        ),
        (
            "vr_lowercase.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(index=102, extra={0x00280011: element(0x00280011, "us", us(64))}),
                px,
            ),
            False,
        ),
    ]


def _absurd_geometry(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    return [
        (
            "rows_cols_65535.dcm",
            dicom_file(EXPLICIT_LE, image_header(rows=65535, cols=65535, index=110), px),
            False,
        ),
        ("rows_0.dcm", dicom_file(EXPLICIT_LE, image_header(rows=0, index=111), px), False),
        ("cols_0.dcm", dicom_file(EXPLICIT_LE, image_header(cols=0, index=112), px), False),
        (
            "rows_1_cols_65535.dcm",
            dicom_file(EXPLICIT_LE, image_header(rows=1, cols=65535, index=113), px),
            False,
        ),
    ]


def _absurd_frames(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    jp = [jpeg_frame(f) for f in grey_clip(2, seed=121)]
    return [
        (
            "frames_2147483647.dcm",
            dicom_file(EXPLICIT_LE, image_header(frames=2**31 - 1, index=120), px),
            False,
        ),
        ("frames_negative.dcm", dicom_file(EXPLICIT_LE, image_header(frames=-5, index=121), px), False),
        (
            "frames_not_a_number.dcm",
            dicom_file(EXPLICIT_LE, image_header(frames="1e9x", index=122), px),
            False,
        ),
        (
            "frames_million_jpeg.dcm",
            dicom_file(JPEG_BASELINE, image_header(frames=1_000_000, index=123), encapsulated(jp, bot=False)),
            False,
        ),
    ]


def _zero_frames(study_uid: str) -> Spec:
    return [
        (
            "frames_0.dcm",
            dicom_file(EXPLICIT_LE, image_header(frames=0, index=130), native_pixels(b"")),
            False,
        ),
        ("empty_pixel_data.dcm", dicom_file(EXPLICIT_LE, image_header(index=131), native_pixels(b"")), False),
    ]


def _one_frame(study_uid: str) -> Spec:
    return [
        (
            "still_native.dcm",
            dicom_file(EXPLICIT_LE, image_header(frames=1, index=140), native_pixels(grey_clip(1).tobytes())),
            False,
        ),
        (
            "still_jpeg.dcm",
            dicom_file(
                JPEG_BASELINE, image_header(frames=1, index=141), encapsulated([jpeg_frame(grey_clip(1)[0])])
            ),
            False,
        ),
    ]


def _not_dicom(study_uid: str) -> Spec:

    rng = np.random.default_rng(150)
    ok, png = cv2.imencode(".png", grey_clip(1)[0])
    mp4 = mp4_bytes(4)
    return [
        ("empty.dcm", b"", False),
        ("text.dcm", b"This is not a DICOM file; it is a note about one.\n" * 20, False),
        ("image_png.dcm", png.tobytes(), False),
        ("random_bytes.dcm", rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(), False),
        ("video_mp4.dcm", mp4, False),
    ]


def _not_ultrasound(study_uid: str) -> Spec:
    px = native_pixels(grey_clip(4).tobytes())
    return [
        ("ct.dcm", dicom_file(EXPLICIT_LE, image_header(modality="CT", index=160), px), False),
        (
            "structured_report.dcm",
            dicom_file(
                EXPLICIT_LE,
                image_header(sop_class="1.2.840.10008.5.1.4.1.1.88.22", modality="SR", index=161),
                b"",
            ),
            False,
        ),
    ]


def _bad_encapsulation(study_uid: str) -> Spec:
    jp = [jpeg_frame(f) for f in grey_clip(2, seed=170)]
    hdr = image_header(frames=2, index=170)
    good = encapsulated(jp)
    bad_item = good.replace(struct.pack("<HH", 0xFFFE, 0xE000), struct.pack("<HH", 0xFFFE, 0xE111), 2)
    first = 12 + 8 + 8  # element header, table item header, 2 offsets
    long_item = good[: first + 4] + struct.pack("<I", 0x7FFFFFF0) + good[first + 8 :]
    return [
        (
            "jpeg_syntax_native_data.dcm",
            dicom_file(JPEG_BASELINE, hdr, native_pixels(grey_clip(2).tobytes())),
            False,
        ),
        ("bad_item_tag.dcm", dicom_file(JPEG_BASELINE, hdr, bad_item), False),
        ("item_longer_than_file.dcm", dicom_file(JPEG_BASELINE, hdr, long_item), False),
    ]


def _unsupported_syntax(study_uid: str) -> Spec:
    return [
        (
            "syntax_made_up.dcm",
            dicom_file("1.2.3.4.5.6.7", image_header(index=180), encapsulated([b"\x00" * 64] * 4)),
            False,
        )
    ]


def _mpeg_in_dicom(study_uid: str) -> Spec:
    rng = np.random.default_rng(190)
    junk = rng.integers(0, 256, 3000, dtype=np.uint8).tobytes()
    hdr = image_header(frames=4, spp=3, photometric="YBR_PARTIAL_420", index=190)
    return [("h264_garbage.dcm", dicom_file(H264, hdr, encapsulated([junk], bot=False)), False)]


def _mp4_broken_moov(study_uid: str) -> Spec:
    data = mp4_bytes()
    moov = find_atom(data, b"moov")
    rng = np.random.default_rng(200)
    scrambled = bytearray(data)
    scrambled[moov + 8 : moov + 400] = rng.integers(0, 256, 392, dtype=np.uint8).tobytes()
    size_7 = data[:moov] + struct.pack(">I", 7) + data[moov + 4 :]  # smaller than its own header
    past_end = bytearray(data)  # the first chunk offset points 2 GiB past the end of the file
    i = past_end.index(b"stco")  # size, 'stco', version/flags, entry count, offsets
    struct.pack_into(">I", past_end, i + 12, 0x7FFFFF00)
    return [
        ("moov_scrambled.mp4", bytes(scrambled), False),
        ("moov_size_7.mp4", size_7, False),
        ("moov_cut.mp4", data[: moov + 100], False),
        # once crashed the process inside decord (a segmentation fault) when read from bytes
        ("chunk_offset_past_end.mp4", bytes(past_end), False),
    ]


def _mp4_missing_moov(study_uid: str) -> Spec:
    data = mp4_bytes()
    moov = find_atom(data, b"moov")
    zeroed = data[: moov + 4] + b"\0\0\0\0" + data[moov + 8 :]
    return [("moov_removed.mp4", data[:moov], False), ("moov_type_zeroed.mp4", zeroed, False)]


def _avi_junk(study_uid: str) -> Spec:
    rng = np.random.default_rng(210)
    avi = avi_bytes(6)
    movi = avi.index(b"movi")
    junk_frames = avi[: movi + 4] + rng.integers(0, 256, len(avi) - movi - 4, dtype=np.uint8).tobytes()
    riff = (
        b"RIFF" + struct.pack("<I", 100000) + b"AVI " + rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
    )
    return [
        ("riff_then_junk.avi", riff, False),
        ("avi_movi_junk.avi", junk_frames, False),
        ("text.avi", b"not a video\n" * 50, False),
    ]


def _video_huge_frames(study_uid: str) -> Spec:
    stts = bytearray(mp4_bytes())
    i = stts.index(b"stts")  # size, 'stts', version/flags, entry count, then (sample count, delta)
    struct.pack_into(">I", stts, i + 12, 2**31 - 1)
    entries = bytearray(mp4_bytes())
    i = entries.index(b"stts")
    struct.pack_into(">I", entries, i + 8, 2**31 - 1)  # 2^31-1 (count, delta) entries in a 24-byte box
    avi = bytearray(avi_bytes(6))
    j = avi.index(
        b"strh"
    )  # size, then fccType fccHandler flags priority+language initialFrames scale rate start length
    struct.pack_into("<I", avi, j + 8 + 32, 2**31 - 1)
    return [
        ("stts_2g_frames.mp4", bytes(stts), False),
        ("stts_2g_entries.mp4", bytes(entries), False),
        ("strh_2g_frames.avi", bytes(avi), False),
    ]


def _video_huge_dims(study_uid: str) -> Spec:
    # genuinely 4352 x 4352 frames (more pixels than the default limit), a few KB each as MJPEG
    big = np.zeros((2, 4352, 4352, 3), np.uint8)
    big[:, 100:200, 100:200] = 200
    from echoprime.io.writers import write_video

    real = write_video(big, fps=30, codec="mjpeg", container="avi", threads=1)
    sof = bytearray(avi_bytes(6))  # 64 x 64 frames whose SOF headers claim 30000 x 30000
    pos = 0
    while (k := sof.find(b"\xff\xc0", pos)) >= 0:
        struct.pack_into(">HH", sof, k + 5, 30000, 30000)
        pos = k + 2
    return [("dims_4352.avi", real, False), ("dims_30000_sof.avi", bytes(sof), False)]


def _video_short(study_uid: str) -> Spec:
    return [("one_frame.mp4", mp4_bytes(1), False), ("one_frame.avi", avi_bytes(1), False)]


def _tolerated(study_uid: str) -> Spec:
    """Odd files whose content is still unambiguous: readers must read them (no false refusals)."""
    px = native_pixels(grey_clip(4).tobytes())
    frames_us = image_header(index=240, extra={0x00280008: element(0x00280008, "US", us(4))})
    nested = image_header(index=241, extra={0x00400275: nested_sequence(5000, defined=True)})
    data = mp4_bytes()
    moov = find_atom(data, b"moov")
    avi = bytearray(avi_bytes(6))
    i = avi.index(
        b"avih"
    )  # size, µs/frame, max bytes/s, padding, flags, total frames, initial, streams, buffer, w, h
    struct.pack_into("<I", avi, i + 8 + 16, 2**31 - 1)
    struct.pack_into("<II", avi, i + 8 + 32, 30000, 30000)
    j = avi.index(b"strf")  # BITMAPINFOHEADER: size, width, height
    struct.pack_into("<ii", avi, j + 8 + 4, 30000, 30000)
    excess = native_pixels(grey_clip(40).tobytes())
    return [
        # Pixel Data holding 40 frames where NumberOfFrames says 4: read as the 4 declared (pydicom
        # would return all 40 by default, past max_frames; found by bench/fuzz_readers.py)
        ("excess_pixel_data.dcm", dicom_file(EXPLICIT_LE, image_header(frames=4, index=242), excess), True),
        # NumberOfFrames binary (US) instead of text (IS): the value is still 4
        ("frames_vr_us.dcm", dicom_file(EXPLICIT_LE, frames_us, px), True),
        # sequences 5000 deep with defined lengths: never parsed, the image attributes are fine
        ("nested_defined_5000.dcm", dicom_file(EXPLICIT_LE, nested, px), True),
        # moov size past the end of the file; moov renamed 'free' (FFmpeg finds it there)
        ("moov_size_past_end.mp4", data[:moov] + struct.pack(">I", 0x7FFFFFFF) + data[moov + 4 :], True),
        ("moov_renamed_free.mp4", data[: moov + 4] + b"free" + data[moov + 8 :], True),
        # AVI main header claiming 2^31-1 frames of 30000 x 30000; the stream says 6 of 64 x 64
        ("avi_header_lies.avi", bytes(avi), True),
    ]


_BUILDERS: dict[str, Callable[[str], Spec]] = {
    "good_dicom": _good_dicom,
    "good_video": _good_video,
    "pixel_bits": _pixel_bits,
    "bad_bits": _bad_bits,
    "palette": _palette,
    "palette_broken": _palette_broken,
    "truncated_header": _truncated_header,
    "truncated_pixels": _truncated_pixels,
    "truncated_fragments": _truncated_fragments,
    "nested_sequences": _nested_sequences,
    "bad_deflate": _bad_deflate,
    "inflate_bomb": _inflate_bomb,
    "jpeg_sof_bomb": _jpeg_sof_bomb,
    "wrong_vr": _wrong_vr,
    "odd_vr": _odd_vr,
    "absurd_geometry": _absurd_geometry,
    "absurd_frames": _absurd_frames,
    "zero_frames": _zero_frames,
    "one_frame": _one_frame,
    "not_dicom": _not_dicom,
    "not_ultrasound": _not_ultrasound,
    "bad_encapsulation": _bad_encapsulation,
    "unsupported_syntax": _unsupported_syntax,
    "mpeg_in_dicom": _mpeg_in_dicom,
    "mp4_broken_moov": _mp4_broken_moov,
    "mp4_missing_moov": _mp4_missing_moov,
    "avi_junk": _avi_junk,
    "video_huge_frames": _video_huge_frames,
    "video_huge_dims": _video_huge_dims,
    "video_short": _video_short,
    "tolerated": _tolerated,
}


def write_hostile_corpus(
    directory: str | os.PathLike[str], *, study_uid: str = STUDY_UID
) -> list[HostileFile]:
    """Write the corpus into ``directory`` (created if needed) and describe each file.

    Args:
        directory: The study folder to write into; existing files of the same names are replaced.
        study_uid: StudyInstanceUID of the good synthetic DICOMs and of the hand-built ones.

    Returns:
        One :class:`HostileFile` per file written, in a fixed order (classes as in :data:`CLASSES`).
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files: list[HostileFile] = []
    WRITING_STUDY[0] = study_uid
    try:
        for cls, build in _BUILDERS.items():
            for name, data, ok in build(study_uid):
                path = out / name
                path.write_bytes(data)
                files.append(HostileFile(path, cls, ok))
    finally:
        WRITING_STUDY[0] = STUDY_UID
    return files


if __name__ == "__main__":  # python -m tests.hostile_corpus OUT_DIR: write the corpus, list it
    import sys

    for f in write_hostile_corpus(sys.argv[1] if len(sys.argv) > 1 else "hostile-corpus"):
        print(f"{f.cls:<20} {'ok ' if f.expect_ok else 'bad'} {f.path.stat().st_size:>9} {f.path.name}")
