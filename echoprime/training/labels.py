"""The report's findings as a training target: one standardised row of the taxonomy's phenotypes.

Labels are a deterministic function of the report (``echoprime.reports.extract_labels`` writes
the shards' ``labels`` column from it), so supervising the towers with them is still learning
from reports. Binaries stay 0/1 (binary cross-entropy); the two regressions are standardised so
that their squared error weighs about as much as a binary's loss: ejection fraction
``(x - 50) / 15``, pulmonary artery pressure ``(x - 30) / 10``. A missing label is NaN and
takes no part in the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from echoprime.taxonomy import PHENOTYPES

LABEL_NAMES: tuple[str, ...] = tuple(p.name for p in PHENOTYPES)
"""Column order of a label row: the taxonomy's phenotypes."""
REGRESSION: tuple[bool, ...] = tuple(p.kind == "regression" for p in PHENOTYPES)
"""Which columns are regressions (squared error) rather than binaries (cross-entropy)."""
SCALE: dict[str, tuple[float, float]] = {
    "ejection_fraction": (50.0, 15.0),
    "pulmonary_artery_pressure_continuous": (30.0, 10.0),
}
"""``{regression: (centre, scale)}``: its standardised value is ``(x - centre) / scale``."""


def label_row(labels: Mapping[str, float | None]) -> np.ndarray:
    """``{phenotype: value}`` -> float32 row over :data:`LABEL_NAMES` (standardised, NaN = missing).

    Raises:
        ValueError: a binary label other than 0/1.
    """
    row = np.full(len(LABEL_NAMES), np.nan, dtype=np.float32)
    for j, name in enumerate(LABEL_NAMES):
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


def label_matrix(cells: Sequence[str | None]) -> np.ndarray:
    """The shards' ``labels`` JSON cells -> ``N x P`` float32 (:func:`label_row` of each)."""
    from echoprime.data.shards import parse_labels

    if not len(cells):
        return np.zeros((0, len(LABEL_NAMES)), dtype=np.float32)
    return np.stack([label_row(parse_labels(c)) for c in cells])
