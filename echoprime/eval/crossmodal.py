"""Video <-> report retrieval on a held-out split, in the paper's Table 3 form.

Two levels, both directions, recall@1/5/10 and median rank (``echoprime.metrics``: ties
count against the query):

* video level: each clip ranks the split's study reports (its positive: its study's report);
  each report ranks the clips (a hit when any clip of its study is within the top k).
* study level: each study embedding (normalised mean of its clip embeddings) ranks the
  reports, and each report ranks the study embeddings; one positive each way.

The candidate pool (reports, clips or studies of the split) is stated with each number, with
the recall@k that ranking at random would give (``k / pool``; for the report -> clip direction
the chance of at least one of the study's clips in the top k).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Any

import numpy as np
import torch

from echoprime.metrics import ranks_chunked


def _direction(
    queries: np.ndarray, candidates: np.ndarray, targets: torch.Tensor, ks: Sequence[int]
) -> dict[str, Any]:
    r = ranks_chunked(torch.from_numpy(queries).float(), torch.from_numpy(candidates).float(), targets)
    out: dict[str, Any] = {f"r@{k}": float((r <= k).float().mean()) for k in ks}
    out.update(
        median_rank=float(r.float().median()), queries=int(queries.shape[0]), pool=int(candidates.shape[0])
    )
    return out


def _chance_any(pool: int, positives: Sequence[int], k: int) -> float:
    """Mean chance that a random ranking of ``pool`` items puts one of ``m`` positives in the top k."""
    return float(np.mean([1.0 - comb(pool - m, k) / comb(pool, k) if k < pool else 1.0 for m in positives]))


def video_text_retrieval(
    clip_emb: np.ndarray,
    clip_study: np.ndarray,
    report_emb: np.ndarray,
    study_emb: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, Any]:
    """Video/study <-> report recall@k and median rank on one split.

    Args:
        clip_emb: ``N x D`` clip embeddings.
        clip_study: ``N`` study index of each clip (into the report rows).
        report_emb: ``B x D`` one report embedding per study.
        study_emb: ``B x D`` study embeddings.
        ks: cut-offs.

    Returns:
        ``{"video": {"v2t", "t2v"}, "study": {"v2t", "t2v"}}``, each direction with ``r@k``,
        ``median_rank``, ``queries``, ``pool`` and ``chance_r@k``.

    Raises:
        ValueError: mismatched shapes, or a study without clips.
    """
    b = report_emb.shape[0]
    clip_study = np.asarray(clip_study, np.int64)
    if study_emb.shape[0] != b or clip_emb.shape[0] != clip_study.shape[0]:
        raise ValueError(
            f"{b} reports, {study_emb.shape[0]} study embeddings, {clip_emb.shape[0]} clips with "
            f"{clip_study.shape[0]} study indices: expected one report and one study embedding per study"
        )
    counts = np.bincount(clip_study, minlength=b)
    if (counts == 0).any():
        raise ValueError(f"studies {np.flatnonzero(counts == 0)[:5].tolist()} have no clip")
    own = torch.from_numpy(clip_study)
    clip_mask = torch.from_numpy(clip_study[None, :] == np.arange(b)[:, None])  # B x N: report i's clips
    eye = torch.arange(b)
    out = {
        "video": {
            "v2t": _direction(clip_emb, report_emb, own, ks),
            "t2v": _direction(report_emb, clip_emb, clip_mask, ks),
        },
        "study": {
            "v2t": _direction(study_emb, report_emb, eye, ks),
            "t2v": _direction(report_emb, study_emb, eye, ks),
        },
    }
    n = clip_emb.shape[0]
    for k in ks:
        out["video"]["v2t"][f"chance_r@{k}"] = min(1.0, k / b)
        out["video"]["t2v"][f"chance_r@{k}"] = _chance_any(n, counts.tolist(), k)
        out["study"]["v2t"][f"chance_r@{k}"] = min(1.0, k / b)
        out["study"]["t2v"][f"chance_r@{k}"] = min(1.0, k / b)
    return out
