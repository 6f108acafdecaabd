"""Anatomical attention: per report section, how much each video of a study counts.

Two forms with one interface (``forward(embeddings, view_ids, mask) -> {"weights",
"section_embeddings"}``):

* :class:`SectionAttentionMIL`, learned gated attention (Ilse et al., 2018) over the study's
  videos, conditioned on each video's view: the input of the scorer is the release's study
  encoding row, ``[embedding, one_hot(view)]`` (``512 + 11``), and it outputs one score per
  section; a softmax over the study's (unpadded) videos turns scores into weights.
* :class:`TableMIL`, the release's fixed ``15 x 11`` section x view table: video *i* gets weight
  ``w[s, view_i]`` for section *s* (no softmax, as the release does).

Both pool the video embeddings themselves (not the view-augmented rows) so that section
embeddings stay in the joint space of the report bank: ``normalize(sum_i weight[s, i] * emb_i)``.
:func:`export_table` turns a learned module into a table for the release format.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

from echoprime.models.registry import register_model
from echoprime.taxonomy import MIL_SECTIONS, VIEWS


def _batchify(
    embeddings: torch.Tensor, view_ids: torch.Tensor, mask: torch.Tensor | None, n_views: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Validate and lift one study (``N x D``) to a batch of one; padded view ids become 0."""
    single = embeddings.ndim == 2
    if single:
        embeddings, view_ids = embeddings[None], view_ids[None]  # 1 x N x D, 1 x N
        mask = None if mask is None else mask[None]
    if embeddings.ndim != 3 or view_ids.shape != embeddings.shape[:2]:
        raise ValueError(
            f"expected embeddings B x N x D and view_ids B x N, got {tuple(embeddings.shape)} and {tuple(view_ids.shape)}"
        )
    if mask is None:
        mask = torch.ones(view_ids.shape, dtype=torch.bool, device=view_ids.device)
    if mask.shape != view_ids.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != view_ids shape {tuple(view_ids.shape)}")
    mask = mask.bool()
    if not bool(mask.any(dim=1).all()):
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        raise ValueError(f"studies {empty} of the batch have no valid video (mask all False)")
    view_ids = torch.where(mask, view_ids.long(), torch.zeros_like(view_ids, dtype=torch.long))
    if int(view_ids.min()) < 0 or int(view_ids.max()) >= n_views:
        raise ValueError(
            f"view ids must lie in [0, {n_views}), got [{int(view_ids.min())}, {int(view_ids.max())}]"
        )
    return embeddings, view_ids, mask, single


