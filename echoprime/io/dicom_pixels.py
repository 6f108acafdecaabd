"""Turning decoded DICOM pixel arrays into ``F x H x W x 3`` uint8 RGB.

pydicom's decoders undo the JPEG colour transform; :func:`echoprime.io.dicom.read_dicom` asks
them for the pixels as stored (``as_rgb=False``) and YBR_FULL / YBR_FULL_422 are converted to
RGB here, frame by frame, with pydicom's own conversion: the same values as pydicom's
``as_rgb=True``, whose whole-clip conversion goes through float32 copies of the whole clip (peak
742 MB against 98 MB here for a 60-frame 600 x 800 JPEG clip) and takes longer (0.35 s against
0.23 s). JPEG 2000's reversible/irreversible component transforms (YBR_RCT/YBR_ICT) are undone
by openjpeg. The decoder reports the photometric interpretation *of the array it returns*, and
that, not the header's, decides what is left to do here. Converting by the header's value would
convert twice (the "green tint" bug).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, convert_color_space

from echoprime.io.errors import DicomDecodeError, public_text


def to_uint8(arr: np.ndarray, bits_stored: int, signed: bool) -> np.ndarray:
    """Scale integer samples of ``bits_stored`` bits to uint8.

    Args:
        arr: Decoded samples, any integer dtype, any shape (``F x ...``: converted one frame at a
            time, so the 64-bit working copy is one frame's, not the clip's).
        bits_stored: Significant bits per sample (DICOM BitsStored), 1 to 64.
        signed: Whether samples are two's complement (PixelRepresentation 1).

    Returns:
        uint8 array of the same shape; the full stored range maps linearly onto 0..255 (no
        windowing: echo is 8-bit in practice, and a fixed mapping keeps clips comparable).

    Raises:
        ValueError: Float samples, or ``bits_stored`` outside 1..64.
    """
    if arr.dtype == np.uint8 and not signed and bits_stored >= 8:
        return arr
    if arr.dtype.kind == "f":
        raise ValueError(f"float pixel data (dtype {arr.dtype}) is not an ultrasound image")
    if not 1 <= bits_stored <= 64:
        raise ValueError(f"BitsStored {bits_stored}: expected 1 to 64")
    out = np.empty(arr.shape, np.uint8)
    frames = arr.reshape(1, *arr.shape) if arr.ndim < 2 else arr
    view = out.reshape(frames.shape)
    top = (1 << bits_stored) - 1
    for i, frame in enumerate(frames):
        if bits_stored < 64:
            x = frame.astype(np.int64)
            if signed:
                x += 1 << (bits_stored - 1)
            np.clip(x, 0, top, out=x)
        elif signed:  # 64-bit two's complement: offset binary by wrapping in uint64, exactly
            x = frame.astype(np.int64).view(np.uint64) + np.uint64(1 << 63)
        else:
            x = frame.astype(np.uint64)
        if bits_stored > 8:
            x >>= bits_stored - 8 if x.dtype == np.int64 else np.uint64(bits_stored - 8)
        elif bits_stored < 8:
            x = (x * 255) // top
        view[i] = x
    return out


def palette_table(ds: Dataset, bits_allocated: int) -> np.ndarray:
    """The palette as a lookup table from stored index to 8-bit RGB.

    Args:
        ds: Data set with the (possibly segmented) red/green/blue palette LUTs.
        bits_allocated: Bits per stored index (8 or 16).

    Returns:
        ``N x 3`` uint8 with ``N = 2 ** bits_allocated``, so that ``table[indices]`` colours a clip
        in one gather instead of running the LUT per pixel per frame.
    """
    if bits_allocated not in (8, 16):
        raise ValueError(f"palette indices of {bits_allocated} bits; expected 8 or 16")
    _check_palette(ds)
    domain = np.arange(1 << bits_allocated, dtype=np.uint8 if bits_allocated <= 8 else np.uint16)
    rgb = apply_color_lut(domain, ds)  # N x 3
    if rgb.dtype == np.uint8:
        return rgb
    # 16-bit LUT entries: take the high byte. Scanners write 8-bit colours as v << 8 (max 0xFF00),
    # and the high byte maps both that and a true full-range LUT (max 0xFFFF) to 255.
    # Some writers store 8-bit values in a 16-bit LUT unscaled; a maximum <= 255 can only mean that.
    if int(rgb.max()) <= 255:
        return rgb.astype(np.uint8)
    return (rgb >> 8).astype(np.uint8)


def _check_palette(ds: Dataset) -> None:
    """Each colour's LUT data holds the entries its descriptor declares (segmented LUTs are left
    to pydicom's expansion).

    Raises:
        ValueError: A descriptor that is not three numbers, or LUT data shorter than it declares.
    """
    colours = ("Red", "Green", "Blue")
    if any(f"Segmented{c}PaletteColorLookupTableData" in ds for c in colours):
        return
    for colour in colours:
        desc = ds.get(f"{colour}PaletteColorLookupTableDescriptor")
        data = ds.get(f"{colour}PaletteColorLookupTableData")
        if desc is None or data is None:
            continue  # pydicom names the missing table
        if len(desc) != 3:
            raise ValueError(f"{colour} palette descriptor has {len(desc)} values, expected 3")
        entries = int(desc[0]) or 65536  # 0 means 2^16 entries
        bits = int(desc[2])
        if bits not in (8, 16):
            raise ValueError(f"{colour} palette entries of {bits} bits, expected 8 or 16")
        if len(data) < entries * bits // 8:
            raise ValueError(
                f"{colour} palette data has {len(data)} bytes for {entries} entries of {bits} bits"
            )


def _scaled(arr: np.ndarray, bits_stored: int, signed: bool, path: str | None) -> np.ndarray:
    try:
        return to_uint8(arr, bits_stored, signed)
    except ValueError as e:
        raise DicomDecodeError(path, str(e)) from None


def to_rgb(arr: np.ndarray, photometric: str, ds: Dataset, path: str | None) -> np.ndarray:
    """Decoded frames to RGB uint8.

    Args:
        arr: ``F x H x W`` (one sample per pixel) or ``F x H x W x 3`` as decoded.
        photometric: The photometric interpretation of ``arr`` as the decoder reports it.
        ds: The data set (bit depth, signedness, palette).
        path: The file, for errors.

    Returns:
        ``F x H x W x 3`` uint8 RGB.

    Raises:
        DicomDecodeError: A photometric interpretation with no defined conversion.
    """
    bits_stored = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    bits_allocated = int(ds.get("BitsAllocated", 8) or 8)
    signed = int(ds.get("PixelRepresentation", 0) or 0) == 1
    pi = str(photometric).strip().upper()
    if pi == "PALETTE COLOR":
        if arr.ndim != 3:
            raise DicomDecodeError(path, f"PALETTE COLOR needs one sample per pixel, got array {arr.shape}")
        try:
            table = palette_table(ds, bits_allocated)
        except Exception as e:  # noqa: BLE001  (pydicom's LUT code raises ValueError, TypeError, ...)
            raise DicomDecodeError(
                path, f"PALETTE COLOR image with an unusable colour table: {public_text(e)}"
            ) from e
        return table[arr]  # F x H x W -> F x H x W x 3
    if arr.ndim == 3:  # F x H x W: greyscale
        if pi not in ("MONOCHROME1", "MONOCHROME2"):
            raise DicomDecodeError(path, f"one sample per pixel with photometric interpretation {pi!r}")
        grey = _scaled(arr, bits_stored, signed, path)
        if pi == "MONOCHROME1":  # 0 is white in MONOCHROME1
            grey = 255 - grey
        return np.repeat(grey[..., None], 3, axis=-1)  # F x H x W -> F x H x W x 3
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DicomDecodeError(path, f"decoded pixel array has shape {arr.shape}, expected F x H x W x 3")
    rgb = _scaled(arr, bits_stored, signed, path)
    if pi == "RGB":
        return rgb
    if pi in ("YBR_FULL", "YBR_FULL_422"):
        # One frame at a time: pydicom's arithmetic (float32, per pixel) on a frame-sized
        # temporary that stays in cache; the values are those of a whole-clip conversion.
        # In place when the decoder handed us a fresh array; a read-only view (native pixel data
        # straight from the file's buffer) gets a new one.
        out = rgb if rgb.flags.writeable else np.empty_like(rgb)
        for i in range(rgb.shape[0]):
            out[i] = convert_color_space(rgb[i], "YBR_FULL", "RGB")
        return out
    raise DicomDecodeError(
        path,
        f"photometric interpretation {pi!r} is not supported here (expected MONOCHROME1/2, RGB, "
        "YBR_FULL, YBR_FULL_422 or PALETTE COLOR; JPEG 2000 YBR_RCT/YBR_ICT come out of the "
        "decoder as RGB)",
    )
