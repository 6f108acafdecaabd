"""The synthetic report writer: a :class:`PatientState` described in vocabulary phrases.

Every non-hidden field of the state is stated (EF and PASP as exact numbers, grades with
their wording, devices, PFO, heart rate); ``amyloidosis`` and ``stemi`` are never written,
and the wall-motion section describes global function from the EF alone, so it cannot reveal
an infarct. Where the vocabulary has equivalent wordings, one is drawn with the caller's
generator, and a few redundant-but-true statements (e.g. "structurally normal leaflets") are
included at random, so that texts vary while their labels do not. ``Postoperative Findings``
appears only when a device or transcatheter repair is present.

All phrases come from :data:`WORDINGS`, whose every entry must exist in the vocabulary under
its section (checked once per vocabulary).
"""

from __future__ import annotations

import functools

import numpy as np

from echoprime.reports.structured import StructuredReport
from echoprime.reports.vocabulary import Vocabulary, default_vocabulary
from echoprime.synth.state import PatientState

Options = tuple[str, ...]

# section -> statement -> one tuple of equivalent wordings per grade (index = grade).
WORDINGS: dict[str, dict[str, tuple[Options, ...]]] = {
    "Left Ventricle": {
        "size": (
            (
                "The left ventricle is normal in size.",
                "Normal left ventricular cavity size.",
                "Left ventricular size is normal.",
            ),
            ("The left ventricle is mildly dilated.", "Mild left ventricular dilation."),
            ("The left ventricle is moderately dilated.", "Moderate left ventricular dilation."),
            ("The left ventricle is severely dilated.", "Severe left ventricular dilation."),
        ),
        # index = lv_function_grade(ef): hyperdynamic, normal, mild, moderate, severe
        "function": (
            (
                "Left ventricular systolic function is hyperdynamic.",
                "Hyperdynamic left ventricular systolic function.",
            ),
            ("Left ventricular systolic function is normal.", "Normal left ventricular systolic function."),
            (
                "Left ventricular systolic function is mildly reduced.",
                "Mildly reduced left ventricular systolic function.",
            ),
            (
                "Left ventricular systolic function is moderately reduced.",
                "Moderately reduced left ventricular systolic function.",
            ),
            (
                "Left ventricular systolic function is severely reduced.",
                "Severely reduced left ventricular systolic function.",
            ),
        ),
        "ef": (
            (
                "The left ventricular ejection fraction is estimated at <numerical>%.",
                "LVEF is <numerical>%.",
                "Visually estimated ejection fraction of <numerical>%.",
            ),
        ),
        "impella": (
            (
                "An Impella device is seen across the aortic valve with its inlet in the left ventricle.",
                "An Impella percutaneous ventricular assist device is in place.",
            ),
        ),
    },
    "Resting Segmental Wall Motion Analysis": {
        "global": (
            ("Global left ventricular wall motion is hyperdynamic.",),
            ("Global left ventricular wall motion is normal.", "Normal global left ventricular wall motion."),
            (
                "Mild global left ventricular hypokinesis.",
                "There is mild global hypokinesis of the left ventricle.",
            ),
            (
                "Moderate global left ventricular hypokinesis.",
                "There is moderate global hypokinesis of the left ventricle.",
            ),
            (
                "Severe global left ventricular hypokinesis.",
                "There is severe global hypokinesis of the left ventricle.",
            ),
        ),
        "heart_rate": (
            (
                "The resting heart rate was <numerical> beats per minute.",
                "Heart rate at rest <numerical> bpm.",
            ),
        ),
    },
    "Right Ventricle": {
        "size": (
            (
                "The right ventricle is normal in size.",
                "Normal right ventricular size.",
                "Right ventricular cavity size is normal.",
            ),
            ("The right ventricle is mildly dilated.", "Mild right ventricular dilation."),
            ("The right ventricle is moderately dilated.", "Moderate right ventricular dilation."),
            ("The right ventricle is severely dilated.", "Severe right ventricular dilation."),
        ),
        "function": (
            ("Right ventricular systolic function is normal.", "Normal right ventricular systolic function."),
            (
                "Right ventricular systolic function is mildly reduced.",
                "Mildly reduced right ventricular systolic function.",
            ),
            (
                "Right ventricular systolic function is moderately reduced.",
                "Moderately reduced right ventricular systolic function.",
            ),
            (
                "Right ventricular systolic function is severely reduced.",
                "Severely reduced right ventricular systolic function.",
            ),
        ),
        "pacemaker": (
            (
                "A pacemaker lead is seen in the right ventricle.",
                "A device lead is present in the right heart.",
                "Pacing wire visualized in the right ventricle.",
            ),
        ),
    },
    "Left Atrium": {
        "size": (
            ("The left atrium is normal in size.", "Normal left atrial size."),
            ("The left atrium is mildly dilated.", "Mild left atrial enlargement."),
            ("The left atrium is moderately dilated.", "Moderate left atrial enlargement."),
            ("The left atrium is severely dilated.", "Severe left atrial enlargement."),
        ),
    },
    "Right Atrium": {
        "size": (
            ("The right atrium is normal in size.", "Normal right atrial size."),
            ("The right atrium is mildly dilated.", "Mild right atrial enlargement."),
            ("The right atrium is moderately dilated.", "Moderate right atrial enlargement."),
            ("The right atrium is severely dilated.", "Severe right atrial enlargement."),
        ),
    },
    "Atrial Septum": {
        "intact": (("The interatrial septum appears intact.", "Intact interatrial septum."),),
        "no_shunt": (("No interatrial shunt is seen by color Doppler.",),),
        "pfo": (
            (
                "A patent foramen ovale is present.",
                "There is a patent foramen ovale with left-to-right shunting by color Doppler.",
            ),
        ),
    },
    "Mitral Valve": {
        "normal_leaflets": (
            ("The mitral valve leaflets are structurally normal.", "Normal mitral valve leaflet morphology."),
        ),
        "mac": (
            ("No mitral annular calcification.",),
            ("Mitral annular calcification is present.", "There is mitral annular calcification."),
        ),
        "mitraclip": (
            (
                "A MitraClip device is seen on the mitral leaflets.",
                "Status post transcatheter edge-to-edge mitral repair with a MitraClip.",
            ),
        ),
        "stenosis": (
            ("There is no mitral stenosis.", "No mitral stenosis."),
            ("There is mild mitral stenosis.", "Mild mitral stenosis."),
            ("There is moderate mitral stenosis.", "Moderate mitral stenosis."),
            ("There is severe mitral stenosis.", "Severe mitral stenosis."),
        ),
        "regurgitation": (
            ("There is no mitral regurgitation.", "No mitral regurgitation is seen."),
            ("There is trace mitral regurgitation.", "Trace mitral regurgitation."),
            ("There is mild mitral regurgitation.", "Mild mitral regurgitation."),
            ("There is moderate mitral regurgitation.", "Moderate mitral regurgitation."),
            ("There is severe mitral regurgitation.", "Severe mitral regurgitation."),
        ),
    },
    "Aortic Valve": {
        "morphology": (
            ("The aortic valve is trileaflet.", "Trileaflet aortic valve."),
            ("The aortic valve is bicuspid.", "Bicuspid aortic valve morphology."),
        ),
        "tavr": (
            (
                "A transcatheter aortic valve prosthesis is in place.",
                "Status post transcatheter aortic valve replacement (TAVR).",
            ),
        ),
        "tavr_seated": (("The transcatheter valve is well seated.",),),
        "stenosis": (
            ("There is no aortic stenosis.", "No aortic stenosis."),
            ("There is mild aortic stenosis.", "Mild aortic stenosis."),
            ("There is moderate aortic stenosis.", "Moderate aortic stenosis."),
            ("There is severe aortic stenosis.", "Severe aortic stenosis."),
        ),
        "regurgitation": (
            ("There is no aortic regurgitation.", "No aortic regurgitation is seen."),
            ("There is trace aortic regurgitation.", "Trace aortic regurgitation."),
            ("There is mild aortic regurgitation.", "Mild aortic regurgitation."),
            ("There is moderate aortic regurgitation.", "Moderate aortic regurgitation."),
            ("There is severe aortic regurgitation.", "Severe aortic regurgitation."),
        ),
    },
    "Tricuspid Valve": {
        "normal_leaflets": (
            ("The tricuspid valve is structurally normal.", "Normal tricuspid valve leaflets."),
        ),
        "stenosis": (
            ("There is no tricuspid stenosis.", "No tricuspid stenosis."),
            ("There is mild tricuspid stenosis.", "Mild tricuspid stenosis."),
            ("There is moderate tricuspid stenosis.", "Moderate tricuspid stenosis."),
            ("There is severe tricuspid stenosis.", "Severe tricuspid stenosis."),
        ),
        "regurgitation": (
            ("There is no tricuspid regurgitation.", "No tricuspid regurgitation is seen."),
            ("There is trace tricuspid regurgitation.", "Trace tricuspid regurgitation."),
            ("There is mild tricuspid regurgitation.", "Mild tricuspid regurgitation."),
            ("There is moderate tricuspid regurgitation.", "Moderate tricuspid regurgitation."),
            ("There is severe tricuspid regurgitation.", "Severe tricuspid regurgitation."),
        ),
    },
    "Pulmonic Valve": {
        "normal_leaflets": (("The pulmonic valve is structurally normal.", "Normal pulmonic valve."),),
        "regurgitation": (
            ("There is no pulmonic regurgitation.", "No pulmonic regurgitation."),
            ("There is trace pulmonic regurgitation.", "Trace pulmonic regurgitation."),
            ("There is mild pulmonic regurgitation.", "Mild pulmonic regurgitation."),
            ("There is moderate pulmonic regurgitation.", "Moderate pulmonic regurgitation."),
            ("There is severe pulmonic regurgitation.", "Severe pulmonic regurgitation."),
        ),
    },
    "Pericardium": {
        "normal": (("The pericardium appears normal.",),),
        "effusion": (
            ("There is no pericardial effusion.", "No pericardial effusion is seen."),
            ("There is a trivial pericardial effusion.", "Trivial pericardial effusion."),
            ("There is a small pericardial effusion.", "Small pericardial effusion."),
            ("There is a moderate pericardial effusion.", "Moderate pericardial effusion."),
            ("There is a large pericardial effusion.", "Large pericardial effusion."),
        ),
    },
    "Aorta": {
        "root": (
            ("The aortic root is normal in size.", "Normal aortic root dimension."),
            ("The aortic root is mildly dilated.", "Mild dilation of the aortic root."),
            ("The aortic root is moderately dilated.", "Moderate dilation of the aortic root."),
            ("The aortic root is severely dilated.", "Severe dilation of the aortic root."),
        ),
        "ascending_normal": (("The ascending aorta is normal in size.",),),
    },
    "IVC": {
        "size": (
            (
                "The inferior vena cava is normal in size with normal inspiratory collapse.",
                "Normal inferior vena cava size and respiratory variation.",
            ),
            (
                "The inferior vena cava is dilated with reduced inspiratory collapse.",
                "Dilated inferior vena cava with less than 50% inspiratory collapse.",
            ),
        ),
        "ra_pressure": (
            ("Estimated right atrial pressure is normal.",),
            ("Findings suggest elevated right atrial pressure.",),
        ),
    },
    "Pulmonary Artery": {
        "pasp": (
            (
                "The pulmonary artery systolic pressure is estimated at <numerical> mmHg.",
                "Estimated PA systolic pressure is <numerical> mmHg.",
                "PASP <numerical> mmHg.",
            ),
        ),
        # index = pulmonary_hypertension_grade(pasp)
        "interpretation": (
            ("Pulmonary artery pressure is within normal limits.",),
            ("Findings are consistent with mild pulmonary hypertension.",),
            ("Findings are consistent with moderate pulmonary hypertension.",),
            ("Findings are consistent with severe pulmonary hypertension.",),
        ),
    },
    "Pulmonary Veins": {
        # 0 normal, 1 blunted systolic flow, 2 systolic flow reversal
        "flow": (
            ("Pulmonary venous flow pattern is normal.", "Normal pulmonary venous inflow pattern."),
            ("Blunted systolic pulmonary venous flow.",),
            ("Systolic flow reversal is seen in the pulmonary veins.",),
        ),
        "not_visualized": (("The pulmonary veins are not well visualized.",),),
    },
    "Postoperative Findings": {
        "procedure": (("Status post <string>.", "History of <string>."),),
    },
}

