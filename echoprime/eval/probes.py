"""Linear and kNN probes on frozen study embeddings, with bootstrap AUC intervals.

A probe asks how much of a phenotype a frozen embedding carries:

* ``linear``: standardised inputs, then ``LogisticRegression(class_weight="balanced")`` for a
  binary phenotype or ``Ridge`` for a regression.
* ``knn``: cosine similarity to the training embeddings; the score is the mean label of the
  ``k`` most similar (positive fraction for a binary), as the retrieval system itself predicts.

Binaries are scored by ROC AUC with a bootstrap 95 % interval, regressions by MAE (with a
bootstrap interval too). A split with too few positives or negatives gives no number: the
result is ``{"computable": False, "reason": ...}``, never a silent 0.5 or NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ProbeKind = Literal["linear", "knn"]
Task = Literal["binary", "regression"]


class NotComputable(ValueError):
    """A probe or metric cannot be computed on this split (the message says why)."""


@dataclass
class Probe:
    """A fitted probe. Use :meth:`predict` for scores (probability of positive, or value)."""

    kind: ProbeKind
    task: Task
    model: Any = None
    train_x: np.ndarray | None = None  # knn: L2-normalised training embeddings
    train_y: np.ndarray | None = None
    k: int = 10

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores for ``M x D`` embeddings: ``P(positive)`` for binaries, values for regressions."""
        x = _as_matrix(x, "x")
        if self.kind == "linear":
            if self.task == "binary":
                return self.model.predict_proba(x)[:, 1]
            return self.model.predict(x)
        assert self.train_x is not None and self.train_y is not None
        if x.shape[1] != self.train_x.shape[1]:
            raise ValueError(f"x is {x.shape}, the probe was fitted on {self.train_x.shape[1]}-d embeddings")
        sims = _unit(x) @ self.train_x.T  # M x N cosine similarities
        k = min(self.k, sims.shape[1])
        nn = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # M x k nearest (unordered: the mean does not care)
        return self.train_y[nn].mean(axis=1)


def fit_probe(
    x_train: np.ndarray,
    y_train: np.ndarray,
    kind: ProbeKind = "linear",
    *,
    task: Task = "binary",
    k: int = 10,
    c: float = 1.0,
    alpha: float = 1.0,
    min_per_class: int = 2,
    seed: int = 0,
) -> Probe:
    """Fit a probe on frozen embeddings (rows with a NaN label are dropped).

    Args:
        x_train: ``N x D`` embeddings.
        y_train: ``N`` labels (0/1 for binaries).
        kind: ``"linear"`` or ``"knn"``.
        task: ``"binary"`` or ``"regression"``.
        k: neighbours of the kNN probe.
        c: inverse regularisation of the logistic regression.
        alpha: ridge penalty.
        min_per_class: positives and negatives a binary needs to be fitted.
        seed: solver seed of the logistic regression.

    Raises:
        NotComputable: too few labelled rows, positives or negatives.
        ValueError: bad shapes, kind, task, or non-binary labels for a binary task.
    """
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = _labelled(x_train, y_train, task)
    if task == "binary":
        _check_classes(y, min_per_class, "training")
    elif len(y) < 2:
        raise NotComputable(f"training split has {len(y)} labelled rows; a regression probe needs >= 2")
    if kind == "linear":
        head = (LogisticRegression(C=c, class_weight="balanced", max_iter=2000, random_state=seed)
                if task == "binary" else Ridge(alpha=alpha))  # fmt: skip
        model = make_pipeline(StandardScaler(), head).fit(x, y)
        return Probe("linear", task, model=model)
    if kind == "knn":
        if k <= 0:
            raise ValueError(f"k must be >= 1, got {k}")
        return Probe("knn", task, train_x=_unit(x), train_y=y.astype(np.float64), k=k)
    raise ValueError(f"unknown probe kind {kind!r}: expected 'linear' or 'knn'")


def bootstrap_auc(
    y: np.ndarray, p: np.ndarray, n: int = 1000, rng: np.random.Generator | None = None
) -> tuple[float, float, float]:
    """ROC AUC and its bootstrap 95 % interval (percentiles 2.5 / 97.5).

    Resamples that miss a class have no AUC and are replaced by new draws (up to ``10 n`` in all).

    Returns:
        ``(auc, low, high)``.

    Raises:
        NotComputable: ``y`` lacks a positive or a negative.
        ValueError: ``rng`` missing or shapes differ.
    """
    if rng is None:
        raise ValueError("bootstrap_auc needs an explicit rng=np.random.default_rng(seed)")
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape or y.ndim != 1:
        raise ValueError(f"labels {y.shape} and scores {p.shape} must be equal 1-D shapes")
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise NotComputable(f"AUC needs positives and negatives; got {n_pos} positives, {n_neg} negatives")
    auc = float(_auc(y[None], p[None])[0])
    stats: list[np.ndarray] = []
    kept = draws = 0
    while kept < n and draws < 10 * n:
        idx = rng.integers(0, len(y), size=(n, len(y)))  # n resamples at once
        draws += n
        yb = y[idx]
        ok = yb.min(axis=1) != yb.max(axis=1)  # a resample missing a class has no AUC: drop it
        stats.append(_auc(yb[ok], p[idx][ok]))
        kept += int(ok.sum())
    if kept < n:
        raise NotComputable(f"only {kept} of {draws} bootstrap resamples held both classes")
    stats_all = np.concatenate(stats)[:n]
    low, high = np.percentile(stats_all, [2.5, 97.5])
    return auc, float(low), float(high)


