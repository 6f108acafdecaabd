"""predict_metrics against straightforward per-phenotype loops; name vs positional pairing."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoprime import taxonomy
from echoprime.reports import default_vocabulary
from echoprime.retrieval.bank import CandidateBank
from echoprime.retrieval.knn import (
    MetricPrediction,
    phenotype_rows,
    predict_metrics,
    predict_metrics_batch,
    release_values,
)
from echoprime.retrieval.synthetic import random_labels, random_report_table, random_unit_embeddings

D = 24


@pytest.fixture(scope="module")
def bank() -> CandidateBank:
    rng = np.random.default_rng(7)
    n = 1500
    labels = random_labels(n, rng, missing=0.3)
    labels[:, taxonomy.PHENOTYPE_NAMES.index("tavr")] = np.nan  # nobody labelled: NaN predictions
    ids = [f"s{i}" for i in range(n)]
    label_dict = {p: {ids[i]: float(labels[i, j]) for i in range(n) if not np.isnan(labels[i, j])}
                  for j, p in enumerate(taxonomy.PHENOTYPE_NAMES)}  # fmt: skip
    return CandidateBank.build(random_unit_embeddings(n, D, rng), ids, random_report_table(n, default_vocabulary(), rng),
                               label_dict, default_vocabulary())  # fmt: skip


def _oracle(
    section_emb: np.ndarray, bank: CandidateBank, k: int, positional: bool
) -> dict[str, tuple[float, float, int]]:
    """The stated algorithm, written the plain way: per section a full ranking, per phenotype a
    python loop over neighbours with dict look-ups."""
    labels = {p: {bank.study_id(i): float(bank.labels[i, j]) for i in range(len(bank)) if not np.isnan(bank.labels[i, j])}
              for j, p in enumerate(bank.phenotypes)}  # fmt: skip
    out = {}
    for key_pos, (section, phenos) in enumerate(taxonomy.SECTION_TO_PHENOTYPES.items()):
        row = key_pos if positional else taxonomy.MIL_SECTIONS.index(section)
        sims = bank.embeddings.astype(np.float64) @ section_emb[row].astype(np.float64)
        top = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        for p in phenos:
            vals = [labels[p][bank.study_id(i)] for i in top if bank.study_id(i) in labels[p]]
            if vals:
                mean = sum(vals) / len(vals)
                out[p] = (mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / len(vals)), len(vals))
            else:
                out[p] = (math.nan, math.nan, 0)
    return out


@pytest.mark.parametrize("positional", [False, True])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_predict_metrics_equals_straightforward_loops(bank, positional, k):
    emb = random_unit_embeddings(15, D, np.random.default_rng(k))
    got = predict_metrics(emb, bank, k, compat_positional=positional)
    want = _oracle(emb, bank, k, positional)
    assert list(got) == list(taxonomy.PHENOTYPE_NAMES)
    for p, (mean, spread, n) in want.items():
        m = got[p]
        assert m.n_labelled == n
        if n == 0:
            assert math.isnan(m.value) and math.isnan(m.spread)
        else:
            assert m.value == pytest.approx(mean, abs=1e-9) and m.spread == pytest.approx(spread, abs=1e-9)
    assert math.isnan(got["tavr"].value) and got["tavr"].decision is None and got["tavr"].n_labelled == 0


def test_name_and_positional_pairing_differ(bank):
    emb = random_unit_embeddings(15, D, np.random.default_rng(11))
    by_name = release_values(predict_metrics(emb, bank, 20))
    positional = release_values(predict_metrics(emb, bank, 20, compat_positional=True))
    # Left Ventricle is the first key and the first row either way; every other section moves.
    assert by_name["ejection_fraction"] == positional["ejection_fraction"]
    differ = [p for p in by_name if not np.isnan(by_name[p]) and by_name[p] != positional[p]]
    assert len(differ) >= 12
    rows = phenotype_rows({p.name: p.section for p in taxonomy.PHENOTYPES}, compat_positional=True)
    assert rows["rv_systolic_function_depressed"] == taxonomy.MIL_SECTIONS.index(
        "Resting Segmental Wall Motion Analysis"
    )
    assert rows["pulmonary_artery_pressure_continuous"] == taxonomy.MIL_SECTIONS.index("Pericardium")


def test_kinds_thresholds_and_decisions(bank):
    emb = random_unit_embeddings(15, D, np.random.default_rng(12))
    got = predict_metrics(emb, bank, 30)
    ef = got["ejection_fraction"]
    assert ef.probability is None and ef.decision is None and 10 <= ef.value <= 80
    mr = got["mitral_regurgitation"]
    assert mr.probability == mr.value and mr.decision == (mr.value >= 0.5)
    thr = {p: mr.value for p in taxonomy.BINARY_PHENOTYPES}
    assert predict_metrics(emb, bank, 30, thresholds=thr)["mitral_regurgitation"].decision is True
    thr["mitral_regurgitation"] = mr.value + 1e-9
    assert predict_metrics(emb, bank, 30, thresholds=thr)["mitral_regurgitation"].decision is False
    del thr["aortic_stenosis"]
    with pytest.raises(ValueError, match="no decision threshold for binary phenotype 'aortic_stenosis'"):
        predict_metrics(emb, bank, 30, thresholds=thr)


def test_batch_and_shared_neighbours_equal_single(bank):
    embs = random_unit_embeddings(3 * 15, D, np.random.default_rng(13)).reshape(
        3, 15, D
    )  # 3 studies x 15 x D
    batch = predict_metrics_batch(embs, bank, 25)
    shared = bank.neighbours(embs, 40)  # a wider search (e.g. shared with generate_report) gives the same
    again = predict_metrics_batch(embs, bank, 25, neighbours=shared)
    for b in range(3):
        single = predict_metrics(embs[b], bank, 25)
        for p in single:
            for x, y, z in ((single[p], batch[b][p], again[b][p]),):
                assert isinstance(x, MetricPrediction)
                assert (
                    math.isnan(x.value) and math.isnan(y.value) and math.isnan(z.value)
                ) or x.value == y.value == z.value
                assert x.n_labelled == y.n_labelled == z.n_labelled


def test_subset_of_phenotypes_and_bad_input(bank):
    emb = random_unit_embeddings(15, D, np.random.default_rng(14))
    got = predict_metrics(emb, bank, 5, phenotype_sections={"dilated_ivc": "IVC"})
    assert list(got) == ["dilated_ivc"]
    for k in (0, -1, len(bank) + 1):
        with pytest.raises(ValueError, match="k"):
            predict_metrics(emb, bank, k)
    with pytest.raises(ValueError, match=rf"15 x {D} or B x 15 x {D}.*\(15, 5\)"):
        predict_metrics(np.zeros((15, 5), dtype=np.float32), bank, 5)
    with pytest.raises(ValueError, match="predict_metrics_batch"):
        predict_metrics(np.zeros((2, 15, D), dtype=np.float32), bank, 5)
    with pytest.raises(KeyError, match="no labels for phenotype 'amyloidosis'"):
        predict_metrics(emb, bank, 5, phenotype_sections={"amyloidosis": "Left Ventricle"})
    with pytest.raises(ValueError, match="section 'Postoperative Findings'"):
        predict_metrics(emb, bank, 5, phenotype_sections={"tavr": "Postoperative Findings"})
    with pytest.raises(ValueError, match="need 1 studies x >= 5"):
        predict_metrics(emb, bank, 5, neighbours=bank.neighbours(emb, 3))


def test_interpret_sections_does_one_search(bank, monkeypatch):
    from echoprime.retrieval.rai import generate_report, interpret_sections

    emb = random_unit_embeddings(15, D, np.random.default_rng(15))
    want_metrics, want_text = predict_metrics(emb, bank, 20), generate_report(emb, bank, top=5).text
    calls = []
    search = bank.search
    monkeypatch.setattr(bank, "search", lambda q, k: calls.append((q.shape, k)) or search(q, k))
    metrics, report = interpret_sections(emb, bank, 20, top=5)
    assert calls == [((15, D), 20)]
    assert report.text == want_text
    assert list(metrics) == list(want_metrics)
    for p, m in metrics.items():
        assert (math.isnan(m.value) and math.isnan(want_metrics[p].value)) or m.value == want_metrics[p].value
