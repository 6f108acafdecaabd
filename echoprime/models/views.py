"""View classifiers: the first frame(s) of a normalised clip -> logits over the views.

* ``echoprime_convnext_base_views``: torchvision ConvNeXt-Base with ``classifier[-1] =
  Linear(1024, 11)`` on the first frame ``3 x 224 x 224``, the release's classifier; the torchvision
  module is ``backbone`` and ``release_prefix = "backbone."`` lets the release state dict load
  strictly (:func:`echoprime.models.load_release_state_dict`).
* ``tiny_views``: a small 2D CNN on the first ``frames`` frames (stacked as channels) at 32 px.

Both accept a clip ``B x 3 x T x H x W`` (they take the frames they need) or a frame ``B x 3 x H x W``.
``num_classes`` is configurable for a finer taxonomy (``echoprime.taxonomy.FINE_VIEWS``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from echoprime.models.registry import register_model
from echoprime.taxonomy import VIEWS


def first_frames(x: torch.Tensor, frames: int, model: str) -> torch.Tensor:
    """``B x 3 x T x H x W`` (or ``B x 3 x H x W`` when ``frames == 1``) -> ``B x 3*frames x H x W``."""
    if x.ndim == 4 and frames == 1:
        if x.shape[1] != 3:
            raise ValueError(f"{model} expects frames B x 3 x H x W, got {tuple(x.shape)}")
        return x
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(
            f"{model} expects a clip B x 3 x T x H x W (or B x 3 x H x W for one frame), got {tuple(x.shape)}"
        )
    if x.shape[2] < frames:
        raise ValueError(f"{model} needs {frames} frames, the clip has {x.shape[2]}")
    x = x[:, :, :frames]  # B x 3 x f x H x W
    return x.transpose(1, 2).reshape(
        x.shape[0], 3 * frames, x.shape[3], x.shape[4]
    )  # B x (f*3) x H x W, frame-major


class ConvNeXtViewClassifier(nn.Module):
    """torchvision ConvNeXt on a clip's first frame.

    Args:
        num_classes: number of views (11 coarse views in the release).
    """

    release_prefix = "backbone."

    def __init__(self, num_classes: int = len(VIEWS)) -> None:
        super().__init__()
        from torchvision.models import convnext_base  # lazily: torchvision's import costs ~2.5 s

        self.backbone = convnext_base(weights=None)
        self.num_features = self.backbone.classifier[-1].in_features
        self.backbone.classifier[-1] = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes
        self.frames = 1

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip or frame -> pooled, layer-normed features ``B x 1024``."""
        m = self.backbone
        x = first_frames(x, 1, type(self).__name__)
        x = m.avgpool(m.features(x))  # B x 1024 x 1 x 1
        return m.classifier[:-1](x)  # LayerNorm2d + Flatten: B x 1024

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x 1024`` -> logits ``B x num_classes``."""
        return self.backbone.classifier[-1](features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``B x 3 x T x H x W`` or frame ``B x 3 x H x W`` -> logits ``B x num_classes``."""
        return self.forward_head(self.forward_features(x))


@register_model("views")
def echoprime_convnext_base_views(num_classes: int = len(VIEWS)) -> ConvNeXtViewClassifier:
    """ConvNeXt-Base on the first frame (3 x 224 x 224) with an 11-view head (the release's classifier).

    Args:
        num_classes: number of views.
    """
    return ConvNeXtViewClassifier(num_classes=num_classes)


class TinyViewClassifier(nn.Module):
    """A 4-block 2D CNN on the first ``frames`` frames, stacked as channels.

    Args:
        num_classes: number of views.
        frames: frames used (1 = the release's first-frame rule; 2-4 also see motion and colour flow).
        width: channels of the first block (blocks have ``w, 2w, 4w, 4w``).
    """

    def __init__(self, num_classes: int = len(VIEWS), frames: int = 1, width: int = 16) -> None:
        super().__init__()
        if num_classes < 2 or frames < 1 or width < 1:
            raise ValueError(
                f"invalid TinyViewClassifier settings: num_classes={num_classes}, frames={frames}, width={width}"
            )
        w = width
        chans = [3 * frames, w, 2 * w, 4 * w, 4 * w]
        layers: list[nn.Module] = []
        for i in range(4):
            # Stride 2 in the first three blocks: 32 px -> 4 px before the global pool.
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, stride=2 if i < 3 else 1, padding=1, bias=False),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(inplace=True),
            ]
        self.blocks = nn.Sequential(*layers)
        self.num_features = chans[-1]
        self.head = nn.Linear(self.num_features, num_classes)
        self.num_classes = num_classes
        self.frames = frames

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Clip or frame -> ``B x 4w``."""
        return self.blocks(first_frames(x, self.frames, type(self).__name__)).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x F`` -> logits ``B x num_classes``."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Clip ``B x 3 x T x H x W`` or frame ``B x 3 x H x W`` -> logits ``B x num_classes``."""
        return self.forward_head(self.forward_features(x))


@register_model("views")
def tiny_views(num_classes: int = len(VIEWS), frames: int = 1, width: int = 16) -> TinyViewClassifier:
    """A small CNN on the first frame(s) at 32 px.

    Args:
        num_classes: number of views (11 coarse; more for a finer taxonomy).
        frames: first frames stacked as channels.
        width: channels of the first block.
    """
    return TinyViewClassifier(num_classes=num_classes, frames=frames, width=width)
