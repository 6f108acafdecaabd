"""Issue 23's findings in the hospital outputs (DICOM SR, FHIR, PDF), from hand-made results: a
graded finding's coded severity, the calibrated probability, a measurement's interval, heart
rate, and the mark where the grade and the report text disagree. No archive and no model: the
DICOMweb round trip of the same outputs is tests/hospital/test_dicomweb.py."""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from echoprime.hospital import codes as ec
from echoprime.hospital.fhir import fhir_report
from echoprime.hospital.pdf import finding_row, report_pdf
from echoprime.hospital.sr import Algorithm, build_sr, findings_of
from echoprime.io.writers import dicom_dataset
from echoprime.taxonomy import GRADE_SCALES
from tests.fixtures_graded import FILES, graded_result, release_result

ALGO = Algorithm("echoprime", "0.0.test", "ab" * 32, "test bundle")


def meaning(name: str) -> str:
    """How a finding is named in the SR and in FHIR (its concept's meaning)."""
    return str(ec.finding(name).concept.meaning)


MR, AS = meaning("mitral_regurgitation"), meaning("aortic_stenosis")


@pytest.fixture(scope="module")
def sources() -> dict[str, pydicom.Dataset]:
    study = pydicom.uid.generate_uid()
    return {
        f: dicom_dataset(
            np.zeros((2, 16, 16, 3), np.uint8), study_uid=study, sop_uid=pydicom.uid.generate_uid()
        )
        for f in FILES
    }


def _sr(result: dict, sources: dict, tmp_path: Path) -> pydicom.Dataset:
    path = tmp_path / "sr.dcm"
    build_sr(result, sources, ALGO).save_as(path, enforce_file_format=True)
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == []
    ds = pydicom.dcmread(path)
    hd.sr.ComprehensiveSR.from_dataset(ds)  # highdicom reads it back
    return ds


def test_every_grade_has_a_code_and_standard_ones_only_where_they_mean_the_grade():
    for scale in GRADE_SCALES.values():
        for label in scale.levels:
            c = ec.grade(label)
            assert c.scheme_designator in ("SCT", ec.LOCAL_SCHEME), label
    assert (ec.grade("moderate").scheme_designator, ec.grade("moderate").value) == ("SCT", "6736007")
    assert (ec.grade("none").scheme_designator, ec.grade("none").value) == ("SCT", "260413007")
    assert ec.grade("trace").scheme_designator == ec.LOCAL_SCHEME  # DCM 113201 is a tensor's trace
    assert ec.grade("mildly reduced").meaning == "Mild"
    with pytest.raises(KeyError, match="'tiny' is not a grade"):
        ec.grade("tiny")
    hr = ec.finding("heart_rate")
    assert (hr.concept.value, hr.loinc, hr.unit.value) == ("8867-4", "8867-4", "/min")
    with pytest.raises(KeyError, match="'future_finding' is not a finding"):
        ec.finding("future_finding")


def test_sr_codes_the_severity_calibrated_probability_interval_and_disagreement(sources, tmp_path):
    said = findings_of(_sr(graded_result(), sources, tmp_path))

    assert said["severity"] == {
        MR: "Mild",
        AS: "Severe",
        meaning("rv_systolic_function_depressed"): "Mild",
        meaning("pericardial_effusion"): "Trivial",
        meaning("tricuspid_valve_regurgitation"): "Trace",
    }  # right atrium: no graded neighbour, no severity
    assert said["findings"][MR] == "Absent" and said["findings"][AS] == "Present"
    props = said["properties"]
    assert props[(MR, "Severity stated in the report text")] == "Moderate"
    assert props[(MR, "Graded finding agrees with the report text")] == "No"
    assert props[(AS, "Graded finding agrees with the report text")] == "Yes"
    assert props[(MR, "Calibrated probability")] == pytest.approx(0.25)
    assert props[(MR, "Probability calibration method")] == "isotonic"
    assert props[(MR, "Probability")] == pytest.approx(0.3)
    assert props[(meaning("pacemaker"), "Calibrated probability")] == pytest.approx(0.1)
    assert (meaning("rv_systolic_function_depressed"), "Calibrated probability") not in props

    ef, hr = meaning("ejection_fraction"), meaning("heart_rate")
    assert said["findings"][ef] == pytest.approx(35.0) and said["intervals"][ef] == (30.0, 41.0)
    assert props[(ef, "Interval nominal coverage")] == pytest.approx(0.8)
    assert said["findings"][hr] == pytest.approx(72.0) and said["intervals"][hr] == (64.0, 80.0)
    assert said["sections"]["Resting Segmental Wall Motion Analysis"] == "Heart rate 72 bpm."
    assert meaning("pulmonary_artery_pressure_continuous") not in said["intervals"]  # it has none

    # The disagreement is also said in words, in the section, and the section's text is untouched.
    assert said["comments"]["Mitral Valve"] == [f"{MR}: graded mild, while the report text states moderate."]
    assert said["sections"]["Mitral Valve"] == "Moderate mitral regurgitation."
    assert set(said["comments"]) == {"Mitral Valve"}


