"""Linear and kNN probes, bootstrap AUC, and the not-computable cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from echoprime.eval.probes import NotComputable, bootstrap_auc, evaluate_probe, fit_probe, run_probes


def _data(rng: np.random.Generator, n: int = 400, d: int = 12):
    x = rng.standard_normal((n, d))
    y_bin = (x[:, 0] + 0.5 * rng.standard_normal(n) > 0.6).astype(float)
    y_reg = 50 + 10 * x[:, 1] + rng.standard_normal(n)
    return x, y_bin, y_reg


def test_probes_learn_a_linear_signal():
    rng = np.random.default_rng(0)
    x, y_bin, y_reg = _data(rng)
    tr, te = slice(0, 300), slice(300, 400)
    for kind in ("linear", "knn"):
        probe = fit_probe(x[tr], y_bin[tr], kind, task="binary", k=15)
        res = evaluate_probe(probe, x[te], y_bin[te], rng=rng, n_boot=200)
        assert res["computable"] and res["auc"] > 0.8 and res["auc_low"] <= res["auc"] <= res["auc_high"]
        assert res["n_pos"] + res["n_neg"] == 100
        reg = evaluate_probe(
            fit_probe(x[tr], y_reg[tr], kind, task="regression"), x[te], y_reg[te], rng=rng, n_boot=200
        )
        assert reg["computable"] and reg["mae"] < (3 if kind == "linear" else 8)
        assert reg["mae_low"] <= reg["mae"] <= reg["mae_high"]


def test_knn_probe_equals_brute_force():
    rng = np.random.default_rng(1)
    x, y_bin, _ = _data(rng, n=120, d=6)
    probe = fit_probe(x[:100], y_bin[:100], "knn", task="binary", k=7)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    for i in range(100, 120):
        sims = xn[:100] @ xn[i]
        nn = np.argsort(-sims)[:7]
        assert probe.predict(x[i : i + 1])[0] == pytest.approx(y_bin[:100][nn].mean())


def test_bootstrap_auc_point_estimate_and_interval():
    rng = np.random.default_rng(2)
    y = (rng.random(200) < 0.3).astype(float)
    p = y * 0.5 + rng.random(200)
    auc, lo, hi = bootstrap_auc(y, p, n=100, rng=np.random.default_rng(3))
    assert auc == pytest.approx(roc_auc_score(y, p)) and lo < auc < hi and hi - lo < 0.3
    assert bootstrap_auc(y, p, n=100, rng=np.random.default_rng(3)) == (auc, lo, hi)  # seeded
    # Each resample's AUC is sklearn's: check the interval against a plain loop.
    boot_rng, stats = np.random.default_rng(3), []
    idx = boot_rng.integers(0, 200, size=(100, 200))
    stats = [roc_auc_score(y[i], p[i]) for i in idx if 0 < y[i].sum() < 200]
    assert (lo, hi) == pytest.approx(tuple(np.percentile(stats[:100], [2.5, 97.5])))
    with pytest.raises(NotComputable, match="0 positives"):
        bootstrap_auc(np.zeros(10), np.arange(10.0), rng=rng)
    with pytest.raises(ValueError, match="rng"):
        bootstrap_auc(y, p)


def test_too_few_positives_is_reported_not_scored():
    rng = np.random.default_rng(4)
    x, y_bin, _ = _data(rng, n=100)
    y_one = np.zeros(100)
    y_one[3] = 1
    with pytest.raises(NotComputable, match="1 positives and 99 negatives"):
        fit_probe(x, y_one, "linear")
    probe = fit_probe(x[:80], y_bin[:80], "linear")
    res = evaluate_probe(probe, x[80:], np.zeros(20), rng=rng)
    assert res == {
        "computable": False,
        "reason": "test split has 0 positives and 20 negatives; need >= 2 of each",
    }
    table = run_probes(
        x[:80],
        {"a": y_bin[:80], "b": y_one[:80]},
        x[80:],
        {"a": y_bin[80:], "b": y_one[80:]},
        tasks={"a": "binary", "b": "binary"},
        rng=rng,
        n_boot=50,
    )
    assert table["a"]["linear"]["computable"] and table["a"]["knn"]["computable"]
    assert table["b"]["linear"] == {
        "computable": False,
        "reason": "training split has 1 positives and 79 negatives; need >= 2 of each",
    }


def test_nan_labels_are_dropped_and_bad_input_rejected():
    rng = np.random.default_rng(5)
    x, y_bin, y_reg = _data(rng, n=200)
    y_nan = y_bin.copy()
    y_nan[::3] = np.nan
    probe = fit_probe(x, y_nan, "linear")
    assert probe.predict(x[:5]).shape == (5,)
    res = evaluate_probe(probe, x, y_nan, rng=rng, n_boot=50)
    assert res["n"] == int((~np.isnan(y_nan)).sum())
    with pytest.raises(ValueError, match="0 or 1"):
        fit_probe(x, y_reg, "linear", task="binary")
    with pytest.raises(ValueError, match="unknown probe kind"):
        fit_probe(x, y_bin, "mlp")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels of shape"):
        fit_probe(x, y_bin[:10], "knn")
    with pytest.raises(ValueError, match="unknown task"):
        fit_probe(x, y_bin, "linear", task="ordinal")  # type: ignore[arg-type]
