"""Clinical tasks on frozen study embeddings: the 21 phenotypes and the hidden diagnoses.

Two predictors per phenotype, both reading the phenotype's OWN section embedding (the row of
``taxonomy.MIL_SECTIONS`` its section names), so that they differ only in how they read it:

* ``knn``: the bank, as interpretation does it (:func:`echoprime.retrieval.predict_metrics_batch`):
  the mean label of the ``k`` nearest training reports. Binary decisions use the bundle's
  fitted thresholds (``thresholds.json``, Youden's J on the validation split).
* ``linear``: a linear probe (:func:`echoprime.eval.probes.fit_probe`, standardised inputs,
  balanced logistic regression or ridge) fitted on the training split's section embeddings;
  its decision threshold is fitted on the validation split (Youden's J) the same way.

Binaries get AUC with a bootstrap 95 % interval, sensitivity / specificity at the threshold and
the expected calibration error; regressions get MAE with an interval, next to the MAE of
predicting the training mean. Hidden diagnoses have no section and no bank labels: their
predictors are a kNN probe and a linear probe on the plain study embedding (normalised mean of
the clip embeddings), trained on the training split (the paper's "beyond the report" form).

A split with too few positives or negatives gives ``{"computable": False, "reason": ...}``, never
a silent 0.5 or NaN.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from echoprime.eval.calibration import expected_calibration_error, reliability_curve, sensitivity_specificity
from echoprime.eval.probes import NotComputable, bootstrap_auc, fit_probe
from echoprime.eval.studies import StudySet
from echoprime.taxonomy import MIL_SECTIONS, PHENOTYPE_BY_NAME, PHENOTYPES

MIN_PER_CLASS = 2
"""Positives and negatives a split needs before an AUC (or a probe fit) is computed."""

PROBE_C = 0.1
"""Inverse L2 strength of the logistic probe: 512-d inputs and a few hundred training studies
overfit at C = 1 (measured on the quickstart cohort, docs/evaluation.md)."""

PROBE_ALPHA = 100.0
"""Ridge penalty of the regression probe (same reason, standardised 512-d inputs)."""


def not_computable(reason: str, **extra: Any) -> dict[str, Any]:
    return {"computable": False, "reason": reason, **extra}


def binary_result(
    y: np.ndarray,
    score: np.ndarray,
    *,
    rng: np.random.Generator,
    threshold: float | None = None,
    calibrate: bool = True,
    n_boot: int = 1000,
    min_per_class: int = MIN_PER_CLASS,
) -> dict[str, Any]:
    """AUC (bootstrap 95 % interval), and for probabilities the decision and calibration metrics.

    Args:
        y: ``B`` 0/1 labels (NaN = unlabelled, dropped with its score).
        score: ``B`` scores (NaN = no prediction, dropped).
        rng: the bootstrap's generator.
        threshold: decision threshold; sensitivity and specificity of ``score >= threshold``.
        calibrate: scores are probabilities: add ECE and the reliability curve.
        n_boot: bootstrap resamples.
        min_per_class: positives and negatives needed.

    Returns:
        ``{"computable": True, "auc", "auc_low", "auc_high", "n", "n_pos", "n_neg"[, "threshold",
        "sensitivity", "specificity"][, "ece", "reliability"]}`` or a not-computable record.
    """
    y = np.asarray(y, np.float64)
    score = np.asarray(score, np.float64)
    keep = ~np.isnan(y) & ~np.isnan(score)
    y, score = y[keep], score[keep]
    n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
    if n_pos < min_per_class or n_neg < min_per_class:
        return not_computable(
            f"test split has {n_pos} positives and {n_neg} negatives; an AUC needs >= {min_per_class} of each",
            n_pos=n_pos,
            n_neg=n_neg,
        )
    auc, lo, hi = bootstrap_auc(y, score, n_boot, rng)
    out: dict[str, Any] = {"computable": True, "auc": auc, "auc_low": lo, "auc_high": hi}
    out.update(n=len(y), n_pos=n_pos, n_neg=n_neg)
    if threshold is not None:
        sens, spec = sensitivity_specificity(y, score, threshold)
        out.update(threshold=float(threshold), sensitivity=sens, specificity=spec)
    if calibrate:
        out["ece"] = expected_calibration_error(y, np.clip(score, 0.0, 1.0))
        out["reliability"] = reliability_curve(y, np.clip(score, 0.0, 1.0))
    return out


def regression_result(
    y: np.ndarray,
    pred: np.ndarray,
    *,
    rng: np.random.Generator,
    baseline: float | None = None,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """MAE with a bootstrap 95 % interval, and the MAE of always predicting ``baseline``.

    Returns:
        ``{"computable": True, "mae", "mae_low", "mae_high", "n"[, "baseline_mae"]}`` or a
        not-computable record (no labelled row with a prediction).
    """
    y = np.asarray(y, np.float64)
    pred = np.asarray(pred, np.float64)
    keep = ~np.isnan(y) & ~np.isnan(pred)
    y, pred = y[keep], pred[keep]
    if len(y) == 0:
        return not_computable("test split has no labelled study with a prediction")
    err = np.abs(pred - y)
    boot = err[rng.integers(0, len(err), size=(n_boot, len(err)))].mean(axis=1)  # n_boot resampled MAEs
    lo, hi = np.percentile(boot, [2.5, 97.5])
    out = {
        "computable": True,
        "mae": float(err.mean()),
        "mae_low": float(lo),
        "mae_high": float(hi),
        "n": len(y),
    }
    if baseline is not None:
        out["baseline_mae"] = float(np.abs(y - baseline).mean())
    return out


def youden_or_default(y: np.ndarray, score: np.ndarray, default: float = 0.5) -> tuple[float, bool]:
    """Youden's-J threshold of validation scores, or ``(default, False)`` when it has no ROC."""
    from echoprime.retrieval import youden_threshold

    keep = ~np.isnan(y) & ~np.isnan(score)
    y, score = y[keep], score[keep]
    if not ((y == 1).any() and (y == 0).any()):
        return default, False
    return youden_threshold(score, y)[0], True


