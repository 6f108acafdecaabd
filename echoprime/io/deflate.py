"""Deflated Explicit VR Little Endian data sets, inflated a bounded piece at a time.

pydicom inflates a deflated data set whole (``zlib.decompress`` of everything after the file
meta) before it reads a single element: 2 MB of zeros become 2 GiB in memory, and only then
would any limit apply. Here the stream is inflated with :func:`zlib.decompressobj` and
``max_length``, and never past what the header declares:

1. the header: inflated in growing pieces (64 KiB, x4, at most :data:`HEADER_LIMIT`) and parsed
   until the Pixel Data element, with at most :data:`ELEMENT_LIMIT` elements before it;
2. the pixel data: the caller checks the declared geometry against its limits first, then
   :meth:`DeflatedPixels.load` inflates exactly the bytes of the frames it will decode;
3. when the whole clip is decoded, the rest of the stream is inflated (and dropped) to prove
   that it ends within :data:`TRAILER_SLACK` bytes after the declared pixel data: a stream that
   goes on is an inflate bomb and is refused.

Memory is the header plus the decoded frames' bytes; work is bounded by the declared sizes.
"""

from __future__ import annotations

import copy
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.pixels.utils import get_expected_length
from pydicom.tag import BaseTag

from echoprime.io.errors import DicomDecodeError, public_text

HEADER_LIMIT = 16 << 20
"""Most inflated bytes before the Pixel Data element (a real header is a few KB; icons,
overlays and private groups can reach a few MB)."""
ELEMENT_LIMIT = 10_000
"""Most top-level elements before the Pixel Data element (a real header has a few hundred)."""
TRAILER_SLACK = 16 << 20
"""Most inflated bytes allowed after the declared pixel data (padding, private groups)."""
_CHUNK = 1 << 18  # compressed bytes fed to zlib at a time, and the most inflated per step
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF


class _Refused(Exception):
    """Raised from pydicom's stop_when callback to end a header parse early."""


class _Inflater:
    """A raw deflate stream inflated on demand, never more than asked for."""

    def __init__(self, fh: BinaryIO, path: str | None) -> None:
        self.fh, self.path = fh, path
        self.zd = zlib.decompressobj(-zlib.MAX_WBITS)
        self.out = bytearray()  # what is kept: the header and the pixel bytes being decoded
        self.total = 0  # all inflated bytes, kept or dropped

    @property
    def ended(self) -> bool:
        return self.zd.eof

    def _step(self, want: int) -> bytes:
        data = self.zd.unconsumed_tail or self.fh.read(_CHUNK)
        if not data:
            raise DicomDecodeError(
                self.path,
                f"DICOM deflate stream is truncated: it stops after {self.total} inflated bytes "
                "without its final block",
            )
        try:
            piece = self.zd.decompress(data, max(1, min(want, _CHUNK)))
        except zlib.error as e:
            raise DicomDecodeError(
                self.path,
                f"DICOM deflate stream is corrupt after {self.total} inflated bytes "
                f"({public_text(e).split(': ')[-1]}); expected raw deflate data after the file meta",
            ) from None
        self.total += len(piece)
        return piece

    def fill(self, size: int) -> None:
        """Keep inflating into ``out`` until it holds ``size`` bytes or the stream ends."""
        while len(self.out) < size and not self.zd.eof:
            self.out += self._step(size - len(self.out))

    def drain(self, limit: int, declared: str) -> None:
        """Inflate the rest of the stream, dropping it; refuse once ``total`` passes ``limit``."""
        while not self.zd.eof:
            self._step(limit + 1 - self.total)
            if self.total > limit:
                raise DicomDecodeError(
                    self.path,
                    f"DICOM deflate stream inflates beyond {limit} bytes, more than its header "
                    f"declares ({declared}); refused as an inflate bomb",
                )


