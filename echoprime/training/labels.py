"""The report's findings as a training target: one standardised row of the taxonomy's phenotypes.

Labels are a deterministic function of the report (``echoprime.reports.extract_labels`` writes
the shards' ``labels`` column from it), so supervising the towers with them is still learning
from reports. Binaries stay 0/1 (binary cross-entropy); the two regressions are standardised so
that their squared error weighs about as much as a binary's loss: ejection fraction
``(x - 50) / 15``, pulmonary artery pressure ``(x - 30) / 10``. A missing label is NaN and
takes no part in the loss. With ``train.label_grades`` the graded phenotypes' columns hold the
report's standardised grade instead of its yes/no, as squared-error targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from echoprime.taxonomy import GRADE_SCALES, PHENOTYPES

LABEL_NAMES: tuple[str, ...] = tuple(p.name for p in PHENOTYPES)
"""Column order of a label row: the taxonomy's phenotypes."""
REGRESSION: tuple[bool, ...] = tuple(p.kind == "regression" for p in PHENOTYPES)
"""Which columns are regressions (squared error) rather than binaries (cross-entropy)."""
SCALE: dict[str, tuple[float, float]] = {
    "ejection_fraction": (50.0, 15.0),
    "pulmonary_artery_pressure_continuous": (30.0, 10.0),
}
"""``{regression: (centre, scale)}``: its standardised value is ``(x - centre) / scale``."""


GRADED_COLUMNS: tuple[bool, ...] = tuple(name in GRADE_SCALES for name in LABEL_NAMES)
"""Which columns are graded phenotypes (their grade can replace the binary: ``grades=True``)."""


def grade_scale(name: str) -> tuple[float, float]:
    """``(centre, scale)`` that puts a graded phenotype's grades into about [-1.5, 1.5]."""
    top = len(GRADE_SCALES[name].levels) - 1
    return top / 2, top / 3


def regression_columns(grades: bool = False) -> tuple[bool, ...]:
    """Per label column, True for a squared-error target: the regressions, and with ``grades``
    the graded phenotypes too."""
    return tuple(r or (grades and g) for r, g in zip(REGRESSION, GRADED_COLUMNS, strict=True))


def label_row(labels: Mapping[str, float | None], grades: Mapping[str, float] | None = None) -> np.ndarray:
    """``{phenotype: value}`` -> float32 row over :data:`LABEL_NAMES` (standardised, NaN = missing).

    Args:
        labels: the release's labels (the shards' ``labels``).
        grades: ``{phenotype: grade}`` of the graded phenotypes (``extract_findings``' grade
            columns, by phenotype name): each graded column then holds its standardised grade
            (:func:`grade_scale`; NaN where the report states none) instead of the 0/1 label,
            a squared-error target (:func:`regression_columns` with ``grades=True``). The report's
            grade separates "mildly" from "moderately reduced", which the binary lumps together
            (docs/learning.md, RV systolic function).

    Raises:
        ValueError: a binary label other than 0/1.
    """
    row = np.full(len(LABEL_NAMES), np.nan, dtype=np.float32)
    for j, name in enumerate(LABEL_NAMES):
        if grades is not None and GRADED_COLUMNS[j]:
            g = grades.get(name)
            if g is not None and g == g:
                c, s = grade_scale(name)
                row[j] = (float(g) - c) / s
            continue
        v = labels.get(name)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        v = float(v)
        if REGRESSION[j]:
            c, s = SCALE[name]
            row[j] = (v - c) / s
        elif v in (0.0, 1.0):
            row[j] = v
        else:
            raise ValueError(f"label {name!r} is binary (0 or 1), got {v!r}")
    return row


def label_matrix(cells: Sequence[str | None], reports: Sequence[str] | None = None) -> np.ndarray:
    """The shards' ``labels`` JSON cells -> ``N x P`` float32 (:func:`label_row` of each); with
    ``reports``, the graded columns hold each report's grades instead (``label_row(grades=...)``)."""
    from echoprime.data.shards import parse_labels

    if not len(cells):
        return np.zeros((0, len(LABEL_NAMES)), dtype=np.float32)
    if reports is None:
        return np.stack([label_row(parse_labels(c)) for c in cells])
    from echoprime.reports import extract_findings
    from echoprime.taxonomy import grade_column

    graded: dict[str, dict[str, float]] = {}  # a study's clips share its report: read it once
    for r in set(reports):
        found = extract_findings(r)
        graded[r] = {p: found[grade_column(p)] for p in GRADE_SCALES}
    return np.stack([label_row(parse_labels(c), graded[r]) for c, r in zip(cells, reports, strict=True)])
