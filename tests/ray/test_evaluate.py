"""`echoprime evaluate` on the session cohort and bundle: every section, bounds well above chance.

The bounds were measured on this fixture (docs/evaluation.md): each holds with margin for the
current pipeline and fails for a broken stage (a random view classifier, shuffled labels, an
encoder that ignores the video).
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from echoprime.taxonomy import GRADE_SCALES


def test_writes_metrics_plots_and_report(evaluation):
    res, m, out = evaluation
    report = (out / "report.md").read_text()
    for png in (
        "retrieval",
        "clinical_auc",
        "calibration",
        "ablation",
        "view_confusion",
        "attention_vs_visibility",
        "grade_confusion",
        "reliability",
    ):
        assert (out / f"{png}.png").stat().st_size > 5000 and f"({png}.png)" in report
    assert m["headline"] == {k: v for k, v in res.items() if k in m["headline"]}
    assert m["splits"]["test"]["studies"] == res["test_studies"] >= 30
    assert m["retrieval"]["study"]["v2t"]["pool"] == res["test_studies"]
    assert set(m["ablation"]["variants"]) == {
        "one_frame",
        "one_video",
        "mean",
        "table",
        "attention",
        "oracle",
    }
    assert m["hidden"]["amyloidosis"]["linear"]["computable"] or "not computable" in report
    # stream.probe_studies=30: the probes fit on the train split and 30 rendered studies
    assert m["splits"]["probe"]["studies"] == m["splits"]["train"]["studies"] + 30
    assert m["hidden"]["amyloidosis"]["input"] == "section embeddings, concatenated"
    assert "30 rendered training studies" in report
    # Issue 23: graded findings, intervals and calibration, scored from the result's own dicts.
    g = m["graded"]
    assert set(g["grades"]) == {p for p in GRADE_SCALES if g["grades"][p]["knn"]["computable"]} and len(
        g["grades"]
    ) == len(GRADE_SCALES)
    for e in g["grades"].values():
        levels = len(e["scale"])
        assert np.asarray(e["knn"]["confusion"]).shape == (levels, levels)
        assert np.asarray(e["knn"]["confusion"]).sum() == e["knn"]["n"] == res["test_studies"]
        assert -1 <= e["knn"]["qwk"] <= 1 and 0 <= e["knn"]["accuracy"] <= e["knn"]["within_one"] <= 1
    assert set(g["intervals"]) == {"ejection_fraction", "pulmonary_artery_pressure_continuous", "heart_rate"}
    assert all(0.5 <= v["coverage"] <= 1 and v["level"] == 0.8 for v in g["intervals"].values())
    assert len(g["calibration"]) >= 10
    for key in (
        "grade_accuracy_knn",
        "grade_qwk_knn",
        "ef_interval_coverage",
        "ece_raw_mean",
        "ece_calibrated_mean",
    ):
        assert res[key] is not None and m["headline"][key] == res[key]
    assert "## Graded findings, measurement intervals, calibration" in report


def test_numbers_are_well_above_chance(evaluation):
    res, m, _ = evaluation
    assert res["view_accuracy"] >= 0.8  # chance 1/11
    assert res["v2t_r@10_study"] >= 1.4 * res["chance_r@10_study"]


def test_mismatched_shards_are_refused_before_any_work(
    ray_cluster, test_cfg, shards_dir, bundle_dir, tmp_path
):
    from echoprime.eval.suite import EvaluationInputError
    from ray_jobs.evaluate import run_evaluate

    other = tmp_path / "shards"
    other.mkdir()
    man = json.loads((shards_dir / "_manifest.json").read_text())
    man["spec"]["size"] = 64
    (other / "_manifest.json").write_text(json.dumps(man))
    with pytest.raises(
        EvaluationInputError,
        match=rf"bundle {bundle_dir} and shards {other} were preprocessed differently \(size: bundle 32 vs shards 64",
    ):
        run_evaluate(test_cfg, str(bundle_dir), str(other), tmp_path / "out")
    shutil.rmtree(other)
