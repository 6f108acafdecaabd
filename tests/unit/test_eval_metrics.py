"""Evaluation metrics against hand-computed oracles: calibration, decisions, AUC records,
regression records, view confusion, video/study retrieval and its chance levels."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from echoprime.eval.calibration import expected_calibration_error, reliability_curve, sensitivity_specificity
from echoprime.eval.crossmodal import _chance_any, video_text_retrieval
from echoprime.eval.probes import NotComputable
from echoprime.eval.tasks import binary_result, regression_result, summarise, youden_or_default
from echoprime.eval.view_scores import view_metrics


def test_ece_and_reliability_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0, 1, np.nan])
    p = np.array([0.05, 0.15, 0.12, 0.85, 0.95, 0.9, 1.0, 0.5])  # the NaN-label row is dropped
    curve = reliability_curve(y, p, n_bins=10)
    # bins: 0 -> {0.05}, 1 -> {0.15, 0.12}, 8 -> {0.85}, 9 -> {0.95, 0.9, 1.0} (1.0 in the last bin)
    assert curve["count"] == [1, 2, 1, 3]
    assert curve["positive_rate"] == pytest.approx([0.0, 0.5, 1.0, 2 / 3])
    assert curve["mean_predicted"] == pytest.approx([0.05, 0.135, 0.85, 0.95])
    gaps = [0.05 * 1, abs(0.135 - 0.5) * 2, abs(0.85 - 1) * 1, abs(0.95 - 2 / 3) * 3]
    assert expected_calibration_error(y, p) == pytest.approx(sum(gaps) / 7)
    assert expected_calibration_error(np.array([0, 1.0]), np.array([0.0, 1.0])) == 0.0
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        reliability_curve(np.array([0, 1.0]), np.array([-0.5, 2.0]))
    with pytest.raises(ValueError, match="0 or 1"):
        expected_calibration_error(np.array([0, 2.0]), np.array([0.1, 0.2]))


def test_sensitivity_specificity_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0.0])
    p = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.6])
    sens, spec = sensitivity_specificity(y, p, 0.6)  # >= 0.6 calls 0.9, 0.6 | 0.7, 0.6
    assert (sens, spec) == (pytest.approx(2 / 3), pytest.approx(2 / 4))
    with pytest.raises(NotComputable, match="positives and negatives"):
        sensitivity_specificity(np.zeros(3), np.ones(3), 0.5)


def test_binary_result_matches_sklearn_and_refuses_small_splits():
    rng = np.random.default_rng(0)
    y = (rng.random(80) < 0.3).astype(float)
    p = np.clip(0.3 * y + 0.7 * rng.random(80), 0, 1)
    y[3], p[5] = np.nan, np.nan  # unlabelled and unscored rows are dropped
    res = binary_result(y, p, rng=np.random.default_rng(1), threshold=0.5, n_boot=200)
    keep = ~np.isnan(y) & ~np.isnan(p)
    assert res["computable"] and res["n"] == keep.sum()
    assert res["auc"] == pytest.approx(roc_auc_score(y[keep], p[keep]))
    assert res["auc_low"] <= res["auc"] <= res["auc_high"]
    assert (res["sensitivity"], res["specificity"]) == pytest.approx(sensitivity_specificity(y, p, 0.5))
    assert res["ece"] == pytest.approx(expected_calibration_error(y, p))
    # One positive: reported as not computable with the counts, never as 0.5 or NaN.
    one = binary_result(np.array([1, 0, 0, 0, 0.0]), np.arange(5.0) / 5, rng=rng)
    assert one == {
        "computable": False,
        "reason": "test split has 1 positives and 4 negatives; an AUC needs >= 2 of each",
        "n_pos": 1,
        "n_neg": 4,
    }
    # Zero-shot scores are not probabilities: no calibration is claimed for them.
    z = binary_result(y, 4 * p - 2, rng=rng, calibrate=False, n_boot=50)
    assert "ece" not in z and z["auc"] == pytest.approx(res["auc"])


def test_regression_result_and_baseline():
    y = np.array([50.0, 60.0, np.nan, 40.0])
    pred = np.array([55.0, 58.0, 30.0, 40.0])
    res = regression_result(y, pred, rng=np.random.default_rng(0), baseline=50.0, n_boot=300)
    assert res["mae"] == pytest.approx((5 + 2 + 0) / 3) and res["n"] == 3
    assert res["baseline_mae"] == pytest.approx((0 + 10 + 10) / 3)
    assert 0 <= res["mae_low"] <= res["mae"] <= res["mae_high"] <= 5
    assert not regression_result(np.full(3, np.nan), pred[:3], rng=np.random.default_rng(0))["computable"]


def test_youden_threshold_or_default():
    y = np.array([0, 0, 1, 1.0])
    assert youden_or_default(y, np.array([0.1, 0.4, 0.35, 0.8])) == (0.8, True)  # J = 0.5, highest wins
    assert youden_or_default(np.zeros(4), np.arange(4.0)) == (0.5, False)


def test_summarise_means_over_phenotypes_computable_for_every_method():
    ok = lambda a: {"computable": True, "auc": a}  # noqa: E731
    res = {
        "a": {"kind": "binary", "knn": ok(0.6), "linear": ok(0.8)},
        "b": {"kind": "binary", "knn": ok(0.9), "linear": {"computable": False, "reason": "x"}},
        "ejection_fraction": {
            "kind": "regression",
            "knn": {"computable": True, "mae": 7.0, "baseline_mae": 9.0},
            "linear": {"computable": True, "mae": 6.0, "baseline_mae": 9.0},
        },
    }
    s = summarise(res)
    assert s["binary_phenotypes"] == ["a"] and s["mean_auc_knn"] == 0.6 and s["mean_auc_linear"] == 0.8
    assert (s["ejection_fraction_mae_knn"], s["ejection_fraction_mae_train_mean"]) == (7.0, 9.0)


def test_view_metrics_confusion_by_hand():
    true = np.array([0, 0, 1, 2, 2, -1])
    pred = np.array([0, 1, 1, 2, 0, 3])
    m = view_metrics(true, pred, n_views=4)
    assert m["accuracy"] == pytest.approx(3 / 5) and m["n"] == 5 and m["unlabelled"] == 1
    assert m["confusion"] == [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert list(m["per_view_recall"].values()) == [0.5, 1.0, 0.5, None]
    assert not view_metrics(np.array([-1, -1]), np.array([0, 1]))["computable"]


def _brute_ranks(sim: np.ndarray, positive: np.ndarray) -> np.ndarray:
    out = []
    for q in range(sim.shape[0]):
        best = sim[q][positive[q]].max()
        out.append(1 + int(((sim[q] >= best) & ~positive[q]).sum()))
    return np.array(out)


def test_video_text_retrieval_against_brute_force():
    rng = np.random.default_rng(0)
    b, d = 12, 8
    clip_study = np.repeat(np.arange(b), rng.integers(1, 4, size=b))
    reports = rng.standard_normal((b, d)).astype(np.float32)
    clips = (reports[clip_study] + 1.2 * rng.standard_normal((len(clip_study), d))).astype(np.float32)
    studies = np.stack([clips[clip_study == i].mean(0) for i in range(b)])
    res = video_text_retrieval(clips, clip_study, reports, studies, ks=(1, 3))
    owns = clip_study[None, :] == np.arange(b)[:, None]  # B x N
    cases = {
        ("video", "v2t"): (clips @ reports.T, owns.T),
        ("video", "t2v"): (reports @ clips.T, owns),
        ("study", "v2t"): (studies @ reports.T, np.eye(b, dtype=bool)),
        ("study", "t2v"): (reports @ studies.T, np.eye(b, dtype=bool)),
    }
    for (lvl, d_), (sim, pos) in cases.items():
        r = _brute_ranks(sim, pos)
        got = res[lvl][d_]
        assert got["r@1"] == pytest.approx((r <= 1).mean()) and got["r@3"] == pytest.approx((r <= 3).mean())
        assert got["median_rank"] == float(torch.tensor(r).median()) and got["pool"] == sim.shape[1]
    assert res["study"]["v2t"]["chance_r@3"] == pytest.approx(3 / b)
    with pytest.raises(ValueError, match="have no clip"):
        video_text_retrieval(clips, np.where(clip_study == 0, 1, clip_study), reports, studies)


def test_chance_of_any_positive_in_top_k():
    # 1 of 2 positives among 4 shuffled items in the top 1: 1/2; both in the top 3 of 4: certain.
    assert _chance_any(4, [2], 1) == pytest.approx(0.5)
    assert _chance_any(4, [2], 3) == pytest.approx(1 - comb(2, 3) / comb(4, 3)) == 1.0
    sims = np.random.default_rng(0).random((20000, 10)).argsort(1)[:, :3]  # random top-3 of 10
    assert ((sims < 2).any(1)).mean() == pytest.approx(_chance_any(10, [2], 3), abs=0.02)
