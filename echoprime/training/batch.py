"""Turning a batch as it comes from the data side into model inputs on the device.

The batch dict (what ``iter_torch_batches`` over study shards yields, after tokenisation):

=================  ==============================================================
``clip``           uint8 ``B x T x H x W x 3`` as stored in shards, or an already
                   normalised float ``B x 3 x T x H x W``
``input_ids``      int ``B x L`` report tokens of each clip's study
``attention_mask`` int ``B x L``
``token_type_ids`` int ``B x L`` (section of each token; zeros for BiomedBERT)
``study_idx``      int ``B``: rows with equal values share a report
``labels``         float ``B x P`` (optional): the study's standardised findings, NaN =
                   missing (``echoprime.training.labels``), for a label loss
=================  ==============================================================

Normalisation happens here, on the device, because uint8 clips are 4x smaller to move from the
data workers than float ones. Flips are never applied: echo orientation carries meaning (left
and right heart). Optional augmentation runs here too (:func:`augment_clip`): brightness and
contrast jitter, a random translation of a few pixels, additive noise and time reversal, as
set by one :class:`Augmentation` (built once from the ``train`` config section). Temporal
offsets are the data side's job (which frames it samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from echoprime.config import TrainCfg

TEXT_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Augmentation:
    """The training-time augmentation of clips, one value passed whole from the config to
    :func:`augment_clip` (the default changes nothing: evaluation batches use it).

    Attributes:
        brightness: max brightness shift in normalised units (:func:`jitter_intensity`).
        contrast: max relative contrast change (:func:`jitter_intensity`).
        shift: max translation in pixels (:func:`shift_clip`).
        noise: std of additive Gaussian noise per pixel, frame and channel (normalised units).
        reverse: probability of playing a clip backwards.
    """

    brightness: float = 0.0
    contrast: float = 0.0
    shift: int = 0
    noise: float = 0.0
    reverse: float = 0.0

    @classmethod
    def from_train(cls, train: TrainCfg) -> Augmentation:
        """The augmentation a ``train`` config section asks for (the config validates the ranges)."""
        return cls(
            brightness=float(train.brightness),
            contrast=float(train.contrast),
            shift=int(train.shift),
            noise=float(train.noise),
            reverse=float(train.reverse),
        )


NO_AUGMENTATION = Augmentation()


def _as_tensor(x: Any, key: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"batch[{key!r}] cannot be made a tensor ({type(x).__name__}): {e}") from None


def normalize_clip(
    clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], device: torch.device | str | None = None
) -> torch.Tensor:
    """uint8 ``B x T x H x W x 3`` -> float32 ``B x 3 x T x H x W``, ``(x - mean) / std`` per channel.

    Args:
        clip: the stored clips.
        mean: per-channel mean in pixel units (0-255).
        std: per-channel std in pixel units.
        device: where to compute (the uint8 tensor is moved first: 4x less to copy).
    """
    if clip.ndim != 5 or clip.shape[-1] != 3:
        raise ValueError(f"expected uint8 clips B x T x H x W x 3, got shape {tuple(clip.shape)}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std must have 3 channels, got {list(mean)} and {list(std)}")
    clip = clip.to(device, non_blocking=True) if device is not None else clip
    m = torch.tensor(mean, dtype=torch.float32, device=clip.device).view(1, 3, 1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=clip.device).view(1, 3, 1, 1, 1)
    x = clip.permute(0, 4, 1, 2, 3).float()  # B x T x H x W x C -> B x C x T x H x W
    return (x - m) / s


def jitter_intensity(
    x: torch.Tensor, brightness: float, contrast: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random per-clip contrast and brightness on a normalised ``B x 3 x T x H x W`` clip.

    ``x * c + b`` with ``c ~ U(1 - contrast, 1 + contrast)`` and ``b ~ U(-brightness, brightness)``
    (``b`` in normalised units). The same factors for every frame and channel of a clip: gain
    settings change per acquisition, not per frame.
    """
    b = x.shape[0]
    u = torch.rand((2, b), generator=generator, device="cpu").to(x.device)
    c = (1 - contrast + 2 * contrast * u[0]).view(b, 1, 1, 1, 1)
    o = (brightness * (2 * u[1] - 1)).view(b, 1, 1, 1, 1)
    return x * c + o


