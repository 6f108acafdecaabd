"""A study's findings as a result carries them: the release's kNN numbers, and beside them the
calibrated probability, the graded finding and the measurement's interval (issue 23).

One function, :func:`findings_batch`, makes the per-finding dicts of ``StudyResult.metrics``;
interpretation and ``echoprime evaluate`` both call it, so what is evaluated is what a result
says. The keys of each dict:

* every finding: ``value``, ``probability``, ``decision``, ``spread``, ``n_labelled``, ``kind``,
  ``unit``, ``threshold``, ``threshold_source`` (the release-compatible numbers, unchanged);
* ``calibrated_probability`` and ``calibration`` (binaries with a map in the bundle's
  ``calibration.json``, see :mod:`echoprime.retrieval.calibration`);
* ``grade`` (graded phenotypes whose grades the bank holds, see :mod:`echoprime.retrieval.grades`):
  ``scale``, ``positive_from``, ``distribution``, ``n_graded``, ``grade``, ``label``, and the grade
  the study's generated report states (``report_grade``, ``report_label``) with
  ``agrees_with_report``;
* ``interval`` (measurements with a fitted interval): ``low``, ``high``, ``level``, ``method``.

A key that does not apply is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from echoprime.retrieval.bank import CandidateBank, Neighbours
from echoprime.retrieval.grades import grade_votes, vote
from echoprime.retrieval.knn import predict_metrics_batch
from echoprime.taxonomy import EXTRA_MEASUREMENTS, FINDING_BY_NAME


def threshold_source(thresholds: Mapping[str, float], phenotype: str) -> str | None:
    """Where a phenotype's decision threshold came from: ``youden`` / ``release`` / ``default``
    (a :class:`~echoprime.retrieval.Thresholds`), ``given`` (a plain mapping passed in code), or
    None when it has none."""
    if phenotype not in thresholds:
        return None
    fits = getattr(thresholds, "fits", None)
    return fits[phenotype].source if fits is not None else "given"


def findings_batch(
    section_embs: np.ndarray,
    bank: CandidateBank,
    k: int,
    *,
    thresholds: Mapping[str, float],
    calibration: Any = None,
    neighbours: Neighbours | None = None,
    report_grades: Sequence[Mapping[str, float]] | None = None,
) -> list[dict[str, dict[str, Any]]]:
    """Each study's ``{finding: dict}`` (module docstring), in taxonomy order, extras last.

    Args:
        section_embs: ``B x 15 x D`` section embeddings.
        bank: the candidate bank.
        k: neighbours per section.
        thresholds: decision threshold per binary (empty: 0.5 for all, as ``predict_metrics``).
        calibration: the bundle's :class:`~echoprime.retrieval.calibration.Calibration`, or None
            (no calibrated probabilities, intervals or grades).
        neighbours: a search of every section row with at least ``k`` neighbours, to share.
        report_grades: per study, ``{phenotype: grade}`` that its generated report states
            (``echoprime.reports.grades_from_sections``), to compare with; None: not compared.
    """
    b = section_embs.shape[0]
    if neighbours is None:
        neighbours = bank.neighbours(section_embs, k)
    metrics = predict_metrics_batch(
        section_embs, bank, k, thresholds=thresholds or None, neighbours=neighbours
    )
    extra = {m.name: m.section for m in EXTRA_MEASUREMENTS if m.name in bank.phenotypes}
    if extra:  # measurements beyond the release's 21 (heart rate), after them
        more = predict_metrics_batch(section_embs, bank, k, phenotype_sections=extra, neighbours=neighbours)
        metrics = [m | x for m, x in zip(metrics, more, strict=True)]
    names, dists, n_graded = (
        grade_votes(neighbours, bank, k, calibration.grade_scales)
        if calibration is not None
        else ([], [], None)
    )
    out = []
    for i in range(b):
        found: dict[str, dict[str, Any]] = {}
        for ph, m in metrics[i].items():
            info = FINDING_BY_NAME.get(ph)
            pmap = (
                calibration.probabilities.get(ph)
                if calibration is not None and m.probability is not None
                else None
            )
            fit = calibration.intervals.get(ph) if calibration is not None and info is not None else None
            entry: dict[str, Any] = {
                "value": m.value,
                "probability": m.probability,
                "decision": m.decision,
                "spread": m.spread,
                "n_labelled": m.n_labelled,
                "kind": info.kind if info else "binary",
                "unit": info.unit if info else "",
                "threshold": float(thresholds[ph]) if ph in thresholds else None,
                "threshold_source": threshold_source(thresholds, ph),
                "calibrated_probability": pmap(m.probability) if pmap is not None else None,
                "calibration": pmap.method if pmap is not None else None,
                "grade": None,
                "interval": None,
            }
            if fit is not None and info is not None and math.isfinite(m.value):
                lo, hi = fit.interval(m.value, m.spread, info.valid_range)
                entry["interval"] = {"low": lo, "high": hi, "level": fit.level, "method": fit.method}
            found[ph] = entry
        said_all = report_grades[i] if report_grades is not None else {}
        for j, ph in enumerate(names):
            if ph not in found:
                continue
            scale = calibration.grade_scales[ph]
            v = vote(dists[j][i], int(n_graded[i, j]), found[ph]["decision"], scale)
            said = said_all.get(ph, math.nan)
            said_i = None if math.isnan(said) else int(said)
            found[ph]["grade"] = {
                "scale": list(scale.levels),
                "positive_from": scale.positive_from,
                "distribution": list(v.distribution),
                "n_graded": v.n_graded,
                "grade": v.grade,
                "label": None if v.grade is None else scale.levels[v.grade],
                "report_grade": said_i,
                "report_label": None if said_i is None else scale.levels[said_i],
                "agrees_with_report": None if v.grade is None or said_i is None else v.grade == said_i,
            }
        out.append(found)
    return out
