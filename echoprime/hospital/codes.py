"""Coded concepts for the findings, sections and units of a result (DICOM SR, FHIR).

Standard codes come from pydicom's DICOM code dictionary (SNOMED CT, LOINC, DCM, UCUM) where it
holds a concept that means the finding exactly; the rest are concepts of echoprime's own coding
scheme :data:`LOCAL_SCHEME` (a ``99`` scheme designator, the form DICOM PS3.16 reserves for
private schemes), so no code is made up in a standard's name. Local code values are short (a DICOM code value is at
most 16 characters): ``F`` + the phenotype's index in the taxonomy, ``S`` + the section's.

Severity grades (issue 23) are coded with the SNOMED CT qualifiers of DICOM's CID 3716 "Severity"
(None, Mild, Moderate, Severe) and CID 252 "S-M-L Size Descriptor" (Small, Large) and SNOMED CT
Normal where the grade means exactly that; "trace" and "trivial" have no such concept (DCM
113201 "Trace" is the trace of a diffusion tensor, not an amount), so they are local concepts.
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from echoprime.taxonomy import FINDING_BY_NAME, GRADE_SCALES, PHENOTYPE_NAMES, SECTIONS

LOCAL_SCHEME = "99ECHOPRIME"
"""echoprime's private coding scheme (DICOM: a designator starting ``99``)."""
LOCAL_SCHEME_NAME = "echoprime findings and sections"


