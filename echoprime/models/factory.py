"""``create_model(name, **overrides)``: build any registered model; ``create_text_encoder`` a
registered text model or a pretrained BERT; ``create_clip`` builds both towers.

Example::

    enc = create_model("echoprime_tiny", frames=16, size=32)
    clip = create_clip("echoprime_tiny", "tiny_bert", text_overrides={"vocab_size": len(tok)})
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch.nn as nn

from echoprime.models.registry import get_entry, is_registered


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with its builder's defaults, changed by ``overrides``.

    Raises:
        ValueError: unknown name (with close matches), or an override the builder does not take
            (with the ones it does).
    """
    entry = get_entry(name)
    params = inspect.signature(entry.builder).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in overrides if k not in params]
    if unknown and not accepts_any:
        raise ValueError(f"model {name!r} does not take {unknown}; it takes {list(params)}")
    return entry.builder(**overrides)


def create_clip(
    video_encoder: str,
    text_encoder: str,
    *,
    embed_dim: int = 512,
    video_overrides: dict[str, Any] | None = None,
    text_overrides: dict[str, Any] | None = None,
    init_logit_scale: float = math.log(1 / 0.07),
    max_logit_scale: float = math.log(100.0),
    label_outputs: int = 0,
    shared_label_head: bool = False,
) -> nn.Module:
    """Build an :class:`~echoprime.models.clip.EchoClip` from a video and a text model name.

    Args:
        video_encoder: a registered video model (``echoprime_mvit_v2_s``, ``echoprime_tiny``).
        text_encoder: a registered text model (``tiny_bert``) or a BERT name/path (offline).
        embed_dim: joint-space width, passed to both towers.
        video_overrides: more builder arguments for the video tower (``frames``, ``size``).
        text_overrides: more arguments for the text tower (``vocab_size``, ``section_type_ids``).
        init_logit_scale: initial log temperature scale.
        max_logit_scale: clamp of the log scale.
        label_outputs: label heads' width (0: none); see :class:`~echoprime.models.clip.EchoClip`.
        shared_label_head: one label head for both towers.
    """
    from echoprime.models.clip import EchoClip

    if get_entry(video_encoder).kind != "video":
        raise ValueError(f"{video_encoder!r} is a {get_entry(video_encoder).kind} model, not a video encoder")
    video = create_model(video_encoder, embed_dim=embed_dim, **(video_overrides or {}))
    text = create_text_encoder(text_encoder, embed_dim=embed_dim, **(text_overrides or {}))
    return EchoClip(
        video,
        text,
        init_logit_scale=init_logit_scale,
        max_logit_scale=max_logit_scale,
        label_outputs=label_outputs,
        shared_label_head=shared_label_head,
        embed_dim=embed_dim,
    )


def create_text_encoder(name_or_path: str, **overrides) -> nn.Module:
    """A registry text model (``tiny_bert``, ``tiny_bag``, ``biomedbert``) or a pretrained BERT by name/path.

    Args:
        name_or_path: registry name, Hugging Face model name (local cache only) or directory.
        **overrides: builder arguments for registry names; ``embed_dim`` and
            ``section_type_ids`` for pretrained models.
    """
    from echoprime.models.text import TextEncoder

    if is_registered(name_or_path):
        if get_entry(name_or_path).kind != "text":
            raise ValueError(
                f"{name_or_path!r} is a {get_entry(name_or_path).kind} model, not a text encoder"
            )
        return create_model(name_or_path, **overrides)
    unknown = set(overrides) - {"embed_dim", "section_type_ids"}
    if unknown:
        raise ValueError(
            f"pretrained text encoder {name_or_path!r} takes only embed_dim/section_type_ids overrides, got {sorted(unknown)}"
        )
    return TextEncoder.from_pretrained(name_or_path, **overrides)
