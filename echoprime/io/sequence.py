"""Image-sequence volumes as cines: NIfTI (``.nii``, ``.nii.gz``) and MetaImage (``.mhd`` + data file).

CAMUS publishes its cines as 3-D volumes (two image axes and time), not as video files: the
2019 release as MetaImage (``patient0001_4CH_sequence.mhd`` with ``.raw`` data beside it), the
current one as NIfTI (``..._half_sequence.nii.gz``). :func:`read_sequence` reads either with
SimpleITK (a maintained reader of both formats, not a hand-written parser) and returns the same
:class:`~echoprime.io.VideoData` as the video readers: ``F x H x W x 3`` uint8 RGB (the grey
levels in all three channels), with the frame rate given by the caller (CAMUS keeps it in the
patient's ``Info_*.cfg``, not in the volume).

Volumes are read as videos only where a table says they are (ingest's videos table, written by
``echoprime ingest --dataset camus``): SimpleITK is native code, so an uploaded file never reaches
it, and a 2-D still or a mask volume is never mistaken for a cine by name alone. Sizes are
checked from the header (:func:`~echoprime.io.types.check_frame_limits`) before the pixels are
read. A MetaImage header names its data file (``ElementDataFile``): from bytes, the caller passes
that file's bytes as a companion (:func:`metaimage_data_file` says which).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.io.errors import NotAVideoError, VideoDecodeError, file_boundary
from echoprime.io.types import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    Source,
    VideoData,
    as_path,
    check_frame_limits,
    is_bytes,
    source_name,
)

SEQUENCE_SUFFIXES = (".nii.gz", ".nii", ".mhd")
MAX_HEADER_BYTES = 64 * 1024
"""A MetaImage header is a few hundred bytes of text; anything past this is not one."""


def is_sequence_name(name: str) -> bool:
    """Whether a file name is a volume format :func:`read_sequence` reads."""
    return name.lower().endswith(SEQUENCE_SUFFIXES)


def metaimage_data_file(header: bytes, name: str | None = None) -> str | None:
    """The data file a MetaImage header names (``ElementDataFile``), or ``None`` when the data is
    embedded (``LOCAL``).

    Raises:
        VideoDecodeError: not a MetaImage header, a data file list or pattern (not supported), or
            a name that leaves the header's folder.
    """
    if len(header) > MAX_HEADER_BYTES:
        # LOCAL data follows the header in the same file: look at its start only
        head = header[:MAX_HEADER_BYTES]
    else:
        head = header
    text = head.decode("latin-1")
    value = None
    for line in text.splitlines():
        key, sep, rest = line.partition("=")
        if sep and key.strip() == "ElementDataFile":
            value = rest.strip()
            break
    if value is None:
        raise VideoDecodeError(name, "not a MetaImage header (no ElementDataFile line)")
    if value == "LOCAL":
        return None
    if value.startswith("LIST") or "%" in value or " " in value:
        raise VideoDecodeError(
            name, f"MetaImage data file {value[:60]!r}: lists and patterns are not supported"
        )
    if "/" in value or "\\" in value or value in (".", "..") or posixpath.isabs(value):
        raise VideoDecodeError(name, f"MetaImage data file {value[:60]!r} is not a file beside the header")
    return value


def read_sequence(
    src: Source,
    *,
    name: str | None = None,
    fps: float | None = None,
    companions: Mapping[str, bytes] | None = None,
    max_frames: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> VideoData:
    """Read a NIfTI or MetaImage image sequence (``H x W`` frames along the third axis) as a cine.

    Args:
        src: path or the file's bytes (for bytes, ``name`` gives the format by its suffix).
        name: the file's name (errors, format).
        fps: the frame rate to report (the volume has none a cine reader can trust).
        companions: ``{file name: bytes}`` of the files a MetaImage header refers to, when
            ``src`` is bytes.
        max_frames: read at most this many frames from the start.
        max_pixels: refuse frames larger than this (from the header).
        max_bytes: refuse clips whose RGB frames would exceed this many bytes.

    Returns:
        ``VideoData``: frames ``F x H x W x 3`` uint8 (grey in R, G and B), ``fps``, ``meta``
        (format ``nifti``/``metaimage``, n_frames, rows, cols, decoder ``simpleitk``, fps_source).

    Raises:
        NotAVideoError: a 2-D image (a still or a mask) or a sequence of fewer than two frames.
        VideoDecodeError: unreadable, a colour or 4-D volume, a missing MetaImage data file.
        FrameTooLargeError: frames or clip larger than the limits.
    """
    path = source_name(src, name)
    with file_boundary(path, VideoDecodeError):
        label = path or ""
        if not is_sequence_name(label):
            raise VideoDecodeError(
                path, f"not a volume file name (expected one of {list(SEQUENCE_SUFFIXES)})"
            )
        if not is_bytes(src):
            return _read(str(as_path(src)), path, fps, max_frames, max_pixels, max_bytes)
        data = bytes(src)  # type: ignore[arg-type]
        base = posixpath.basename(label.replace("\\", "/"))
        if base.lower().endswith(".gz") and data[:2] != b"\x1f\x8b":
            base = base[:-3]  # already inflated on the way in (pyarrow's streams inflate ".gz" files)
        with tempfile.TemporaryDirectory(prefix="echoprime-seq-") as tmp:
            Path(tmp, base).write_bytes(data)
            if base.lower().endswith(".mhd"):
                need = metaimage_data_file(data, path)
                if need is not None:
                    if need not in (companions or {}):
                        raise VideoDecodeError(path, f"its MetaImage data file {need} was not given with it")
                    Path(tmp, need).write_bytes((companions or {})[need])
            return _read(os.path.join(tmp, base), path, fps, max_frames, max_pixels, max_bytes)


def _read(
    file: str, path: str | None, fps: float | None, max_frames: int | None, max_pixels: int, max_bytes: int
) -> VideoData:
    import SimpleITK as sitk  # noqa: N813  (the package's own name)

    reader = sitk.ImageFileReader()
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError as e:
        raise VideoDecodeError(path, f"not a readable NIfTI/MetaImage file ({_itk_text(e)})") from None
    size = tuple(int(x) for x in reader.GetSize())  # ITK order: x (columns), y (rows), t
    components = int(reader.GetNumberOfComponents())
    if len(size) == 2 or (len(size) == 3 and size[2] == 1):
        raise NotAVideoError(
            path, f"a 2-D image of {size[1]} x {size[0]} (a still or a mask), not a sequence"
        )
    if len(size) != 3:
        raise VideoDecodeError(path, f"a {len(size)}-D volume of size {size}; expected 2 image axes and time")
    if components != 1:
        raise VideoDecodeError(path, f"{components} components per pixel; expected a greyscale sequence")
    cols, rows, n = size
    take = check_frame_limits(
        path,
        n_frames=n,
        rows=rows,
        cols=cols,
        max_frames=max_frames,
        max_pixels=max_pixels,
        max_bytes=max_bytes,
    )
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise VideoDecodeError(path, f"the pixel data failed to read ({_itk_text(e)})") from None
    arr = sitk.GetArrayViewFromImage(image)  # t x y x x (numpy order)
    grey = _to_uint8(np.asarray(arr[:take]))  # F x H x W
    frames = np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=-1))  # F x H x W -> F x H x W x 3
    meta: dict[str, Any] = {
        "format": "metaimage" if file.lower().endswith(".mhd") else "nifti",
        "n_frames": n,
        "rows": rows,
        "cols": cols,
        "decoder": "simpleitk",
        "fps_source": "given" if fps else None,
    }
    return VideoData(frames=frames, fps=float(fps) if fps else None, meta=meta)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    """Grey levels as uint8: 8-bit data as stored; wider integers or floats that fit 0-255 cast;
    anything else scaled linearly from its own range (a fixed mapping per clip, as for DICOM)."""
    if a.dtype == np.uint8:
        return a
    if a.size and np.issubdtype(a.dtype, np.number):
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        if lo >= 0 and hi <= 255:
            return np.rint(np.nan_to_num(a)).astype(np.uint8)
        if hi > lo:
            return np.rint((np.nan_to_num(a, nan=lo) - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    return np.zeros(a.shape, np.uint8)


def _itk_text(e: BaseException) -> str:
    """The useful last line of an ITK exception, without the paths it quotes."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[-1] if lines else type(e).__name__
    return text.split(": ", 1)[-1][:160] if "/" in text else text[:160]
