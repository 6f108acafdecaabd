"""The report's findings as a training target: one standardised row of the taxonomy's phenotypes.

Labels are a deterministic function of the report (``echoprime.reports.extract_labels`` writes
the shards' ``labels`` column from it), so supervising the towers with them is still learning
from reports. Binaries stay 0/1 (binary cross-entropy); the two regressions are standardised so
that their squared error weighs about as much as a binary's loss: ejection fraction
``(x - 50) / 15``, pulmonary artery pressure ``(x - 30) / 10``. A missing label is NaN and
takes no part in the loss. The graded phenotypes named in ``train.label_grades`` hold the report's
standardised grade instead of its yes/no, as squared-error targets weighted by
``train.label_grade_weight``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

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
"""Which columns are graded phenotypes (their grade can replace the binary: ``train.label_grades``)."""


def grade_scale(name: str) -> tuple[float, float]:
    """``(centre, scale)`` that puts a graded phenotype's grades into about [-1.5, 1.5]."""
    top = len(GRADE_SCALES[name].levels) - 1
    return top / 2, top / 3


def regression_columns(graded: Collection[str] = ()) -> tuple[bool, ...]:
    """Per label column, True for a squared-error target: the regressions, and the graded
    phenotypes named in ``graded`` (whose column then holds the grade)."""
    return tuple(r or name in graded for r, name in zip(REGRESSION, LABEL_NAMES, strict=True))


def column_weights(graded: Collection[str] = (), weight: float = 1.0) -> tuple[float, ...]:
    """Per label column, the weight of its loss: ``weight`` for the ``graded`` columns, else 1."""
    return tuple(weight if name in graded else 1.0 for name in LABEL_NAMES)


def label_row(labels: Mapping[str, float | None], grades: Mapping[str, float] | None = None) -> np.ndarray:
    """``{phenotype: value}`` -> float32 row over :data:`LABEL_NAMES` (standardised, NaN = missing).

    Args:
        labels: the release's labels (the shards' ``labels``).
        grades: ``{phenotype: grade}`` for the graded phenotypes whose column is to hold the grade
            (``extract_findings``' grade columns, by phenotype name): each such column holds the
            standardised grade (:func:`grade_scale`; NaN where the report states none) instead of
            the 0/1 label, a squared-error target (:func:`regression_columns`). The report's grade
            separates "mildly" from "moderately reduced", which the binary lumps together
            (docs/learning.md, RV systolic function).

    Raises:
        ValueError: a binary label other than 0/1.
    """
    row = np.full(len(LABEL_NAMES), np.nan, dtype=np.float32)
    for j, name in enumerate(LABEL_NAMES):
        if grades is not None and name in grades:
            g = grades[name]
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


def label_matrix(
    cells: Sequence[str | None], reports: Sequence[str] | None = None, graded: Collection[str] = ()
) -> np.ndarray:
    """The shards' ``labels`` JSON cells -> ``N x P`` float32 (:func:`label_row` of each); the
    ``graded`` phenotypes' columns hold each report's grade instead (needs ``reports``)."""
    from echoprime.data.shards import parse_labels

    if not len(cells):
        return np.zeros((0, len(LABEL_NAMES)), dtype=np.float32)
    if not graded:
        return np.stack([label_row(parse_labels(c)) for c in cells])
    if reports is None:
        raise ValueError(f"grades of {sorted(graded)} need the reports they are read from")
    from echoprime.reports import extract_findings
    from echoprime.taxonomy import grade_column

    found: dict[str, dict[str, float]] = {}  # a study's clips share its report: read it once
    for r in set(reports):
        f = extract_findings(r)
        found[r] = {p: f[grade_column(p)] for p in graded}
    return np.stack([label_row(parse_labels(c), found[r]) for c, r in zip(cells, reports, strict=True)])
