"""The CLIP wrapper: a video tower, a text tower and a learnable temperature.

``forward`` returns the loss kwargs (``video_features``, ``text_features``, ``logit_scale``), the
open_clip habit: the loss lives in :mod:`echoprime.losses`, never in the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class EchoClip(nn.Module):
    """Video encoder + text encoder projected into one L2-normalised space.

    Args:
        video_encoder: maps ``B x 3 x T x H x W`` to ``B x D``.
        text_encoder: maps ``(input_ids, attention_mask, token_type_ids)`` (each ``B x L``) to ``B x D``.
        init_logit_scale: initial ``log`` of the similarity scale (``ln(1/0.07)``, CLIP's choice).
        max_logit_scale: the scale is clamped to ``exp(max_logit_scale)`` (100) so the softmax
            cannot become a hard argmax early in training.
        label_outputs: > 0 adds linear heads that read the report's findings (that many label
            columns) off each tower's normalised joint features, so a label loss organises the
            joint space itself by the findings (the kNN vote through the report bank relies on
            that); ``forward`` then also returns ``video_label_logits`` / ``text_label_logits``.
            The heads are training aids: the bundle keeps only the towers.
        shared_label_head: one head for both towers (the same directions carry each finding).
        embed_dim: joint-space width (needed only for the heads).
    """

    def __init__(
        self,
        video_encoder: nn.Module,
        text_encoder: nn.Module,
        init_logit_scale: float = math.log(1 / 0.07),
        max_logit_scale: float = math.log(100.0),
        *,
        label_outputs: int = 0,
        shared_label_head: bool = False,
        embed_dim: int = 512,
    ) -> None:
        super().__init__()
        if init_logit_scale > max_logit_scale:
            raise ValueError(f"init_logit_scale {init_logit_scale} exceeds max_logit_scale {max_logit_scale}")
        self.video_encoder = video_encoder
        self.text_encoder = text_encoder
        self.logit_scale = nn.Parameter(torch.tensor(float(init_logit_scale)))
        self.max_logit_scale = float(max_logit_scale)
        self.video_label_head = self.text_label_head = None
        if label_outputs > 0:
            self.video_label_head = nn.Linear(embed_dim, label_outputs)
            self.text_label_head = (
                self.video_label_head if shared_label_head else nn.Linear(embed_dim, label_outputs)
            )

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> L2-normalised ``B x D``."""
        return F.normalize(self.video_encoder(video), dim=-1)

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``B x L`` tokens -> L2-normalised ``B x D``."""
        return F.normalize(self.text_encoder(input_ids, attention_mask, token_type_ids), dim=-1)

    def scale(self) -> torch.Tensor:
        """The similarity scale ``exp(min(logit_scale, max))`` (0-d tensor)."""
        # Clamping in the forward (rather than editing .data after each step) keeps the rule in
        # one place and works under DDP/autocast; past the cap the gradient is zero, so the
        # effective scale simply stays at the cap.
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    def forward(
        self,
        video: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Encode paired clips and reports.

        Returns:
            ``video_features`` ``B x D`` and ``text_features`` ``B x D`` (unit norm) and
            ``logit_scale`` (0-d, already exponentiated and clamped); with label heads also
            ``video_label_logits`` and ``text_label_logits`` ``B x P``.
        """
        if video.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"{video.shape[0]} clips but {input_ids.shape[0]} reports: each clip needs its study's report"
            )
        out = {
            "video_features": self.encode_video(video),
            "text_features": self.encode_text(input_ids, attention_mask, token_type_ids),
            "logit_scale": self.scale(),
        }
        if self.video_label_head is not None:
            out["video_label_logits"] = self.video_label_head(out["video_features"])
            out["text_label_logits"] = self.text_label_head(out["text_features"])
        return out
