"""Label extraction: from report text to the release's 21 phenotypes.

Rules work section by section on free text (they do not need the report to use our
vocabulary), and recover :meth:`PatientState.labels` exactly from every report that
:func:`~echoprime.synth.report.compose_report` writes.

* A phenotype whose section is absent from the report is NaN.
* Binary phenotypes are 1.0 when a clause of their section states the finding without a
  negation cue, else 0.0. Graded findings (regurgitation, stenosis, chamber or root
  dilation, effusion, RV dysfunction) also need a grade of moderate or worse in that clause
  (moderate, severe, large, massive, torrential, critical; a range such as "mild to
  moderate" counts as positive because it reaches moderate).
* Regressions are numbers: the LV ejection fraction before ``%`` and the PA systolic
  pressure before ``mmHg``; a range ``55-60%`` gives its midpoint. No number: NaN.

Clauses are the pieces of a sentence split at ``,``, ``;`` and before ``and``, ``but``,
``with``, ``without``, ``whereas``, ``while``. A clause that names none of its section's
findings (e.g. "..., moderate in severity") refers to the finding named last in the same
sentence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from echoprime.reports.structured import StructuredReport
from echoprime.reports.vocabulary import Vocabulary, default_vocabulary
from echoprime.taxonomy import (
    EXTRA_MEASUREMENTS,
    GRADE_SCALES,
    GRADED_PHENOTYPES,
    PHENOTYPE_BY_NAME,
    PHENOTYPE_NAMES,
    SECTIONS,
    GradeScale,
    grade_column,
)

_I = re.IGNORECASE

# Free-text headers that name one of the 16 sections differently.
SECTION_ALIASES: dict[str, str] = {
    "inferior vena cava": "IVC",
    "interatrial septum": "Atrial Septum",
    "wall motion": "Resting Segmental Wall Motion Analysis",
    "regional wall motion": "Resting Segmental Wall Motion Analysis",
    "segmental wall motion": "Resting Segmental Wall Motion Analysis",
    "pulmonary valve": "Pulmonic Valve",
    "aortic root": "Aorta",
    "postoperative": "Postoperative Findings",
}
_HEADER_NAMES: dict[str, str] = {s.lower(): s for s in SECTIONS} | SECTION_ALIASES
_HEADER_RE = re.compile(
    r"(?:^|(?<=\[SEP\])|(?<=[.!?]))[ \t]*(?P<h>"
    + "|".join(re.escape(h) for h in sorted(_HEADER_NAMES, key=len, reverse=True))
    + r")[ \t]*:",
    _I | re.MULTILINE,
)

_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_SPLIT = re.compile(r"[,;]|\s(?=(?:and|but|with|without|whereas|while)\b)", _I)
_NEGATION = re.compile(r"\b(?:no|not|non|without|absent|negative for|neither|nor|free of|ruled out)\b", _I)
_POSITIVE_GRADE = re.compile(
    r"\b(?:moderate(?:ly)?|severe(?:ly)?|large|massive|torrential|critical(?:ly)?)\b", _I
)


@dataclass(frozen=True)
class _Rule:
    """When a clause of ``section`` makes ``phenotype`` positive.

    ``noun`` names the finding (None: the section's structure itself is the subject);
    ``abnormal`` must also appear in the clause; ``graded`` asks for a moderate-or-worse
    grade in the clause.
    """

    phenotype: str
    noun: re.Pattern[str] | None = None
    abnormal: re.Pattern[str] | None = None
    graded: bool = False


def _rx(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, _I)


_DILATED = _rx(r"dilat|enlarg")
_REGURG = r"regurgita|insufficien|incompeten"
_STENOSIS = r"stenosis|stenotic"

RULES: dict[str, tuple[_Rule, ...]] = {
    "Left Ventricle": (_Rule("impella", noun=_rx(r"impella|percutaneous (?:left )?ventricular assist")),),
    "Right Ventricle": (
        _Rule("pacemaker", noun=_rx(r"pacemaker|pacing|pacer|\bICD\b|defibrillator|\bleads?\b|\bwires?\b")),
        _Rule(
            "rv_systolic_function_depressed",
            abnormal=_rx(r"reduc|depress|decreas|impair|dysfunct|hypokine"),
            graded=True,
        ),
        _Rule("right_ventricle_dilation", abnormal=_DILATED, graded=True),
    ),
    "Left Atrium": (_Rule("left_atrium_dilation", abnormal=_DILATED, graded=True),),
    "Right Atrium": (_Rule("right_atrium_dilation", abnormal=_DILATED, graded=True),),
    "Mitral Valve": (
        _Rule("mitraclip", noun=_rx(r"mitra-?clip|mitral clip|edge-to-edge|(?-i:\bTEER\b)")),
        _Rule("mitral_annular_calcification", noun=_rx(r"annul\w*\s+calcif|(?-i:\bMAC\b)")),
        _Rule("mitral_stenosis", noun=_rx(_STENOSIS + r"|(?-i:\bMS\b)"), graded=True),
        _Rule("mitral_regurgitation", noun=_rx(_REGURG + r"|(?-i:\bMR\b)"), graded=True),
    ),
    "Aortic Valve": (
        _Rule("tavr", noun=_rx(r"(?-i:\bTAVR\b|\bTAVI\b)|transcatheter\s+(?:aortic|heart)?\s*valve")),
        _Rule("bicuspid_aov_morphology", noun=_rx(r"bicuspid|(?-i:\bBAV\b)")),
        _Rule("aortic_stenosis", noun=_rx(_STENOSIS + r"|(?-i:\bAS\b)"), graded=True),
        _Rule("aortic_regurgitation", noun=_rx(_REGURG + r"|(?-i:\bAR\b|\bAI\b)"), graded=True),
    ),
    "Tricuspid Valve": (
        _Rule("tricuspid_stenosis", noun=_rx(_STENOSIS + r"|(?-i:\bTS\b)"), graded=True),
        _Rule("tricuspid_valve_regurgitation", noun=_rx(_REGURG + r"|(?-i:\bTR\b)"), graded=True),
    ),
    "Pericardium": (_Rule("pericardial_effusion", abnormal=_rx(r"effusion"), graded=True),),
    "Aorta": (
        _Rule(
            "aortic_root_dilation",
            noun=_rx(r"\broot\b|sinus(?:es)? of valsalva"),
            abnormal=_rx(r"dilat|enlarg|aneurysm|ectatic"),
            graded=True,
        ),
    ),
    "IVC": (_Rule("dilated_ivc", abnormal=_rx(r"dilat|plethor|distend|enlarg")),),
}

_NUM = r"(\d+(?:\.\d+)?)(?:\s*(?:-|–|to)\s*(\d+(?:\.\d+)?))?"
NUMBER_RULES: dict[str, tuple[str, re.Pattern[str]]] = {
    "ejection_fraction": (
        "Left Ventricle",
        _rx(r"(?:ejection\s+fraction|\bLVEF\b|\bEF\b)[^\d;]{0,40}?" + _NUM + r"\s*%"),
    ),
    "pulmonary_artery_pressure_continuous": (
        "Pulmonary Artery",
        _rx(
            r"(?:pulmonary\s+artery\s+systolic\s+pressure|\bPA\s+systolic\s+pressure|\bPASP\b|\bRVSP\b"
            r"|right\s+ventricular\s+systolic\s+pressure|systolic\s+pulmonary\s+(?:artery\s+)?pressure)"
            r"[^\d;]{0,40}?" + _NUM + r"\s*mm\s*Hg"
        ),
    ),
}

# Continuous values beyond the release's phenotypes (taxonomy.EXTRA_MEASUREMENTS).
EXTRA_NUMBER_RULES: dict[str, tuple[str, re.Pattern[str]]] = {
    "heart_rate": (
        "Resting Segmental Wall Motion Analysis",
        _rx(
            r"(?:heart\s+rate|\bHR\b|pulse)[^\d;]{0,40}?" + _NUM + r"\s*(?:beats\s+per\s+minute|bpm|/\s*min)"
        ),
    ),
}

# What a clause must mention for a graded rule's "normal"/"no" statement to be about it (a noun
# rule's noun does this; the others need their topic). A stated grade above 0 still needs the
# rule's ``abnormal`` word, so a grade is positive exactly when the binary label is.
GRADE_TOPICS: dict[str, re.Pattern[str]] = {
    "rv_systolic_function_depressed": _rx(
        r"function|systolic|contract|reduc|depress|decreas|impair|dysfunct|hypokine"
    ),
    "right_ventricle_dilation": _rx(r"\bsize|dimension|cavity|dilat|enlarg"),
    "left_atrium_dilation": _rx(r"\bsize|dimension|volume|dilat|enlarg|atri"),
    "right_atrium_dilation": _rx(r"\bsize|dimension|volume|dilat|enlarg|atri"),
    "pericardial_effusion": _rx(r"effusion"),
}
_NORMAL = _rx(r"\bnormal\b|within normal limits|unremarkable")
_GRADE_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("trace", _rx(r"\btrace\b|\btrivial\b|\bminimal\b")),
    ("small", _rx(r"\bsmall\b")),
    ("mild", _rx(r"\bmild(?:ly)?\b")),
    ("moderate", _rx(r"\bmoderate(?:ly)?\b")),
    ("severe", _rx(r"\bsevere(?:ly)?\b|\blarge\b|\bmassive\b|\btorrential\b|\bcritical(?:ly)?\b")),
)

assert {r.phenotype for rules in RULES.values() for r in rules} | set(NUMBER_RULES) == set(PHENOTYPE_NAMES)
assert {r.phenotype for rules in RULES.values() for r in rules if r.graded} == set(GRADE_SCALES)
assert set(EXTRA_NUMBER_RULES) == {p.name for p in EXTRA_MEASUREMENTS}
assert all(PHENOTYPE_BY_NAME[r.phenotype].section == s for s, rules in RULES.items() for r in rules)
assert all(PHENOTYPE_BY_NAME[p].section == s for p, (s, _) in NUMBER_RULES.items())


def split_sections(text: str) -> dict[str, str]:
    """Split report text into ``{section: body}`` by its ``<Section>:`` headers.

    A header counts only at the start of the text or of a line, or right after ``[SEP]`` or
    a sentence end (so a phrase that merely names another structure is not a header).
    Headers are matched case-insensitively, with a few free-text aliases
    (:data:`SECTION_ALIASES`); an alias header is kept at the front of its body, since it
    names the subject ("Aortic root: 4.6 cm, moderately dilated"). A repeated section has
    its bodies joined. Text before the first header is ignored.
    """
    matches = list(_HEADER_RE.finditer(text))
    out: dict[str, str] = {}
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = " ".join(text[m.end() : end].replace("[SEP]", " ").split())
        header = m.group("h")
        section = _HEADER_NAMES[header.lower()]
        if header.lower() in SECTION_ALIASES:
            # An alias is often more specific than the section ("Aortic root:"): keep it as
            # the subject of the body so that noun rules see it.
            body = f"{header}: {body}"
        out[section] = f"{out[section]} {body}".strip() if section in out else body
    return out


def extract_labels(
    text_or_report: str | StructuredReport | Iterable[Sequence[Any]], vocab: Vocabulary | None = None
) -> dict[str, float]:
    """The 21 release phenotypes of one report, in ``taxonomy.PHENOTYPE_NAMES`` order.

    Args:
        text_or_report: report text (ours, or free text organised by ``<Section>:``
            headers), a :class:`StructuredReport`, or phrase-id triples.
        vocab: the vocabulary that triples refer to (default: the packaged one); unused for
            text and structured reports.

    Returns:
        ``{phenotype: value}``: binaries 0.0/1.0, regressions in their units, NaN where the
        phenotype's section is absent (or a regression states no number).
    """
    return labels_from_sections(_bodies(text_or_report, vocab))


def extract_findings(
    text_or_report: str | StructuredReport | Iterable[Sequence[Any]], vocab: Vocabulary | None = None
) -> dict[str, float]:
    """Everything a report states, as the bank's label columns.

    The 21 phenotypes of :func:`extract_labels`; for each graded phenotype its grade
    (column ``taxonomy.grade_column(p)``, an index into ``taxonomy.GRADE_SCALES[p].levels``, see
    :func:`grades_from_sections`); and the extra measurements (``taxonomy.EXTRA_MEASUREMENTS``,
    e.g. the heart rate in bpm). NaN where the report does not say.
    """
    bodies = _bodies(text_or_report, vocab)
    out = labels_from_sections(bodies)
    out |= {grade_column(p): g for p, g in grades_from_sections(bodies).items()}
    out |= _numbers(bodies, EXTRA_NUMBER_RULES)
    return out


def grades_from_sections(bodies: dict[str, str]) -> dict[str, float]:
    """The grade each graded phenotype's section states, ``{phenotype: grade index or NaN}``.

    Clause by clause, as the binary rules read them: a clause about the finding (its noun, or
    its topic, e.g. "size" for a dilation) that negates it or calls it normal states grade 0; a
    clause that holds the rule's abnormal word states the highest grade word in it ("mild to
    moderate" is moderate; "trace"/"trivial", "small", "mild", "moderate", and "severe"/"large"/
    "massive"/"torrential"/"critical" map onto the phenotype's scale). The highest grade stated
    anywhere in the section wins, as a positive clause does for the binary. NaN: the section is
    absent or never states a grade ("the left atrium is dilated"). By construction
    ``grade >= positive_from`` exactly when :func:`labels_from_sections` says 1.
    """
    out = dict.fromkeys(GRADED_PHENOTYPES, math.nan)
    for section, rules in RULES.items():
        if section not in bodies:
            continue
        for p, g in _stated_grades(bodies[section], rules).items():
            out[p] = float(g)
    return out


def _grade_of_word(word: str, scale: GradeScale) -> int | None:
    """The index of a grade word on a scale (None: the scale has no such grade)."""
    levels = scale.levels
    if word == "severe":
        return len(levels) - 1
    for i, name in enumerate(levels):
        if name.split()[0].startswith(word) or (word == "trace" and name == "trivial"):
            return i
    if word == "mild" and "small" in levels:  # a "mild" effusion is a small one
        return levels.index("small")
    return None


def _stated_grades(body: str, rules: tuple[_Rule, ...]) -> dict[str, int]:
    graded = [r for r in rules if r.graded]
    noun_rules = [r for r in rules if r.noun is not None]
    best: dict[str, int] = {}
    for sentence in _SENTENCE_SPLIT.split(body):
        subjects: set[str] = set()
        for clause in _CLAUSE_SPLIT.split(sentence):
            named = {r.phenotype for r in noun_rules if r.noun.search(clause)}  # type: ignore[union-attr]
            if named:
                subjects = named
            negated = _NEGATION.search(clause) is not None
            normal = _NORMAL.search(clause) is not None
            for r in graded:
                scale = GRADE_SCALES[r.phenotype]
                if r.noun is not None:
                    if r.phenotype not in subjects:
                        continue
                elif not GRADE_TOPICS[r.phenotype].search(clause):
                    # "RV size and systolic function are normal": a "normal" clause covers every
                    # topic of its sentence (a zero never outranks a stated grade).
                    if normal and not negated and GRADE_TOPICS[r.phenotype].search(sentence):
                        best.setdefault(r.phenotype, 0)
                    continue
                abnormal = r.abnormal is None or r.abnormal.search(clause) is not None
                grade: int | None = None
                if negated or (normal and not (abnormal and r.abnormal is not None)):
                    grade = 0
                elif abnormal:
                    stated = [
                        g
                        for word, rx in _GRADE_WORDS
                        if rx.search(clause) and (g := _grade_of_word(word, scale)) is not None
                    ]
                    grade = max(stated) if stated else None
                if grade is not None:
                    best[r.phenotype] = max(best.get(r.phenotype, 0), grade)
    return best


def _bodies(
    text_or_report: str | StructuredReport | Iterable[Sequence[Any]], vocab: Vocabulary | None
) -> dict[str, str]:
    if isinstance(text_or_report, str):
        return split_sections(text_or_report)
    if isinstance(text_or_report, StructuredReport):
        return {s: text_or_report.section_body(s) for s in text_or_report.sections}
    report = StructuredReport.from_triples(
        text_or_report, vocab if vocab is not None else default_vocabulary()
    )
    return {s: report.section_body(s) for s in report.sections}


def _numbers(bodies: dict[str, str], rules: dict[str, tuple[str, re.Pattern[str]]]) -> dict[str, float]:
    out = dict.fromkeys(rules, math.nan)
    for name, (section, rx) in rules.items():
        if section in bodies:
            m = rx.search(bodies[section])
            if m is not None:
                lo, hi = m.group(1), m.group(2)
                out[name] = float(lo) if hi is None else (float(lo) + float(hi)) / 2
    return out


def labels_from_sections(bodies: dict[str, str]) -> dict[str, float]:
    """Apply the rules to already-split section bodies (see :func:`extract_labels`)."""
    out = {name: math.nan for name in PHENOTYPE_NAMES}
    for section, rules in RULES.items():
        if section in bodies:
            positive = _positive_findings(bodies[section], rules)
            for r in rules:
                out[r.phenotype] = 1.0 if r.phenotype in positive else 0.0
    out.update(_numbers(bodies, NUMBER_RULES))
    return out


def _positive_findings(body: str, rules: tuple[_Rule, ...]) -> set[str]:
    positive: set[str] = set()
    noun_rules = [r for r in rules if r.noun is not None]
    for sentence in _SENTENCE_SPLIT.split(body):
        subjects: set[str] = set()
        for clause in _CLAUSE_SPLIT.split(sentence):
            named = {r.phenotype for r in noun_rules if r.noun.search(clause)}  # type: ignore[union-attr]
            if named:
                subjects = named  # later clauses without a noun refer back to these
            if _NEGATION.search(clause):
                continue
            graded = _POSITIVE_GRADE.search(clause) is not None
            for r in rules:
                if r.noun is not None and r.phenotype not in subjects:
                    continue
                if r.abnormal is not None and not r.abnormal.search(clause):
                    continue
                if r.graded and not graded:
                    continue
                positive.add(r.phenotype)
    return positive
