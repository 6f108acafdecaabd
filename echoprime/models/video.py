"""Video encoders: a clip ``B x 3 x T x H x W`` (normalised float) -> an embedding ``B x D``.

Every encoder splits ``forward_features`` (the backbone's pooled representation) from
``forward_head`` (the projection into the joint video-text space), the timm habit, so that probes
and the view classifier can reuse features without the head.

* ``echoprime_mvit_v2_s``: torchvision's MViT v2 S with ``head[-1] = Linear(768, 512)``, the
  release's encoder, on ``16 x 224 x 224``. The torchvision module is kept as ``backbone`` and the
  class declares ``release_prefix = "backbone."`` so that the release's state dict (keys of a bare
  ``mvit_v2_s``) loads strictly with :func:`echoprime.models.load_release_state_dict`.
* ``echoprime_mvit_tiny``: the same MViT building blocks, 2 blocks, at ``4 x 32 x 32`` (tests).
* ``echoprime_tiny``: a 4-block Conv3d encoder (~0.29 M parameters) that trains at a few hundred
  clips/s on 2 CPU cores at ``16 x 32 x 32``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
import torch.nn as nn

from echoprime.models.registry import register_model

if TYPE_CHECKING:
    from torchvision.models.video.mvit import MViT

# torchvision is imported by the MViT builders only: importing it pulls in torch._dynamo (~2.5 s),
# which a process running the tiny encoder (or none) should not pay for.


def check_clip_shape(x: torch.Tensor, frames: int, size: int, model: str) -> None:
    """Raise a ValueError unless ``x`` is ``B x 3 x frames x size x size``."""
    if x.ndim != 5 or x.shape[1] != 3 or x.shape[2] != frames or x.shape[3] != size or x.shape[4] != size:
        raise ValueError(
            f"{model} expects clips of shape B x 3 x {frames} x {size} x {size} (normalised float, channels first), "
            f"got {tuple(x.shape)}; check the preprocessing spec (frames, size) that travels with the weights"
        )
    if not torch.is_floating_point(x):
        raise ValueError(
            f"{model} expects a float clip (normalised with the spec's mean/std), got dtype {x.dtype}"
        )


class MViTVideoEncoder(nn.Module):
    """A torchvision MViT whose classification head projects into the joint space.

    Args:
        backbone: a ``torchvision.models.video.MViT`` whose ``head[-1]`` is the projection.
        frames: clip length the backbone was built for (MViT's positional tables fix it).
        size: square side the backbone was built for.
    """

    release_prefix = "backbone."

    def __init__(self, backbone: MViT, frames: int, size: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.frames = frames
        self.size = size
        self.embed_dim = backbone.head[-1].out_features
        self.num_features = backbone.head[-1].in_features

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> the last block's normalised tokens ``B x (1 + N) x F``: the
        class token, then one per patch of the final ``T' x H' x W'`` grid (what a frozen
        attentive probe pools)."""
        check_clip_shape(x, self.frames, self.size, type(self).__name__)
        m = self.backbone
        x = m.conv_proj(x)  # B x C x T' x H' x W'
        x = x.flatten(2).transpose(1, 2)  # B x (T' H' W') x C: one token per patch
        x = m.pos_encoding(x)  # prepends the class token: B x (1 + T'H'W') x C
        thw = (m.pos_encoding.temporal_size,) + m.pos_encoding.spatial_size
        for block in m.blocks:
            x, thw = block(x, thw)
        return m.norm(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> the normalised class token ``B x F`` (before the head)."""
        return self.forward_tokens(x)[:, 0]

    def forward_with_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ``(forward(x) B x D, forward_tokens(x) B x (1 + N) x F)``."""
        tokens = self.forward_tokens(x)
        return self.forward_head(tokens[:, 0]), tokens

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x F`` -> ``B x D`` (dropout, then the projection)."""
        return self.backbone.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> ``B x D`` (not normalised)."""
        return self.forward_head(self.forward_features(x))


@register_model("video")
def echoprime_mvit_v2_s(
    embed_dim: int = 512, dropout: float = 0.5, stochastic_depth_prob: float = 0.2
) -> MViTVideoEncoder:
    """MViT v2 S on 16 x 224 x 224 with ``head[-1] = Linear(768, embed_dim)`` (the release's encoder).

    Args:
        embed_dim: joint-space width; 512 for release compatibility.
        dropout: dropout before the projection (torchvision's default 0.5).
        stochastic_depth_prob: torchvision's default 0.2.
    """
    from torchvision.models.video import mvit_v2_s

    backbone = mvit_v2_s(weights=None, dropout=dropout, stochastic_depth_prob=stochastic_depth_prob)
    # The release replaced only the last Linear of the head (Dropout stays at index 0).
    backbone.head[-1] = nn.Linear(backbone.head[-1].in_features, embed_dim)
    return MViTVideoEncoder(backbone, frames=16, size=224)


@register_model("video")
def echoprime_mvit_tiny(
    embed_dim: int = 512, frames: int = 4, size: int = 32, width: int = 32, dropout: float = 0.0
) -> MViTVideoEncoder:
    """A 2-block MViT v2 (torchvision building blocks) on ``frames x size x size`` for fast tests.

    Args:
        embed_dim: joint-space width.
        frames: clip length (even, >= 2: the patch embedding halves time).
        size: square side (a multiple of 8: patches of 4, then one 2x pooling stage).
        width: channels of the first block (the second doubles them).
        dropout: dropout before the projection.
    """
    if frames < 2 or frames % 2 or size % 8:
        raise ValueError(
            f"echoprime_mvit_tiny needs an even frames >= 2 and size % 8 == 0, got frames={frames}, size={size}"
        )
    from torchvision.models.video.mvit import MSBlockConfig, MViT

    blocks = [
        # Block 1 keeps the 8x8 token grid and pools keys/values 2x spatially (MViT v2's cheap attention).
        MSBlockConfig(
            num_heads=1,
            input_channels=width,
            output_channels=2 * width,
            kernel_q=[3, 3, 3],
            kernel_kv=[3, 3, 3],
            stride_q=[1, 1, 1],
            stride_kv=[1, 2, 2],
        ),
        # Block 2 pools queries 2x: the multiscale step.
        MSBlockConfig(
            num_heads=2,
            input_channels=2 * width,
            output_channels=2 * width,
            kernel_q=[3, 3, 3],
            kernel_kv=[3, 3, 3],
            stride_q=[1, 2, 2],
            stride_kv=[1, 1, 1],
        ),
    ]
    backbone = MViT(
        spatial_size=(size, size),
        temporal_size=frames,
        block_setting=blocks,
        residual_pool=True,
        residual_with_cls_embed=False,
        rel_pos_embed=True,
        proj_after_attn=True,
        dropout=dropout,
        num_classes=embed_dim,
    )
    return MViTVideoEncoder(backbone, frames=frames, size=size)


POOL_GRID = 4  # side of the spatial grid kept by pool="spatial"


def _conv_block(cin: int, cout: int, stride: tuple[int, int, int], norm: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)]
    # GroupNorm does not depend on the batch (small per-worker batches, eval on one study);
    # BatchNorm is the faster default on CPU.
    layers.append(nn.BatchNorm3d(cout) if norm == "batch" else nn.GroupNorm(min(8, cout), cout))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class TinyVideoEncoder(nn.Module):
    """A small Conv3d encoder: 4 conv blocks, global average pooling, a linear head.

    Downsampling is done by strided convolutions (a learned pooling), which measured ~5x faster
    to train on CPU than convolving at full resolution and max-pooling afterwards.
    Resolution path for ``16 x 32 x 32``: ``16x16x16 -> 8x8x8 -> 4x4x4 -> 4x4x4``.

    Args:
        frames: clip length expected (checked; it travels with the weights).
        size: square side expected (checked).
        width: channels of the first block; the blocks have ``w, 2w, 4w, 6w``.
        embed_dim: joint-space width.
        norm: ``"batch"`` or ``"group"``.
        pool: ``"avg"`` (global average), ``"spatial"`` (a ``4 x 4`` grid, time averaged) or
            ``"spatial_motion"`` (the same grid, plus each cell's mean absolute change between
            time steps: how much a region moves, which a time average keeps only implicitly).
        dropout: dropout on the pooled features, before the projection.
    """

    def __init__(
        self,
        frames: int = 16,
        size: int = 32,
        width: int = 16,
        embed_dim: int = 512,
        norm: Literal["batch", "group"] = "batch",
        pool: Literal["avg", "spatial", "spatial_motion"] = "avg",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {norm!r}")
        if pool not in ("avg", "spatial", "spatial_motion"):
            raise ValueError(f"pool must be 'avg', 'spatial' or 'spatial_motion', got {pool!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if frames < 1 or size < 8 or width < 1 or embed_dim < 1:
            raise ValueError(
                f"invalid TinyVideoEncoder settings: frames={frames}, size={size}, width={width}, embed_dim={embed_dim}"
            )
        self.frames, self.size, self.embed_dim = frames, size, embed_dim
        w = width
        self.blocks = nn.Sequential(
            _conv_block(3, w, (1, 2, 2), norm),  # keep time early: motion (EF) is the signal
            _conv_block(w, 2 * w, (2, 2, 2), norm),
            _conv_block(2 * w, 4 * w, (2, 2, 2), norm),
            _conv_block(4 * w, 6 * w, (1, 1, 1), norm),
        )
        self.pool = pool
        self.num_features = (
            6 * w * {"avg": 1, "spatial": POOL_GRID**2, "spatial_motion": 2 * POOL_GRID**2}[pool]
        )
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.num_features, embed_dim)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> pooled features ``B x F``.

        ``avg``: global average (``F = 6w``). ``spatial``: average over time only, on a
        ``4 x 4`` grid (``F = 16 x 6w``), so the head knows where in the view a feature is.
        ``spatial_motion``: that grid and, per cell, the mean absolute difference between
        consecutive time steps (``F = 32 x 6w``).
        """
        check_clip_shape(x, self.frames, self.size, type(self).__name__)
        return self._pool(self.blocks(x))

    def _pool(self, f: torch.Tensor) -> torch.Tensor:
        """The last block's map ``B x 6w x T' x H' x W'`` -> the pooled features (``pool``)."""
        if self.pool == "avg":
            return f.mean(dim=(2, 3, 4))
        grid = (POOL_GRID, POOL_GRID)
        g = nn.functional.adaptive_avg_pool3d(f, (1, *grid))  # B x 6w x 1 x 4 x 4
        if self.pool == "spatial":
            return g.flatten(1)  # B x (6w * 16)
        cells = nn.functional.adaptive_avg_pool3d(f, (f.shape[2], *grid))  # B x 6w x T' x 4 x 4
        motion = (cells[:, :, 1:] - cells[:, :, :-1]).abs().mean(dim=2)  # B x 6w x 4 x 4
        return torch.cat([g.flatten(1), motion.flatten(1)], dim=1)  # B x (6w * 32)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``B x F`` -> ``B x D`` (dropout, then the projection)."""
        return self.head(self.drop(features))

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> the last block's map as tokens ``B x (T'H'W') x 6w``, one per
        cell of its grid (what a frozen attentive probe pools)."""
        check_clip_shape(x, self.frames, self.size, type(self).__name__)
        return self.blocks(x).flatten(2).transpose(1, 2)

    def forward_with_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One pass: ``(forward(x) B x D, forward_tokens(x))``."""
        check_clip_shape(x, self.frames, self.size, type(self).__name__)
        f = self.blocks(x)
        return self.forward_head(self._pool(f)), f.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``B x 3 x T x H x W`` -> ``B x D`` (not normalised)."""
        return self.forward_head(self.forward_features(x))


@register_model("video")
def echoprime_tiny(
    embed_dim: int = 512,
    frames: int = 16,
    size: int = 32,
    width: int = 16,
    norm: Literal["batch", "group"] = "batch",
    pool: Literal["avg", "spatial", "spatial_motion"] = "avg",
    dropout: float = 0.0,
) -> TinyVideoEncoder:
    """A ~0.29 M-parameter Conv3d encoder for CPU training at ``16 x 32 x 32``.

    Args:
        embed_dim: joint-space width.
        frames: clip length.
        size: square side.
        width: channels of the first block.
        norm: ``"batch"`` or ``"group"``.
        pool: ``"avg"`` (global average) or ``"spatial"`` (a ``4 x 4`` grid, time averaged).
        dropout: dropout on the pooled features, before the projection.
    """
    return TinyVideoEncoder(
        frames=frames, size=size, width=width, embed_dim=embed_dim, norm=norm, pool=pool, dropout=dropout
    )
