"""A synthetic patient's latent cardiac state: the single source of truth for a study.

The video renderer draws it, the report writer describes it, and ``labels()`` turns it into
the release's 21 phenotype values plus the hidden, never-reported diagnoses. Grades are small
integers; the binary phenotypes follow the release's rule for graded findings (moderate or
worse is positive).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from echoprime.taxonomy import GRADE_SCALES, HIDDEN_DIAGNOSES, PHENOTYPE_NAMES, VIEWS, grade_column

# Grade scales used by the fields below.
SIZE_GRADES = ("normal", "mildly dilated", "moderately dilated", "severely dilated")  # 0..3
FUNCTION_GRADES = ("normal", "mildly reduced", "moderately reduced", "severely reduced")  # 0..3
REGURG_GRADES = ("none", "trace", "mild", "moderate", "severe")  # 0..4
STENOSIS_GRADES = ("none", "mild", "moderate", "severe")  # 0..3
EFFUSION_GRADES = ("none", "trivial", "small", "moderate", "large")  # 0..4
STEMI_TERRITORIES = ("LAD", "RCA", "LCx")


# phenotype -> the PatientState field that sets it (and whose views, VISIBILITY, show it).
PHENOTYPE_FIELD: dict[str, str] = {
    "impella": "impella",
    "ejection_fraction": "ef",
    "pacemaker": "pacemaker",
    "rv_systolic_function_depressed": "rv_function",
    "right_ventricle_dilation": "rv_size",
    "left_atrium_dilation": "la_size",
    "right_atrium_dilation": "ra_size",
    "mitraclip": "mitraclip",
    "mitral_annular_calcification": "mac",
    "mitral_stenosis": "ms",
    "mitral_regurgitation": "mr",
    "tavr": "tavr",
    "bicuspid_aov_morphology": "bicuspid",
    "aortic_stenosis": "as_",
    "aortic_regurgitation": "ar",
    "tricuspid_stenosis": "ts",
    "tricuspid_valve_regurgitation": "tr",
    "pericardial_effusion": "effusion",
    "aortic_root_dilation": "aortic_root",
    "dilated_ivc": "ivc_dilated",
    "pulmonary_artery_pressure_continuous": "pasp",
}
# The graded phenotypes' fields: each holds the grade the report states.
GRADE_FIELDS: dict[str, str] = {p: PHENOTYPE_FIELD[p] for p in GRADE_SCALES}


@dataclass
class PatientState:
    """One patient's (and so one study's) latent state.

    Attributes:
        patient_id: stable id; splits are assigned by patient.
        study_id: id of the study (one study per patient in the synthetic cohort).
        ef: LV ejection fraction in %, an integer 10..80 (so the report states it exactly).
        lv_size, la_size, ra_size, rv_size, aortic_root: dilation grade 0..3 (SIZE_GRADES).
        rv_function: RV systolic function grade 0..3 (FUNCTION_GRADES).
        mr, ar, tr, pr: regurgitation grade 0..4 (REGURG_GRADES) of the mitral, aortic,
            tricuspid and pulmonic valves.
        as_, ms, ts: stenosis grade 0..3 (STENOSIS_GRADES) of aortic, mitral, tricuspid valves.
        effusion: pericardial effusion grade 0..4 (EFFUSION_GRADES).
        impella, pacemaker, mitraclip, tavr, mac, bicuspid, pfo: present or not.
        ivc_dilated: IVC dilated with reduced collapse.
        pasp: pulmonary artery systolic pressure in mmHg, an integer 15..90.
        heart_rate: beats per minute (drives the cardiac cycle in the videos).
        amyloidosis: hidden diagnosis: thick, bright, speckled walls, small cavity.
        stemi: hidden diagnosis: a recent infarct; ``stemi_territory`` names the artery whose
            wall segments do not contract.
    """

    patient_id: str
    study_id: str
    ef: int = 60
    lv_size: int = 0
    la_size: int = 0
    ra_size: int = 0
    rv_size: int = 0
    aortic_root: int = 0
    rv_function: int = 0
    mr: int = 0
    ar: int = 0
    tr: int = 0
    pr: int = 0
    as_: int = 0
    ms: int = 0
    ts: int = 0
    effusion: int = 0
    impella: bool = False
    pacemaker: bool = False
    mitraclip: bool = False
    tavr: bool = False
    mac: bool = False
    bicuspid: bool = False
    pfo: bool = False
    ivc_dilated: bool = False
    pasp: int = 25
    heart_rate: int = 70
    amyloidosis: bool = False
    stemi: bool = False
    stemi_territory: str | None = None
    extra: dict = field(default_factory=dict)

    def labels(self) -> dict[str, float]:
        """The release's 21 phenotypes (binary 0/1 as floats, regressions in units)."""
        out = {
            "impella": float(self.impella),
            "ejection_fraction": float(self.ef),
            "pacemaker": float(self.pacemaker),
            "rv_systolic_function_depressed": float(self.rv_function >= 2),
            "right_ventricle_dilation": float(self.rv_size >= 2),
            "left_atrium_dilation": float(self.la_size >= 2),
            "right_atrium_dilation": float(self.ra_size >= 2),
            "mitraclip": float(self.mitraclip),
            "mitral_annular_calcification": float(self.mac),
            "mitral_stenosis": float(self.ms >= 2),
            "mitral_regurgitation": float(self.mr >= 3),
            "tavr": float(self.tavr),
            "bicuspid_aov_morphology": float(self.bicuspid),
            "aortic_stenosis": float(self.as_ >= 2),
            "aortic_regurgitation": float(self.ar >= 3),
            "tricuspid_stenosis": float(self.ts >= 2),
            "tricuspid_valve_regurgitation": float(self.tr >= 3),
            "pericardial_effusion": float(self.effusion >= 3),
            "aortic_root_dilation": float(self.aortic_root >= 2),
            "dilated_ivc": float(self.ivc_dilated),
            "pulmonary_artery_pressure_continuous": float(self.pasp),
        }
        assert tuple(out) == PHENOTYPE_NAMES
        return out

    def findings(self) -> dict[str, float]:
        """What the report states, as ``extract_findings`` reads it back: the 21 labels, each
        graded phenotype's grade (column ``<phenotype>_grade``) and the heart rate."""
        grades = {grade_column(p): float(getattr(self, f)) for p, f in GRADE_FIELDS.items()}
        return self.labels() | grades | {"heart_rate": float(self.heart_rate)}

    def hidden_labels(self) -> dict[str, float]:
        """Diagnoses never written into the report (see ``HIDDEN_DIAGNOSES``)."""
        out = {"amyloidosis": float(self.amyloidosis), "stemi": float(self.stemi)}
        assert tuple(out) == HIDDEN_DIAGNOSES
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def _grade(rng: np.random.Generator, probs: tuple[float, ...]) -> int:
    p = np.asarray(probs, dtype=np.float64)
    return int(rng.choice(len(p), p=p / p.sum()))


