"""Turning a batch as it comes from the data side into model inputs on the device.

The batch dict (what ``iter_torch_batches`` over study shards yields, after tokenisation):

=================  ==============================================================
``clip``           uint8 ``B x T x H x W x 3`` as stored in shards, or an already
                   normalised float ``B x 3 x T x H x W``
``input_ids``      int ``B x L`` report tokens of each clip's study
``attention_mask`` int ``B x L``
``token_type_ids`` int ``B x L`` (section of each token; zeros for BiomedBERT)
``study_idx``      int ``B``: rows with equal values share a report
=================  ==============================================================

Normalisation happens here, on the device, because uint8 clips are 4x smaller to move from the
data workers than float ones. Flips are never applied: echo orientation carries meaning (left
and right heart). Optional brightness/contrast jitter runs here too; temporal offsets are the
data side's job (which frames it samples).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

TEXT_KEYS: tuple[str, ...] = ("input_ids", "attention_mask", "token_type_ids")


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


def prepare_batch(
    batch: Mapping[str, Any],
    spec: Mapping[str, Any] | None,
    device: torch.device | str,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Move a data-side batch to ``device`` and make the clip a normalised float tensor.

    Args:
        batch: dict with ``clip``, ``input_ids``, ``attention_mask``, ``token_type_ids`` (optional)
            and ``study_idx`` (see the module docstring).
        spec: preprocessing spec with ``mean`` and ``std`` (pixel units); required for uint8 clips.
        device: target device.
        brightness: max brightness shift (normalised units); 0 disables.
        contrast: max relative contrast change; 0 disables.
        generator: random source for the jitter.

    Returns:
        ``video`` float ``B x 3 x T x H x W`` plus the text keys and ``study_idx`` as int64 tensors.

    Raises:
        ValueError: a missing key, a uint8 clip without a spec, or inconsistent batch sizes.
    """
    for key in ("clip", "input_ids", "study_idx"):
        if key not in batch:
            raise ValueError(
                f"batch has no {key!r} (keys: {sorted(batch)}); expected clip, input_ids, attention_mask, token_type_ids, study_idx"
            )
    clip = _as_tensor(batch["clip"], "clip")
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
    if brightness > 0 or contrast > 0:
        video = jitter_intensity(video, brightness, contrast, generator)
    out: dict[str, torch.Tensor] = {"video": video}
    for key in (*TEXT_KEYS, "study_idx"):
        if key in batch and batch[key] is not None:
            out[key] = _as_tensor(batch[key], key).to(device, non_blocking=True).long()
    n = video.shape[0]
    for key, t in out.items():
        if t.shape[0] != n:
            raise ValueError(f"batch[{key!r}] has {t.shape[0]} rows but the batch has {n} clips")
    if out["study_idx"].ndim != 1:
        raise ValueError(
            f"batch['study_idx'] must be one int per clip, got shape {tuple(out['study_idx'].shape)}"
        )
    return out
