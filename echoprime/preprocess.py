"""Pure array functions that turn decoded frames into model clips.

Layouts (named in every docstring): a decoded clip is ``F x H x W x 3`` uint8 RGB (what
``echoprime.io`` returns); the shard / storage form is ``T x S x S x 3`` uint8; the model input is
``3 x T x S x S`` float32 (channels first, per-channel normalised). Batched model input is
``B x 3 x T x S x S``.

The pipeline follows the published release's preprocessing (docs/release-compat.md, "The
algorithm, as the release computes it"): mask the ultrasound sector, crop and scale each frame,
normalise, pad with zeros, sample every ``stride``-th frame. Two deliberate choices:

* Work is done only on the frames that end up in the clip: cropping, masking and resizing touch
  just the ``T`` sampled frames, cropped once by slicing. At inference the readers do not even
  decode the others (:meth:`PreprocessSpec.clip_reading`, :func:`preprocess_sampled`); the sector
  mask is then found from the clip's own frames (docs/ingestion.md, "Decoding only the clip").
* The float path *is* the uint8 path plus :func:`normalise`: ``preprocess_video`` returns exactly
  ``normalise(preprocess_uint8(...), ..., n_valid=...)``. Resizing uint8 frames rounds to uint8 as
  OpenCV does, which is also what the release does (it resizes uint8 frames), so storing uint8
  shards loses nothing. Padding frames are zero *after* normalisation, as in the release, so a
  uint8 clip needs ``n_valid`` (see :func:`valid_frames`) to be normalised identically.

Ray Data ``map_batches`` wraps these functions; Serve calls them directly. Randomness (the clip
offset at training time) comes in as an explicit ``np.random.Generator``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from echoprime.sector import SectorMask, sector_mask
from echoprime.taxonomy import RELEASE_MEAN, RELEASE_STD

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

__all__ = [
    "RELEASE_SPEC",
    "PreprocessSpec",
    "SectorMask",
    "clip_indices",
    "clip_offset",
    "crop_and_scale",
    "crop_box",
    "mask_sector",
    "normalise",
    "preprocess_sampled",
    "preprocess_uint8",
    "preprocess_video",
    "sample_clip",
    "sector_mask",
    "valid_frames",
]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a decoded clip becomes model input; saved with the weights and never retyped.

    Attributes:
        size: Side ``S`` of the square output frames, in pixels.
        frames: Frames ``T`` per clip.
        stride: Take every ``stride``-th source frame (after an optional offset).
        mean: Per-channel mean (R, G, B) in pixel units 0-255.
        std: Per-channel standard deviation in pixel units.
        crop_fraction: Fraction of the centre square cropped away on each side before resizing.
        mask: Whether to zero everything outside the ultrasound sector.
    """

    size: int = 224
    frames: int = 16
    stride: int = 2
    mean: tuple[float, float, float] = RELEASE_MEAN
    std: tuple[float, float, float] = RELEASE_STD
    crop_fraction: float = 0.1
    mask: bool = True

    def __post_init__(self) -> None:
        if self.size < 1 or self.frames < 1 or self.stride < 1:
            raise ValueError(
                f"size, frames and stride must be >= 1, got size={self.size}, frames={self.frames}, "
                f"stride={self.stride}"
            )
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError(f"mean and std need 3 values (R, G, B), got {self.mean} and {self.std}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"every std must be > 0, got {list(self.std)}")
        if not 0.0 <= self.crop_fraction < 0.5:
            raise ValueError(f"crop_fraction must be in [0, 0.5), got {self.crop_fraction}")
        # Normalise sequences (lists from YAML/JSON) to tuples so specs compare and hash equal.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    @classmethod
    def release(cls) -> PreprocessSpec:
        """The published EchoPrime settings: 224 px, 16 frames at stride 2, its mean/std, 10 % crop, mask."""
        return cls(224, 16, 2, RELEASE_MEAN, RELEASE_STD, 0.1, True)

    def clip_reading(self) -> dict[str, int]:
        """Reader arguments that decode only the frames of the clip at offset 0 (inference):
        ``max_frames = (T - 1) * stride + 1`` and ``step = stride``, for
        :func:`~echoprime.io.read_any` and the readers; :func:`preprocess_sampled` makes the clip."""
        return {"max_frames": (self.frames - 1) * self.stride + 1, "step": self.stride}

    def to_dict(self) -> dict[str, Any]:
        """JSON/YAML-ready dict (lists for mean/std)."""
        d = dataclasses.asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessSpec:
        """Build from :meth:`to_dict` output (or a ``DataCfg`` dump, whose ``mask_sector`` means ``mask``).

        Raises:
            ValueError: Unknown keys (a typo must not silently fall back to a default).
        """
        d = dict(d)
        if "mask_sector" in d:
            if "mask" in d:
                raise ValueError("give either 'mask' or its DataCfg name 'mask_sector', not both")
            d["mask"] = d.pop("mask_sector")
        names = {f.name for f in dataclasses.fields(cls)}
        if unknown := sorted(set(d) - names):
            raise ValueError(f"unknown PreprocessSpec keys {unknown}; allowed: {sorted(names)}")
        return cls(**d)


RELEASE_SPEC = PreprocessSpec.release()
"""The published settings (also ``PreprocessSpec()``): the default of every function here."""


def crop_box(height: int, width: int, crop_fraction: float = 0.1) -> tuple[int, int, int, int]:
    """The region :func:`crop_and_scale` keeps, as ``(y0, y1, x0, x1)`` slice bounds.

    Centre-crop the longer side to a square of side ``s = min(height, width)`` (offset
    ``(long - s) // 2``), then remove ``int(s * crop_fraction)`` pixels on every side of that square.

    Args:
        height: Frame height ``H``.
        width: Frame width ``W``.
        crop_fraction: Fraction of the square's side removed on each side.

    Returns:
        ``(y0, y1, x0, x1)`` with ``y1 - y0 == x1 - x0 >= 1``.
    """
    side = min(height, width)
    y0, x0 = (height - side) // 2, (width - side) // 2
    m = int(side * crop_fraction)
    if side - 2 * m < 1:
        raise ValueError(f"a {height} x {width} frame leaves nothing after cropping {crop_fraction} per side")
    return y0 + m, y0 + side - m, x0 + m, x0 + side - m


def crop_and_scale(frame: np.ndarray, out_size: int = 224, crop_fraction: float = 0.1) -> np.ndarray:
    """Crop one frame as the release does and resize it bicubically to ``out_size`` square.

    Args:
        frame: ``H x W x C`` or ``H x W`` (uint8 or float32).
        out_size: Output side ``S``.
        crop_fraction: See :func:`crop_box`.

    Returns:
        ``S x S x C`` (or ``S x S``), same dtype; uint8 output is rounded and saturated by OpenCV.
    """
    y0, y1, x0, x1 = crop_box(frame.shape[0], frame.shape[1], crop_fraction)
    return cv2.resize(frame[y0:y1, x0:x1], (out_size, out_size), interpolation=cv2.INTER_CUBIC)


def clip_indices(n_src: int, n_frames: int, stride: int, offset: int = 0) -> np.ndarray:
    """Source frame index of each clip frame, ``-1`` where the clip runs past the source (padding).

    Args:
        n_src: Frames in the source ``F``.
        n_frames: Frames in the clip ``T``.
        stride: Step between taken frames.
        offset: First source frame taken.

    Returns:
        ``T`` int64 indices ``offset + k * stride`` (or ``-1``); valid ones form a prefix.
    """
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    idx = offset + stride * np.arange(n_frames, dtype=np.int64)
    idx[idx >= n_src] = -1
    return idx


def valid_frames(n_src: int, spec: PreprocessSpec, offset: int = 0) -> int:
    """How many frames of a ``spec`` clip come from the source (the rest is padding).

    Args:
        n_src: Frames in the source ``F``.
        spec: The preprocessing spec.
        offset: First source frame taken.

    Returns:
        ``0 <= n_valid <= spec.frames``.
    """
    return int((clip_indices(n_src, spec.frames, spec.stride, offset) >= 0).sum())


def clip_offset(n_src: int, spec: PreprocessSpec, rng: np.random.Generator | None) -> int:
    """First frame of a clip: 0 without ``rng``, else uniform over offsets where the clip fits.

    Args:
        n_src: Frames in the source ``F``.
        spec: The preprocessing spec.
        rng: Random generator for training-time clip sampling, or ``None``.

    Returns:
        An offset in ``[0, max(0, F - (T - 1) * stride - 1)]``.
    """
    if rng is None:
        return 0
    last = n_src - (spec.frames - 1) * spec.stride - 1
    return int(rng.integers(0, last + 1)) if last > 0 else 0


def sample_clip(
    frames: np.ndarray, n_frames: int = 16, stride: int = 2, pad: bool = True, offset: int = 0
) -> np.ndarray:
    """Take frames ``offset, offset + stride, ...`` padding with zero frames past the end.

    Equivalent to the release's "pad with zeros to at least ``n_frames * stride`` frames, then take
    every ``stride``-th" (with ``offset = 0``).

    Args:
        frames: ``F x ...`` (any per-frame layout and dtype).
        n_frames: Frames in the clip ``T``.
        stride: Step between taken frames.
        pad: If ``False``, a source too short for the clip raises instead of padding.
        offset: First source frame taken.

    Returns:
        ``T x ...``, same dtype; padded frames are zeros.
    """
    idx = clip_indices(frames.shape[0], n_frames, stride, offset)
    n_valid = int((idx >= 0).sum())
    if not pad and n_valid < n_frames:
        raise ValueError(
            f"clip of {n_frames} frames at stride {stride} from offset {offset} needs "
            f"{offset + (n_frames - 1) * stride + 1} frames, the source has {frames.shape[0]}"
        )
    out = np.zeros((n_frames, *frames.shape[1:]), dtype=frames.dtype)
    out[:n_valid] = frames[idx[:n_valid]]
    return out


def normalise(
    clip: ArrayT,
    mean: Sequence[float] = RELEASE_MEAN,
    std: Sequence[float] = RELEASE_STD,
    n_valid: int | Sequence[int] | np.ndarray | torch.Tensor | None = None,
) -> ArrayT:
    """Channels first, float32, per-channel ``(x - mean) / std``; padding frames set to 0.

    Works on numpy arrays and torch tensors (on any device), with or without a batch dimension.

    Args:
        clip: ``T x H x W x 3`` or ``B x T x H x W x 3`` (uint8 or float, pixel units).
        mean: Per-channel mean (R, G, B).
        std: Per-channel std (R, G, B).
        n_valid: Frames that come from the source; frames from index ``n_valid`` on are padding and
            become exactly 0 (the release pads after normalising). An int, or one per batch item.
            ``None``: every frame is real.

    Returns:
        ``3 x T x H x W`` or ``B x 3 x T x H x W`` float32 (same library and device as ``clip``).
    """
    if clip.shape[-1] != 3 or clip.ndim not in (4, 5):
        raise ValueError(f"normalise expects (B x) T x H x W x 3, got shape {tuple(clip.shape)}")
    batched = clip.ndim == 5
    if isinstance(clip, torch.Tensor):
        # As below: channels first as a view, then one pass converting into a new contiguous
        # float32 tensor and two in place: the same values bit for bit as out-of-place arithmetic
        # followed by a contiguous copy, in about a quarter of the time (one CPU thread).
        m = torch.tensor(mean, dtype=torch.float32, device=clip.device).view(3, 1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32, device=clip.device).view(3, 1, 1, 1)
        moved = clip.movedim(-1, -4)  # (B x) T x H x W x 3 -> (B x) 3 x T x H x W (view)
        x = torch.empty(moved.shape, dtype=torch.float32, device=clip.device)
        x.copy_(moved).sub_(m).div_(s)
    else:
        m32 = np.asarray(mean, np.float32).reshape(3, 1, 1, 1)  # 3 -> 3 x 1 x 1 x 1 (over T x H x W)
        s32 = np.asarray(std, np.float32).reshape(3, 1, 1, 1)  # 3 -> 3 x 1 x 1 x 1
        # Move channels first while still small (uint8), then compute in place in float32.
        moved = np.moveaxis(clip, -1, -4)  # (B x) T x H x W x 3 -> (B x) 3 x T x H x W (view)
        x = np.empty(moved.shape, np.float32)
        np.subtract(moved, m32, out=x, dtype=np.float32)
        np.divide(x, s32, out=x)
    if n_valid is not None:
        nv = [int(v) for v in (n_valid if batched else [n_valid])]  # type: ignore[union-attr]
        if batched and len(nv) != clip.shape[0]:
            raise ValueError(f"n_valid has {len(nv)} values for a batch of {clip.shape[0]}")
        view = x if batched else x[None]
        for b, v in enumerate(nv):
            view[b, :, v:] = 0
    return x


def _check_frames(frames: np.ndarray) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.ndim != 4
        or frames.shape[-1] != 3
        or frames.dtype != np.uint8
    ):
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"expected frames as uint8 F x H x W x 3 (RGB), got {desc}")
    if frames.shape[0] < 1:
        raise ValueError("expected at least one frame, got 0")