def sample_state(rng: np.random.Generator, patient_id: str, study_id: str) -> PatientState:
    """Draw a plausible patient; findings are correlated the way they are in clinic.

    Prevalences are set so that each binary phenotype has enough positives (roughly 10-35 %)
    for a few hundred studies to give a measurable AUC.
    """
    s = PatientState(patient_id=patient_id, study_id=study_id)
    s.amyloidosis = bool(rng.random() < 0.12)
    s.stemi = bool(rng.random() < 0.15)
    s.stemi_territory = str(rng.choice(STEMI_TERRITORIES)) if s.stemi else None
    # EF: a mixture of normal and reduced hearts; infarct and amyloid pull it down.
    if rng.random() < 0.65:
        ef = rng.normal(60, 6)
    else:
        ef = rng.uniform(12, 50)
    if s.stemi:
        ef -= rng.uniform(5, 15)
    if s.amyloidosis:
        ef -= rng.uniform(0, 10)
    s.ef = int(np.clip(round(ef), 10, 80))
    s.lv_size = _grade(rng, (0.7, 0.15, 0.1, 0.05)) if s.ef >= 45 else _grade(rng, (0.3, 0.25, 0.25, 0.2))
    if s.amyloidosis:
        s.lv_size = 0  # small cavity
    s.mr = _grade(rng, (0.35, 0.2, 0.2, 0.15, 0.1))
    s.ar = _grade(rng, (0.45, 0.2, 0.15, 0.12, 0.08))
    s.tr = _grade(rng, (0.3, 0.25, 0.2, 0.15, 0.1))
    s.pr = _grade(rng, (0.5, 0.3, 0.15, 0.04, 0.01))
    s.as_ = _grade(rng, (0.7, 0.12, 0.1, 0.08))
    s.ms = _grade(rng, (0.85, 0.05, 0.06, 0.04))
    s.ts = _grade(rng, (0.88, 0.04, 0.05, 0.03))
    s.effusion = _grade(rng, (0.55, 0.12, 0.1, 0.13, 0.1))
    s.la_size = (
        _grade(rng, (0.5, 0.2, 0.18, 0.12))
        if (s.mr < 3 and s.ms < 2)
        else _grade(rng, (0.1, 0.2, 0.35, 0.35))
    )
    s.pasp = int(
        np.clip(round(rng.normal(28, 6) + 12 * (s.mr >= 3) + 10 * (s.la_size >= 2) + 8 * (s.ef < 40)), 15, 90)
    )
    s.rv_function = (
        _grade(rng, (0.65, 0.15, 0.12, 0.08)) if s.pasp < 45 else _grade(rng, (0.2, 0.25, 0.3, 0.25))
    )
    s.rv_size = _grade(rng, (0.6, 0.15, 0.15, 0.1)) if s.pasp < 45 else _grade(rng, (0.15, 0.2, 0.35, 0.3))
    s.ra_size = _grade(rng, (0.6, 0.15, 0.15, 0.1)) if s.tr < 3 else _grade(rng, (0.1, 0.2, 0.35, 0.35))
    s.aortic_root = _grade(rng, (0.65, 0.15, 0.12, 0.08))
    s.ivc_dilated = bool(rng.random() < (0.55 if (s.ra_size >= 2 or s.pasp >= 45) else 0.12))
    s.pacemaker = bool(rng.random() < 0.15)
    s.impella = bool(rng.random() < (0.3 if s.ef < 30 else 0.03))
    s.bicuspid = bool(rng.random() < 0.12)
    s.tavr = bool(rng.random() < (0.3 if s.as_ >= 2 else 0.05))
    if s.tavr:
        s.as_ = min(s.as_, 1)  # a replaced valve no longer obstructs
    s.mitraclip = bool(rng.random() < (0.3 if s.mr >= 3 else 0.03))
    s.mac = bool(rng.random() < 0.2)
    s.pfo = bool(rng.random() < 0.15)
    s.heart_rate = int(rng.integers(50, 111))
    return s


