"""Evaluation of what issue 23 adds to a result: graded findings, measurement intervals and
calibrated probabilities, scored on the test split from the same per-finding dicts that
interpretation returns (:func:`echoprime.retrieval.findings.findings_batch`).

* **Grades**: the true grade is what the test study's report states
  (:func:`echoprime.reports.extract_findings`). Per graded phenotype: accuracy, accuracy within
  one grade, quadratic-weighted kappa (Cohen's kappa with weights ``(i - j)^2 / (L - 1)^2``, the
  usual agreement measure for ordinal grades; 1 = perfect, 0 = chance) and the confusion matrix,
  for two routes: the kNN vote (the product path) and a ridge probe on the grade index from the
  phenotype's section embedding, rounded to the nearest grade (fitted on the probe set, as the
  linear probes are).
* **Intervals**: per measurement the kNN value's MAE, the interval's empirical coverage against
  its nominal level, and its mean width.
* **Calibration**: per binary, the expected calibration error (ECE, 10 equal-width bins) of the raw
  vote share and of the calibrated probability, and both reliability curves; the mean over the
  binaries with a map is the headline.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from echoprime.eval.calibration import expected_calibration_error, reliability_curve
from echoprime.eval.probes import NotComputable, fit_probe
from echoprime.eval.studies import StudySet
from echoprime.metrics import confusion_matrix, quadratic_weighted_kappa
from echoprime.taxonomy import MIL_SECTIONS, PHENOTYPE_BY_NAME, grade_column


def grade_scores(truth: np.ndarray, pred: np.ndarray, levels: int) -> dict[str, Any]:
    """Accuracy, within-one accuracy, quadratic-weighted kappa and the confusion matrix (NaN rows dropped)."""
    t, p = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
    keep = ~np.isnan(t) & ~np.isnan(p)
    if keep.sum() < 2:
        return {"computable": False, "reason": f"{int(keep.sum())} studies with a true and a predicted grade"}
    t, p = t[keep].astype(np.int64), p[keep].astype(np.int64)
    return {
        "computable": True,
        "n": int(keep.sum()),
        "accuracy": float((t == p).mean()),
        "within_one": float((np.abs(t - p) <= 1).mean()),
        "qwk": quadratic_weighted_kappa(t, p, levels),
        "confusion": confusion_matrix(t, p, levels).tolist(),
    }


def _true_findings(reports: list[str]) -> list[dict[str, float]]:
    from echoprime.reports import extract_findings

    return [extract_findings(r) for r in reports]


def graded_evaluation(
    parts: Any,
    secs: Mapping[str, np.ndarray],
    sets: Mapping[str, StudySet],
    *,
    k: int,
) -> dict[str, Any]:
    """The ``graded`` section of the metrics (module docstring); skipped without calibration.json."""
    from echoprime.retrieval.findings import findings_batch

    cal = getattr(parts, "calibration", None)
    if cal is None:
        return {"skipped": "the bundle has no calibration.json (grades, intervals and calibration maps)"}
    te = sets["test"]
    found = findings_batch(secs["test"], parts.bank, k, thresholds=parts.thresholds or {}, calibration=cal)
    truth = _true_findings(te.reports)
    fit = "probe" if "probe" in sets else "train"
    fit_truth = _true_findings(sets[fit].reports)

    grades: dict[str, Any] = {}
    for ph, scale in cal.grade_scales.items():
        if ph not in found[0] or found[0][ph]["grade"] is None:
            continue
        levels = len(scale.levels)
        col = grade_column(ph)
        y = np.array([t.get(col, math.nan) for t in truth], np.float64)
        knn = np.array([math.nan if (g := f[ph]["grade"]["grade"]) is None else g for f in found], np.float64)
        entry: dict[str, Any] = {"scale": list(scale.levels), "positive_from": scale.positive_from}
        entry["knn"] = grade_scores(y, knn, levels)
        row = MIL_SECTIONS.index(PHENOTYPE_BY_NAME[ph].section)
        y_fit = np.array([t.get(col, math.nan) for t in fit_truth], np.float64)
        try:
            probe = fit_probe(secs[fit][:, row], y_fit, "linear", task="regression")
        except NotComputable as err:
            entry["linear"] = {"computable": False, "reason": f"probe not fitted: {err}"}
        else:
            lin = np.clip(np.rint(probe.predict(secs["test"][:, row])), 0, levels - 1)
            entry["linear"] = grade_scores(y, lin, levels)
        grades[ph] = entry

    intervals: dict[str, Any] = {}
    for name, iv in cal.intervals.items():
        if name not in found[0]:
            continue
        # The shards' labels for the release's phenotypes; the report's text for the extras.
        y = te.label(name) if name in PHENOTYPE_BY_NAME else np.array([t.get(name, math.nan) for t in truth])
        v = np.array([f[name]["value"] for f in found], np.float64)
        lo = np.array(
            [math.nan if f[name]["interval"] is None else f[name]["interval"]["low"] for f in found]
        )
        hi = np.array(
            [math.nan if f[name]["interval"] is None else f[name]["interval"]["high"] for f in found]
        )
        keep = ~np.isnan(y) & ~np.isnan(v) & ~np.isnan(lo)
        if keep.sum() == 0:
            intervals[name] = {"computable": False, "reason": "no test study with a value and a truth"}
            continue
        intervals[name] = {
            "computable": True,
            "n": int(keep.sum()),
            "unit": found[0][name]["unit"],
            "mae": float(np.abs(y[keep] - v[keep]).mean()),
            "level": iv.level,
            "coverage": float(((y[keep] >= lo[keep]) & (y[keep] <= hi[keep])).mean()),
            "mean_width": float((hi[keep] - lo[keep]).mean()),
        }

    calib: dict[str, Any] = {}
    for ph, pmap in cal.probabilities.items():
        if ph not in found[0]:
            continue
        y = te.label(ph)
        raw = np.array([f[ph]["probability"] for f in found], np.float64)
        calibrated = np.asarray(pmap(raw), np.float64)
        keep = ~np.isnan(y) & ~np.isnan(raw)
        if keep.sum() == 0:
            calib[ph] = {"computable": False, "reason": "no labelled test study"}
            continue
        yk, rk, ck = y[keep], np.clip(raw[keep], 0, 1), calibrated[keep]
        calib[ph] = {
            "computable": True,
            "method": pmap.method,
            "n": int(keep.sum()),
            "ece_raw": expected_calibration_error(yk, rk),
            "ece_calibrated": expected_calibration_error(yk, ck),
            "reliability_raw": reliability_curve(yk, rk),
            "reliability_calibrated": reliability_curve(yk, ck),
        }
    return {
        "grades": grades,
        "intervals": intervals,
        "calibration": calib,
        "summary": _summary(grades, intervals, calib),
    }


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.mean(xs)) if xs else None


def _summary(
    grades: Mapping[str, Any], intervals: Mapping[str, Any], calib: Mapping[str, Any]
) -> dict[str, Any]:
    ok = [g for g in grades.values() if g["knn"].get("computable")]
    lin = [g for g in grades.values() if g.get("linear", {}).get("computable")]
    ivs = [v for v in intervals.values() if v.get("computable")]
    cs = [c for c in calib.values() if c.get("computable")]
    out: dict[str, Any] = {
        "graded_findings": len(ok),
        "grade_accuracy_knn": _mean([g["knn"]["accuracy"] for g in ok]),
        "grade_qwk_knn": _mean([g["knn"]["qwk"] for g in ok]),
        "grade_accuracy_linear": _mean([g["linear"]["accuracy"] for g in lin]),
        "grade_qwk_linear": _mean([g["linear"]["qwk"] for g in lin]),
        "interval_coverage_mean": _mean([v["coverage"] for v in ivs]),
        "ece_raw_mean": _mean([c["ece_raw"] for c in cs]),
        "ece_calibrated_mean": _mean([c["ece_calibrated"] for c in cs]),
        "calibrated_findings": len(cs),
    }
    for name, v in intervals.items():
        if v.get("computable"):
            out[f"{name}_interval_coverage"] = v["coverage"]
    return out