def local(value: str, meaning: str) -> CodedConcept:
    """A concept of :data:`LOCAL_SCHEME`."""
    return CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def standard(code: object) -> CodedConcept:
    """A pydicom dictionary code as a highdicom concept."""
    return CodedConcept(
        value=code.value,  # type: ignore[attr-defined]
        scheme_designator=code.scheme_designator,  # type: ignore[attr-defined]
        meaning=code.meaning,  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class FindingCode:
    """How one phenotype is coded: its concept, and a UCUM unit for a measurement."""

    concept: CodedConcept
    unit: CodedConcept | None = None
    loinc: str | None = None
    """The LOINC code, for FHIR (None: the concept is not a LOINC one)."""


UCUM_PERCENT = CodedConcept("%", "UCUM", "%")
UCUM_MMHG = CodedConcept("mm[Hg]", "UCUM", "mmHg")
UCUM_RATIO = CodedConcept("1", "UCUM", "no units")
UCUM_PER_MINUTE = CodedConcept("/min", "UCUM", "per minute")

_STANDARD: dict[str, object] = {
    "ejection_fraction": codes.LN.LeftVentricularEjectionFractionByUS,
    "pacemaker": codes.SCT.CardiacPacemaker,
    "mitral_stenosis": codes.SCT.MitralValveStenosis,
    "mitral_regurgitation": codes.SCT.MitralValveRegurgitation,
    "aortic_stenosis": codes.SCT.AorticValveStenosis,
    "aortic_regurgitation": codes.SCT.AorticValveRegurgitation,
    "tricuspid_valve_regurgitation": codes.SCT.TricuspidValveRegurgitation,
    "pericardial_effusion": codes.SCT.PericardialEffusion,
    "aortic_root_dilation": codes.SCT.EnlargedAorticRoot,
    "heart_rate": codes.LN.HeartRate,
}
_MEANINGS: dict[str, str] = {
    "impella": "Impella device",
    "rv_systolic_function_depressed": "Right ventricular systolic function depressed",
    "right_ventricle_dilation": "Right ventricle dilated",
    "left_atrium_dilation": "Left atrium dilated",
    "right_atrium_dilation": "Right atrium dilated",
    "mitraclip": "MitraClip device",
    "mitral_annular_calcification": "Mitral annular calcification",
    "tavr": "Transcatheter aortic valve",
    "bicuspid_aov_morphology": "Bicuspid aortic valve morphology",
    "tricuspid_stenosis": "Tricuspid valve stenosis",
    "dilated_ivc": "Inferior vena cava dilated",
    "pulmonary_artery_pressure_continuous": "Pulmonary artery systolic pressure",
}
_UNITS = {
    "ejection_fraction": UCUM_PERCENT,
    "pulmonary_artery_pressure_continuous": UCUM_MMHG,
    "heart_rate": UCUM_PER_MINUTE,
}


def finding(name: str) -> FindingCode:
    """The coding of finding ``name`` (a phenotype of the release or a measurement beyond them).

    Raises:
        KeyError: not a finding of the taxonomy (:data:`echoprime.taxonomy.FINDING_BY_NAME`).
    """
    if name in _STANDARD:
        c = _STANDARD[name]
        return FindingCode(
            standard(c),
            _UNITS.get(name),
            c.value if c.scheme_designator == "LN" else None,  # type: ignore[attr-defined]
        )
    if name not in _MEANINGS:
        raise KeyError(
            f"{name!r} is not a finding of the taxonomy (expected one of {sorted(FINDING_BY_NAME)})"
        )
    return FindingCode(local(f"F{PHENOTYPE_NAMES.index(name):02d}", _MEANINGS[name]), _UNITS.get(name))


def section(name: str) -> CodedConcept:
    """The concept naming a report section (echoprime's scheme: sections have no standard code)."""
    if name not in SECTIONS:
        raise KeyError(f"{name!r} is not a report section")
    return local(f"S{SECTIONS.index(name):02d}", name)


DECISION_THRESHOLD = local("THRESHOLD", "Decision threshold")
NEIGHBOUR_SPREAD = local("SPREAD", "Standard deviation among the nearest neighbours")
ALGORITHM_REPORT = standard(codes.LN.EchocardiographyReport)
PRESENT, ABSENT = standard(codes.SCT.Present), standard(codes.SCT.Absent)
PROBABILITY = standard(codes.DCM.Probability)
FINDINGS = standard(codes.LN.Findings)
COMMENT = standard(codes.DCM.Comment)
ALGORITHM_NAME = standard(codes.DCM.AlgorithmName)
ALGORITHM_VERSION = standard(codes.DCM.AlgorithmVersion)
BEST_ILLUSTRATION = standard(codes.DCM.BestIllustrationOfFinding)

# Issue 23: graded findings, calibrated probabilities, intervals.
SEVERITY = standard(codes.SCT.Severity)
REPORT_SEVERITY = local("REPORTGRADE", "Severity stated in the report text")
AGREES_WITH_REPORT = local("REPORTAGREES", "Graded finding agrees with the report text")
YES, NO = standard(codes.SCT.Yes), standard(codes.SCT.No)
CALIBRATED_PROBABILITY = local("CALPROB", "Calibrated probability")
CALIBRATION_METHOD = local("CALMETHOD", "Probability calibration method")
INTERVAL_LOW = local("INTLOW", "Interval lower limit")
INTERVAL_HIGH = local("INTHIGH", "Interval upper limit")
INTERVAL_LEVEL = local("INTLEVEL", "Interval nominal coverage")
INTERVAL = local("INTERVAL", "Interval")
"""FHIR: the interval as one component (a ``valueRange``); the SR states its limits apart."""

_GRADES: dict[str, CodedConcept] = {
    "none": standard(codes.SCT.None_),
    "trace": local("GTRACE", "Trace"),
    "trivial": local("GTRIVIAL", "Trivial"),
    "normal": standard(codes.SCT.Normal),
    "mild": standard(codes.SCT.Mild),
    "moderate": standard(codes.SCT.Moderate),
    "severe": standard(codes.SCT.Severe),
    "small": standard(codes.SCT.Small),
    "large": standard(codes.SCT.Large),
    # RV function's grades are the severity of "RV systolic function depressed": mildly reduced
    # function is that finding, mild.
    "mildly reduced": standard(codes.SCT.Mild),
    "moderately reduced": standard(codes.SCT.Moderate),
    "severely reduced": standard(codes.SCT.Severe),
}


def grade(label: str) -> CodedConcept:
    """The concept of a severity grade named as in :data:`echoprime.taxonomy.GRADE_SCALES`
    (``mild``, ``moderately reduced``, ``trace``, ...).

    Raises:
        KeyError: a grade no scale of the taxonomy holds.
    """
    try:
        return _GRADES[label]
    except KeyError:
        raise KeyError(
            f"{label!r} is not a grade of the taxonomy (expected one of {sorted(_GRADES)})"
        ) from None


assert set(_STANDARD) | set(_MEANINGS) == set(FINDING_BY_NAME), "every finding needs a code"
assert {g for s in GRADE_SCALES.values() for g in s.levels} == set(_GRADES), "every grade needs a code"
