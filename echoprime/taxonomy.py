"""The domain's vocabulary in one place: report sections, views, phenotypes.

Names and orders follow the published EchoPrime release (see docs/release-compat.md) so
that a user's copy of that release can be read without re-mapping. Everything else in the
package refers to these tuples instead of retyping names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The 16 report sections, in report order.
SECTIONS: tuple[str, ...] = (
    "Left Ventricle",
    "Resting Segmental Wall Motion Analysis",
    "Right Ventricle",
    "Left Atrium",
    "Right Atrium",
    "Atrial Septum",
    "Mitral Valve",
    "Aortic Valve",
    "Tricuspid Valve",
    "Pulmonic Valve",
    "Pericardium",
    "Aorta",
    "IVC",
    "Pulmonary Artery",
    "Pulmonary Veins",
    "Postoperative Findings",
)
SECTION_INDEX: dict[str, int] = {s: i for i, s in enumerate(SECTIONS)}

# The 15 sections that carry anatomical attention (every section but the last), in the
# row order of the release's section x view weight table.
MIL_SECTIONS: tuple[str, ...] = SECTIONS[:15]

# The 11 coarse views, in the release's one-hot order.
VIEWS: tuple[str, ...] = (
    "A2C",
    "A3C",
    "A4C",
    "A5C",
    "Apical_Doppler",
    "Doppler_Parasternal_Long",
    "Doppler_Parasternal_Short",
    "Parasternal_Long",
    "Parasternal_Short",
    "SSN",
    "Subcostal",
)
VIEW_INDEX: dict[str, int] = {v: i for i, v in enumerate(VIEWS)}
DOPPLER_VIEWS: frozenset[str] = frozenset(
    {"Apical_Doppler", "Doppler_Parasternal_Long", "Doppler_Parasternal_Short"}
)

# A finer view taxonomy (the paper distinguishes 58 fine views) mapped onto the 11 coarse
# ones. Only the fine views a model in this project can emit are listed; extend freely, the
# coarse mapping is what downstream code uses.
FINE_VIEWS: dict[str, str] = {
    "A2C": "A2C",
    "A2C_LV_focused": "A2C",
    "A3C": "A3C",
    "A3C_LV_focused": "A3C",
    "A4C": "A4C",
    "A4C_LV_focused": "A4C",
    "A4C_RV_focused": "A4C",
    "A4C_LA_focused": "A4C",
    "A5C": "A5C",
    "Apical_Doppler_MV": "Apical_Doppler",
    "Apical_Doppler_AV": "Apical_Doppler",
    "Apical_Doppler_TV": "Apical_Doppler",
    "PLAX_Doppler_MV": "Doppler_Parasternal_Long",
    "PLAX_Doppler_AV": "Doppler_Parasternal_Long",
    "PSAX_Doppler_AV": "Doppler_Parasternal_Short",
    "PSAX_Doppler_PV": "Doppler_Parasternal_Short",
    "PSAX_Doppler_TV": "Doppler_Parasternal_Short",
    "PLAX": "Parasternal_Long",
    "PLAX_zoom_AV": "Parasternal_Long",
    "PLAX_RV_inflow": "Parasternal_Long",
    "PSAX_AV": "Parasternal_Short",
    "PSAX_MV": "Parasternal_Short",
    "PSAX_papillary": "Parasternal_Short",
    "PSAX_apex": "Parasternal_Short",
    "SSN_arch": "SSN",
    "Subcostal_4C": "Subcostal",
    "Subcostal_IVC": "Subcostal",
}


def coarse_view(view: str) -> str:
    """Map a fine or coarse view name onto the 11 coarse views.

    Raises:
        ValueError: the name is neither a coarse nor a known fine view.
    """
    if view in VIEW_INDEX:
        return view
    try:
        return FINE_VIEWS[view]
    except KeyError:
        raise ValueError(
            f"unknown view {view!r}: expected one of the coarse views {list(VIEWS)} "
            f"or a fine view {sorted(FINE_VIEWS)}"
        ) from None


PhenotypeKind = Literal["binary", "regression"]


@dataclass(frozen=True)
class Phenotype:
    """One predicted finding.

    Attributes:
        name: the release's key (e.g. ``ejection_fraction``).
        section: the report section the finding belongs to (its neighbours come from there).
        kind: ``binary`` (1 = present) or ``regression``.
        unit: unit of a regression value, ``""`` for binaries.
        valid_range: plausible range of a regression value (used to validate labels).
    """

    name: str
    section: str
    kind: PhenotypeKind
    unit: str = ""
    valid_range: tuple[float, float] = (0.0, 1.0)


# The 21 phenotypes of the release, grouped by section in the release's
# ``section_to_phenotypes`` order.
PHENOTYPES: tuple[Phenotype, ...] = (
    Phenotype("impella", "Left Ventricle", "binary"),
    Phenotype("ejection_fraction", "Left Ventricle", "regression", "%", (0.0, 100.0)),
    Phenotype("pacemaker", "Right Ventricle", "binary"),
    Phenotype("rv_systolic_function_depressed", "Right Ventricle", "binary"),
    Phenotype("right_ventricle_dilation", "Right Ventricle", "binary"),
    Phenotype("left_atrium_dilation", "Left Atrium", "binary"),
    Phenotype("right_atrium_dilation", "Right Atrium", "binary"),
    Phenotype("mitraclip", "Mitral Valve", "binary"),
    Phenotype("mitral_annular_calcification", "Mitral Valve", "binary"),
    Phenotype("mitral_stenosis", "Mitral Valve", "binary"),
    Phenotype("mitral_regurgitation", "Mitral Valve", "binary"),
    Phenotype("tavr", "Aortic Valve", "binary"),
    Phenotype("bicuspid_aov_morphology", "Aortic Valve", "binary"),
    Phenotype("aortic_stenosis", "Aortic Valve", "binary"),
    Phenotype("aortic_regurgitation", "Aortic Valve", "binary"),
    Phenotype("tricuspid_stenosis", "Tricuspid Valve", "binary"),
    Phenotype("tricuspid_valve_regurgitation", "Tricuspid Valve", "binary"),
    Phenotype("pericardial_effusion", "Pericardium", "binary"),
    Phenotype("aortic_root_dilation", "Aorta", "binary"),
    Phenotype("dilated_ivc", "IVC", "binary"),
    Phenotype("pulmonary_artery_pressure_continuous", "Pulmonary Artery", "regression", "mmHg", (0.0, 150.0)),
)
PHENOTYPE_NAMES: tuple[str, ...] = tuple(p.name for p in PHENOTYPES)
PHENOTYPE_BY_NAME: dict[str, Phenotype] = {p.name: p for p in PHENOTYPES}
BINARY_PHENOTYPES: tuple[str, ...] = tuple(p.name for p in PHENOTYPES if p.kind == "binary")
REGRESSION_PHENOTYPES: tuple[str, ...] = tuple(p.name for p in PHENOTYPES if p.kind == "regression")

# section -> its phenotypes, in the release's order (11 sections).
SECTION_TO_PHENOTYPES: dict[str, tuple[str, ...]] = {}
for _p in PHENOTYPES:
    SECTION_TO_PHENOTYPES.setdefault(_p.section, ())
    SECTION_TO_PHENOTYPES[_p.section] += (_p.name,)
del _p

# Patient-level diagnoses that the synthetic generator never writes into a report but that
# leave imaging signs (the paper's "beyond the report" targets).
HIDDEN_DIAGNOSES: tuple[str, ...] = ("amyloidosis", "stemi")

# Release preprocessing constants (pixel units 0-255), see docs/release-compat.md.
RELEASE_MEAN: tuple[float, float, float] = (29.110628, 28.076836, 29.096405)
RELEASE_STD: tuple[float, float, float] = (47.989223, 46.456997, 47.20083)

# Graded findings: the grades a report can state, in increasing severity. Moderate or worse
# is positive for the binary phenotype, as in the release's bank.
GRADES: tuple[str, ...] = ("none", "trace", "mild", "moderate", "severe")
POSITIVE_GRADE = 3  # index of "moderate"


@dataclass(frozen=True)
class GradeScale:
    """The severity grades a report states for one graded phenotype, mildest first.

    Attributes:
        levels: grade names; the grade is the index (0 = normal / none).
        positive_from: the first grade at which the release's binary label is 1 (moderate).
    """

    levels: tuple[str, ...]
    positive_from: int

    def __post_init__(self) -> None:
        if not 0 < self.positive_from < len(self.levels):
            raise ValueError(f"positive_from {self.positive_from} must index one of {self.levels[1:]}")

    def binary(self, grade: float) -> float:
        """The release's 0/1 label of a grade (NaN stays NaN)."""
        return grade if grade != grade else float(grade >= self.positive_from)


