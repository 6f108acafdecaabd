"""The whole evaluation (no Ray) on a planted cohort whose signal is known, the report and plots
it writes, and the refusal of bundles and shards that do not belong together."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echoprime.eval.ablation import view_limited_phenotypes
from echoprime.eval.document import format_headline, headline, jsonable, write_report
from echoprime.eval.studies import StudySet
from echoprime.eval.suite import EvaluationInputError, check_compatible, evaluate_sets
from echoprime.models.mil import TableMIL
from echoprime.taxonomy import PHENOTYPE_NAMES, VIEWS
from tests.fixtures_eval import cohort, embed_text, parts_for


@pytest.fixture(scope="module")
def evaluated():
    cols = {"train": cohort(90, 1), "val": cohort(30, 2), "test": cohort(60, 3)}
    sets = {k: StudySet.from_columns(v) for k, v in cols.items()}
    # No positive left in the test split: the AUC must be reported as not computable.
    sets["test"].labels[:, PHENOTYPE_NAMES.index("tricuspid_stenosis")] = 0.0
    parts = parts_for(cols["train"], TableMIL(torch.ones(15, 11)))
    m, raw = evaluate_sets(
        parts, sets, table=np.ones((15, 11), np.float32), embed_text=embed_text,
        rng=np.random.default_rng(0), k=10, n_boot=100, draws=2, mil_epochs=8,
    )  # fmt: skip
    return m, raw


def test_planted_signal_is_found_by_every_task(evaluated):
    m, _ = evaluated
    h = headline(m)
    assert h["test_studies"] == 60 and h["view_accuracy"] == 1.0
    assert (
        h["v2t_r@10_study"] > 2 * h["chance_r@10_study"] and h["t2v_r@10_study"] > 2 * h["chance_r@10_study"]
    )
    assert h["mean_auc_knn"] > 0.65 and h["mean_auc_linear"] > 0.6 and h["mean_auc_zero_shot"] > 0.6
    study = m["retrieval"]["study"]
    assert (h["v2t_r@1_study"], h["t2v_r@1_study"]) == (study["v2t"]["r@1"], study["t2v"]["r@1"])
    assert 0 <= h["v2t_r@1_study"] <= h["v2t_r@10_study"] and 0 <= h["t2v_r@1_study"] <= h["t2v_r@10_study"]
    pasp = m["clinical"]["pulmonary_artery_pressure_continuous"]["knn"]
    assert pasp["computable"] and h["pasp_mae_knn"] == pasp["mae"] > 0
    assert (
        h["ef_mae_knn"] < 0.8 * h["ef_mae_train_mean"] and h["ef_mae_linear"] < 0.8 * h["ef_mae_train_mean"]
    )
    assert m["hidden"]["amyloidosis"]["linear"]["auc"] > 0.8  # drawn in 7 views
    assert m["hidden"]["amyloidosis"]["input"] == "section embeddings, concatenated"
    ts = m["clinical"]["tricuspid_stenosis"]
    assert ts["knn"]["computable"] is False and "0 positives" in ts["knn"]["reason"]
    assert "tricuspid_stenosis" not in m["clinical"]["summary"]["binary_phenotypes"]
    assert m["calibration"]["knn"]["computable"] and 0 <= m["calibration"]["knn"]["ece"] <= 1


def test_ablation_orders_the_variants_on_view_limited_findings(evaluated):
    m, _ = evaluated
    v = {n: x["summary"] for n, x in m["ablation"]["variants"].items()}
    assert m["ablation"]["view_limited"] == list(view_limited_phenotypes())
    key = "mean_auc_knn_view_limited"
    # the planted embeddings show a finding only in its views: one video misses most of them
    assert v["one_frame"][key] < v["one_video"][key] < v["mean"][key] < v["oracle"][key]
    assert v["mean"]["mean_auc_knn_all"] == pytest.approx(
        v["table"]["mean_auc_knn_all"]
    )  # table of ones = mean
    assert "fitted here" in m["ablation"]["variants"]["attention"]["note"]
    oracle = m["attention_tables"]["tables"]["attention module (exported)"]
    assert oracle["present"] and len(oracle["table"]) == 15 and len(oracle["table"][0]) == len(VIEWS)


def test_report_plots_and_json(evaluated, tmp_path):
    from echoprime.eval.plots import write_plots

    m, _ = evaluated
    plots = write_plots(m, tmp_path)
    assert set(plots) == {"retrieval", "clinical_auc", "calibration", "ablation", "view_confusion",
                          "attention_vs_visibility", "zeroshot", "grade_confusion", "reliability"}  # fmt: skip
    for f in plots.values():
        assert (tmp_path / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = write_report(m, plots, {"bundle": "B", "shards": "S", "n_boot": 100, "seed": 0, "notes": ["n1"]})
    for section in (
        "## Headline",
        "## Retrieval",
        "## Clinical tasks",
        "## Beyond the report",
        "## Ablation",
        "## Views",
        "## Zero-shot",
        "## Graded findings, measurement intervals, calibration",
        "![grade confusion matrices](grade_confusion.png)",
        "![ablation](ablation.png)",
        "not computable (test split has 0",
    ):
        assert section in text  # fmt: skip
    assert "view-limited findings**" in text and ("**holds**" in text or "**does not hold**" in text)
    json.loads(json.dumps(jsonable(m), allow_nan=False))
    assert "EF MAE" in format_headline(headline(m))
    h = headline(m)
    assert h["grade_accuracy_knn"] is not None and h["ece_raw_mean"] is not None
    assert h["ef_interval_coverage"] is not None and "mean ECE" in format_headline(h)


def test_probes_are_fitted_on_the_probe_set_when_there_is_one():
    """``stream.probe_studies``: evaluate hands over a "probe" set (the train split plus rendered
    training studies); the linear and hidden probes fit on it, the test split is still what is scored."""
    from echoprime.eval.tasks import clinical_tasks, hidden_tasks

    cols = {"train": cohort(8, 1), "val": cohort(30, 2), "test": cohort(60, 3), "probe": cohort(120, 4)}
    sets = {k: StudySet.from_columns(v) for k, v in cols.items()}
    secs = {k: np.repeat(s.study_mean()[:, None], 15, axis=1) for k, s in sets.items()}
    bank = parts_for(cols["train"], TableMIL(torch.ones(15, 11))).bank
    kw = {"rng": np.random.default_rng(0), "n_boot": 20}
    few = {k: v for k, v in sets.items() if k != "probe"}
    lv = "left_atrium_dilation"
    # 8 training studies cannot fit a probe for most findings; 120 more can, and it reads them
    without = clinical_tasks(secs, few, bank, k=5, thresholds={}, **kw)[0]
    with_probe = clinical_tasks(secs, sets, bank, k=5, thresholds={}, **kw)[0]
    assert with_probe[lv]["linear"]["auc"] > 0.8
    assert with_probe["summary"]["binary_phenotypes_scored"] > without["summary"]["binary_phenotypes_scored"]
    assert (
        with_probe[lv]["knn"]["auc"] == without[lv]["knn"]["auc"]
    )  # the kNN reads the bank, not the probe set
    hidden = hidden_tasks(sets, secs, **kw)
    assert hidden["amyloidosis"]["linear"]["auc"] > 0.8
    assert hidden_tasks(few, secs, **kw)["amyloidosis"]["linear"]["computable"] is False


def test_hidden_section_is_skipped_for_a_real_archive():
    from echoprime.eval.tasks import hidden_tasks

    cols = cohort(12, 5)
    cols.pop("hidden_labels")
    s = StudySet.from_columns(cols)
    secs = {n: np.zeros((len(s), 15, 4), np.float32) for n in ("train", "val", "test")}
    assert (
        "not a synthetic cohort"
        in hidden_tasks({"train": s, "val": s, "test": s}, secs, rng=np.random.default_rng(0))["skipped"]
    )


SPEC = {"size": 32, "frames": 16, "stride": 2, "mean": [29.1, 28.0, 29.0], "std": [47.9, 46.4, 47.2],
        "crop_fraction": 0.1, "mask": True}  # fmt: skip
MANIFEST = {"spec": SPEC, "label_sets": {"phenotypes": list(PHENOTYPE_NAMES), "views": list(VIEWS)}}


def test_compatible_inputs_pass_and_different_ones_name_both_sides():
    check_compatible("b/", MANIFEST, "s/", dict(SPEC), set(PHENOTYPE_NAMES[:5]), {"A4C"})
    with pytest.raises(
        EvaluationInputError,
        match=r"bundle b/ and shards s/ were preprocessed differently \(size: bundle 32 vs shards 64",
    ):
        check_compatible("b/", MANIFEST, "s/", {**SPEC, "size": 64}, set(PHENOTYPE_NAMES), {"A4C"})
    with pytest.raises(EvaluationInputError, match="mean: bundle"):
        check_compatible("b/", MANIFEST, "s/", {**SPEC, "mean": [0, 0, 0]}, set(PHENOTYPE_NAMES), set())
    with pytest.raises(EvaluationInputError, match=r"different label sets.*unknown to the bundle: \['lvh'\]"):
        check_compatible("b/", MANIFEST, "s/", SPEC, {"lvh", "tavr"}, {"A4C"})
    with pytest.raises(EvaluationInputError, match=r"views unknown to the bundle: \['PLAX_zoom'\]"):
        check_compatible("b/", MANIFEST, "s/", SPEC, {"tavr"}, {"PLAX_zoom"})
    with pytest.raises(EvaluationInputError, match="different label sets"):
        check_compatible("b/", MANIFEST, "s/", SPEC, set(), set())
