"""Decision and calibration metrics of binary scores: sensitivity / specificity at a threshold,
the reliability curve and the expected calibration error (ECE).

Scores are probabilities in ``[0, 1]`` (a kNN positive fraction, a logistic probe's output).
Bins are equal-width over ``[0, 1]``; the last bin includes 1. ECE is the count-weighted mean
gap between a bin's mean predicted probability and its observed positive rate,
``sum_b (n_b / n) |mean_p_b - rate_b|`` (Guo et al., 2017).
"""

from __future__ import annotations

import numpy as np

from echoprime.eval.probes import NotComputable


def _clean(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, np.float64)
    p = np.asarray(p, np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be equal 1-D shapes")
    keep = ~np.isnan(y) & ~np.isnan(p)
    y, p = y[keep], p[keep]
    if ((y != 0) & (y != 1)).any():
        raise ValueError(f"labels must be 0 or 1, got {sorted(set(y[(y != 0) & (y != 1)].tolist()))[:5]}")
    return y, p


def sensitivity_specificity(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of the decision ``p >= threshold`` (NaN rows dropped).

    Raises:
        NotComputable: the labels lack a positive or a negative.
    """
    y, p = _clean(y, p)
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise NotComputable(
            f"sensitivity and specificity need positives and negatives; got {n_pos} and {n_neg}"
        )
    call = p >= threshold
    return float(call[y == 1].mean()), float((~call[y == 0]).mean())


def reliability_curve(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> dict[str, list[float]]:
    """Per equal-width bin: its centre, mean predicted probability, positive rate and count.

    Empty bins are left out. Scores outside ``[0, 1]`` are an error (they are not probabilities).
    """
    y, p = _clean(y, p)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    if len(p) and (p.min() < 0 or p.max() > 1):
        raise ValueError(f"scores must be probabilities in [0, 1], got [{p.min():.3g}, {p.max():.3g}]")
    b = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)  # bin of each score; 1.0 -> last bin
    out: dict[str, list[float]] = {"bin_centre": [], "mean_predicted": [], "positive_rate": [], "count": []}
    for i in range(n_bins):
        m = b == i
        if m.any():
            out["bin_centre"].append((i + 0.5) / n_bins)
            out["mean_predicted"].append(float(p[m].mean()))
            out["positive_rate"].append(float(y[m].mean()))
            out["count"].append(int(m.sum()))
    return out


def expected_calibration_error(y: np.ndarray, p: np.ndarray, n_bins: int = 10) -> float:
    """``sum_b (n_b / n) |mean_p_b - rate_b|`` over equal-width bins.

    Raises:
        NotComputable: no labelled rows.
    """
    curve = reliability_curve(y, p, n_bins)
    n = sum(curve["count"])
    if n == 0:
        raise NotComputable("calibration needs labelled rows; got none")
    gaps = np.abs(np.array(curve["mean_predicted"]) - np.array(curve["positive_rate"]))
    return float((gaps * np.array(curve["count"])).sum() / n)