def mask_sector(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero everything outside the ultrasound sector (text, ECG, colour bars, calipers).

    See :func:`echoprime.sector.sector_mask` for how the sector is found and what happens when it
    cannot be (the mask falls back to the whole frame, never to nothing).

    Args:
        frames: ``F x H x W x 3`` uint8.

    Returns:
        ``(masked, mask)``: ``F x H x W x 3`` uint8 (a copy) and the ``H x W`` bool mask.
    """
    _check_frames(frames)
    m = sector_mask(frames).mask
    return frames * m[None, :, :, None].astype(np.uint8), m


def preprocess_uint8(
    frames: np.ndarray,
    spec: PreprocessSpec = RELEASE_SPEC,
    *,
    offset: int = 0,
    sector: SectorMask | np.ndarray | None = None,
) -> np.ndarray:
    """Mask, sample, crop and resize a decoded clip into its uint8 storage form.

    Args:
        frames: ``F x H x W x 3`` uint8 RGB.
        spec: The preprocessing spec.
        offset: First source frame taken (see :func:`clip_offset`).
        sector: A precomputed sector mask (``H x W`` bool) to reuse, e.g. for several clips of one
            video; computed from ``frames`` when ``None`` and ``spec.mask``.

    Returns:
        ``T x S x S x 3`` uint8, frames past ``valid_frames(F, spec, offset)`` are zero (padding).
    """
    _check_frames(frames)
    n_src, h, w, _ = frames.shape
    idx = clip_indices(n_src, spec.frames, spec.stride, offset)
    n_valid = int((idx >= 0).sum())
    y0, y1, x0, x1 = crop_box(h, w, spec.crop_fraction)
    mask_crop = None
    if spec.mask:
        m = sector if sector is not None else sector_mask(frames)
        m_arr = m.mask if isinstance(m, SectorMask) else np.asarray(m, dtype=bool)
        if m_arr.shape != (h, w):
            raise ValueError(f"sector mask has shape {m_arr.shape}, frames are {h} x {w}")
        mask_crop = np.ascontiguousarray(m_arr[y0:y1, x0:x1]).view(np.uint8)
    out = np.zeros((spec.frames, spec.size, spec.size, 3), np.uint8)
    for k in range(n_valid):
        # A slice of the source frame (no copy); OpenCV reads strided rows directly.
        src = frames[idx[k], y0:y1, x0:x1]  # h' x w' x 3 view
        if mask_crop is not None:
            src = cv2.bitwise_and(src, src, mask=mask_crop)
        out[k] = cv2.resize(src, (spec.size, spec.size), interpolation=cv2.INTER_CUBIC)
    return out


def preprocess_sampled(
    frames: np.ndarray, spec: PreprocessSpec = RELEASE_SPEC, *, sector: SectorMask | np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """The inference clip (offset 0) from only its own frames, as read with ``spec.clip_reading()``.

    ``frames`` are source frames ``0, stride, 2 * stride, ...`` (at most ``T`` of them; fewer when
    the source is short). Crop, scale and padding are :func:`preprocess_uint8`'s, so with
    ``spec.mask`` off the clip equals ``preprocess_uint8`` of the whole decoded source bit for
    bit; with it on, the sector mask is found from these ``T`` frames rather than every decoded
    one (docs/ingestion.md measures the difference).

    Args:
        frames: ``F x H x W x 3`` uint8 RGB, ``F <= T`` sampled frames.
        spec: The preprocessing spec.
        sector: A precomputed sector mask, see :func:`preprocess_uint8`.

    Returns:
        ``(clip, n_valid)``: ``T x S x S x 3`` uint8 and how many of its frames come from the source.
    """
    _check_frames(frames)
    if frames.shape[0] > spec.frames:
        raise ValueError(
            f"expected at most {spec.frames} sampled frames (read with spec.clip_reading()), got {frames.shape[0]}"
        )
    one = dataclasses.replace(spec, stride=1)
    return preprocess_uint8(frames, one, sector=sector), int(frames.shape[0])


def preprocess_video(
    frames: np.ndarray,
    spec: PreprocessSpec = RELEASE_SPEC,
    rng: np.random.Generator | None = None,
    *,
    offset: int | None = None,
    sector: SectorMask | np.ndarray | None = None,
) -> np.ndarray:
    """A decoded clip to model input: ``normalise(preprocess_uint8(...))`` with padding zeroed.

    Args:
        frames: ``F x H x W x 3`` uint8 RGB.
        spec: The preprocessing spec.
        rng: Draws the clip offset (training); ``None`` starts at frame 0 (inference, release).
        offset: Explicit first frame (overrides ``rng``).
        sector: Precomputed sector mask, see :func:`preprocess_uint8`.

    Returns:
        ``3 x T x S x S`` float32.
    """
    _check_frames(frames)
    off = offset if offset is not None else clip_offset(frames.shape[0], spec, rng)
    u8 = preprocess_uint8(frames, spec, offset=off, sector=sector)
    return normalise(u8, spec.mean, spec.std, n_valid=valid_frames(frames.shape[0], spec, off))
