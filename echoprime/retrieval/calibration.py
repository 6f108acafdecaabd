"""What a bundle fits on its validation split beyond the thresholds: calibration maps for the
binary probabilities, conformal intervals for the measurements, and the grade scales.

**Probabilities.** A kNN probability is a vote share among ``k`` neighbours. It ranks studies
well but is not a calibrated probability: 0.3 of the neighbours being positive does not mean
that 30 % of such studies are. Per binary phenotype one monotone map is fitted on the
validation studies' (vote share, truth) pairs:

* ``platt``: ``sigmoid(a * p + b)``, fitted by Newton's method on the log-loss with Platt's
  smoothed targets (``(n+ + 1) / (n+ + 2)`` and ``1 / (n- + 2)``), so a separable split does not
  send ``a`` to infinity;
* ``isotonic``: the pool-adjacent-violators fit, stored as breakpoints and applied by linear
  interpolation between them (constant beyond the ends).

* ``identity``: the vote share as it is, when neither map beats it.

The rule that picks one (:func:`fit_probability_map`): isotonic needs at least
:data:`MIN_ISOTONIC` positives and as many negatives (it overfits small splits); among identity,
Platt and (where allowed) isotonic, the one with the lowest 5-fold cross-validated Brier score
on the validation split wins, ties going to the simpler (identity, then Platt). Identity is a
candidate because a map fitted on a few dozen studies can make an already well-calibrated vote
worse: at the learning curve's scale the raw votes' mean ECE was .054 and Platt's .056. A split
without both classes gets no map. Maps are non-decreasing, so they never reorder studies: AUCs
are unchanged, and the release-compatible decision (raw probability against its threshold) stays
as it was.

**Intervals.** For a measurement (EF, PA pressure, heart rate) predicted as the neighbours'
mean ``y_hat`` with their spread ``s`` (standard deviation), a split-conformal interval scaled by
the spread: the score of a validation study is ``|y - y_hat| / (s + tau)`` with ``tau`` the
median validation spread (so a unanimous neighbourhood still gets a width); ``q`` is the
``ceil((n + 1) * level) / n`` empirical quantile of the scores; the interval is
``y_hat +- q * (s + tau)``, clipped to the measurement's valid range. Its coverage on held-out
studies is what ``echoprime evaluate`` measures.

Everything is plain numbers in ``calibration.json`` (no pickles), with the format named.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from echoprime import taxonomy
from echoprime.taxonomy import GradeScale

JSON_FORMAT = "echoprime-calibration"
JSON_VERSION = 1
MIN_ISOTONIC = 30
"""Positives (and negatives) a validation split needs before isotonic maps are considered."""
INTERVAL_LEVEL = 0.8
"""The nominal coverage of measurement intervals."""
METHODS = ("identity", "platt", "isotonic")


@dataclass(frozen=True)
class ProbabilityMap:
    """A monotone map from a raw probability to a calibrated one.

    Attributes:
        method: ``identity``, ``platt`` (uses ``a``, ``b``) or ``isotonic`` (uses ``x``, ``y``).
        a, b: Platt's slope and intercept.
        x, y: isotonic breakpoints (``x`` increasing, ``y`` non-decreasing, same length).
        n_pos, n_neg: the validation studies it was fitted on.
        cv_brier: the cross-validated Brier score of each candidate (the choice's evidence).
    """

    method: str
    a: float = 0.0
    b: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    n_pos: int = 0
    n_neg: int = 0
    cv_brier: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        if self.method == "isotonic":
            x, y = np.asarray(self.x, float), np.asarray(self.y, float)
            if x.size == 0 or x.shape != y.shape or (np.diff(x) <= 0).any() or (np.diff(y) < 0).any():
                raise ValueError(
                    "an isotonic map needs increasing x and non-decreasing y of equal, non-zero length; "
                    f"got {x.size} and {y.size} points"
                )
            if y.min() < 0 or y.max() > 1:
                raise ValueError(f"isotonic y must be probabilities in [0, 1], got [{y.min()}, {y.max()}]")
        elif self.method == "platt" and (not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a < 0):
            raise ValueError(f"a Platt map needs finite a >= 0 and b, got a={self.a}, b={self.b}")

    def __call__(self, p: Any) -> Any:
        """Calibrated probabilities (NaN stays NaN; a scalar in, a float out)."""
        arr = np.asarray(p, dtype=np.float64)
        if self.method == "identity":
            out = np.clip(arr, 0.0, 1.0)
        elif self.method == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.a * arr + self.b)))
        else:
            out = np.interp(arr, np.asarray(self.x), np.asarray(self.y))
        out = np.where(np.isnan(arr), np.nan, out)
        return float(out) if np.ndim(out) == 0 else out


@dataclass(frozen=True)
class IntervalFit:
    """A measurement's conformal interval ``value +- q * (spread + tau)`` at ``level``."""

    q: float
    tau: float
    level: float = INTERVAL_LEVEL
    n: int = 0
    method: str = "conformal"

    def __post_init__(self) -> None:
        if not (self.q >= 0 and self.tau > 0 and 0 < self.level < 1):
            raise ValueError(f"an interval needs q >= 0, tau > 0 and 0 < level < 1, got {self}")

    def interval(self, value: float, spread: float, valid_range: tuple[float, float]) -> tuple[float, float]:
        """``(low, high)``; NaN both when the value is NaN."""
        if not math.isfinite(value):
            return math.nan, math.nan
        s = spread if math.isfinite(spread) else 0.0
        half = self.q * (s + self.tau)
        lo, hi = valid_range
        return max(lo, value - half), min(hi, value + half)


@dataclass
class Calibration:
    """The bundle's ``calibration.json``: probability maps, intervals and grade scales."""

    probabilities: dict[str, ProbabilityMap] = field(default_factory=dict)
    intervals: dict[str, IntervalFit] = field(default_factory=dict)
    grade_scales: dict[str, GradeScale] = field(default_factory=dict)
    not_fitted: dict[str, str] = field(default_factory=dict)
    """``{finding: why}`` for findings that got no map or interval."""

    def to_json(self, path: str | PathLike[str]) -> None:
        doc = {
            "format": JSON_FORMAT,
            "version": JSON_VERSION,
            "probabilities": {k: _map_doc(m) for k, m in self.probabilities.items()},
            "intervals": {k: asdict(v) for k, v in self.intervals.items()},
            "grade_scales": {
                k: {"levels": list(s.levels), "positive_from": s.positive_from}
                for k, s in self.grade_scales.items()
            },
            "not_fitted": dict(self.not_fitted),
        }
        Path(path).write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")

    @classmethod
    def from_json(cls, path: str | PathLike[str]) -> Calibration:
        """Read and check ``calibration.json``.

        Raises:
            ValueError: not this format, an unknown version, or a field of the wrong shape
                (the message names the file and the field).
        """
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not readable calibration JSON ({err})") from err
        if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
            raise ValueError(f"{path}: expected format {JSON_FORMAT!r}")
        if doc.get("version") != JSON_VERSION:
            raise ValueError(
                f"{path}: calibration version {doc.get('version')!r}; this code reads {JSON_VERSION}"
            )
        where = ""
        try:
            where = "probabilities"
            probs = {k: _map_from(v) for k, v in doc["probabilities"].items()}
            where = "intervals"
            ivs = {k: IntervalFit(**v) for k, v in doc["intervals"].items()}
            where = "grade_scales"
            scales = {
                k: GradeScale(tuple(str(x) for x in v["levels"]), int(v["positive_from"]))
                for k, v in doc["grade_scales"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"{path}: field {where!r} is malformed: {err}") from err
        return cls(probs, ivs, scales, dict(doc.get("not_fitted", {})))


def _map_doc(m: ProbabilityMap) -> dict[str, Any]:
    d = asdict(m)
    d["x"], d["y"] = list(m.x), list(m.y)
    if m.method != "isotonic":
        del d["x"], d["y"]
    if m.method != "platt":
        del d["a"], d["b"]
    return d


def _map_from(d: Mapping[str, Any]) -> ProbabilityMap:
    d = dict(d)
    d["x"] = tuple(float(v) for v in d.get("x", ()))
    d["y"] = tuple(float(v) for v in d.get("y", ()))
    d["cv_brier"] = {str(k): float(v) for k, v in d.get("cv_brier", {}).items()}
    return ProbabilityMap(**d)


# ------------------------------------------------------------------------------------ fitting


def fit_platt(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's ``(a, b)`` for ``sigmoid(a * p + b)`` on raw probabilities ``p`` and 0/1 ``y``.

    Newton's method on the log-loss with Platt's smoothed targets; ``a`` is kept ``>= 0`` so the
    map never reverses the ranking (a split where higher votes mean fewer positives gets a flat
    map at the smoothed base rate).
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    t = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    a, b = 1.0, math.log((n_pos + 1) / (n_neg + 1))
    for _ in range(100):
        z = np.clip(a * p + b, -30, 30)
        q = 1 / (1 + np.exp(-z))
        g = np.array([((q - t) * p).sum(), (q - t).sum()])
        w = q * (1 - q) + 1e-12
        h = np.array([[(w * p * p).sum(), (w * p).sum()], [(w * p).sum(), w.sum()]]) + 1e-9 * np.eye(2)
        step = np.linalg.solve(h, g)
        a, b = a - step[0], b - step[1]
        if np.abs(step).max() < 1e-10:
            break
    if a < 0:  # anti-monotone evidence: no ranking information, keep the base rate
        a, b = 0.0, math.log((n_pos + 1) / (n_neg + 1))
    return float(a), float(b)


def fit_isotonic(p: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Pool-adjacent-violators: breakpoints ``(x, y)`` of the non-decreasing least-squares fit."""
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    xs, inv = np.unique(p, return_inverse=True)  # equal scores are one block from the start
    sums = np.bincount(inv, weights=y).astype(np.float64)
    counts = np.bincount(inv).astype(np.float64)
    blocks: list[list[float]] = []  # [sum, count, first x index, last x index]
    for i in range(len(xs)):
        blocks.append([sums[i], counts[i], i, i])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, c, _, last = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
            blocks[-1][3] = last
    fx, fy = [], []
    for s, c, first, last in blocks:
        fx += [xs[int(first)]] + ([xs[int(last)]] if last != first else [])
        fy += [s / c] * (2 if last != first else 1)
    return tuple(float(v) for v in fx), tuple(float(v) for v in fy)


def _fit(method: str, p: np.ndarray, y: np.ndarray) -> ProbabilityMap:
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if method == "identity":
        return ProbabilityMap("identity", n_pos=n_pos, n_neg=n_neg)
    if method == "platt":
        a, b = fit_platt(p, y)
        return ProbabilityMap("platt", a=a, b=b, n_pos=n_pos, n_neg=n_neg)
    x, fy = fit_isotonic(p, y)
    return ProbabilityMap("isotonic", x=x, y=fy, n_pos=n_pos, n_neg=n_neg)


def _cv_brier(method: str, p: np.ndarray, y: np.ndarray, folds: int, seed: int) -> float:
    if method == "identity":  # nothing is fitted: the raw votes' own error
        return float(((y - np.clip(p, 0.0, 1.0)) ** 2).mean())
    order = np.random.default_rng(seed).permutation(len(p))
    err = np.empty(len(p))
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        yt = y[train]
        if yt.min() == yt.max():  # a fold without both classes predicts its base rate
            err[test] = (y[test] - yt.mean()) ** 2
            continue
        err[test] = (y[test] - _fit(method, p[train], yt)(p[test])) ** 2
    return float(err.mean())


def fit_probability_map(p: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0) -> ProbabilityMap:
    """The map the module docstring's rule picks for one phenotype's validation pairs.

    Raises:
        ValueError: fewer than two labelled studies of each class (NaN rows are dropped).
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    keep = ~np.isnan(p) & ~np.isnan(y)
    p, y = p[keep], y[keep]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos < 2 or n_neg < 2:
        raise ValueError(f"calibration needs >= 2 positives and >= 2 negatives, got {n_pos} and {n_neg}")
    candidates = ["identity", "platt"] + (["isotonic"] if min(n_pos, n_neg) >= MIN_ISOTONIC else [])
    folds = max(2, min(folds, n_pos, n_neg))
    scores = {m: _cv_brier(m, p, y, folds, seed) for m in candidates}
    best = min(candidates, key=lambda m: (scores[m], candidates.index(m)))
    chosen = _fit(best, p, y)
    return ProbabilityMap(**(asdict(chosen) | {"cv_brier": scores, "x": chosen.x, "y": chosen.y}))


def fit_interval(
    value: np.ndarray, spread: np.ndarray, truth: np.ndarray, level: float = INTERVAL_LEVEL
) -> IntervalFit:
    """The spread-scaled split-conformal interval (module docstring) from validation studies.

    Raises:
        ValueError: fewer than 5 studies with a prediction and a truth.
    """
    v, s, t = (np.asarray(a, np.float64) for a in (value, spread, truth))
    keep = ~np.isnan(v) & ~np.isnan(t)
    v, s, t = v[keep], np.nan_to_num(s[keep], nan=0.0), t[keep]
    n = len(v)
    if n < 5:
        raise ValueError(f"an interval needs >= 5 validation studies with a value and a truth, got {n}")
    tau = float(np.median(s))
    if not tau > 0:
        tau = max(float(np.abs(t - v).mean()), 1e-6)  # unanimous neighbours: the mean error's scale
    scores = np.sort(np.abs(t - v) / (s + tau))
    rank = min(n, math.ceil((n + 1) * level))
    return IntervalFit(q=float(scores[rank - 1]), tau=tau, level=level, n=n)


def fit_calibration(
    probabilities: Mapping[str, np.ndarray],
    truth: Mapping[str, np.ndarray],
    values: Mapping[str, np.ndarray],
    spreads: Mapping[str, np.ndarray],
    value_truth: Mapping[str, np.ndarray],
    grade_scales: Mapping[str, GradeScale] | None = None,
) -> Calibration:
    """Fit every binary's map and every measurement's interval that its split allows.

    Args:
        probabilities, truth: per binary phenotype, the validation studies' raw probabilities
            and 0/1 labels (NaN = unlabelled).
        values, spreads, value_truth: per measurement, the kNN value, the neighbours' spread
            and the true value.
        grade_scales: stored with the rest (default: ``taxonomy.GRADE_SCALES``).
    """
    cal = Calibration(grade_scales=dict(taxonomy.GRADE_SCALES if grade_scales is None else grade_scales))
    for name, p in probabilities.items():
        try:
            cal.probabilities[name] = fit_probability_map(p, truth[name])
        except ValueError as err:
            cal.not_fitted[name] = str(err)
    for name, v in values.items():
        try:
            cal.intervals[name] = fit_interval(v, spreads[name], value_truth[name])
        except ValueError as err:
            cal.not_fitted[name] = str(err)
    return cal