def test_sr_of_a_converted_release_states_no_grade_interval_or_calibration(sources, tmp_path):
    said = findings_of(_sr(release_result(), sources, tmp_path))
    assert said["severity"] == {} and said["intervals"] == {} and said["comments"] == {}
    assert not any(
        p in ("Calibrated probability", "Severity stated in the report text") for _, p in said["properties"]
    )
    assert said["findings"][MR] == "Absent"


def _observations(doc: dict) -> dict[str, dict]:
    return {
        e["resource"]["code"]["coding"][0]["display"]: e["resource"]
        for e in doc["entry"]
        if e["resource"]["resourceType"] == "Observation"
    }


def _component(obs: dict, display: str) -> dict:
    found = [c for c in obs.get("component", []) if c["code"]["coding"][0]["display"] == display]
    assert len(found) <= 1
    return found[0] if found else {}


def test_fhir_states_the_severity_calibrated_probability_interval_and_disagreement():
    obs = _observations(fhir_report(graded_result(), ALGO, issued="2025-01-01T00:00:00+00:00"))

    mr = obs[MR]
    sev = _component(mr, "Severity (attribute)")["valueCodeableConcept"]
    assert sev["coding"][0] == {"system": "http://snomed.info/sct", "code": "255604002", "display": "Mild"}
    assert sev["text"] == "mild"
    told = _component(mr, "Severity stated in the report text")["valueCodeableConcept"]
    assert told["coding"][0]["code"] == "6736007"
    assert _component(mr, "Graded finding agrees with the report text")["valueBoolean"] is False
    assert "graded mild" in mr["note"][0]["text"] and "states moderate" in mr["note"][0]["text"]
    assert _component(mr, "Calibrated probability")["valueQuantity"]["value"] == pytest.approx(0.25)
    trace = _component(obs[meaning("tricuspid_valve_regurgitation")], "Severity (attribute)")
    assert trace["valueCodeableConcept"]["coding"][0]["system"] == "urn:echoprime:codes"
    assert "note" not in obs[AS]

    ef = _component(obs[meaning("ejection_fraction")], "Interval")
    assert (ef["valueRange"]["low"]["value"], ef["valueRange"]["high"]["value"]) == (30.0, 41.0)
    assert ef["valueRange"]["low"]["code"] == "%" and ef["code"]["text"] == "80 % interval (conformal)"
    hr = obs["Heart rate"]
    assert hr["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "8867-4",
        "display": "Heart rate",
    }
    assert hr["valueQuantity"]["code"] == "/min" and hr["valueQuantity"]["value"] == 72.0
    assert _component(hr, "Interval")["valueRange"]["high"]["value"] == 80.0
    assert len(obs) == len(graded_result()["metrics"]) - 1  # future_finding has no code: left out


def test_fhir_of_a_converted_release_has_no_new_components():
    obs = _observations(fhir_report(release_result(), ALGO))
    shown = {c["code"]["coding"][0]["display"] for o in obs.values() for c in o.get("component", [])}
    assert shown <= {"Probability", "Decision threshold", "Standard deviation among the nearest neighbours"}
    assert not any("note" in o for o in obs.values())


def test_pdf_findings_table_shows_grades_intervals_and_calibrated_probabilities(tmp_path):
    r = graded_result()
    rows = {n: finding_row(n, m) for n, m in r["metrics"].items()}
    assert rows["ejection_fraction"][1] == "35.0 % (30.0-41.0, 80 %)"
    assert rows["heart_rate"][1] == "72.0 bpm (64.0-80.0, 80 %)"
    assert rows["pulmonary_artery_pressure_continuous"][1] == "31.0 mmHg"
    assert rows["mitral_regurgitation"][1:] == (
        "p = 0.30 (calibrated 0.25)",
        "absent (threshold 0.50)",
        "mild (text: moderate)",
        True,
    )
    assert rows["aortic_stenosis"][3:] == ("severe", False)
    assert rows["right_atrium_dilation"][3] == ""  # no graded neighbour
    assert rows["future_finding"] is None
    release = {n: finding_row(n, m) for n, m in release_result()["metrics"].items()}
    assert release["mitral_regurgitation"][1:] == ("p = 0.30", "absent (threshold 0.50)", "", False)
    assert release["ejection_fraction"][1] == "35.0 %"

    pdf = tmp_path / "r.pdf"
    pdf.write_bytes(report_pdf(r, ALGO))
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
    for shown in ("35.0 % (30.0-41.0, 80 %)", "mild (text: moderate)", "calibrated 0.25", "heart rate"):
        assert shown in text.stdout, shown
    assert "A grade in red disagrees with the report text" in text.stdout


def test_a_grade_without_a_code_is_stated_as_text(sources, tmp_path):
    """A bundle whose scale has a grade the taxonomy does not know: no code is made up for it."""
    r = graded_result()
    r["metrics"]["aortic_stenosis"]["grade"] |= {"label": "critical", "report_label": "critical"}
    said = findings_of(_sr(r, sources, tmp_path))
    assert said["severity"][AS] == "critical"
    assert said["properties"][(AS, "Severity stated in the report text")] == "critical"
    obs = _observations(fhir_report(r, ALGO))[AS]
    assert _component(obs, "Severity (attribute)")["valueCodeableConcept"] == {"text": "critical"}