def evaluate_probe(
    probe: Probe,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    rng: np.random.Generator,
    n_boot: int = 1000,
    min_per_class: int = 2,
) -> dict[str, Any]:
    """Score a probe on a test split (rows with a NaN label dropped).

    Returns:
        binary: ``{"computable": True, "auc", "auc_low", "auc_high", "n", "n_pos", "n_neg"}``;
        regression: ``{"computable": True, "mae", "mae_low", "mae_high", "n"}``;
        or ``{"computable": False, "reason": ...}`` when the split cannot give the number.
    """
    try:
        x, y = _labelled(x_test, y_test, probe.task)
        scores = probe.predict(x)
        if probe.task == "binary":
            _check_classes(y, min_per_class, "test")
            auc, lo, hi = bootstrap_auc(y, scores, n_boot, rng)
            return {"computable": True, "auc": auc, "auc_low": lo, "auc_high": hi, "n": len(y),
                    "n_pos": int((y == 1).sum()), "n_neg": int((y == 0).sum())}  # fmt: skip
        if len(y) == 0:
            raise NotComputable("test split has no labelled rows")
        err = np.abs(scores - y)
        boot = err[rng.integers(0, len(err), size=(n_boot, len(err)))].mean(axis=1)  # n_boot resampled MAEs
        lo, hi = np.percentile(boot, [2.5, 97.5])
        return {
            "computable": True,
            "mae": float(err.mean()),
            "mae_low": float(lo),
            "mae_high": float(hi),
            "n": len(y),
        }
    except NotComputable as err:
        return {"computable": False, "reason": str(err)}


def run_probes(
    x_train: np.ndarray,
    labels_train: Mapping[str, np.ndarray],
    x_test: np.ndarray,
    labels_test: Mapping[str, np.ndarray],
    *,
    tasks: Mapping[str, Task],
    kinds: Sequence[ProbeKind] = ("linear", "knn"),
    rng: np.random.Generator,
    k: int = 10,
    n_boot: int = 1000,
    min_per_class: int = 2,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Fit and score every probe kind for every phenotype: ``{phenotype: {kind: result}}``.

    A phenotype whose training split cannot fit a probe reports ``computable=False`` with the reason.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for name, task in tasks.items():
        if name not in labels_train or name not in labels_test:
            raise ValueError(f"phenotype {name!r} needs labels in both splits")
        out[name] = {}
        for kind in kinds:
            try:
                probe = fit_probe(
                    x_train, labels_train[name], kind, task=task, k=k, min_per_class=min_per_class
                )
            except NotComputable as err:
                out[name][kind] = {"computable": False, "reason": str(err)}
                continue
            out[name][kind] = evaluate_probe(probe, x_test, labels_test[name], rng=rng, n_boot=n_boot,
                                             min_per_class=min_per_class)  # fmt: skip
    return out


def _auc(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """ROC AUC of each row (Mann-Whitney U with mid-ranks for ties, equal to sklearn's
    ``roc_auc_score``): ``R x M`` labels and scores -> ``R`` AUCs."""
    from scipy.stats import rankdata

    ranks = rankdata(p, axis=1)  # R x M mid-ranks
    pos = y == 1
    n_pos = pos.sum(axis=1)
    n_neg = y.shape[1] - n_pos
    return (np.where(pos, ranks, 0.0).sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _as_matrix(x: Any, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"{name} must be a finite N x D matrix, got shape {x.shape}")
    return x


def _labelled(x: Any, y: Any, task: Task) -> tuple[np.ndarray, np.ndarray]:
    if task not in ("binary", "regression"):
        raise ValueError(f"unknown task {task!r}: expected 'binary' or 'regression'")
    x = _as_matrix(x, "embeddings")
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (x.shape[0],):
        raise ValueError(f"{x.shape[0]} embeddings but labels of shape {y.shape}")
    keep = ~np.isnan(y)
    x, y = x[keep], y[keep]
    if task == "binary" and ((y != 0) & (y != 1)).any():
        raise ValueError(
            f"binary labels must be 0 or 1, got values {sorted(set(y[(y != 0) & (y != 1)].tolist()))[:5]}"
        )
    return x, y


def _check_classes(y: np.ndarray, min_per_class: int, split: str) -> None:
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos < min_per_class or n_neg < min_per_class:
        raise NotComputable(
            f"{split} split has {n_pos} positives and {n_neg} negatives; need >= {min_per_class} of each"
        )


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm == 0, 1.0, norm)