def pool_sections(weights: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
    """Section embeddings ``B x S x D`` = ``normalize(sum_i weights[b, s, i] * embeddings[b, i])``.

    A section whose weights are all zero (no video of a relevant view) comes out as the zero vector.
    """
    return F.normalize(torch.einsum("bsn,bnd->bsd", weights, embeddings), dim=-1)


class SectionAttentionMIL(nn.Module):
    """Gated attention pooling with one attention head per report section.

    Args:
        embed_dim: video embedding width.
        n_views: number of views (one-hot width).
        n_sections: number of sections (15: all but Postoperative Findings).
        hidden: width of the gated attention's hidden layer.
        dropout: dropout on the hidden layer (training only).
    """

    def __init__(
        self,
        embed_dim: int = 512,
        n_views: int = len(VIEWS),
        n_sections: int = len(MIL_SECTIONS),
        hidden: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed_dim, self.n_views, self.n_sections = embed_dim, n_views, n_sections
        in_dim = embed_dim + n_views
        self.attention_v = nn.Linear(in_dim, hidden)  # tanh branch: what the video shows
        self.attention_u = nn.Linear(in_dim, hidden)  # sigmoid gate: whether it is reliable
        self.dropout = nn.Dropout(dropout)
        self.score = nn.Linear(hidden, n_sections)

    def scores(self, embeddings: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
        """Unnormalised attention scores ``B x S x N`` for ``B x N x D`` embeddings and ``B x N`` views."""
        if embeddings.shape[-1] != self.embed_dim:
            raise ValueError(
                f"embeddings have width {embeddings.shape[-1]}, the module expects {self.embed_dim}"
            )
        onehot = F.one_hot(view_ids, self.n_views).to(embeddings.dtype)  # B x N x V
        z = torch.cat([embeddings, onehot], dim=-1)  # B x N x (D + V): the release's encode_study row
        h = torch.tanh(self.attention_v(z)) * torch.sigmoid(self.attention_u(z))  # B x N x hidden
        return self.score(self.dropout(h)).transpose(1, 2)  # B x N x S -> B x S x N

    def forward(
        self, embeddings: torch.Tensor, view_ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-section attention over a study's videos.

        Args:
            embeddings: ``B x N x D`` video embeddings (or ``N x D`` for one study).
            view_ids: ``B x N`` view indices (``N`` for one study).
            mask: ``B x N``, True for real videos, False for padding.

        Returns:
            ``weights`` ``B x S x N`` (softmax over the valid videos; 0 on padding) and
            ``section_embeddings`` ``B x S x D`` (unit norm); without the batch dim for one study.
        """
        emb, views, mask, single = _batchify(embeddings, view_ids, mask, self.n_views)
        s = self.scores(emb, views)
        s = s.masked_fill(~mask[:, None, :], float("-inf"))  # padding never receives weight
        weights = torch.softmax(s, dim=-1)
        out = {"weights": weights, "section_embeddings": pool_sections(weights, emb)}
        return {k: v[0] for k, v in out.items()} if single else out


def table_weights(weights_table: torch.Tensor, view_ids: torch.Tensor) -> torch.Tensor:
    """The release's weights: ``w[s, view_i]`` for every section and video.

    Args:
        weights_table: ``S x V`` section x view table (15 x 11 in the release).
        view_ids: ``N`` or ``B x N`` view indices.

    Returns:
        ``S x N`` (or ``B x S x N``).
    """
    if weights_table.ndim != 2:
        raise ValueError(f"weights_table must be S x V, got shape {tuple(weights_table.shape)}")
    v = weights_table.shape[1]
    if view_ids.numel() and (int(view_ids.min()) < 0 or int(view_ids.max()) >= v):
        raise ValueError(f"view ids must lie in [0, {v}), got [{int(view_ids.min())}, {int(view_ids.max())}]")
    w = weights_table[:, view_ids.long()]  # S x N or S x B x N
    return w if view_ids.ndim == 1 else w.transpose(0, 1)  # S x B x N -> B x S x N


class TableMIL(nn.Module):
    """The release's fixed section x view weighting, with :class:`SectionAttentionMIL`'s interface.

    Args:
        weights_table: ``S x V`` table (rows: ``MIL_SECTIONS``, columns: ``VIEWS``).
    """

    def __init__(self, weights_table: torch.Tensor) -> None:
        super().__init__()
        if weights_table.ndim != 2:
            raise ValueError(f"weights_table must be S x V, got shape {tuple(weights_table.shape)}")
        self.register_buffer("table", weights_table.detach().float().clone())
        self.n_sections, self.n_views = weights_table.shape

    def forward(
        self, embeddings: torch.Tensor, view_ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Same inputs and outputs as :meth:`SectionAttentionMIL.forward` (weights are not normalised)."""
        emb, views, mask, single = _batchify(embeddings, view_ids, mask, self.n_views)
        weights = table_weights(self.table.to(emb.dtype), views) * mask[:, None, :].to(emb.dtype)
        out = {"weights": weights, "section_embeddings": pool_sections(weights, emb)}
        return {k: v[0] for k, v in out.items()} if single else out


class ViewTableMIL(nn.Module):
    """A learned section x view table: video *i* gets ``softmax_i(logits[s, view_i])`` for section *s*.

    Attention that sees only each video's view: 15 x 11 parameters, so it generalises from a few
    hundred studies where the content-conditioned :class:`SectionAttentionMIL` memorises them.
    Its exact release-format equivalent is the table ``exp(logits) / max(exp(logits))`` per row
    (:meth:`table`): the release's unnormalised weights give the same normalised section
    embeddings as this softmax.

    Args:
        n_views: number of views.
        n_sections: number of sections.
    """

    def __init__(self, n_views: int = len(VIEWS), n_sections: int = len(MIL_SECTIONS)) -> None:
        super().__init__()
        self.n_views, self.n_sections = n_views, n_sections
        self.logits = nn.Parameter(torch.zeros(n_sections, n_views))

    def forward(
        self, embeddings: torch.Tensor, view_ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Same inputs and outputs as :meth:`SectionAttentionMIL.forward`."""
        emb, views, mask, single = _batchify(embeddings, view_ids, mask, self.n_views)
        s = table_weights(self.logits.to(emb.dtype), views)  # B x S x N
        s = s.masked_fill(~mask[:, None, :], float("-inf"))
        weights = torch.softmax(s, dim=-1)
        out = {"weights": weights, "section_embeddings": pool_sections(weights, emb)}
        return {k: v[0] for k, v in out.items()} if single else out

    @torch.no_grad()
    def table(self) -> torch.Tensor:
        """The ``S x V`` release-format table in ``[0, 1]`` that reproduces this module."""
        w = torch.exp(self.logits - self.logits.max(dim=1, keepdim=True).values)
        return w.float()


@torch.no_grad()
def export_table(
    module: SectionAttentionMIL, batches: Iterable[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]
) -> torch.Tensor:
    """Summarise a learned attention module as a release-style ``S x V`` table in ``[0, 1]``.

    For each video, its weight is taken relative to uniform attention (``weight * n_valid``: 1 means
    "as much as an average video of this study"), averaged over all videos of each view in the
    data, then divided by the largest value of its section's row, so each row's best view is 1.
    Views never seen in the data get 0. Relative weights keep studies with many videos from
    counting less than studies with few.

    Args:
        module: a trained :class:`SectionAttentionMIL` (put in eval mode by the caller).
        batches: ``(embeddings B x N x D, view_ids B x N, mask B x N or None)`` tuples.

    Returns:
        ``S x V`` float tensor.
    """
    total = torch.zeros(module.n_sections, module.n_views, dtype=torch.float64)
    count = torch.zeros(module.n_views, dtype=torch.float64)
    for emb, views, mask in batches:
        emb_b, views_b, mask_b, _ = _batchify(emb, views, mask, module.n_views)
        w = module(emb_b, views_b, mask_b)["weights"].double().cpu()  # B x S x N
        m = mask_b.cpu()
        rel = w * m.sum(dim=1)[:, None, None]  # weight relative to uniform 1/n_valid
        onehot = F.one_hot(views_b.cpu(), module.n_views).double() * m[..., None]  # B x N x V, padding zeroed
        total += torch.einsum("bsn,bnv->sv", rel, onehot)
        count += onehot.sum(dim=(0, 1))
    mean = total / count.clamp(min=1)[None, :]  # S x V; unseen views stay 0
    row_max = mean.max(dim=1, keepdim=True).values.clamp(min=1e-12)
    return (mean / row_max).float()


@register_model("mil")
def view_table_mil(n_views: int = len(VIEWS), n_sections: int = len(MIL_SECTIONS)) -> ViewTableMIL:
    """A learned section x view table (softmax over a study's videos by their views).

    Args:
        n_views: number of views.
        n_sections: number of sections.
    """
    return ViewTableMIL(n_views=n_views, n_sections=n_sections)


@register_model("mil")
def section_attention_mil(
    embed_dim: int = 512,
    n_views: int = len(VIEWS),
    n_sections: int = len(MIL_SECTIONS),
    hidden: int = 128,
    dropout: float = 0.0,
) -> SectionAttentionMIL:
    """Gated per-section attention over a study's videos, conditioned on view.

    Args:
        embed_dim: video embedding width.
        n_views: number of views.
        n_sections: number of sections.
        hidden: hidden width of the gated attention.
        dropout: dropout on the hidden layer.
    """
    return SectionAttentionMIL(
        embed_dim=embed_dim, n_views=n_views, n_sections=n_sections, hidden=hidden, dropout=dropout
    )