REGURGITATION_SCALE = GradeScale(("none", "trace", "mild", "moderate", "severe"), 3)
STENOSIS_SCALE = GradeScale(("none", "mild", "moderate", "severe"), 2)
DILATION_SCALE = GradeScale(("normal", "mild", "moderate", "severe"), 2)
FUNCTION_SCALE = GradeScale(("normal", "mildly reduced", "moderately reduced", "severely reduced"), 2)
EFFUSION_SCALE = GradeScale(("none", "trivial", "small", "moderate", "large"), 3)

# Every graded binary phenotype of the taxonomy and the grades its reports state; its binary
# label is ``grade >= positive_from`` (the release's "moderate or worse").
GRADE_SCALES: dict[str, GradeScale] = {
    "rv_systolic_function_depressed": FUNCTION_SCALE,
    "right_ventricle_dilation": DILATION_SCALE,
    "left_atrium_dilation": DILATION_SCALE,
    "right_atrium_dilation": DILATION_SCALE,
    "mitral_stenosis": STENOSIS_SCALE,
    "mitral_regurgitation": REGURGITATION_SCALE,
    "aortic_stenosis": STENOSIS_SCALE,
    "aortic_regurgitation": REGURGITATION_SCALE,
    "tricuspid_stenosis": STENOSIS_SCALE,
    "tricuspid_valve_regurgitation": REGURGITATION_SCALE,
    "pericardial_effusion": EFFUSION_SCALE,
    "aortic_root_dilation": DILATION_SCALE,
}
GRADED_PHENOTYPES: tuple[str, ...] = tuple(p for p in PHENOTYPE_NAMES if p in GRADE_SCALES)
assert all(PHENOTYPE_BY_NAME[p].kind == "binary" for p in GRADE_SCALES)


def grade_column(phenotype: str) -> str:
    """The bank's label column holding a graded phenotype's grade (``<phenotype>_grade``)."""
    return f"{phenotype}_grade"


# Continuous values a report states beyond the release's two regressions. They are predicted
# like a regression phenotype (the mean over the section's neighbours) but are not part of the
# release's 21 outputs.
EXTRA_MEASUREMENTS: tuple[Phenotype, ...] = (
    Phenotype("heart_rate", "Resting Segmental Wall Motion Analysis", "regression", "bpm", (20.0, 250.0)),
)
MEASUREMENTS: tuple[str, ...] = REGRESSION_PHENOTYPES + tuple(p.name for p in EXTRA_MEASUREMENTS)
FINDING_BY_NAME: dict[str, Phenotype] = PHENOTYPE_BY_NAME | {p.name: p for p in EXTRA_MEASUREMENTS}
"""Every finding a result can hold: the 21 phenotypes and the extra measurements."""
