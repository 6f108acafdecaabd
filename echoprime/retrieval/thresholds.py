"""Decision thresholds for binary phenotypes: fitting (Youden's J), JSON, and the release's CSV.

A kNN probability ``p`` (the positive fraction among labelled neighbours) becomes a decision
``p >= threshold``. :func:`fit_thresholds` picks, per phenotype, the threshold that maximises
Youden's J = sensitivity + specificity - 1 on a validation split. A phenotype whose split has
no positives or no negatives has no ROC curve, and one whose scores do not separate them at all
(best J = 0) has no useful threshold: either is recorded as not fitted, with the reason, and gets
the default threshold 0.5, so callers can tell a fitted 0.5 from a fallback.

Every threshold records its :attr:`ThresholdFit.source`: ``youden`` (fitted here on a
validation split), ``release`` (a row of the published release's ``roc_thresholds.csv``) or
``default`` (nothing to fit or no row: the stated default). Results show it beside each decision.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.5
JSON_FORMAT = "echoprime-thresholds"
SOURCES = ("youden", "release", "default")


@dataclass(frozen=True)
class ThresholdFit:
    """One phenotype's threshold and how it came about.

    Attributes:
        threshold: decide positive when ``probability >= threshold``.
        fitted: False when the default was used.
        reason: why it was not fitted (None when fitted).
        youden_j: J at the threshold on the fitting split (None when not fitted).
        n_pos, n_neg: labelled positives / negatives used (0 for a threshold read from a file).
        source: one of :data:`SOURCES`; files written before it existed get ``youden`` when
            fitted and ``default`` when not.
    """

    threshold: float
    fitted: bool
    reason: str | None = None
    youden_j: float | None = None
    n_pos: int = 0
    n_neg: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        if not self.source:
            object.__setattr__(self, "source", "youden" if self.fitted else "default")
        if self.source not in SOURCES:
            raise ValueError(f"threshold source must be one of {SOURCES}, got {self.source!r}")
        if (self.source == "default") == self.fitted:
            raise ValueError(f"a {self.source!r} threshold cannot have fitted={self.fitted}")


class Thresholds(Mapping[str, float]):
    """``{phenotype: threshold}`` that also remembers how each was obtained (:attr:`fits`)."""

    def __init__(self, fits: Mapping[str, ThresholdFit]) -> None:
        self.fits: dict[str, ThresholdFit] = dict(fits)

    def __getitem__(self, phenotype: str) -> float:
        return self.fits[phenotype].threshold

    def __iter__(self) -> Iterator[str]:
        return iter(self.fits)

    def __len__(self) -> int:
        return len(self.fits)

    def __repr__(self) -> str:
        return f"Thresholds({ {p: f.threshold for p, f in self.fits.items()} })"

    def not_fitted(self) -> dict[str, str]:
        """``{phenotype: reason}`` of the phenotypes that fell back to the default."""
        return {p: f.reason or "" for p, f in self.fits.items() if not f.fitted}

    def source(self, phenotype: str) -> str:
        """Where ``phenotype``'s threshold came from (:data:`SOURCES`)."""
        return self.fits[phenotype].source

    def select(self, names: Sequence[str]) -> Thresholds:
        """Only the thresholds of ``names`` that are present, in ``names`` order."""
        return Thresholds({n: self.fits[n] for n in names if n in self.fits})

    def with_defaults(
        self, names: Sequence[str], reason: str, default: float = DEFAULT_THRESHOLD
    ) -> Thresholds:
        """These thresholds plus a ``default`` one (source ``default``, ``reason``) for each of
        ``names`` that has none."""
        extra = {n: ThresholdFit(default, False, reason) for n in names if n not in self.fits}
        return Thresholds(self.fits | extra)

    def to_json(self, path: str | PathLike[str]) -> Path:
        """Write as JSON: ``{"format", "thresholds": {phenotype: {threshold, fitted, ...}}}``."""
        path = Path(path)
        payload = {"format": JSON_FORMAT, "thresholds": {p: asdict(f) for p, f in self.fits.items()}}
        path.write_text(json.dumps(payload, indent=2), "utf-8")
        return path

    @classmethod
    def from_json(cls, path: str | PathLike[str]) -> Thresholds:
        """Read :meth:`to_json` output.

        Raises:
            ValueError: unreadable file, another format, or a bad entry (named).
        """
        path = Path(path)
        try:
            payload = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read thresholds {str(path)!r}: {err}") from err
        if not isinstance(payload, dict) or payload.get("format") != JSON_FORMAT:
            raise ValueError(f"{str(path)!r} is not a thresholds file (expected format {JSON_FORMAT!r})")
        fits = {}
        for name, entry in payload.get("thresholds", {}).items():
            try:
                fits[name] = ThresholdFit(**entry)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{str(path)!r}: bad entry for {name!r}: {entry!r} ({err})") from err
            _check_value(fits[name].threshold, f"{str(path)!r}: threshold of {name!r}")
        return cls(fits)


