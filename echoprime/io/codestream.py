"""Frame sizes read from JPEG and JPEG 2000 codestream headers, before any decoder sees them.

A JPEG decoder sizes its output buffer from the frame's own SOF header, not from the DICOM
Rows/Columns: a 2 KB fragment whose SOF says 30000 x 30000 makes it allocate gigabytes. The
headers are a few bytes at the start of each frame, so they are parsed here (no decoder, no
allocation) and compared with Rows/Columns first.

Example::

    jpeg_frame_size(fragment)   # (rows, cols) from the SOF marker
    j2k_frame_size(codestream)  # (rows, cols) from the SIZ marker
"""

from __future__ import annotations

import struct

# Start-of-frame markers (ITU T.81 B.1.1.3): every SOFn except DHT (C4), JPG (C8) and DAC (CC),
# plus JPEG-LS SOF55 (F7). Each is followed by length, precision, height, width.
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7})
# Markers without a length field: TEM, RST0-7, SOI, EOI.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8), 0xD8, 0xD9})
_SOS = 0xDA
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


class CodestreamError(ValueError):
    """A codestream whose header cannot be parsed; the message says what was found where."""


def jpeg_frame_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Height and width from the SOF header of a JPEG (or JPEG-LS) codestream.

    Args:
        data: The frame's codestream, starting at its SOI marker.

    Returns:
        ``(rows, cols)`` as the SOF header states them (rows is 0 when the height is left to a
        DNL marker after the first scan).

    Raises:
        CodestreamError: No SOI at the start, a marker segment running past the data, or scan
            data (SOS) or the end before any SOF header.
    """
    buf = memoryview(data)
    if bytes(buf[:2]) != b"\xff\xd8":
        raise CodestreamError(f"does not start with a JPEG SOI marker (starts {bytes(buf[:4]).hex()})")
    i, n = 2, len(buf)
    while i + 1 < n:
        if buf[i] != 0xFF:
            raise CodestreamError(f"no JPEG marker at byte {i} (found {buf[i]:#04x})")
        marker = buf[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in _STANDALONE:
            if marker == 0xD9:
                break
            i += 2
            continue
        if marker == _SOS:
            raise CodestreamError("scan data (SOS) before any frame header (SOF)")
        if i + 4 > n:
            break
        (length,) = struct.unpack_from(">H", buf, i + 2)
        if marker in _SOF:
            if length < 8 or i + 9 > n:
                raise CodestreamError(f"SOF header at byte {i} is cut short ({length} bytes declared)")
            rows, cols = struct.unpack_from(">HH", buf, i + 5)
            return int(rows), int(cols)
        if length < 2:
            raise CodestreamError(f"marker segment {marker:#04x} at byte {i} declares length {length}")
        i += 2 + length
    raise CodestreamError("no frame header (SOF) before the end of the data")


def j2k_frame_size(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """Height and width of the image area from the SIZ header of a JPEG 2000 codestream.

    The codestream may be bare (it starts with SOC + SIZ) or wrapped in JP2 boxes; the first
    SOC + SIZ pair within the data is read.

    Returns:
        ``(rows, cols)``: ``Ysiz - YOsiz`` and ``Xsiz - XOsiz``.

    Raises:
        CodestreamError: No SOC + SIZ marker pair, or a SIZ header cut short or with the image
            offset beyond the reference grid.
    """
    raw = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    i = raw.find(_J2K_SOC_SIZ)
    if i < 0:
        raise CodestreamError("no JPEG 2000 SOC + SIZ markers (not a JPEG 2000 codestream)")
    if i + 4 + 2 + 2 + 16 > len(raw):
        raise CodestreamError("JPEG 2000 SIZ header is cut short")
    xsiz, ysiz, xo, yo = struct.unpack_from(">IIII", raw, i + 8)  # after SOC, SIZ, Lsiz, Rsiz
    if xo > xsiz or yo > ysiz:
        raise CodestreamError(f"JPEG 2000 SIZ image offset ({xo}, {yo}) lies beyond the grid {xsiz} x {ysiz}")
    return int(ysiz - yo), int(xsiz - xo)
