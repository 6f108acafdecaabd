"""Zero-shot phenotype prediction from report-text prompts, without any label.

For a binary phenotype, a positive prompt states the finding and a negative prompt states its
absence, both as the section text a report would hold, built only from the phrase vocabulary
(e.g. ``"Aortic Valve: Severe aortic regurgitation. [SEP]"`` against ``"Aortic Valve: No aortic
regurgitation is seen. [SEP]"``). A study's score is how much closer its section embedding for
that phenotype's section is to the positive prompts than to the negative ones:
``sec . mean(pos) - sec . mean(neg)`` (prompts unit-normalised; several wordings are averaged,
a prompt ensemble). Graded findings are positive from "moderate" on (the release's rule), so
the positive prompts are the moderate and severe wordings. A device or a morphology without a
negation phrase is contrasted with the same section text without it.

Regressions (EF, PA pressure) are read off a grid of prompts stating each value: the prediction
is the mean value of the ``top`` most similar prompts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from echoprime.taxonomy import MIL_SECTIONS


@dataclass(frozen=True)
class Prompt:
    """Prompts of one phenotype: its section and the phrases of each side.

    Attributes:
        section: the report section (and so the section embedding scored).
        positive: phrase lists, one per positive prompt (each joined into one section text).
        negative: phrase lists, one per negative prompt.
    """

    section: str
    positive: tuple[tuple[str, ...], ...]
    negative: tuple[tuple[str, ...], ...]

    def texts(self) -> tuple[list[str], list[str]]:
        """The positive and negative section texts, ``"<Section>: p1 p2 [SEP]"``."""
        fmt = lambda phrases: f"{self.section}: {' '.join(phrases)} [SEP]"  # noqa: E731
        return [fmt(p) for p in self.positive], [fmt(p) for p in self.negative]


def _graded(section: str, positive: Sequence[str], negative: Sequence[str]) -> Prompt:
    return Prompt(section, tuple((p,) for p in positive), tuple((n,) for n in negative))


def _device(section: str, base: str, device: Sequence[str]) -> Prompt:
    return Prompt(section, tuple((base, d) for d in device), ((base,),))


PROMPTS: dict[str, Prompt] = {
    "impella": _device("Left Ventricle", "Normal left ventricular cavity size.", (
        "An Impella device is seen across the aortic valve with its inlet in the left ventricle.",
        "An Impella percutaneous ventricular assist device is in place.")),
    "pacemaker": _device("Right Ventricle", "Normal right ventricular size.", (
        "A pacemaker lead is seen in the right ventricle.", "Pacing wire visualized in the right ventricle.")),
    "rv_systolic_function_depressed": _graded("Right Ventricle", (
        "Right ventricular systolic function is moderately reduced.",
        "Right ventricular systolic function is severely reduced."),
        ("Right ventricular systolic function is normal.", "Normal right ventricular systolic function.")),
    "right_ventricle_dilation": _graded("Right Ventricle", (
        "The right ventricle is moderately dilated.", "The right ventricle is severely dilated."),
        ("The right ventricle is normal in size.", "Normal right ventricular size.")),
    "left_atrium_dilation": _graded("Left Atrium", (
        "The left atrium is moderately dilated.", "The left atrium is severely dilated."),
        ("The left atrium is normal in size.", "Normal left atrial size.")),
    "right_atrium_dilation": _graded("Right Atrium", (
        "The right atrium is moderately dilated.", "The right atrium is severely dilated."),
        ("The right atrium is normal in size.", "Normal right atrial size.")),
    "mitraclip": _device("Mitral Valve", "There is no mitral stenosis.", (
        "A MitraClip device is seen on the mitral leaflets.",
        "Status post transcatheter edge-to-edge mitral repair with a MitraClip.")),
    "mitral_annular_calcification": _graded("Mitral Valve", (
        "Mitral annular calcification is present.", "There is mitral annular calcification."),
        ("No mitral annular calcification.",)),
    "mitral_stenosis": _graded("Mitral Valve", ("Moderate mitral stenosis.", "Severe mitral stenosis."),
                               ("There is no mitral stenosis.", "No mitral stenosis.")),
    "mitral_regurgitation": _graded("Mitral Valve", ("Moderate mitral regurgitation.", "Severe mitral regurgitation."),
                                    ("There is no mitral regurgitation.", "No mitral regurgitation is seen.")),
    "tavr": _device("Aortic Valve", "There is no aortic stenosis.", (
        "A transcatheter aortic valve prosthesis is in place.",
        "Status post transcatheter aortic valve replacement (TAVR).")),
    "bicuspid_aov_morphology": _graded("Aortic Valve", (
        "The aortic valve is bicuspid.", "Bicuspid aortic valve morphology."),
        ("The aortic valve is trileaflet.", "Trileaflet aortic valve.")),
    "aortic_stenosis": _graded("Aortic Valve", ("Moderate aortic stenosis.", "Severe aortic stenosis."),
                               ("There is no aortic stenosis.", "No aortic stenosis.")),
    "aortic_regurgitation": _graded("Aortic Valve", ("Moderate aortic regurgitation.", "Severe aortic regurgitation."),
                                    ("There is no aortic regurgitation.", "No aortic regurgitation is seen.")),
    "tricuspid_stenosis": _graded("Tricuspid Valve", ("Moderate tricuspid stenosis.", "Severe tricuspid stenosis."),
                                  ("There is no tricuspid stenosis.", "No tricuspid stenosis.")),
    "tricuspid_valve_regurgitation": _graded("Tricuspid Valve", (
        "Moderate tricuspid regurgitation.", "Severe tricuspid regurgitation."),
        ("There is no tricuspid regurgitation.", "No tricuspid regurgitation is seen.")),
    "pericardial_effusion": _graded("Pericardium", (
        "There is a moderate pericardial effusion.", "Large pericardial effusion."),
        ("There is no pericardial effusion.", "No pericardial effusion is seen.")),
    "aortic_root_dilation": _graded("Aorta", (
        "The aortic root is moderately dilated.", "The aortic root is severely dilated."),
        ("The aortic root is normal in size.", "Normal aortic root dimension.")),
    "dilated_ivc": _graded("IVC", (
        "The inferior vena cava is dilated with reduced inspiratory collapse.",
        "Dilated inferior vena cava with less than 50% inspiratory collapse."),
        ("The inferior vena cava is normal in size with normal inspiratory collapse.",
         "Normal inferior vena cava size and respiratory variation.")),
}  # fmt: skip

# regression -> (section, template with {v}, values of the grid)
VALUE_PROMPTS: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "ejection_fraction": (
        "Left Ventricle",
        "The left ventricular ejection fraction is estimated at {v}%.",
        tuple(range(10, 81, 2)),
    ),
    "pulmonary_artery_pressure_continuous": (
        "Pulmonary Artery",
        "The pulmonary artery systolic pressure is estimated at {v} mmHg.",
        tuple(range(15, 91, 2)),
    ),
}


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


def zero_shot_scores(
    section_embs: np.ndarray,
    embed_text: Callable[[Sequence[str]], np.ndarray],
    prompts: Mapping[str, Prompt] | None = None,
) -> dict[str, np.ndarray]:
    """``{phenotype: B}`` zero-shot scores of binary phenotypes (higher = more likely present).

    Args:
        section_embs: ``B x 15 x D`` section embeddings.
        embed_text: texts -> ``T x D`` embeddings (e.g. ``StudyInterpreter.embed_text``).
        prompts: default :data:`PROMPTS`.
    """
    prompts = PROMPTS if prompts is None else prompts
    names = list(prompts)
    texts, spans = [], []
    for name in names:
        pos, neg = prompts[name].texts()
        spans.append((len(texts), len(pos), len(neg)))
        texts += pos + neg
    emb = _unit(np.asarray(embed_text(texts), np.float64))  # T x D, every prompt in one call
    out = {}
    for name, (start, n_pos, n_neg) in zip(names, spans, strict=True):
        direction = emb[start : start + n_pos].mean(0) - emb[start + n_pos : start + n_pos + n_neg].mean(0)
        sec = section_embs[:, MIL_SECTIONS.index(prompts[name].section)]  # B x D
        out[name] = sec.astype(np.float64) @ direction
    return out


def zero_shot_values(
    section_embs: np.ndarray, embed_text: Callable[[Sequence[str]], np.ndarray], top: int = 5
) -> dict[str, np.ndarray]:
    """``{regression: B}`` values read off prompt grids: mean value of the ``top`` nearest prompts."""
    out = {}
    for name, (section, template, values) in VALUE_PROMPTS.items():
        texts = [f"{section}: {template.format(v=v)} [SEP]" for v in values]
        emb = _unit(np.asarray(embed_text(texts), np.float64))  # G x D
        sims = section_embs[:, MIL_SECTIONS.index(section)].astype(np.float64) @ emb.T  # B x G
        t = min(top, len(values))
        best = np.argsort(-sims, axis=1, kind="stable")[:, :t]  # B x t nearest prompts
        out[name] = np.asarray(values, np.float64)[best].mean(axis=1)
    return out