def youden_threshold(probabilities: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The threshold maximising Youden's J and that J, for scores and 0/1 labels (no NaN).

    Candidate thresholds are the distinct scores (``p >= t`` then changes); among equal J the
    highest threshold wins (fewest positives called).

    Raises:
        ValueError: labels lack a positive or a negative.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(labels)
    if not ((y == 1).any() and (y == 0).any()):
        raise ValueError("Youden's J needs at least one positive and one negative label")
    fpr, tpr, thr = roc_curve(y, probabilities, drop_intermediate=False)
    # thr[0] is +inf (nothing called positive, J = 0); skip it so the threshold is a real score.
    j = tpr[1:] - fpr[1:]
    best = int(np.argmax(j))  # thresholds decrease, so the first maximum is the highest one
    return float(thr[1 + best]), float(j[best])


def fit_thresholds(
    probabilities: Mapping[str, Any], labels: Mapping[str, Any], *, default: float = DEFAULT_THRESHOLD
) -> Thresholds:
    """Fit one threshold per phenotype by Youden's J on a validation split.

    Args:
        probabilities: ``{phenotype: scores}`` (NaN = no prediction, dropped with its label).
        labels: ``{phenotype: 0/1 labels}`` aligned with the scores (NaN = unlabelled, dropped).
        default: threshold of a phenotype that cannot be fitted.

    Raises:
        ValueError: a phenotype missing from ``labels``, misaligned lengths, or labels other than 0/1.
    """
    fits: dict[str, ThresholdFit] = {}
    for name, p in probabilities.items():
        if name not in labels:
            raise ValueError(f"no validation labels for phenotype {name!r}")
        p = np.asarray(p, dtype=np.float64)
        y = np.asarray(labels[name], dtype=np.float64)
        if p.shape != y.shape or p.ndim != 1:
            raise ValueError(
                f"{name!r}: {p.shape} probabilities vs {y.shape} labels; expected equal 1-D shapes"
            )
        keep = ~np.isnan(p) & ~np.isnan(y)
        p, y = p[keep], y[keep]
        if ((y != 0) & (y != 1)).any():
            raise ValueError(
                f"{name!r}: labels must be 0 or 1, got {sorted(set(y[(y != 0) & (y != 1)].tolist()))[:5]}"
            )
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        if n_pos == 0 or n_neg == 0:
            reason = f"validation split has {n_pos} positives and {n_neg} negatives; need both"
            fits[name] = ThresholdFit(default, False, reason, None, n_pos, n_neg)
            continue
        thr, j = youden_threshold(p, y)
        if j <= 0:
            # No score separates positives from negatives at all; the "best" threshold would be
            # the lowest score, calling every study positive. Keep the default instead.
            reason = (
                f"no threshold separates the {n_pos} positives from the {n_neg} negatives of the "
                f"validation split (best Youden's J {j:.2f})"
            )
            fits[name] = ThresholdFit(default, False, reason, j, n_pos, n_neg)
            continue
        fits[name] = ThresholdFit(thr, True, None, j, n_pos, n_neg)
    return Thresholds(fits)


def read_release_thresholds(path: str | PathLike[str]) -> Thresholds:
    """Read the release's ``roc_thresholds.csv`` (columns ``,feature,threshold``; the first is a row index).

    Every row is kept as written, including rows that name no phenotype of the taxonomy (the
    published file has three) and thresholds above 1; which rows apply is the caller's choice.

    Raises:
        ValueError: missing columns, a non-numeric threshold or a repeated feature, naming the line.
    """
    path = Path(path)
    try:
        lines = path.read_text("utf-8").splitlines()
    except OSError as err:
        raise ValueError(f"cannot read thresholds {str(path)!r}: {err}") from err
    rows = list(csv.reader(lines))
    if not rows or "feature" not in rows[0] or "threshold" not in rows[0]:
        raise ValueError(
            f"{str(path)!r}: expected a header with columns 'feature' and 'threshold', got {rows[:1]}"
        )
    fi, ti = rows[0].index("feature"), rows[0].index("threshold")
    fits: dict[str, ThresholdFit] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            name, value = row[fi], float(row[ti])
        except (IndexError, ValueError):
            raise ValueError(
                f"{str(path)!r} line {line_no}: expected a feature and a numeric threshold, got {row}"
            ) from None
        _check_value(value, f"{str(path)!r} line {line_no} ({name!r})")
        if name in fits:
            raise ValueError(f"{str(path)!r} line {line_no}: feature {name!r} appears twice")
        fits[name] = ThresholdFit(value, True, None, None, source="release")
    return Thresholds(fits)


def _check_value(value: float, where: str) -> None:
    if not isinstance(value, (int, float)) or math.isnan(value) or math.isinf(value):
        raise ValueError(f"{where}: threshold {value!r} is not a finite number")