def probe_scores(
    kind: str,
    task: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: Sequence[np.ndarray],
    *,
    k: int = 10,
) -> list[np.ndarray]:
    """Fit a probe on the training rows and score each evaluation matrix.

    Raises:
        NotComputable: the training split cannot fit it (too few labels or classes).
    """
    probe = fit_probe(x_train, y_train, kind, task=task, k=k, c=PROBE_C, alpha=PROBE_ALPHA,
                      min_per_class=MIN_PER_CLASS)  # fmt: skip
    return [probe.predict(x) for x in x_eval]


def knn_bank_scores(
    section_embs: np.ndarray, bank: Any, k: int, phenotypes: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """``{phenotype: B}`` kNN values through the bank (positive fraction or value in units)."""
    from echoprime.retrieval import default_phenotype_sections, predict_metrics_batch

    sections = default_phenotype_sections(bank)
    if phenotypes is not None:
        sections = {p: s for p, s in sections.items() if p in phenotypes}
    preds = predict_metrics_batch(section_embs, bank, k, phenotype_sections=sections)
    return {p: np.array([pr[p].value for pr in preds], np.float64) for p in sections}


def clinical_tasks(
    secs: Mapping[str, np.ndarray],
    sets: Mapping[str, StudySet],
    bank: Any,
    *,
    k: int,
    thresholds: Mapping[str, float],
    rng: np.random.Generator,
    n_boot: int = 1000,
) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """kNN (bank) and linear-probe results for every phenotype on the test split.

    Args:
        secs: ``{"train"|"val"|"test"[|"probe"]: B x 15 x D}`` section embeddings (the bundle's
            attention).
        sets: the matching :class:`StudySet` of each split; the linear probes are fitted on
            ``"probe"`` where present (the train split plus rendered training studies,
            ``stream.probe_studies``), else on ``"train"``.
        bank: the candidate bank.
        k: neighbours.
        thresholds: the bundle's kNN decision thresholds (a binary missing here uses 0.5, noted).
        rng: bootstrap generator.
        n_boot: bootstrap resamples.

    Returns:
        ``(results, scores)``: per phenotype ``{"section", "kind", "knn", "linear"}`` plus a
        ``"summary"``; and the raw test scores ``{phenotype: {"y", "knn", "linear"}}`` for plots.
    """
    tr, va, te = sets["train"], sets["val"], sets["test"]
    fit = "probe" if "probe" in sets else "train"
    knn = knn_bank_scores(secs["test"], bank, k)
    results: dict[str, Any] = {}
    raw: dict[str, dict[str, np.ndarray]] = {}
    for ph in PHENOTYPES:
        row = MIL_SECTIONS.index(ph.section)
        y = te.label(ph.name)
        entry: dict[str, Any] = {"section": ph.section, "kind": ph.kind}
        raw[ph.name] = {"y": y}
        if ph.name not in knn:
            entry["knn"] = not_computable(f"the bank has no labels for {ph.name!r}")
        elif ph.kind == "binary":
            thr = thresholds.get(ph.name)
            entry["knn"] = binary_result(y, knn[ph.name], rng=rng, threshold=0.5 if thr is None else thr,
                                         n_boot=n_boot)  # fmt: skip
            if thr is None and entry["knn"]["computable"]:
                entry["knn"]["threshold_note"] = "no fitted threshold in the bundle: 0.5"
            raw[ph.name]["knn"] = knn[ph.name]
        else:
            base = float(np.nanmean(tr.label(ph.name))) if np.isfinite(tr.label(ph.name)).any() else None
            entry["knn"] = regression_result(y, knn[ph.name], rng=rng, baseline=base, n_boot=n_boot)
            raw[ph.name]["knn"] = knn[ph.name]
        try:
            s_val, s_test = probe_scores("linear", ph.kind, secs[fit][:, row], sets[fit].label(ph.name),
                                         [secs["val"][:, row], secs["test"][:, row]])  # fmt: skip
        except NotComputable as err:
            entry["linear"] = not_computable(f"probe not fitted: {err}")
        else:
            raw[ph.name]["linear"] = s_test
            if ph.kind == "binary":
                thr, fitted = youden_or_default(va.label(ph.name), s_val)
                entry["linear"] = binary_result(y, s_test, rng=rng, threshold=thr, n_boot=n_boot)
                if not fitted and entry["linear"]["computable"]:
                    entry["linear"]["threshold_note"] = "validation split has one class: 0.5"
            else:
                base = float(np.nanmean(tr.label(ph.name)))
                entry["linear"] = regression_result(y, s_test, rng=rng, baseline=base, n_boot=n_boot)
        results[ph.name] = entry
    results["summary"] = summarise(results)
    return results, raw


def summarise(results: Mapping[str, Any], methods: Sequence[str] = ("knn", "linear")) -> dict[str, Any]:
    """Mean AUC over the binaries computable for every method, and each regression's MAE."""
    binaries = [
        p
        for p, r in results.items()
        if p != "summary"
        and r.get("kind", "binary") == "binary"
        and all(r.get(m, {}).get("computable") for m in methods)
    ]
    out: dict[str, Any] = {"binary_phenotypes_scored": len(binaries), "binary_phenotypes": binaries}
    for m in methods:
        out[f"mean_auc_{m}"] = float(np.mean([results[p][m]["auc"] for p in binaries])) if binaries else None
    for p, r in results.items():
        if p != "summary" and r.get("kind") == "regression":
            for m in methods:
                res = r.get(m, {})
                out[f"{p}_mae_{m}"] = res.get("mae") if res.get("computable") else None
            out[f"{p}_mae_train_mean"] = next(
                (r[m]["baseline_mae"] for m in methods if "baseline_mae" in r.get(m, {})), None
            )
    return out


def hidden_tasks(
    sets: Mapping[str, StudySet],
    secs: Mapping[str, np.ndarray],
    *,
    rng: np.random.Generator,
    n_boot: int = 1000,
    k: int = 10,
) -> dict[str, Any]:
    """kNN-probe and linear-probe AUC of the hidden diagnoses from the study's section
    embeddings, concatenated (``secs``: ``B x 15 x D`` per split, as :func:`clinical_tasks`).

    A hidden diagnosis belongs to no report section, and its evidence may be in a few views
    (an infarct's wall in the views of its territory): the 15 sections side by side keep where
    it is, which their mean (or the mean clip) averages away (docs/learning.md measures both).
    The probes are fitted on ``"probe"`` where present, else on ``"train"``.

    Returns:
        ``{name: {"knn": result, "linear": result}}`` plus ``"summary"``; or
        ``{"skipped": reason}`` when the shards carry no hidden labels (a real archive).
    """
    fit = "probe" if "probe" in sets and sets["probe"].hidden is not None else "train"
    tr, va, te = sets[fit], sets["val"], sets["test"]
    if te.hidden is None or tr.hidden is None:
        return {"skipped": "the shards carry no hidden diagnoses (hidden_labels): not a synthetic cohort"}
    x = {name: secs[name].reshape(len(secs[name]), -1) for name in (fit, "val", "test")}
    out: dict[str, Any] = {}
    for name in te.hidden_names:
        out[name] = {"kind": "binary", "input": "section embeddings, concatenated"}
        for kind in ("knn", "linear"):
            try:
                s_val, s_test = probe_scores(
                    kind, "binary", x[fit], tr.label(name), [x["val"], x["test"]], k=k
                )
            except NotComputable as err:
                out[name][kind] = not_computable(f"probe not fitted: {err}")
                continue
            thr, _ = youden_or_default(va.label(name), s_val) if va.hidden is not None else (0.5, False)
            out[name][kind] = binary_result(te.label(name), s_test, rng=rng, threshold=thr, n_boot=n_boot)
    out["summary"] = summarise(out)
    return out


def phenotype_kind(name: str) -> str:
    """``binary`` or ``regression`` (hidden diagnoses are binary)."""
    ph = PHENOTYPE_BY_NAME.get(name)
    return ph.kind if ph else "binary"
