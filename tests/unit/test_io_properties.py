"""Property-based tests of the readers (hypothesis): whatever the bytes, a reader returns a valid
clip or raises the project's read error (:class:`~echoprime.io.EchoIOError`), never anything
else, and never allocates past its limits.

Inputs are valid files (every DICOM encoding the readers claim, MP4, AVI) with random byte
mutations and truncations, and DICOM headers built from random values. The examples are
derandomized (the same on every run, so CI is reproducible); ``bench/fuzz_readers.py`` runs the
same kind of cases at length with random seeds.
"""

from __future__ import annotations

import functools
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

from echoprime.io import EchoIOError, dicom_header, read_any, read_dicom, read_video
from echoprime.io.writers import write_dicom, write_video
from tests.hostile_bytes import (
    DEFLATED,
    EXPLICIT_LE,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE,
    encapsulated,
    file_meta,
    grey_clip,
    image_header,
    native_pixels,
)

LIMITS = {"max_frames": 8, "max_pixels": 512 * 512, "max_bytes": 64 << 20}
"""Tight limits: a mutated header that passes them still decodes in milliseconds."""
CASES = settings(
    max_examples=150,
    deadline=None,  # a shared 2-core machine: timing is not the property
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _clip(n: int = 4, h: int = 32, w: int = 32) -> np.ndarray:
    rgb = np.repeat(grey_clip(n, h, w)[..., None], 3, axis=-1)  # n x h x w -> n x h x w x 3
    rgb[:, :8, :8] = (255, 0, 0)
    return rgb


@functools.cache
def dicom_seeds() -> tuple[bytes, ...]:
    """Valid DICOMs in every encoding the reader decodes, small enough to mutate fast."""
    import io

    from echoprime.io.writers import dicom_dataset

    rgb = _clip()
    out = [
        write_dicom(rgb),  # explicit VR little endian RGB
        write_dicom(grey_clip(4, 32, 32), transfer_syntax=ImplicitVRLittleEndian),
        write_dicom(rgb, transfer_syntax=JPEGBaseline8Bit),  # YBR_FULL_422 JPEG, one fragment per frame
        write_dicom(rgb, transfer_syntax=JPEGBaseline8Bit, fragments_per_frame=2, has_bot=False),
        write_dicom(rgb, transfer_syntax=RLELossless),
        write_dicom(grey_clip(3, 32, 32), transfer_syntax=JPEG2000Lossless),
        write_dicom(rgb, transfer_syntax=MPEG4HP41),  # H.264 in DICOM
    ]
    ds = dicom_dataset(rgb)
    ds.file_meta.TransferSyntaxUID = DEFLATED
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    out.append(buf.getvalue())
    return tuple(out)


@functools.cache
def video_seeds() -> tuple[bytes, ...]:
    rgb = _clip(6)
    return (
        write_video(rgb, fps=25, container="mp4", threads=1),
        write_video(rgb, fps=25, codec="mjpeg", container="avi", threads=1),
        write_video(rgb, fps=25, codec="mpeg4", container="mp4", threads=1),
    )


INTERESTING = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@st.composite
def mutated(draw, seeds: tuple[bytes, ...]) -> bytes:
    """A seed file with up to 8 random edits: bit flips, interesting 1/2/4-byte values,
    inserted or deleted runs, and a truncation."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        kind = draw(st.sampled_from(["flip", "byte", "int16", "int32", "insert", "delete", "truncate"]))
        # half the edits land in the first KB, where the headers are (pixel bytes are most of a file)
        pos = draw(st.one_of(st.integers(0, min(len(data), 1024) - 1), st.integers(0, len(data) - 1)))
        if kind == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif kind in ("int16", "int32"):
            width = 2 if kind == "int16" else 4
            value = draw(st.sampled_from(INTERESTING)) & ((1 << 8 * width) - 1)
            endian = draw(st.sampled_from("<>"))
            data[pos : pos + width] = struct.pack(f"{endian}{'H' if width == 2 else 'I'}", value)
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            del data[pos:]
    return bytes(data)


def _valid_or_read_error(read, data: bytes, name: str) -> None:
    """The property: a valid clip within the limits, or EchoIOError naming the file."""
    try:
        clip = read(data, name=name, **LIMITS)
    except EchoIOError as e:
        assert e.path == name and e.reason and e.code
        assert "Traceback" not in e.reason and "\n" not in e.reason
        return
    f = clip.frames
    assert f.dtype == np.uint8 and f.ndim == 4 and f.shape[-1] == 3 and f.flags.c_contiguous
    assert 2 <= f.shape[0] <= LIMITS["max_frames"]
    assert f.shape[1] * f.shape[2] <= LIMITS["max_pixels"]


@CASES
@given(data=mutated(dicom_seeds()))
def test_mutated_dicom_is_read_or_refused(data):
    _valid_or_read_error(read_dicom, data, "m.dcm")


@CASES
@given(data=mutated(dicom_seeds()))
def test_mutated_dicom_header_is_read_or_refused(data):
    try:
        meta = dicom_header(data, name="m.dcm")
    except EchoIOError as e:
        assert e.path == "m.dcm" and e.reason
    else:
        assert meta["format"] == "dicom"


@CASES
@given(data=mutated(video_seeds()), suffix=st.sampled_from([".mp4", ".avi", ".mov"]))
def test_mutated_video_is_read_or_refused(data, suffix):
    _valid_or_read_error(read_video, data, f"m{suffix}")


@CASES
@given(data=mutated(dicom_seeds() + video_seeds()), name=st.sampled_from(["m.dcm", "m.mp4", "m", "m.txt"]))
def test_read_any_dispatches_mutated_files_to_a_reader_or_refuses(data, name):
    _valid_or_read_error(read_any, data, name)


_SYNTAXES = [
    EXPLICIT_LE,
    DEFLATED,
    JPEG_BASELINE,
    JPEG_2000_LOSSLESS,
    str(RLELossless),
    str(ExplicitVRLittleEndian),
]
_PHOTOMETRIC = ["MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL", "YBR_FULL_422", "PALETTE COLOR", "XYZ", ""]


@st.composite
def random_header_dicom(draw) -> bytes:
    """A DICOM whose image attributes are random (within their VR) and whose Pixel Data is random
    bytes, native or in fragments, under a random transfer syntax."""
    ts = draw(st.sampled_from(_SYNTAXES))
    frames = draw(
        st.one_of(
            st.integers(-3, 40),
            st.integers(0, 2**31 - 1),
            st.text(alphabet="0123456789+-.eE x", max_size=12),
            st.none(),
        )
    )
    header = image_header(
        rows=draw(st.one_of(st.integers(0, 64), st.integers(0, 0xFFFF))),
        cols=draw(st.one_of(st.integers(0, 64), st.integers(0, 0xFFFF))),
        frames=frames,
        spp=draw(st.sampled_from([0, 1, 2, 3, 4, 0xFFFF])),
        bits=draw(st.sampled_from([0, 1, 7, 8, 12, 16, 32, 64, 0xFFFF])),
        stored=draw(st.sampled_from([None, 0, 1, 8, 12, 16, 65])),
        signed=draw(st.sampled_from([0, 1, 2])),
        photometric=draw(st.sampled_from(_PHOTOMETRIC)),
    )
    payload = draw(st.binary(max_size=4096))
    if ts in (JPEG_BASELINE, JPEG_2000_LOSSLESS, str(RLELossless)):
        n = draw(st.integers(0, 4))
        cut = sorted(draw(st.lists(st.integers(0, len(payload)), min_size=n, max_size=n)))
        parts = [payload[a:b] for a, b in zip([0, *cut], [*cut, len(payload)], strict=True)]
        pixels = encapsulated(parts, bot=draw(st.booleans()))
    else:
        pixels = native_pixels(payload)
    body = header + pixels
    if ts == DEFLATED:
        import zlib

        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = c.compress(body) + c.flush()
    return file_meta(ts) + body


@CASES
@given(data=random_header_dicom())
def test_random_header_values_are_read_or_refused(data):
    _valid_or_read_error(read_dicom, data, "h.dcm")


def test_excess_pixel_data_gives_only_the_declared_frames():
    """Found by bench/fuzz_readers.py (case 17:51080): pydicom returned every frame the pixel bytes
    held (37 where NumberOfFrames said 11), past max_frames and the sizes checked before decoding."""
    excess = (
        file_meta(EXPLICIT_LE) + image_header(rows=3, cols=58, frames=11) + native_pixels(bytes(3 * 58 * 37))
    )
    assert read_dicom(excess, name="x.dcm").frames.shape == (11, 3, 58, 3)
    assert read_dicom(excess, name="x.dcm", max_frames=4).frames.shape == (4, 3, 58, 3)


def test_the_seeds_themselves_are_read():
    """The properties mean something only if the unmutated seeds decode."""
    for i, data in enumerate(dicom_seeds()):
        assert read_dicom(data, name=f"seed{i}.dcm", **LIMITS).frames.shape[0] >= 2
    for i, data in enumerate(video_seeds()):
        assert read_video(data, name=f"seed{i}.mp4", **LIMITS).frames.shape[0] >= 2