# Ground truth of where each finding is visible (finding x view). The renderer draws a
# finding only in the views listed here; the learned anatomical attention is compared with it.
# Keys are PatientState fields (hidden diagnoses included).
VISIBILITY: dict[str, tuple[str, ...]] = {
    "ef": ("A2C", "A3C", "A4C", "A5C", "Parasternal_Long", "Parasternal_Short"),
    "lv_size": ("A2C", "A3C", "A4C", "A5C", "Parasternal_Long", "Parasternal_Short"),
    "stemi": ("A2C", "A3C", "A4C", "Parasternal_Short"),
    "amyloidosis": ("A2C", "A3C", "A4C", "A5C", "Parasternal_Long", "Parasternal_Short", "Subcostal"),
    "impella": ("A3C", "A5C", "Parasternal_Long"),
    "rv_size": ("A4C", "Parasternal_Short", "Subcostal"),
    "rv_function": ("A4C", "Subcostal"),
    "pacemaker": ("A4C", "Subcostal"),
    "la_size": ("A2C", "A4C", "Parasternal_Long"),
    "ra_size": ("A4C", "Subcostal"),
    "pfo": ("Subcostal",),
    "mitraclip": ("A2C", "A4C", "Parasternal_Long"),
    "mac": ("A4C", "Parasternal_Long", "Parasternal_Short"),
    "ms": ("Apical_Doppler", "Parasternal_Short"),
    "mr": ("Apical_Doppler", "Doppler_Parasternal_Long"),
    "tavr": ("A5C", "Parasternal_Long", "Parasternal_Short"),
    "bicuspid": ("Parasternal_Short",),
    "as_": ("A5C", "Apical_Doppler", "Parasternal_Long"),
    "ar": ("Apical_Doppler", "Doppler_Parasternal_Long"),
    "ts": ("Doppler_Parasternal_Short",),
    "tr": ("Apical_Doppler", "Doppler_Parasternal_Short"),
    "pr": ("Doppler_Parasternal_Short",),
    "effusion": ("A4C", "Parasternal_Long", "Parasternal_Short", "Subcostal"),
    "aortic_root": ("Parasternal_Long", "SSN"),
    "ivc_dilated": ("Subcostal",),
    "pasp": ("Apical_Doppler", "Doppler_Parasternal_Short"),
}
assert all(v in VIEWS for views in VISIBILITY.values() for v in views)


