"""Hand-made results in the shape of issue 23 (graded findings, calibrated probabilities,
intervals, heart rate), for the tests of what consumes a result: the Serve schema, the SR, FHIR,
the PDF, the batch tables and the viewer. No model is needed to make them.

:func:`graded_result` holds one of each case a consumer must handle; :func:`release_result` is
the same result as a converted published release gives it (every issue-23 key null).
"""

from __future__ import annotations

import copy
from typing import Any

from echoprime.taxonomy import FINDING_BY_NAME, GRADE_SCALES

FILES = ("a.dcm", "b.dcm")


def _binary(p: float, threshold: float, calibrated: float | None = None) -> dict[str, Any]:
    return {
        "value": p,
        "probability": p,
        "decision": p >= threshold,
        "spread": 0.4,
        "n_labelled": 10,
        "kind": "binary",
        "unit": "",
        "threshold": threshold,
        "threshold_source": "youden",
        "calibrated_probability": calibrated,
        "calibration": None if calibrated is None else "isotonic",
        "grade": None,
        "interval": None,
    }


def _grade(name: str, distribution: list[float], grade: int, report: int | None) -> dict[str, Any]:
    scale = GRADE_SCALES[name]
    return {
        "scale": list(scale.levels),
        "positive_from": scale.positive_from,
        "distribution": distribution,
        "n_graded": 10,
        "grade": grade,
        "label": scale.levels[grade],
        "report_grade": report,
        "report_label": None if report is None else scale.levels[report],
        "agrees_with_report": None if report is None else report == grade,
    }


def _measure(name: str, value: float, low: float | None, high: float | None) -> dict[str, Any]:
    return {
        "value": value,
        "probability": None,
        "decision": None,
        "spread": 4.0,
        "n_labelled": 10,
        "kind": "regression",
        "unit": FINDING_BY_NAME[name].unit,
        "threshold": None,
        "threshold_source": None,
        "calibrated_probability": None,
        "calibration": None,
        "grade": None,
        "interval": None if low is None else {"low": low, "high": high, "level": 0.8, "method": "conformal"},
    }


def graded_result() -> dict[str, Any]:
    """A ``StudyResult.to_dict()`` with: mitral regurgitation graded mild (absent) while the report
    text says moderate (disagree); aortic stenosis graded severe (present), agreeing; RV function
    mildly reduced; pericardial effusion trivial (no grade in the text); tricuspid regurgitation
    graded trace; a graded finding without graded neighbours (right atrium); a calibrated ungraded
    binary (pacemaker); EF 35 % (30-41) and heart rate 72 /min (64-80) with intervals; PASP
    without one; and a finding no version of the taxonomy knows (``future_finding``)."""
    metrics: dict[str, Any] = {
        "pacemaker": _binary(0.2, 0.5, calibrated=0.1),
        "mitral_regurgitation": _binary(0.3, 0.5, calibrated=0.25),
        "aortic_stenosis": _binary(0.7, 0.5, calibrated=0.8),
        "rv_systolic_function_depressed": _binary(0.2, 0.5),
        "pericardial_effusion": _binary(0.1, 0.5),
        "tricuspid_valve_regurgitation": _binary(0.1, 0.5),
        "right_atrium_dilation": _binary(0.0, 0.5),
        "ejection_fraction": _measure("ejection_fraction", 35.0, 30.0, 41.0),
        "pulmonary_artery_pressure_continuous": _measure(
            "pulmonary_artery_pressure_continuous", 31.0, None, None
        ),
        "heart_rate": _measure("heart_rate", 72.0, 64.0, 80.0),
        "future_finding": _measure("heart_rate", 1.0, 0.0, 2.0) | {"unit": "au"},
    }
    metrics["mitral_regurgitation"]["grade"] = _grade("mitral_regurgitation", [0.1, 0.2, 0.4, 0.2, 0.1], 2, 3)
    metrics["aortic_stenosis"]["grade"] = _grade("aortic_stenosis", [0.0, 0.1, 0.2, 0.7], 3, 3)
    metrics["rv_systolic_function_depressed"]["grade"] = _grade(
        "rv_systolic_function_depressed", [0.3, 0.5, 0.1, 0.1], 1, 1
    )
    metrics["pericardial_effusion"]["grade"] = _grade(
        "pericardial_effusion", [0.3, 0.6, 0.1, 0.0, 0.0], 1, None
    )
    metrics["tricuspid_valve_regurgitation"]["grade"] = _grade(
        "tricuspid_valve_regurgitation", [0.2, 0.5, 0.3, 0.0, 0.0], 1, 1
    )
    ungraded = _grade("right_atrium_dilation", [0.25] * 4, 0, None)
    metrics["right_atrium_dilation"]["grade"] = ungraded | {
        "distribution": [None] * 4,
        "n_graded": 0,
        "grade": None,
        "label": None,
    }
    sections = {
        "Left Ventricle": "Left Ventricle: The left ventricular ejection fraction is 35%. [SEP]",
        "Resting Segmental Wall Motion Analysis": "Resting Segmental Wall Motion Analysis: Heart rate 72 bpm. [SEP]",
        "Right Ventricle": "Right Ventricle: Mildly reduced right ventricular systolic function. [SEP]",
        "Mitral Valve": "Mitral Valve: Moderate mitral regurgitation. [SEP]",
        "Aortic Valve": "Aortic Valve: Severe aortic stenosis. [SEP]",
        "Pericardium": "Pericardium: Trivial pericardial effusion. [SEP]",
    }
    return {
        "status": "ok",
        "files": [
            {"path": f, "status": "used", "reason": "", "n_frames": 2, "fps": 30.0, "code": None}
            for f in FILES
        ],
        "videos": [{"file": f, "view": "A4C", "confidence": 0.9} for f in FILES],
        "report": [
            {"section": s, "text": t, "source_study": "p-1", "similarity": 0.5} for s, t in sections.items()
        ],
        "report_text": " ".join(sections.values()),
        "metrics": metrics,
        "evidence": {s: [{"video": 0, "file": FILES[0], "weight": 0.7}] for s in sections},
        "neighbours": {s: [{"study_id": "p-1", "similarity": 0.5}] for s in sections},
    }


ISSUE_23_KEYS = ("calibrated_probability", "calibration", "grade", "interval")


def release_result() -> dict[str, Any]:
    """:func:`graded_result` as a converted published release makes it: the release's 21
    findings only, each issue-23 key null."""
    r = copy.deepcopy(graded_result())
    r["metrics"] = {
        n: m | dict.fromkeys(ISSUE_23_KEYS)
        for n, m in r["metrics"].items()
        if n not in ("heart_rate", "future_finding")
    }
    return r
