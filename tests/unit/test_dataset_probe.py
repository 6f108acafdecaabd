"""``echoprime probe``'s statistics (echoprime.eval.dataset_probe) on embeddings whose answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echoprime.eval import dataset_probe as dp


def _split(rng, n_studies, w, clips=3, noise=0.3):
    """Studies of ``clips`` unit-ish embeddings whose mean carries EF linearly (plus noise)."""
    d = len(w)
    emb, ids, labels = [], [], []
    for i in range(n_studies):
        centre = rng.normal(0, 1, d)
        ef = float(np.clip(55 + 10 * centre @ w + rng.normal(0, noise), 5, 95))
        cell = json.dumps({"ejection_fraction": ef, "device": float(i % 2)})
        for _ in range(clips):
            emb.append(centre + rng.normal(0, 0.05, d))
            ids.append(f"s{i}")
            labels.append(cell)
    return dp.study_features(np.array(emb), ids, labels)


@pytest.fixture(scope="module")
def splits():
    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, 16) / 4
    return tuple(_split(rng, n, w) for n in (120, 40, 60))


def test_study_features_average_a_study_s_clips():
    emb = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    st = dp.study_features(emb, ["b", "a", "b"], ['{"x": 1}', '{"x": 2}', '{"x": 1}'])
    assert st.ids == ["a", "b"] and st.clips.tolist() == [1, 2]
    np.testing.assert_allclose(st.x, [[0.0, 1.0], [1.5, 1.0]])
    assert st.labels == [{"x": 2.0}, {"x": 1.0}]
    with pytest.raises(ValueError, match="must match"):
        dp.study_features(emb, ["a"], ["{}"])


def test_targets_are_chosen_from_the_train_labels(splits):
    train = splits[0]
    assert dp.choose_targets(train) == {
        "device": "binary",
        "ejection_fraction": "regression",
        "ef_below_40": "binary",
    }
    assert dp.choose_targets(train, ["ejection_fraction"]) == {"ejection_fraction": "regression"}
    with pytest.raises(ValueError, match="no train study is labelled 'IVSd'"):
        dp.choose_targets(train, ["IVSd"])


def test_the_linear_probe_finds_a_linear_signal_and_folds_into_a_head(splits):
    train, val, test = splits
    r = dp.probe_target("ejection_fraction", "regression", train, val, test, n_boot=200)
    lin, knn, mean = r["linear"], r["knn"], r["mean"]
    assert r["n_test"] == 60 and lin["computable"]
    # The signal is linear with noise 0.3 points: the ridge is near it, far under the floor.
    assert (
        lin["mae"] < 1.5 < mean["mae"]
        and lin["r2"] > 0.95
        and lin["mae_low"] <= lin["mae"] <= lin["mae_high"]
    )
    assert knn["mae"] < mean["mae"] and knn["k"] in dp.KS and lin["alpha"] in dp.ALPHAS
    metrics, fitted = dp.run_all(train, val, test, {"ejection_fraction": "regression"}, n_boot=50)
    w, b = dp.linear_weights(fitted["ejection_fraction"])
    np.testing.assert_allclose(
        test.x @ w[0] + b[0], fitted["ejection_fraction"].predict(test.x), rtol=1e-6, atol=1e-6
    )
    assert (
        "_linear" not in metrics["ejection_fraction"]
        and len(metrics["ejection_fraction"]["test"]["truth"]) == 60
    )


def test_binaries_are_scored_by_auc_and_a_one_class_test_split_says_so(splits):
    train, val, test = splits
    r = dp.probe_target("ef_below_40", "binary", train, val, test, n_boot=200)
    assert r["linear"]["computable"] and r["linear"]["auc"] > 0.9  # EF < 40 % follows the linear signal
    assert 0 <= r["linear"]["auc_low"] <= r["linear"]["auc"] <= r["linear"]["auc_high"] <= 1
    assert r["mean"]["auc"] == 0.5
    # "device" alternates by study index: noise to the embeddings, AUC near chance is the honest answer
    noise = dp.probe_target("device", "binary", train, val, test, n_boot=200)
    assert noise["linear"]["computable"] and abs(noise["linear"]["auc"] - 0.5) < 0.25
    one = dp.Studies(test.ids, test.x, [{"device": 1.0} for _ in test.ids], test.clips)
    r = dp.probe_target("device", "binary", train, val, one, n_boot=50)
    assert r["linear"]["computable"] is False and "positives and negatives" in r["linear"]["reason"]


def test_report_and_plots(splits, tmp_path):
    metrics, _ = dp.run_all(*splits, {"ejection_fraction": "regression", "ef_below_40": "binary"}, n_boot=50)
    doc = {
        "dataset": "echonet-dynamic", "shards": "s", "bundle_name": "b", "bundle_sha256": "f" * 64, "seed": 0,
        "n_boot": 50, "studies": {"train": 120, "val": 40, "test": 60}, "clips": 660, "targets": metrics,
    }  # fmt: skip
    doc["plots"] = dp.write_plots(metrics, tmp_path)
    assert doc["plots"] == {"ejection_fraction": "probe_ejection_fraction.png"}
    assert (tmp_path / "probe_ejection_fraction.png").stat().st_size > 5000
    md = dp.report_markdown(doc)
    assert (
        "| ejection_fraction | regression | 60 |" in md and "EchoPrime (frozen attentive probe) | 4.87" in md
    )
    assert "beside ours, not ours" in md and "![ejection_fraction](probe_ejection_fraction.png)" in md
    back = json.loads(dp.to_json(doc))
    assert back["targets"]["ejection_fraction"]["linear"]["mae"] == pytest.approx(
        metrics["ejection_fraction"]["linear"]["mae"]
    )


def test_a_grade_is_also_scored_by_accuracy():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (200, 4))
    grade = np.clip(np.rint(1.5 + x[:, 0]), 0, 3)

    def split(a, b, key):
        return dp.Studies(
            [f"s{i}" for i in range(a, b)], x[a:b], [{key: g} for g in grade[a:b]], np.ones(b - a, int)
        )

    parts = [(0, 120), (120, 160), (160, 200)]
    r = dp.probe_target("mr_grade", "regression", *(split(a, b, "mr_grade") for a, b in parts), n_boot=50)
    assert r["linear"]["accuracy"] > 0.6 > r["mean"]["accuracy"]
    plain = dp.probe_target("mr_index", "regression", *(split(a, b, "mr_index") for a, b in parts), n_boot=50)
    assert "accuracy" not in plain["linear"]  # only a <finding>_grade is a grade