# Which report section describes each finding (hidden diagnoses describe none: they never reach
# the report). Used to turn VISIBILITY into the section x view table the learned anatomical
# attention is compared with.
FIELD_SECTION: dict[str, str | None] = {
    "ef": "Left Ventricle",
    "lv_size": "Left Ventricle",
    "impella": "Left Ventricle",
    "stemi": None,
    "amyloidosis": None,
    "rv_size": "Right Ventricle",
    "rv_function": "Right Ventricle",
    "pacemaker": "Right Ventricle",
    "la_size": "Left Atrium",
    "ra_size": "Right Atrium",
    "pfo": "Atrial Septum",
    "mitraclip": "Mitral Valve",
    "mac": "Mitral Valve",
    "ms": "Mitral Valve",
    "mr": "Mitral Valve",
    "tavr": "Aortic Valve",
    "bicuspid": "Aortic Valve",
    "as_": "Aortic Valve",
    "ar": "Aortic Valve",
    "ts": "Tricuspid Valve",
    "tr": "Tricuspid Valve",
    "pr": "Pulmonic Valve",
    "effusion": "Pericardium",
    "aortic_root": "Aorta",
    "ivc_dilated": "IVC",
    "pasp": "Pulmonary Artery",
}
assert set(FIELD_SECTION) == set(VISIBILITY)


def section_view_visibility() -> np.ndarray:
    """Ground truth ``15 x 11`` (MIL_SECTIONS x VIEWS): 1 where a finding of that section is drawn.

    Sections whose findings are never drawn (Resting Segmental Wall Motion Analysis is written
    from the EF, Pulmonary Veins from the MR grade) take the views of what they are written from.
    """
    from echoprime.taxonomy import MIL_SECTIONS, VIEW_INDEX

    derived = {"Resting Segmental Wall Motion Analysis": ("ef",), "Pulmonary Veins": ("mr",)}
    table = np.zeros((len(MIL_SECTIONS), len(VIEWS)), dtype=np.float32)
    for s, section in enumerate(MIL_SECTIONS):
        fields = [f for f, sec in FIELD_SECTION.items() if sec == section] or list(derived.get(section, ()))
        for f in fields:
            for v in VISIBILITY[f]:
                table[s, VIEW_INDEX[v]] = 1.0
    return table