@dataclass
class DeflatedPixels:
    """The Pixel Data element of a deflated data set, not yet inflated.

    Attributes:
        value_at: Offset of the element's value in the inflated stream.
        length: The element's declared value length.
    """

    inflater: _Inflater
    value_at: int
    length: int

    def load(self, ds: Dataset, n: int) -> Dataset:
        """A data set with ``ds``'s image description and the native pixel data of its first
        ``n`` frames, inflated only now (after the caller checked the header against its limits).

        Raises:
            DicomDecodeError: The element declares less than the header needs, or more than it
                needs plus :data:`TRAILER_SLACK`; the stream is corrupt, ends early, or goes on
                past the declared sizes.
        """
        path = self.inflater.path
        try:
            needed = int(get_expected_length(ds, unit="bytes"))
            n_src = int(ds.get("NumberOfFrames") or 1)
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise DicomDecodeError(path, f"inconsistent image header: {public_text(e)}") from None
        if self.length < needed:
            raise DicomDecodeError(
                path,
                f"the file is truncated: Pixel Data declares {self.length} bytes, the header needs {needed}; "
                "refused before inflating",
            )
        if self.length > needed + TRAILER_SLACK:
            raise DicomDecodeError(
                path,
                f"Pixel Data declares {self.length} bytes where Rows x Columns x samples x bits x "
                f"frames need {needed}; refused before inflating (an inflate bomb)",
            )
        keep = needed if n >= n_src or needed % n_src else n * (needed // n_src)
        self.inflater.fill(self.value_at + keep)
        if len(self.inflater.out) < self.value_at + keep:
            raise DicomDecodeError(
                path,
                f"the file is truncated: the deflate stream ends {self.value_at + keep - len(self.inflater.out)} "
                "bytes into the pixel data it declares",
            )
        if keep == needed:  # the whole clip: the stream must end soon after it
            self.inflater.drain(
                self.value_at + self.length + TRAILER_SLACK,
                f"{needed} bytes of pixel data + {TRAILER_SLACK} slack",
            )
        part = Dataset()
        part.file_meta = ds.file_meta
        for elem in ds.group_dataset(0x0028):
            part.add(copy.deepcopy(elem))
        if keep != needed:
            part.NumberOfFrames = n
        part.PixelData = bytes(self.inflater.out[self.value_at : self.value_at + keep])
        part["PixelData"].VR = "OB"
        return part


def read_deflated(
    fh: BinaryIO, path: str | None, file_meta: FileMetaDataset
) -> tuple[Dataset, DeflatedPixels | None, list[str]]:
    """Read a deflated data set's header; ``fh`` is positioned just after the file meta.

    Returns:
        ``(header, pixels, warnings)``: the elements before Pixel Data (with ``file_meta``), the
        not-yet-inflated Pixel Data element (``None`` when the data set has none: then ``header``
        is the whole data set), and pydicom's parse warnings (truncation shows there).

    Raises:
        DicomDecodeError: Corrupt or truncated stream, no Pixel Data within
            :data:`HEADER_LIMIT` inflated bytes or :data:`ELEMENT_LIMIT` elements, encapsulated or
            oddly encoded Pixel Data.
    """
    inf = _Inflater(fh, path)
    size = 1 << 16
    while True:
        inf.fill(size)
        try:
            ds, pixel_at, caught = _parse(bytes(inf.out), path)
        except (DicomDecodeError, RecursionError):
            raise  # a refusal, or nesting that more data will not cure
        except Exception:
            if inf.ended:
                raise
            pixel_at = None  # the piece ends inside an element that pydicom cannot parse cut: inflate more
        else:
            if pixel_at is not None or inf.ended:
                break
        if size >= HEADER_LIMIT:
            raise DicomDecodeError(
                path,
                f"DICOM deflated data set has no Pixel Data within its first {HEADER_LIMIT} inflated "
                "bytes; refused (an inflate bomb or a corrupt header)",
            )
        size *= 4
    ds.file_meta = file_meta
    if pixel_at is None:
        return ds, None, caught
    inf.fill(pixel_at + 12)
    head = bytes(inf.out[pixel_at : pixel_at + 12])
    if len(head) < 12:
        raise DicomDecodeError(
            path, "the file is truncated: the deflate stream ends inside the Pixel Data element"
        )
    vr = head[4:6]
    if vr not in (b"OB", b"OW", b"UN"):
        raise DicomDecodeError(path, f"Pixel Data has VR {vr!r}; expected OB or OW")
    (length,) = struct.unpack_from("<I", head, 8)
    if length == _UNDEFINED:
        raise DicomDecodeError(
            path,
            "encapsulated (undefined length) Pixel Data in a deflated data set; expected native pixel data",
        )
    return ds, DeflatedPixels(inf, pixel_at + 12, length), caught


def _parse(data: bytes, path: str | None) -> tuple[Dataset, int | None, list[str]]:
    """Parse inflated bytes up to the Pixel Data element: ``(elements, its offset or None, warnings)``."""
    fp = DicomBytesIO(data)
    fp.is_little_endian, fp.is_implicit_VR = True, False
    seen = {"n": 0, "pixels": False}

    def stop(tag: BaseTag, vr: str | None, length: int) -> bool:
        if tag == _PIXEL_DATA:
            seen["pixels"] = True
            return True
        seen["n"] += 1
        if seen["n"] > ELEMENT_LIMIT:
            raise _Refused
        return False

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ds = read_dataset(fp, is_implicit_VR=False, is_little_endian=True, stop_when=stop)
        except _Refused:
            raise DicomDecodeError(
                path,
                f"DICOM deflated data set has more than {ELEMENT_LIMIT} elements before its Pixel Data; "
                "refused (an inflate bomb or a corrupt header)",
            ) from None
    return ds, fp.tell() if seen["pixels"] else None, [str(w.message) for w in caught]
