"""Losses. The model's output keys (``video_features``, ``text_features``, ``logit_scale``) are the
kwargs of the loss, and distributed settings arrive only as constructor arguments (open_clip's
habit); a training step adds up every ``*_loss`` key of the returned dict.

:class:`ClipLoss` is the symmetric InfoNCE of CLIP over a batch of (clip, report) pairs, with the
batch gathered across DDP ranks so every rank contrasts against the global batch, and with
clips of the same study treated as positives of each other (they share one report). See
docs/models.md for the multi-positive rule and the gradient scaling under DDP.

:class:`LabelLoss` puts the report's findings into the objective: heads on both towers' joint
features (:class:`~echoprime.models.clip.EchoClip` with ``label_outputs``) predict the study's
labels (cross-entropy for binaries, squared error for standardised regressions, missing labels
masked). :class:`ClipLabelLoss` adds it to the CLIP loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums every rank's gradient for the local slice.

    Each rank computes the same global loss from the gathered batch, so the gradient of the
    local features is the sum over ranks of each rank's copy of it: ``world_size`` times the
    single-process gradient. DDP then averages parameter gradients over ranks, which divides
    that factor back out: the update equals single-process training on the global batch.
    (All-reduce + slice rather than reduce-scatter: gloo has no reduce-scatter.)
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        ctx.rank = dist.get_rank(group)
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        ctx.sizes = [p.shape[0] for p in parts]
        return torch.cat(parts, dim=0)  # (world * B) x D, rank-major

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.n], None


def gather_features(x: torch.Tensor, rank: int, world_size: int, with_grad: bool, group=None) -> torch.Tensor:
    """Concatenate every rank's ``B x D`` tensor into ``(world_size * B) x D`` (rank-major).

    Args:
        x: the local tensor (equal batch size on every rank).
        rank: this rank.
        world_size: number of ranks.
        with_grad: gradients flow back to every rank's copy (see :class:`_GatherWithGrad`);
            otherwise only the local slice carries gradients (the others are constants).
        group: process group (default: the world).
    """
    if world_size == 1:
        return x
    if with_grad:
        return _GatherWithGrad.apply(x, group)
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous(), group=group)
    parts[rank] = x  # the local slice keeps its graph
    return torch.cat(parts, dim=0)


def multi_positive_targets(study_ids: torch.Tensor) -> torch.Tensor:
    """Soft targets ``B x B``: row *i* is uniform over the columns of *i*'s study.

    Clips of one study all pair with the same report, so a clip's report column is no more
    "its own" than its sibling's: both are correct, and treating the sibling as a negative would
    push apart two copies of one report. With unique ids this is the identity (plain CLIP).
    """
    if study_ids.ndim != 1:
        raise ValueError(
            f"study_ids must be a 1-d int tensor of length B, got shape {tuple(study_ids.shape)}"
        )
    same = (study_ids[:, None] == study_ids[None, :]).float()  # B x B
    return same / same.sum(dim=1, keepdim=True)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE between video and text features with a learnable temperature.

    Args:
        rank: this process's rank (0 without DDP).
        world_size: number of ranks; > 1 gathers features across ranks (needs an initialised
            ``torch.distributed`` process group).
        gather_with_grad: let gradients flow through the gathered copies (exact global-batch
            gradients after DDP's averaging); False treats other ranks' features as constants,
            which gives each rank the single-process gradient of its local slice and, after DDP's
            averaging, the global gradient divided by ``world_size`` for the towers.
    """

    def __init__(self, rank: int = 0, world_size: int = 1, gather_with_grad: bool = True) -> None:
        super().__init__()
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.rank, self.world_size, self.gather_with_grad = rank, world_size, gather_with_grad

    def forward(
        self,
        video_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        study_ids: torch.Tensor | None = None,
        **_: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss on the (gathered) batch.

        Args:
            video_features: ``B x D`` unit-norm clip embeddings.
            text_features: ``B x D`` unit-norm report embeddings (row *i* is clip *i*'s study report).
            logit_scale: exponentiated similarity scale (0-d).
            study_ids: ``B`` int study index per row; rows of one study are positives of each
                other. None: every row is its own study.

        Returns:
            ``{"contrastive_loss": 0-d tensor}`` (the same value on every rank).
        """
        if video_features.shape != text_features.shape or video_features.ndim != 2:
            raise ValueError(
                f"video_features {tuple(video_features.shape)} and text_features {tuple(text_features.shape)} must both be B x D"
            )
        b = video_features.shape[0]
        if study_ids is not None and study_ids.shape != (b,):
            raise ValueError(f"study_ids must have shape ({b},), got {tuple(study_ids.shape)}")
        v = gather_features(video_features, self.rank, self.world_size, self.gather_with_grad)
        t = gather_features(text_features, self.rank, self.world_size, self.gather_with_grad)
        if study_ids is not None:
            ids = gather_features(study_ids.to(v.device).long()[:, None], self.rank, self.world_size, False)[
                :, 0
            ]
        else:
            ids = None
        # fp32 even when the caller is inside autocast (which would run the matmul in bf16/fp16).
        with torch.autocast(device_type=v.device.type, enabled=False):
            logits = logit_scale.float() * (v.float() @ t.float().T)  # N x N: videos (rows) x reports (cols)
        n = logits.shape[0]
        if ids is None:
            target = torch.arange(n, device=logits.device)
            loss_v2t = F.cross_entropy(logits, target)
            loss_t2v = F.cross_entropy(logits.T, target)
        else:
            soft = multi_positive_targets(ids)  # symmetric, rows sum to 1
            loss_v2t = -(soft * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            loss_t2v = -(soft * F.log_softmax(logits.T, dim=1)).sum(dim=1).mean()
        return {"contrastive_loss": 0.5 * (loss_v2t + loss_t2v)}


class LabelLoss(nn.Module):
    """Weighted label losses of the video and text heads, missing labels (NaN) masked.

    Each weight multiplies the mean over the batch's labelled entries of that head's loss:
    binary cross-entropy on logits for binaries, squared error for standardised regressions.
    Per rank under DDP: the gradient average over ranks is the global batch's mean loss.

    With ``video_balance`` > 1 the video head's binary entries are class-balanced: a positive
    weighs ``negatives / positives`` of that column among all labels this loss has seen (counted
    as training goes, so no pass over the data is needed first; per rank under DDP), capped at
    ``video_balance``; negatives weigh 1. The mean is then over the weights, so the loss keeps
    its scale.

    Args:
        regression: per label column, True for a regression (see ``echoprime.training.labels``).
        video_weight: weight of the video head's loss (0: not computed).
        text_weight: weight of the text head's loss (0: not computed).
        video_balance: cap on a positive's weight in the video head's binaries (0 or 1: off).
        column_weight: per label column, a weight of its entries in both heads' means (default 1
            each; ``echoprime.training.labels.column_weights``).
    """

    def __init__(
        self,
        regression: Sequence[bool],
        video_weight: float,
        text_weight: float,
        *,
        video_balance: float = 0.0,
        column_weight: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if video_weight < 0 or text_weight < 0 or video_balance < 0:
            raise ValueError(
                f"label loss weights must be >= 0, got video {video_weight}, text {text_weight}, "
                f"balance {video_balance}"
            )
        self.register_buffer("regression", torch.tensor(list(regression), dtype=torch.bool), persistent=False)
        cw = [1.0] * len(self.regression) if column_weight is None else [float(w) for w in column_weight]
        if len(cw) != len(self.regression) or min(cw) < 0:
            raise ValueError(f"column_weight needs {len(self.regression)} weights >= 0, got {cw}")
        self.register_buffer("column_weight", torch.tensor(cw, dtype=torch.float32), persistent=False)
        self.video_weight, self.text_weight = float(video_weight), float(text_weight)
        self.video_balance = float(video_balance)
        n = self.regression.numel()
        # Labels seen so far per column (positives, labelled entries): the class balance.
        self.register_buffer("seen_pos", torch.zeros(n, dtype=torch.float64), persistent=False)
        self.register_buffer("seen_known", torch.zeros(n, dtype=torch.float64), persistent=False)

    def positive_weight(self) -> torch.Tensor:
        """Per column, the weight of a positive binary entry (1 for regressions, and when off)."""
        if self.video_balance <= 1:
            return torch.ones_like(self.seen_pos, dtype=torch.float32)
        neg = self.seen_known - self.seen_pos
        w = (neg / self.seen_pos.clamp(min=1)).clamp(1.0, self.video_balance)
        return torch.where(self.regression | (self.seen_pos == 0), torch.ones_like(w), w).float()

    def part(self, logits: torch.Tensor, labels: torch.Tensor, *, balance: bool = False) -> torch.Tensor:
        """Mean loss over the labelled entries of ``B x P`` logits (0 when none is labelled);
        ``balance``: weighted by :meth:`positive_weight` (updated with these labels first)."""
        if logits.shape != labels.shape or logits.shape[-1] != self.regression.numel():
            raise ValueError(
                f"label logits {tuple(logits.shape)} and labels {tuple(labels.shape)} must both be "
                f"B x {self.regression.numel()}"
            )
        logits, labels = logits.float(), labels.to(logits.device).float()
        known = ~torch.isnan(labels)
        y = torch.where(known, labels, torch.zeros_like(labels))
        reg = self.regression.to(logits.device).expand_as(y)
        bce = F.binary_cross_entropy_with_logits(logits, y.clamp(0, 1), reduction="none")
        each = torch.where(reg, (logits - y) ** 2, bce)
        weight = known.float() * self.column_weight.to(logits.device)
        if balance and self.video_balance > 1:
            with torch.no_grad():
                self.seen_known += known.sum(0).to(self.seen_known)
                self.seen_pos += ((y > 0.5) & known & ~reg).sum(0).to(self.seen_pos)
                pos = self.positive_weight().to(logits.device)
                weight = weight * torch.where((y > 0.5) & ~reg, pos.expand_as(y), torch.ones_like(y))
        return (each * weight).sum() / weight.sum().clamp(min=1)

    def forward(
        self,
        labels: torch.Tensor,
        video_label_logits: torch.Tensor | None = None,
        text_label_logits: torch.Tensor | None = None,
        *,
        video_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``labels`` ``B x P`` for both heads, or ``video_labels`` for the video head's rows when
        they are not the batch's (study-pooled logits)."""
        out: dict[str, torch.Tensor] = {}
        for name, w, logits, y in (
            (
                "video_label_loss",
                self.video_weight,
                video_label_logits,
                labels if video_labels is None else video_labels,
            ),
            ("text_label_loss", self.text_weight, text_label_logits, labels),
        ):
            if w > 0:
                if logits is None:
                    raise ValueError(
                        f"{name} has weight {w} but the model has no label head (model.label_heads)"
                    )
                out[name] = w * self.part(logits, y, balance=name == "video_label_loss")
        return out


def pool_by_study(study_ids: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of ``x``'s rows per study id, and the row index of each study's first row.

    Returns:
        ``(pooled U x ..., first U)`` for the ``U`` distinct ids, in ``torch.unique`` order.
    """
    uniq, inv = torch.unique(study_ids, return_inverse=True)
    n = len(uniq)
    counts = torch.zeros(n, device=x.device, dtype=x.dtype).index_add_(
        0, inv, torch.ones_like(inv, dtype=x.dtype)
    )
    pooled = x.new_zeros((n, *x.shape[1:])).index_add_(0, inv, x) / counts.view(-1, *([1] * (x.ndim - 1)))
    rows = torch.arange(len(study_ids), device=study_ids.device)
    first = torch.full((n,), len(study_ids), device=study_ids.device).scatter_reduce_(
        0, inv, rows, reduce="amin"
    )
    return pooled, first


class ClipLabelLoss(nn.Module):
    """:class:`ClipLoss` plus :class:`LabelLoss`: the paper's contrastive objective with the
    report's findings on both towers. Returns every ``*_loss`` of both (summed by the step).

    Args:
        clip: the contrastive part.
        labels: the label part.
        pool_studies: the video head's loss is taken on each study's *mean* logits over its clips
            in the (local) batch, not clip by clip: labels belong to the study, and a clip
            cannot show a finding its view does not image, so each clip only has to add what it
            sees (multiple-instance learning; the kNN vote also pools a study's clips). Needs
            batches that hold several clips of a study (no or a small shuffle buffer). The CLIP
            part stays per clip (its all-gather needs equal shapes on every rank).
    """

    def __init__(self, clip: ClipLoss, labels: LabelLoss, *, pool_studies: bool = False) -> None:
        super().__init__()
        self.clip, self.labels, self.pool_studies = clip, labels, bool(pool_studies)

    def forward(
        self,
        video_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        study_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        video_label_logits: torch.Tensor | None = None,
        text_label_logits: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        if labels is None:
            raise ValueError("the label objective needs each clip's labels (batch key 'labels')")
        out = dict(self.clip(video_features, text_features, logit_scale, study_ids=study_ids))
        video_labels = None
        if self.pool_studies and video_label_logits is not None:
            if study_ids is None:
                raise ValueError("pool_studies needs each clip's study_ids")
            video_label_logits, first = pool_by_study(study_ids, video_label_logits)
            video_labels = labels.to(first.device)[first]
        return out | self.labels(labels, video_label_logits, text_label_logits, video_labels=video_labels)