def shift_clip(
    x: torch.Tensor,
    max_shift: int,
    fill: torch.Tensor | float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Translate each clip of ``B x 3 x T x H x W`` by a random whole number of pixels.

    Each clip gets one ``(dy, dx)`` drawn uniformly from ``[-max_shift, max_shift]`` (the same
    for every frame: the probe moved, the heart did not jump); pixels shifted in are ``fill``.
    A translation keeps every chamber's size and its position relative to the others, which is
    what the findings are made of; a rescale or a flip would not.

    Args:
        x: normalised clips.
        max_shift: largest translation in pixels; 0 returns ``x``.
        fill: value of the pixels shifted in, a scalar or a per-channel ``3``-vector (the
            normalised value of black).
        generator: random source.
    """
    if max_shift <= 0:
        return x
    b, _, _, h, w = x.shape
    s = int(max_shift)
    if s >= min(h, w):
        raise ValueError(f"shift {s} must be smaller than the clip side ({h} x {w})")
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(
        -1, 1, 1, 1
    )  # C x 1 x 1 x 1 (or 1 x ...)
    # Pad with 0 around (x - fill), crop a window per clip, add fill back: black stays black.
    padded = torch.nn.functional.pad(x - f, (s, s, s, s))  # B x 3 x T x (H + 2s) x (W + 2s)
    d = torch.randint(0, 2 * s + 1, (b, 2), generator=generator, device="cpu").tolist()
    out = torch.stack([padded[i, :, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(d)])
    return out + f


def augment_clip(
    x: torch.Tensor,
    aug: Augmentation,
    *,
    fill: torch.Tensor | float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The training-time augmentation ``aug`` of normalised clips ``B x 3 x T x H x W``.

    Args:
        x: normalised clips.
        aug: what to apply (:class:`Augmentation`).
        fill: the normalised value of black (for the pixels a shift brings in).
        generator: random source for every draw, in a fixed order.
    """
    # Shift before the intensity jitter, so the pixels shifted in get the clip's gain like the
    # rest of its background (no seam for the model to latch onto).
    if aug.shift > 0:
        x = shift_clip(x, aug.shift, fill, generator)
    if aug.reverse > 0:
        flip = torch.rand(x.shape[0], generator=generator, device="cpu") < aug.reverse
        if bool(flip.any()):
            idx = flip.nonzero().flatten().to(x.device)
            x = x.clone()
            x[idx] = x[idx].flip(2)  # time is dim 2 of B x 3 x T x H x W
    if aug.brightness > 0 or aug.contrast > 0:
        x = jitter_intensity(x, aug.brightness, aug.contrast, generator)
    if aug.noise > 0:
        eps = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
        x = x + aug.noise * eps
    return x


def prepare_batch(
    batch: Mapping[str, Any],
    spec: Mapping[str, Any] | None,
    device: torch.device | str,
    *,
    augmentation: Augmentation = NO_AUGMENTATION,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Move a data-side batch to ``device`` and make the clip a normalised float tensor.

    Args:
        batch: dict with ``clip``, ``input_ids``, ``attention_mask``, ``token_type_ids`` (optional)
            and ``study_idx`` (see the module docstring).
        spec: preprocessing spec with ``mean`` and ``std`` (pixel units); required for uint8 clips.
        device: target device.
        augmentation: applied to the normalised clips (:func:`augment_clip`); none by default.
        generator: random source for the augmentation.

    Returns:
        ``video`` float ``B x 3 x T x H x W`` plus the text keys and ``study_idx`` as int64 tensors
        (and ``labels`` as float32 when the batch has them).

    Raises:
        ValueError: a missing key, a uint8 clip without a spec, or inconsistent batch sizes.
    """
    # A text batch (CLIP) or a label-only one (a fine-tuning head: clip, study_idx, labels).
    for key in ("clip", "study_idx") if "labels" in batch else ("clip", "input_ids", "study_idx"):
        if key not in batch:
            raise ValueError(
                f"batch has no {key!r} (keys: {sorted(batch)}); expected clip, input_ids, attention_mask, token_type_ids, study_idx"
            )
    clip = _as_tensor(batch["clip"], "clip")
    fill: torch.Tensor | float = 0.0
    if spec is not None and "mean" in spec and "std" in spec:
        # the normalised value of a black pixel, per channel
        fill = -torch.tensor(spec["mean"], dtype=torch.float32) / torch.tensor(
            spec["std"], dtype=torch.float32
        )
    if clip.dtype == torch.uint8:
        if spec is None or "mean" not in spec or "std" not in spec:
            raise ValueError(
                "uint8 clips need a preprocessing spec with 'mean' and 'std' (pixel units) to be normalised"
            )
        video = normalize_clip(clip, spec["mean"], spec["std"], device)
    elif torch.is_floating_point(clip):
        if clip.ndim != 5 or clip.shape[1] != 3:
            raise ValueError(
                f"float clips must be normalised B x 3 x T x H x W, got shape {tuple(clip.shape)}"
            )
        video = clip.to(device, non_blocking=True).float()
    else:
        raise ValueError(
            f"batch['clip'] must be uint8 (B x T x H x W x 3) or float (B x 3 x T x H x W), got {clip.dtype}"
        )
    video = augment_clip(video, augmentation, fill=fill, generator=generator)
    out: dict[str, torch.Tensor] = {"video": video}
    for key in (*TEXT_KEYS, "study_idx"):
        if key in batch and batch[key] is not None:
            out[key] = _as_tensor(batch[key], key).to(device, non_blocking=True).long()
    if batch.get("labels") is not None:
        out["labels"] = _as_tensor(batch["labels"], "labels").to(device, non_blocking=True).float()
    n = video.shape[0]
    for key, t in out.items():
        if t.shape[0] != n:
            raise ValueError(f"batch[{key!r}] has {t.shape[0]} rows but the batch has {n} clips")
    if out["study_idx"].ndim != 1:
        raise ValueError(
            f"batch['study_idx'] must be one int per clip, got shape {tuple(out['study_idx'].shape)}"
        )
    return out
