"""Structured reports: text form, parsing, phrase-id triples and the release decoder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from echoprime.reports import (
    Phrase,
    ReportParseError,
    StructuredReport,
    Vocabulary,
    VocabularyError,
    decode_triples,
    default_vocabulary,
)
from echoprime.synth.report import compose_report
from echoprime.synth.state import PatientState, sample_state

EF = "The left ventricular ejection fraction is estimated at <numerical>%."


def _small_report() -> StructuredReport:
    r = StructuredReport()
    # added out of taxonomy order on purpose: rendering puts sections in taxonomy order
    r.add("Right Ventricle", "The right ventricle is normal in size.")
    r.add("Left Ventricle", "The left ventricle is normal in size.").add("Left Ventricle", EF, 55)
    return r


def test_text_form_matches_the_release_layout():
    r = _small_report()
    assert r.sections == ("Left Ventricle", "Right Ventricle")
    assert r.to_text() == (
        "Left Ventricle: The left ventricle is normal in size. "
        "The left ventricular ejection fraction is estimated at 55%. [SEP] "
        "Right Ventricle: The right ventricle is normal in size. [SEP]"
    )
    assert (
        r.section_text("Right Ventricle") == "Right Ventricle: The right ventricle is normal in size. [SEP]"
    )
    assert StructuredReport().to_text() == "[SEP]"
    assert decode_triples([], default_vocabulary()) == "[SEP]"


def test_phrase_checks_its_slot():
    assert Phrase(EF, 60).render().endswith("at 60%.")
    assert Phrase(EF, 60.5).render().endswith("at 60.5%.")
    with pytest.raises(ValueError, match="has a slot but no value"):
        Phrase(EF)
    with pytest.raises(ValueError, match="has no slot"):
        Phrase("Normal left ventricular size.", 3)
    with pytest.raises(KeyError, match="not in this report"):
        _small_report().phrases("Aorta")


def test_round_trips_on_composed_reports():
    vocab = default_vocabulary()
    for seed in range(200):
        rng = np.random.default_rng(seed)
        report = compose_report(sample_state(rng, f"p{seed}", f"s{seed}"), rng)
        text = report.to_text()
        assert StructuredReport.from_text(text, vocab) == report
        triples = report.to_triples(vocab)
        assert decode_triples(triples, vocab) == text
        assert StructuredReport.from_triples(triples, vocab) == report
        for s_idx, p_idx, value in triples:
            section, template = vocab.phrase(s_idx, p_idx)
            if "<" in template:
                assert isinstance(value, (int, str)) and not isinstance(value, bool)
            else:
                assert isinstance(value, float) and math.isnan(value)


def test_string_slot_and_values_round_trip():
    vocab = default_vocabulary()
    r = StructuredReport()
    r.add("Postoperative Findings", "Status post <string>.", "transcatheter aortic valve replacement")
    r.add("Postoperative Findings", "History of <string>.", "Impella placement. Status post nothing")
    r.add("Pulmonary Artery", "PASP <numerical> mmHg.", 41.5)
    text = r.to_text()
    back = StructuredReport.from_text(text, vocab)
    assert back.to_text() == text
    assert back.phrases("Pulmonary Artery")[0].value == 41.5
    assert isinstance(
        StructuredReport.from_text("Pulmonary Artery: PASP 41 mmHg. [SEP]", vocab)
        .phrases("Pulmonary Artery")[0]
        .value,
        int,
    )


def test_headers_come_from_structure_not_from_phrase_text():
    # "Aorta" is a prefix of "Aortic Valve"; a pericardium phrase could mention another section
    vocab = Vocabulary.from_json(
        {"Pericardium": {"x": ["Fluid seen near the IVC: small."]}, "IVC": {"y": ["Normal."]}}
    )
    text = "Pericardium: Fluid seen near the IVC: small. [SEP] IVC: Normal. [SEP]"
    r = StructuredReport.from_text(text, vocab)
    assert r.sections == ("Pericardium", "IVC")
    assert r.phrases("IVC") == (Phrase("Normal."),)
    assert r.to_text() == text


def test_from_text_names_the_unparseable_fragment():
    vocab = default_vocabulary()
    with pytest.raises(ReportParseError, match="'Left Ventrical: The left"):
        StructuredReport.from_text("Left Ventrical: The left ventricle is normal in size. [SEP]", vocab)
    with pytest.raises(ReportParseError, match="matches at 'The LV looks fine."):
        StructuredReport.from_text(
            "Left Ventricle: Normal left ventricular cavity size. The LV looks fine. [SEP]", vocab
        )
    with pytest.raises(ReportParseError, match="matches at 'LVEF is high%"):
        StructuredReport.from_text("Left Ventricle: LVEF is high%. [SEP]", vocab)


def test_decode_follows_the_release_algorithm_with_a_foreign_vocabulary():
    # a user's vocabulary: its own section order, a repeated phrase, a phrase with two slots
    vocab = Vocabulary.from_json(
        {
            "Mitral Valve": {"Reg": ["Mild MR.", "Severe MR."], "Dup": ["Mild MR."]},
            "Left Ventricle": {"EF": ["EF <numerical>% (<numerical>% by Simpson)."], "Size": ["Small."]},
        }
    )
    triples = [(1, 0, 55.0), (1, 1, float("nan")), (0, 2, float("nan")), (1, 1, None)]
    expected = "Left Ventricle: EF 55.0% (55.0% by Simpson). Small. [SEP] Mitral Valve: Mild MR. [SEP] Left Ventricle: Small. [SEP]"
    assert decode_triples(triples, vocab) == expected
    # numpy and integral-float indices, as a bank read through numpy/pandas holds them
    assert decode_triples([(np.int64(1), 1.0, 0)], vocab) == "Left Ventricle: Small. [SEP]"
    # the structured form merges the repeated section and parses the two-slot phrase back
    r = StructuredReport.from_triples(triples[:3], vocab)
    assert (
        r.to_text()
        == decode_triples(triples[:3], vocab)
        == "Left Ventricle: EF 55.0% (55.0% by Simpson). Small. [SEP] Mitral Valve: Mild MR. [SEP]"
    )
    assert StructuredReport.from_text(r.to_text(), vocab) == r
    assert StructuredReport.from_triples(triples, vocab).phrases("Left Ventricle")[-1] == Phrase("Small.")
    assert r.to_triples(vocab)[2][:2] == (0, 0)  # the repeated phrase encodes to its first index


def test_bad_triples_raise():
    vocab = default_vocabulary()
    with pytest.raises(ReportParseError, match="expected \\(section_index, phrase_index, value\\)"):
        decode_triples([(0, 1)], vocab)
    with pytest.raises(ReportParseError, match="section_index 0.5 is not an integer"):
        decode_triples([(0.5, 1, 0)], vocab)
    with pytest.raises(VocabularyError, match="phrase index 999 out of range for section 'Left Ventricle'"):
        decode_triples([(0, 999, 0)], vocab)
    ef_index = vocab.phrase_index("Left Ventricle", EF)
    with pytest.raises(ReportParseError, match="needs a slot value"):
        StructuredReport.from_triples([(0, ef_index, None)], vocab)
    with pytest.raises(VocabularyError, match="not in section 'Aorta'"):
        StructuredReport({"Aorta": [Phrase("Normal left ventricular cavity size.")]}).to_triples(vocab)
    with pytest.raises(ValueError, match="no phrases"):
        StructuredReport({"Aorta": []})


def test_composer_is_deterministic_varied_and_blind_to_hidden_diagnoses():
    state = PatientState("p", "s", ef=35, mr=3, effusion=3, tavr=True, pacemaker=True, pasp=52)
    texts = {compose_report(state, np.random.default_rng(seed)).to_text() for seed in range(40)}
    assert len(texts) > 10  # wording varies
    a = compose_report(state, np.random.default_rng(7))
    assert a == compose_report(state, np.random.default_rng(7))
    hidden = PatientState(
        "p",
        "s",
        ef=35,
        mr=3,
        effusion=3,
        tavr=True,
        pacemaker=True,
        pasp=52,
        amyloidosis=True,
        stemi=True,
        stemi_territory="LAD",
    )
    assert compose_report(hidden, np.random.default_rng(7)) == a
    text = a.to_text()
    assert "35%." in text and "52 mmHg." in text  # exact EF and PASP numbers
    assert "Postoperative Findings" in a.sections
    assert (
        "Postoperative Findings"
        not in compose_report(PatientState("p", "s"), np.random.default_rng(0)).sections
    )
