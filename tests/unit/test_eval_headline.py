"""The evaluation headline's keys (issue 16's targets): study-level R@1 both ways, the PASP MAE
of the kNN through the bank, and the attention tables' Spearman alignment with visibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from echoprime.eval.crossmodal import video_text_retrieval
from echoprime.eval.document import format_headline, headline
from echoprime.eval.tasks import summarise
from echoprime.eval.view_scores import attention_tables, table_spearman, visibility_alignment
from echoprime.training.mil_fit import table_alignment


def _metrics(retrieval: dict, clinical_summary: dict) -> dict:
    return {
        "splits": {"test": {"studies": 3}},
        "retrieval": retrieval,
        "clinical": {"summary": clinical_summary},
    }


def test_study_recall_at_1_both_directions_reach_the_headline():
    # 3 studies, one clip each; study 0 and 1 swap their best reports, study 2 finds its own.
    study = np.eye(3, dtype=np.float32)
    report = np.array([[0.1, 1, 0], [1, 0.1, 0], [0, 0, 1]], np.float32)
    r = video_text_retrieval(study, np.arange(3), report, study, ks=(1, 5, 10))
    assert r["study"]["v2t"]["r@1"] == pytest.approx(1 / 3) and r["study"]["t2v"]["r@1"] == pytest.approx(
        1 / 3
    )
    h = headline(_metrics(r, {}))
    assert h["v2t_r@1_study"] == r["study"]["v2t"]["r@1"] and h["t2v_r@1_study"] == r["study"]["t2v"]["r@1"]
    assert h["v2t_r@10_study"] == 1.0  # computed where R@10 is: the same retrieval record
    assert "retrieval R@1, study level           video->text 0.333  text->video 0.333" in format_headline(h)


def test_pasp_mae_knn_is_the_clinical_summary_of_the_pasp_phenotype():
    results = {
        "ejection_fraction": {
            "kind": "regression",
            "knn": {"computable": True, "mae": 4.0, "baseline_mae": 12.0},
            "linear": {"computable": True, "mae": 5.0, "baseline_mae": 12.0},
        },
        "pulmonary_artery_pressure_continuous": {
            "kind": "regression",
            "knn": {"computable": True, "mae": 6.5, "baseline_mae": 9.0},
            "linear": {"computable": False, "reason": "probe not fitted"},
        },
    }
    s = summarise(results)
    h = headline(_metrics({}, s))
    assert (h["ef_mae_knn"], h["pasp_mae_knn"], h["pasp_mae_linear"], h["pasp_mae_train_mean"]) == (
        4.0,
        6.5,
        None,
        9.0,
    )
    assert "PASP MAE (mmHg)                      kNN 6.50  probe n/a  train mean 9.00" in format_headline(h)


def test_headline_keys_are_none_when_a_section_was_skipped():
    h = headline(_metrics({"skipped": "no text encoder"}, {}))
    assert h["v2t_r@1_study"] is None and h["t2v_r@1_study"] is None and h["pasp_mae_knn"] is None
    format_headline(h)  # n/a everywhere, no error


def test_table_spearman_matches_scipy_per_section_and_skips_undefined_sections():
    rng = np.random.default_rng(0)
    truth = (rng.random((15, 11)) < 0.3).astype(float)
    truth[0] = 0.0  # no visible view: undefined
    truth[1] = 1.0  # every view visible: undefined
    learned = rng.random((15, 11))
    learned[2] = 0.5  # constant weights: undefined
    learned[3] = np.round(learned[3], 1)  # ties share their mean rank
    got = table_spearman(learned, truth)
    want = [spearmanr(truth[s], learned[s])[0] for s in range(15) if 0 < truth[s].sum() < 11 and s != 2]
    assert got["sections"] == len(want) and got["mean_spearman"] == pytest.approx(np.mean(want))
    # a monotone transform leaves ranks alone; the visibility table itself scores 1
    assert table_spearman(np.exp(3 * learned), truth)["mean_spearman"] == pytest.approx(got["mean_spearman"])
    assert table_spearman(truth + 0.0, truth)["mean_spearman"] == pytest.approx(1.0)
    assert table_spearman(-truth, truth)["mean_spearman"] == pytest.approx(-1.0)
    assert math.isnan(table_spearman(np.ones((2, 3)), np.array([[0, 1, 0], [1, 1, 0]]))["mean_spearman"])
    with pytest.raises(ValueError, match="equal 2-D shapes"):
        table_spearman(np.ones((2, 3)), np.ones((3, 2)))


def test_visibility_alignment_adds_spearman_to_the_table_alignment():
    rng = np.random.default_rng(1)
    truth = (rng.random((15, 11)) < 0.4).astype(float)
    learned = truth + rng.normal(0, 0.5, truth.shape)
    a = visibility_alignment(learned, truth)
    assert {k: v for k, v in a.items() if k != "mean_spearman"} == table_alignment(learned, truth)
    assert (
        a["mean_spearman"] == table_spearman(learned, truth)["mean_spearman"] and 0 < a["mean_spearman"] < 1
    )
    t = attention_tables({"learned": learned, "absent": None}, truth)
    assert t["tables"]["learned"]["alignment_with_visibility"] == a and not t["tables"]["absent"]["present"]
