"""Graded findings from the neighbours: the vote over grades, and the grade it predicts.

The bank holds, beside each graded phenotype's 0/1 label, the grade its report states (column
``taxonomy.grade_column(p)``, NaN where the report states none). The same ``k`` neighbours that
give the binary's probability (its own section's search, best first) vote over the grades: the
distribution is each grade's share among the neighbours that have one.

The predicted grade is the most-voted grade **on the side of the binary decision**: among the
grades at or above the scale's ``positive_from`` when the decision is positive, below it when
negative (ties go to the milder grade). So the grade never contradicts the release-compatible
decision, which stays the raw probability against its threshold. A side without votes (the
threshold sits below every positive vote share, say) takes its boundary grade ("moderate" for a
positive call, the grade below it for a negative one). No decision (no labelled neighbour):
the overall most-voted grade. No graded neighbour: no grade.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from echoprime import taxonomy
from echoprime.retrieval.bank import CandidateBank, Neighbours
from echoprime.taxonomy import GradeScale, grade_column


@dataclass(frozen=True)
class GradeVote:
    """One study's graded finding.

    Attributes:
        distribution: share of each grade among the graded neighbours (NaN each when none).
        n_graded: neighbours with a grade.
        grade: the predicted grade index (None when ``n_graded`` is 0).
    """

    distribution: tuple[float, ...]
    n_graded: int
    grade: int | None


def graded_phenotypes(bank: CandidateBank, scales: Mapping[str, GradeScale]) -> list[str]:
    """The graded phenotypes the bank holds both the binary label and the grade column of."""
    have = set(bank.phenotypes)
    return [p for p in scales if p in have and grade_column(p) in have]


def grade_votes(
    neighbours: Neighbours,
    bank: CandidateBank,
    k: int,
    scales: Mapping[str, GradeScale],
    phenotypes: Sequence[str] | None = None,
) -> tuple[list[str], list[np.ndarray], np.ndarray]:
    """Each study's vote over each phenotype's grades.

    Returns:
        ``(names, dists, n)``: the phenotypes; per phenotype a ``B x L`` array of grade shares
        (NaN rows where no neighbour has a grade); ``B x P`` graded-neighbour counts.
    """
    names = list(graded_phenotypes(bank, scales) if phenotypes is None else phenotypes)
    if not names:
        return [], [], np.zeros((neighbours.ids.shape[0], 0), dtype=np.int64)
    cols = np.array([bank.phenotype_column(grade_column(p)) for p in names], dtype=np.int64)
    pos = np.array(
        [
            neighbours.position(taxonomy.MIL_SECTIONS.index(taxonomy.PHENOTYPE_BY_NAME[p].section))
            for p in names
        ],
        dtype=np.int64,
    )
    ids = neighbours.ids[:, pos, :k]  # B x P x k
    vals = np.asarray(bank.labels[ids, cols[None, :, None]], dtype=np.float64)
    have = ~np.isnan(vals)
    n = have.sum(axis=-1)
    dists = []
    for j, p in enumerate(names):
        levels = len(scales[p].levels)
        counts = np.stack([(vals[:, j, :] == g).sum(axis=-1) for g in range(levels)], axis=-1).astype(
            np.float64
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            dists.append(counts / n[:, j, None])
    return names, dists, n


def predict_grade(distribution: np.ndarray, decision: bool | None, scale: GradeScale) -> int | None:
    """The grade the module docstring's rule picks from one study's grade shares."""
    d = np.nan_to_num(np.asarray(distribution, dtype=np.float64), nan=0.0)
    if decision is None:
        return int(np.argmax(d)) if d.sum() > 0 else None
    lo, hi = (scale.positive_from, len(scale.levels)) if decision else (0, scale.positive_from)
    side = d[lo:hi]
    if side.sum() <= 0:
        return scale.positive_from if decision else scale.positive_from - 1
    return lo + int(np.argmax(side))  # argmax takes the first (mildest) of equal shares


def vote(distribution: np.ndarray, n_graded: int, decision: bool | None, scale: GradeScale) -> GradeVote:
    """:class:`GradeVote` of one study and phenotype."""
    dist = tuple(float(x) for x in distribution)
    grade = predict_grade(distribution, decision, scale) if n_graded else None
    return GradeVote(dist, int(n_graded), grade)
