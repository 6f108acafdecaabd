"""View classification on the test split (accuracy, confusion matrix), and the attention tables
set beside the generator's visibility table."""

from __future__ import annotations

from typing import Any

import numpy as np

from echoprime.taxonomy import MIL_SECTIONS, VIEWS


def view_metrics(true: np.ndarray, pred: np.ndarray, n_views: int = len(VIEWS)) -> dict[str, Any]:
    """Accuracy, per-view recall and the ``V x V`` confusion matrix (rows true, columns predicted).

    Args:
        true: ``N`` true view indices; ``-1`` = unknown (left out).
        pred: ``N`` predicted view indices.
        n_views: ``V``.

    Returns:
        ``{"computable": True, "accuracy", "n", "confusion", "per_view_recall", "views"}``, or a
        not-computable record when no clip has a known view (a real archive without view labels).
    """
    true = np.asarray(true, np.int64)
    pred = np.asarray(pred, np.int64)
    if true.shape != pred.shape or true.ndim != 1:
        raise ValueError(f"true {true.shape} and predicted {pred.shape} views must be equal 1-D shapes")
    known = true >= 0
    if not known.any():
        return {"computable": False, "reason": "no clip of the test split has a view label"}
    t, p = true[known], pred[known]
    if t.max() >= n_views or p.min() < 0 or p.max() >= n_views:
        raise ValueError(f"view indices must lie in [0, {n_views})")
    conf = np.zeros((n_views, n_views), np.int64)
    np.add.at(conf, (t, p), 1)
    support = conf.sum(axis=1)
    recall = [float(conf[i, i] / support[i]) if support[i] else None for i in range(n_views)]
    return {
        "computable": True,
        "accuracy": float((t == p).mean()),
        "n": int(known.sum()),
        "unlabelled": int((~known).sum()),
        "confusion": conf.tolist(),
        "per_view_recall": dict(zip(VIEWS[:n_views], recall, strict=True)),
        "views": list(VIEWS[:n_views]),
    }


def table_spearman(learned: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Spearman rank correlation of a learned ``15 x 11`` table with the visibility table, per
    section, averaged over sections.

    A section counts when its truth has both visible and invisible views and its learned weights
    are not all equal (otherwise the rank correlation is undefined). Ties share their mean rank,
    so against a 0/1 truth this is the Pearson correlation of the learned weights' ranks with
    visibility.

    Returns:
        ``{"mean_spearman": float (NaN when no section counts), "sections": int}``.
    """
    from scipy.stats import rankdata

    learned, truth = np.asarray(learned, np.float64), np.asarray(truth, np.float64)
    if learned.shape != truth.shape or learned.ndim != 2:
        raise ValueError(f"learned {learned.shape} and truth {truth.shape} must be equal 2-D shapes")
    rhos = []
    for t, w in zip(truth, learned, strict=True):
        if np.ptp(t) > 0 and np.ptp(w) > 0:
            rhos.append(float(np.corrcoef(rankdata(t), rankdata(w))[0, 1]))
    return {"mean_spearman": float(np.mean(rhos)) if rhos else float("nan"), "sections": len(rhos)}


def visibility_alignment(learned: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """:func:`echoprime.training.mil_fit.table_alignment` (mean per-section AUC and Pearson
    correlation) plus the mean per-section Spearman rank correlation (``mean_spearman``)."""
    from echoprime.training.mil_fit import table_alignment

    return {
        **table_alignment(learned, truth),
        "mean_spearman": table_spearman(learned, truth)["mean_spearman"],
    }


def attention_tables(tables: dict[str, np.ndarray | None], truth: np.ndarray | None) -> dict[str, Any]:
    """The learned ``15 x 11`` tables, the visibility table, and each table's alignment with it.

    Args:
        tables: ``{name: 15 x 11}`` (None = not present in this bundle).
        truth: the generator's visibility table, or None for a real archive.
    """
    out: dict[str, Any] = {"sections": list(MIL_SECTIONS), "views": list(VIEWS), "tables": {}}
    for name, t in tables.items():
        if t is None:
            out["tables"][name] = {"present": False}
            continue
        entry: dict[str, Any] = {"present": True, "table": np.round(np.asarray(t, np.float64), 4).tolist()}
        if truth is not None:
            entry["alignment_with_visibility"] = visibility_alignment(np.asarray(t), truth)
        out["tables"][name] = entry
    if truth is not None:
        out["visibility"] = np.asarray(truth).tolist()
    return out
