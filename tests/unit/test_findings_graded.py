"""Issue 23's findings: calibration maps, conformal intervals, graded votes, and the result dicts
that carry them beside the release-compatible numbers (which must not change)."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch

from echoprime.inference import StudyInterpreter, load_bundle_parts
from echoprime.retrieval import predict_metrics_batch
from echoprime.retrieval.calibration import (
    Calibration,
    IntervalFit,
    ProbabilityMap,
    fit_calibration,
    fit_interval,
    fit_isotonic,
    fit_platt,
    fit_probability_map,
)
from echoprime.retrieval.findings import findings_batch
from echoprime.retrieval.grades import predict_grade, vote
from echoprime.taxonomy import (
    BINARY_PHENOTYPES,
    GRADE_SCALES,
    MEASUREMENTS,
    REGURGITATION_SCALE,
    STENOSIS_SCALE,
    grade_column,
)
from tests.fixtures_bundle import make_random_bundle

# ------------------------------------------------------------------------------ probability maps


def test_platt_recovers_a_known_logistic_map():
    rng = np.random.default_rng(0)
    p = rng.random(20_000)
    y = (rng.random(p.size) < 1 / (1 + np.exp(-(4.0 * p - 2.5)))).astype(float)
    a, b = fit_platt(p, y)
    assert a == pytest.approx(4.0, abs=0.25) and b == pytest.approx(-2.5, abs=0.15)


def test_platt_never_reverses_the_ranking():
    p = np.linspace(0, 1, 40)
    y = (p < 0.5).astype(float)  # higher votes, fewer positives
    a, b = fit_platt(p, y)
    assert a == 0.0 and 0.4 < 1 / (1 + math.exp(-b)) < 0.6  # flat at the smoothed base rate


def test_isotonic_is_the_pool_adjacent_violators_fit():
    x, y = fit_isotonic(np.array([0.1, 0.2, 0.3, 0.4, 0.4]), np.array([0, 1, 0, 1, 1]))
    assert x == (0.1, 0.2, 0.3, 0.4) and y == pytest.approx((0.0, 0.5, 0.5, 1.0))
    m = ProbabilityMap("isotonic", x=x, y=y)
    assert m(0.25) == pytest.approx(0.5) and m(0.0) == 0.0 and m(1.0) == 1.0
    assert math.isnan(m(float("nan")))
    rng = np.random.default_rng(1)
    p = rng.random(500)
    fx, fy = fit_isotonic(p, (rng.random(500) < p).astype(float))
    assert (np.diff(fx) > 0).all() and (np.diff(fy) >= 0).all()


def test_the_rule_picks_isotonic_only_with_enough_of_each_class_and_a_lower_cv_brier():
    rng = np.random.default_rng(2)
    p = rng.random(4000)
    # A step the logistic curve cannot follow: isotonic's cross-validated Brier is lower.
    y = (rng.random(p.size) < np.where(p < 0.5, 0.05, 0.95)).astype(float)
    m = fit_probability_map(p, y)
    assert m.method == "isotonic" and m.cv_brier["isotonic"] < m.cv_brier["platt"]
    small = fit_probability_map(p[:40], y[:40])  # < 30 of a class: no isotonic
    assert small.method == "platt" and set(small.cv_brier) == {"identity", "platt"}
    calibrated = rng.random(400)  # votes that are already probabilities: no map beats them
    same = fit_probability_map(calibrated, (rng.random(400) < calibrated).astype(float))
    assert same.method == "identity" and same.cv_brier["identity"] <= same.cv_brier["platt"]
    assert same(0.3) == 0.3 and same(1.2) == 1.0
    with pytest.raises(ValueError, match="2 positives"):
        fit_probability_map(p[:10], np.zeros(10))


def test_a_calibration_map_lowers_ece_of_overconfident_votes():
    from echoprime.eval.calibration import expected_calibration_error

    rng = np.random.default_rng(3)
    truth_p = rng.beta(2, 5, 6000)
    y = (rng.random(truth_p.size) < truth_p).astype(float)
    raw = np.clip(truth_p * 1.8, 0, 1)  # overconfident scores, same ranking
    m = fit_probability_map(raw[:3000], y[:3000])
    before = expected_calibration_error(y[3000:], raw[3000:])
    after = expected_calibration_error(y[3000:], m(raw[3000:]))
    assert after < before / 2


def test_calibration_json_round_trip_and_errors_name_the_field(tmp_path):
    rng = np.random.default_rng(4)
    probs = {"aortic_stenosis": rng.random(200), "impella": rng.random(200)}
    truth = {
        "aortic_stenosis": (rng.random(200) < probs["aortic_stenosis"]).astype(float),
        "impella": np.zeros(200),
    }
    v = rng.uniform(20, 70, 200)
    cal = fit_calibration(
        probs, truth, {"ejection_fraction": v}, {"ejection_fraction": rng.uniform(1, 5, 200)},
        {"ejection_fraction": v + rng.normal(0, 4, 200)},
    )  # fmt: skip
    assert "impella" in cal.not_fitted and set(cal.probabilities) == {"aortic_stenosis"}
    assert set(cal.grade_scales) == set(GRADE_SCALES)
    cal.to_json(tmp_path / "c.json")
    back = Calibration.from_json(tmp_path / "c.json")
    assert back.probabilities == cal.probabilities and back.intervals == cal.intervals
    assert back.grade_scales == cal.grade_scales and back.not_fitted == cal.not_fitted
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["intervals"]["ejection_fraction"]["q"] = -1
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"bad\.json.*'intervals'"):
        Calibration.from_json(tmp_path / "bad.json")
    doc = json.loads((tmp_path / "c.json").read_text())
    doc["grade_scales"]["aortic_stenosis"]["positive_from"] = 9
    (tmp_path / "bad2.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="'grade_scales'"):
        Calibration.from_json(tmp_path / "bad2.json")
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="echoprime-calibration"):
        Calibration.from_json(tmp_path / "other.json")


# ------------------------------------------------------------------------------------- intervals


def test_conformal_interval_covers_its_level_on_fresh_studies():
    rng = np.random.default_rng(5)

    def draw(n):
        spread = rng.uniform(1, 10, n)
        value = rng.uniform(20, 70, n)
        return value, spread, value + rng.normal(0, 1, n) * spread  # error grows with the spread

    fit = fit_interval(*draw(1000))
    v, s, t = draw(5000)
    lo_hi = np.array([fit.interval(a, b, (0.0, 100.0)) for a, b in zip(v, s, strict=True)])
    coverage = float(((t >= lo_hi[:, 0]) & (t <= lo_hi[:, 1])).mean())
    assert coverage == pytest.approx(0.8, abs=0.03)
    assert fit.interval(99.0, 5.0, (0.0, 100.0))[1] == 100.0  # clipped to the valid range
    assert all(math.isnan(x) for x in fit.interval(math.nan, 1.0, (0, 100)))
    with pytest.raises(ValueError, match=">= 5"):
        fit_interval(np.ones(3), np.ones(3), np.ones(3))
    with pytest.raises(ValueError):
        IntervalFit(q=-1, tau=1)


# ---------------------------------------------------------------------------------------- grades


def test_the_predicted_grade_is_always_on_the_side_of_the_decision():
    rng = np.random.default_rng(6)
    for scale in (REGURGITATION_SCALE, STENOSIS_SCALE):
        for _ in range(300):
            d = rng.dirichlet(np.ones(len(scale.levels)) * 0.5)
            for decision in (True, False):
                g = predict_grade(d, decision, scale)
                assert (g >= scale.positive_from) == decision
    d = np.array([0.5, 0.3, 0.2, 0.0, 0.0])  # no vote at moderate or above
    assert predict_grade(d, True, REGURGITATION_SCALE) == 3  # the boundary grade
    assert predict_grade(d, False, REGURGITATION_SCALE) == 0
    assert (
        predict_grade(np.array([0.25, 0.25, 0.25, 0.25, 0]), False, REGURGITATION_SCALE) == 0
    )  # ties: milder
    assert vote(np.full(4, np.nan), 0, False, STENOSIS_SCALE).grade is None


# ------------------------------------------------------------------------------- results, bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("graded") / "bundle", n_bank=80)


@pytest.fixture(scope="module")
def clips():
    torch.manual_seed(0)
    return torch.randint(0, 256, (4, 3, 16, 32, 32), dtype=torch.uint8)


def test_findings_add_to_the_release_numbers_without_changing_them(bundle):
    parts = load_bundle_parts(str(bundle))
    rng = np.random.default_rng(7)
    secs = rng.normal(size=(5, 15, parts.bank.dim)).astype(np.float32)
    secs /= np.linalg.norm(secs, axis=-1, keepdims=True)
    release = predict_metrics_batch(secs, parts.bank, 10, thresholds=parts.thresholds)
    with_cal = findings_batch(
        secs, parts.bank, 10, thresholds=parts.thresholds, calibration=parts.calibration
    )
    without = findings_batch(secs, parts.bank, 10, thresholds=parts.thresholds, calibration=None)
    for rel, a, b in zip(release, with_cal, without, strict=True):
        for ph, m in rel.items():  # the release-compatible keys are the release's numbers
            for got in (a[ph], b[ph]):
                assert (got["value"], got["probability"], got["decision"]) == (
                    m.value,
                    m.probability,
                    m.decision,
                ) or (math.isnan(m.value) and math.isnan(got["value"]))
        for ph in BINARY_PHENOTYPES:
            pm = parts.calibration.probabilities[ph]
            assert a[ph]["calibration"] == pm.method and a[ph]["calibrated_probability"] == pm(
                a[ph]["probability"]
            )
            assert b[ph]["calibrated_probability"] is None and b[ph]["grade"] is None
        for ph, scale in GRADE_SCALES.items():
            g = a[ph]["grade"]
            assert g["scale"] == list(scale.levels) and len(g["distribution"]) == len(scale.levels)
            assert g["n_graded"] == a[ph]["n_labelled"] == 10  # every bank report states every grade
            assert sum(g["distribution"]) == pytest.approx(1.0)
            assert (g["grade"] >= scale.positive_from) == a[ph]["decision"]
            # the binary's vote share is the grade vote's share at moderate or worse
            assert sum(g["distribution"][scale.positive_from :]) == pytest.approx(a[ph]["probability"])
        for m in MEASUREMENTS:
            iv = a[m]["interval"]
            assert iv["level"] == 0.8 and iv["low"] <= a[m]["value"] <= iv["high"]
            assert b[m]["interval"] is None
        assert "heart_rate" in a and "heart_rate" not in rel  # an extra, not one of the release's 21


def test_interpretation_carries_grades_intervals_and_calibration_and_drops_them_with_the_file(
    bundle, clips, tmp_path
):
    full = StudyInterpreter(load_bundle_parts(str(bundle)), device="cpu").interpret(clips).to_dict()
    m = full["metrics"]
    assert m["aortic_stenosis"]["grade"]["label"] in STENOSIS_SCALE.levels
    assert m["ejection_fraction"]["interval"]["level"] == 0.8
    assert m["impella"]["calibrated_probability"] is not None and m["heart_rate"]["unit"] == "bpm"
    report_stated = [g for g in (v["grade"] for v in m.values()) if g and g["report_grade"] is not None]
    assert report_stated and all(
        g["agrees_with_report"] == (g["grade"] == g["report_grade"]) for g in report_stated
    )
    # The same bundle without calibration.json (as a converted release has none): same release
    # numbers, and no grade, interval or calibrated probability.
    bare = tmp_path / "bare"
    shutil.copytree(bundle, bare)
    (bare / "calibration.json").unlink()
    man = json.loads((bare / "manifest.json").read_text())
    man["files"].pop("calibration.json")
    (bare / "manifest.json").write_text(json.dumps(man))
    got = StudyInterpreter(load_bundle_parts(str(bare)), device="cpu").interpret(clips).to_dict()["metrics"]
    for ph, v in got.items():
        assert {k: v[k] for k in ("value", "probability", "decision", "threshold")} == {
            k: m[ph][k] for k in ("value", "probability", "decision", "threshold")
        }
        assert v["grade"] is None and v["interval"] is None and v["calibrated_probability"] is None
    assert grade_column("aortic_stenosis") in load_bundle_parts(str(bare)).bank.phenotypes
