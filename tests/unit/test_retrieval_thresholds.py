"""Decision thresholds: Youden's J against brute force, unfittable phenotypes, JSON and the release CSV."""

from __future__ import annotations

import numpy as np
import pytest

from echoprime.retrieval.thresholds import (
    Thresholds,
    fit_thresholds,
    read_release_thresholds,
    youden_threshold,
)


def _brute_youden(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Try every distinct score as a threshold (decide p >= t); highest t among equal J."""
    best_t, best_j = None, -np.inf
    for t in sorted(set(p.tolist()), reverse=True):
        pred = p >= t
        j = pred[y == 1].mean() - pred[y == 0].mean()
        if j > best_j + 1e-12:
            best_t, best_j = t, j
    return best_t, best_j


@pytest.mark.parametrize("seed", range(5))
def test_youden_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.3).astype(float)
    p = np.round(np.clip(0.3 * y + rng.random(300) * 0.8, 0, 1), 2)  # kNN-like: few distinct values
    t, j = youden_threshold(p, y)
    bt, bj = _brute_youden(p, y)
    assert t == pytest.approx(bt) and j == pytest.approx(bj)


def test_fit_thresholds_flags_unfittable_and_drops_nan():
    rng = np.random.default_rng(0)
    y = (rng.random(200) < 0.5).astype(float)
    p = np.clip(y * 0.4 + rng.random(200) * 0.6, 0, 1)
    y_nan, p_nan = y.copy(), p.copy()
    y_nan[:20] = np.nan
    p_nan[20:30] = np.nan
    fits = fit_thresholds(
        {"mitral_regurgitation": p_nan, "tavr": p, "impella": p},
        {"mitral_regurgitation": y_nan, "tavr": np.zeros(200), "impella": np.ones(200)},
    )
    keep = ~np.isnan(y_nan) & ~np.isnan(p_nan)
    assert fits["mitral_regurgitation"] == pytest.approx(_brute_youden(p[keep], y[keep])[0])
    assert fits.fits["mitral_regurgitation"].fitted and fits.fits["mitral_regurgitation"].n_pos == int(
        y[keep].sum()
    )
    assert fits["tavr"] == 0.5 and not fits.fits["tavr"].fitted
    assert fits.not_fitted() == {
        "tavr": "validation split has 0 positives and 200 negatives; need both",
        "impella": "validation split has 200 positives and 0 negatives; need both",
    }
    with pytest.raises(ValueError, match="no validation labels for phenotype 'x'"):
        fit_thresholds({"x": p}, {})
    with pytest.raises(ValueError, match="0 or 1"):
        fit_thresholds({"x": p}, {"x": np.full(200, 2.0)})
    with pytest.raises(ValueError, match="equal 1-D"):
        fit_thresholds({"x": p}, {"x": y[:10]})


def test_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    y = (rng.random(100) < 0.4).astype(float)
    fits = fit_thresholds({"a": rng.random(100), "b": rng.random(100)}, {"a": y, "b": np.zeros(100)})
    again = Thresholds.from_json(fits.to_json(tmp_path / "t.json"))
    assert dict(again) == dict(fits) and again.fits == fits.fits
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a thresholds file"):
        Thresholds.from_json(tmp_path / "bad.json")


def test_release_csv(tmp_path):
    path = tmp_path / "roc_thresholds.csv"
    path.write_text(",feature,threshold\n0,mitral_regurgitation,0.32\n1,tavr,0.05\n")
    thr = read_release_thresholds(path)
    assert dict(thr) == {"mitral_regurgitation": 0.32, "tavr": 0.05}
    path.write_text(",feature,threshold\n0,tavr,high\n")
    with pytest.raises(ValueError, match="line 2"):
        read_release_thresholds(path)
    path.write_text(",name,value\n")
    with pytest.raises(ValueError, match="'feature' and 'threshold'"):
        read_release_thresholds(path)
    path.write_text(",feature,threshold\n0,tavr,0.1\n1,tavr,0.2\n")
    with pytest.raises(ValueError, match="twice"):
        read_release_thresholds(path)


def test_scores_that_separate_nothing_keep_the_default():
    """One positive scored lowest of all (as a rare finding with a weak model): J = 0 at best,
    whose threshold would call every study positive; the default is kept and the reason named."""
    p = np.array([0.0, 0.1, 0.2, 0.3, 0.0, 0.4])
    y = np.array([1, 0, 0, 0, 0, 0], dtype=float)
    fit = fit_thresholds({"impella": p}, {"impella": y}).fits["impella"]
    assert fit.threshold == 0.5 and not fit.fitted and fit.youden_j == pytest.approx(0.0)
    assert (
        fit.reason
        == "no threshold separates the 1 positives from the 5 negatives of the validation split (best Youden's J 0.00)"
    )


def test_every_threshold_states_its_source(tmp_path):
    """youden (fitted), release (a CSV row, kept even above 1 or naming no phenotype), default."""
    import json

    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.4).astype(float)
    fits = fit_thresholds(
        {"tavr": y * 0.5 + rng.random(200) * 0.5, "impella": rng.random(200)},
        {"tavr": y, "impella": np.zeros(200)},
    )
    assert fits.source("tavr") == "youden" and fits.source("impella") == "default"
    path = tmp_path / "roc_thresholds.csv"
    path.write_text(",feature,threshold\n0,tavr,0.3\n1,atrial_septum_hypertrophy,1.06\n")
    thr = read_release_thresholds(path)
    assert dict(thr) == {"tavr": 0.3, "atrial_septum_hypertrophy": 1.06}
    assert {p: thr.source(p) for p in thr} == {"tavr": "release", "atrial_septum_hypertrophy": "release"}
    more = thr.select(["tavr", "impella"]).with_defaults(["tavr", "impella"], "no row")
    assert (
        list(more) == ["tavr", "impella"] and more["impella"] == 0.5 and more.source("impella") == "default"
    )
    assert more.not_fitted() == {"impella": "no row"}
    again = Thresholds.from_json(more.to_json(tmp_path / "t.json"))
    assert again.fits == more.fits
    # files written before sources existed read as youden (fitted) / default (not fitted)
    old = {
        "format": "echoprime-thresholds",
        "thresholds": {"a": {"threshold": 0.2, "fitted": True}, "b": {"threshold": 0.5, "fitted": False}},
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    legacy = Thresholds.from_json(tmp_path / "old.json")
    assert legacy.source("a") == "youden" and legacy.source("b") == "default"
    old["thresholds"]["a"]["source"] = "guessed"
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match="bad entry for 'a'.*source"):
        Thresholds.from_json(tmp_path / "old.json")
