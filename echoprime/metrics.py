"""Scores that training logs and evaluation reports: pure functions with no echoprime import.

They sit at the bottom of the package so that training (``training/loop.py`` logs retrieval
recall each epoch, ``training/heads.py`` a graded head's kappa) does not import evaluation,
which itself imports training to fit the attention.

**Retrieval** (tensors): recall@k and ranks, full-matrix and chunked. Targets come in two
forms: a ``Q`` int tensor of the one correct candidate per query, or a ``Q x C`` bool mask of
its positives (a video query whose study has several reports, a report query whose study has
several videos). A query's rank is that of its *best-scored* positive,
``1 + #{negatives scoring >= it}``: ties count against the query, so a collapsed model whose
scores are all equal gets rank C, never a free hit. A query is a hit at k when its rank <= k.

**Ordinal grades** (arrays): the confusion matrix and the quadratic-weighted kappa (Cohen's
kappa with weights ``(i - j)^2 / (L - 1)^2``: 1 perfect agreement, 0 chance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def _positive_mask(targets: torch.Tensor, q: int, c: int, offset: int = 0) -> torch.Tensor:
    """``Q x C`` bool positives for candidates ``offset .. offset + c`` from either target form."""
    if targets.dtype == torch.bool:
        if targets.ndim != 2 or targets.shape[0] != q:
            raise ValueError(f"bool targets must be Q x C with Q={q}, got shape {tuple(targets.shape)}")
        return targets[:, offset : offset + c]
    if targets.ndim != 1 or targets.shape[0] != q:
        raise ValueError(f"index targets must be a length-{q} int tensor, got shape {tuple(targets.shape)}")
    cols = torch.arange(offset, offset + c, device=targets.device)
    return targets.long()[:, None] == cols[None, :]  # Q x c


def _check_targets(targets: torch.Tensor, q: int, c: int) -> None:
    if targets.dtype == torch.bool:
        if targets.shape != (q, c):
            raise ValueError(
                f"bool targets must be {q} x {c} (queries x candidates), got {tuple(targets.shape)}"
            )
        if not bool(targets.any(dim=1).all()):
            bad = (~targets.any(dim=1)).nonzero().flatten()[:10].tolist()
            raise ValueError(f"queries {bad} have no positive candidate")
    else:
        if targets.shape != (q,):
            raise ValueError(f"index targets must have shape ({q},), got {tuple(targets.shape)}")
        if q and (int(targets.min()) < 0 or int(targets.max()) >= c):
            raise ValueError(
                f"target indices must lie in [0, {c}), got [{int(targets.min())}, {int(targets.max())}]"
            )


def ranks(sim: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each query's best positive in a full similarity matrix.

    Args:
        sim: ``Q x C`` similarities (higher is better).
        targets: ``Q`` candidate indices or ``Q x C`` bool positives.

    Returns:
        ``Q`` int64 ranks in ``[1, C]``.
    """
    if sim.ndim != 2:
        raise ValueError(f"sim must be Q x C, got shape {tuple(sim.shape)}")
    q, c = sim.shape
    _check_targets(targets, q, c)
    pos = _positive_mask(targets, q, c).to(sim.device)
    best = sim.masked_fill(~pos, float("-inf")).max(dim=1).values  # Q: score of the best positive
    beaten = ((sim >= best[:, None]) & ~pos).sum(dim=1)  # negatives scoring at least as high
    return beaten + 1


def recall_at_k(sim: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[int, float]:
    """Fraction of queries whose best positive ranks within the top k, for each k.

    Args:
        sim: ``Q x C`` similarities.
        targets: ``Q`` candidate indices or ``Q x C`` bool positives.
        ks: cut-offs (a k >= C gives 1.0).
    """
    r = ranks(sim, targets)
    return {int(k): float((r <= k).float().mean()) for k in ks}


def median_rank(sim: torch.Tensor, targets: torch.Tensor) -> float:
    """Median (lower median for even Q, as ``torch.median``) of the 1-based ranks."""
    return float(ranks(sim, targets).median())


def ranks_chunked(
    queries: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """:func:`ranks` for ``sim = queries @ candidates.T`` without materialising ``Q x C`` at once.

    Two passes over candidate chunks: the best positive score of each query, then the count of
    negatives scoring at least that much. Memory is ``Q x chunk``.

    Args:
        queries: ``Q x D`` embeddings.
        candidates: ``C x D`` embeddings.
        targets: ``Q`` candidate indices or ``Q x C`` bool positives.
        chunk: candidates per pass.
    """
    if queries.ndim != 2 or candidates.ndim != 2 or queries.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"queries Q x D and candidates C x D must share D, got {tuple(queries.shape)} and {tuple(candidates.shape)}"
        )
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    q, c = queries.shape[0], candidates.shape[0]
    _check_targets(targets, q, c)
    best = torch.full((q,), float("-inf"), device=queries.device, dtype=torch.float32)
    for s in range(0, c, chunk):
        sim = (queries @ candidates[s : s + chunk].T).float()  # Q x chunk
        pos = _positive_mask(targets, q, sim.shape[1], s).to(sim.device)
        best = torch.maximum(best, sim.masked_fill(~pos, float("-inf")).max(dim=1).values)
    beaten = torch.zeros(q, dtype=torch.long, device=queries.device)
    for s in range(0, c, chunk):
        sim = (queries @ candidates[s : s + chunk].T).float()  # Q x chunk (recomputed: same values as pass 1)
        pos = _positive_mask(targets, q, sim.shape[1], s).to(sim.device)
        beaten += ((sim >= best[:, None]) & ~pos).sum(dim=1)
    return beaten + 1


def recall_at_k_chunked(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    targets: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    chunk: int = 4096,
) -> dict[int, float]:
    """:func:`recall_at_k` over ``queries @ candidates.T`` computed in candidate chunks."""
    r = ranks_chunked(queries, candidates, targets, chunk)
    return {int(k): float((r <= k).float().mean()) for k in ks}


def median_rank_chunked(
    queries: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor, chunk: int = 4096
) -> float:
    """:func:`median_rank` over ``queries @ candidates.T`` computed in candidate chunks."""
    return float(ranks_chunked(queries, candidates, targets, chunk).median())


def quadratic_weighted_kappa(truth: np.ndarray, pred: np.ndarray, levels: int) -> float:
    """Cohen's kappa with quadratic weights over grades ``0 .. levels - 1``.

    Returns NaN when the expected disagreement is zero (every truth and prediction one grade).
    """
    t, p = np.asarray(truth, np.int64), np.asarray(pred, np.int64)
    observed = confusion_matrix(t, p, levels).astype(np.float64)
    n = observed.sum()
    if n == 0:
        return math.nan
    expected = np.outer(observed.sum(1), observed.sum(0)) / n
    i, j = np.indices((levels, levels))
    w = (i - j) ** 2 / max(levels - 1, 1) ** 2
    denom = (w * expected).sum()
    return math.nan if denom == 0 else float(1 - (w * observed).sum() / denom)


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, levels: int) -> np.ndarray:
    """``levels x levels`` counts, rows = true grade, columns = predicted grade."""
    out = np.zeros((levels, levels), np.int64)
    np.add.at(out, (np.asarray(truth, np.int64), np.asarray(pred, np.int64)), 1)
    return out