# Device / procedure -> the <string> value written in Postoperative Findings.
PROCEDURE_NAMES: dict[str, str] = {
    "impella": "Impella placement",
    "pacemaker": "permanent pacemaker implantation",
    "tavr": "transcatheter aortic valve replacement",
    "mitraclip": "transcatheter edge-to-edge mitral repair",
}


def lv_function_grade(ef: int) -> int:
    """Qualitative LV systolic function from the EF (index into the ``function`` wordings).

    0 hyperdynamic (> 72 %), 1 normal (52-72 %), 2 mildly reduced (41-51 %), 3 moderately
    reduced (30-40 %), 4 severely reduced (< 30 %), after the usual echo cut-offs.
    """
    if ef > 72:
        return 0
    if ef >= 52:
        return 1
    if ef >= 41:
        return 2
    if ef >= 30:
        return 3
    return 4


def pulmonary_hypertension_grade(pasp: int) -> int:
    """0 normal (<= 35 mmHg), 1 mild (36-45), 2 moderate (46-60), 3 severe (> 60)."""
    if pasp <= 35:
        return 0
    if pasp <= 45:
        return 1
    if pasp <= 60:
        return 2
    return 3


def compose_report(
    state: PatientState, rng: np.random.Generator, vocab: Vocabulary | None = None
) -> StructuredReport:
    """Write the structured report of a synthetic patient.

    Args:
        state: the patient; its hidden diagnoses are never written.
        rng: draws the wording and the optional statements; the same generator state gives
            the same report.
        vocab: vocabulary the phrases must belong to (default: the packaged one).

    Returns:
        A report covering the 15 anatomical sections, plus ``Postoperative Findings`` when
        the patient has an Impella, a pacemaker, a TAVR or a MitraClip.

    Raises:
        VocabularyError: a wording of :data:`WORDINGS` is missing from ``vocab``.
    """
    _check_wordings(vocab if vocab is not None else default_vocabulary())
    w = _Writer(rng)
    s = state

    sec = "Left Ventricle"
    w.say(sec, "size", s.lv_size)
    if w.maybe(0.85):
        w.say(sec, "function", lv_function_grade(s.ef))
    w.say(sec, "ef", 0, int(s.ef))
    if s.impella:
        w.say(sec, "impella")

    sec = "Resting Segmental Wall Motion Analysis"
    w.say(sec, "global", lv_function_grade(s.ef))  # from EF only: never reveals an infarct
    w.say(sec, "heart_rate", 0, int(s.heart_rate))

    sec = "Right Ventricle"
    w.say(sec, "size", s.rv_size)
    w.say(sec, "function", s.rv_function)
    if s.pacemaker:
        w.say(sec, "pacemaker")

    w.say("Left Atrium", "size", s.la_size)
    w.say("Right Atrium", "size", s.ra_size)

    sec = "Atrial Septum"
    if s.pfo:
        w.say(sec, "pfo")
    else:
        # intact, no shunt, or both: three equally true ways to say "no PFO"
        form = int(w.rng.integers(3))
        if form != 1:
            w.say(sec, "intact")
        if form != 0:
            w.say(sec, "no_shunt")

    sec = "Mitral Valve"
    if not (s.mac or s.mitraclip or s.ms) and w.maybe(0.5):
        w.say(sec, "normal_leaflets")
    if s.mac or w.maybe(0.3):
        w.say(sec, "mac", int(s.mac))
    if s.mitraclip:
        w.say(sec, "mitraclip")
    w.say(sec, "stenosis", s.ms)
    w.say(sec, "regurgitation", s.mr)

    sec = "Aortic Valve"
    if s.bicuspid or not s.tavr:
        w.say(sec, "morphology", int(s.bicuspid))
    if s.tavr:
        w.say(sec, "tavr")
        if w.maybe(0.5):
            w.say(sec, "tavr_seated")
    w.say(sec, "stenosis", s.as_)
    w.say(sec, "regurgitation", s.ar)

    sec = "Tricuspid Valve"
    if not s.ts and w.maybe(0.5):
        w.say(sec, "normal_leaflets")
    w.say(sec, "stenosis", s.ts)
    w.say(sec, "regurgitation", s.tr)

    sec = "Pulmonic Valve"
    if w.maybe(0.5):
        w.say(sec, "normal_leaflets")
    w.say(sec, "regurgitation", s.pr)

    sec = "Pericardium"
    if not s.effusion and w.maybe(0.3):
        w.say(sec, "normal")
    w.say(sec, "effusion", s.effusion)

    sec = "Aorta"
    w.say(sec, "root", s.aortic_root)
    if w.maybe(0.4):
        w.say(sec, "ascending_normal")

    sec = "IVC"
    w.say(sec, "size", int(s.ivc_dilated))
    if w.maybe(0.5):
        w.say(sec, "ra_pressure", int(s.ivc_dilated))

    sec = "Pulmonary Artery"
    w.say(sec, "pasp", 0, int(s.pasp))
    if w.maybe(0.7):
        w.say(sec, "interpretation", pulmonary_hypertension_grade(s.pasp))

    sec = "Pulmonary Veins"
    if w.maybe(0.2):
        w.say(sec, "not_visualized")
    else:
        # Severe MR reverses systolic vein flow; a large or pressured LA blunts it.
        w.say(sec, "flow", 2 if s.mr >= 4 else 1 if (s.mr >= 3 or s.la_size >= 2) else 0)

    for device, name in PROCEDURE_NAMES.items():
        if getattr(s, device):
            w.say("Postoperative Findings", "procedure", 0, name)
    return w.report


class _Writer:
    """Appends wordings drawn with one generator to one report."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.report = StructuredReport()

    def maybe(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def say(self, section: str, statement: str, grade: int = 0, value: int | str | None = None) -> None:
        options = WORDINGS[section][statement][grade]
        template = options[int(self.rng.integers(len(options)))]
        self.report.add(section, template, value)


@functools.lru_cache(maxsize=8)
def _check_wordings(vocab: Vocabulary) -> None:
    for section, statements in WORDINGS.items():
        for grades in statements.values():
            for options in grades:
                for template in options:
                    vocab.phrase_index(section, template)  # raises VocabularyError naming it
