"""The viewer's synthetic examples: a study's files as an upload would hold them, and the truth
it carries, in the shape the viewer compares with a result.

A synthetic study is generated from a known patient, so its own report and its findings are
known: the viewer shows them beside the interpretation, section by section and finding by
finding. The findings are read from the study's report with the same rules that label the bank
(:func:`echoprime.reports.labels.extract_findings`), so "true" means what the report states,
the same target the model's kNN findings are scored against.
"""

from __future__ import annotations

import base64
import math
import tempfile
from pathlib import Path
from typing import Any

from echoprime.reports.labels import extract_findings
from echoprime.reports.structured import StructuredReport
from echoprime.taxonomy import FINDING_BY_NAME, GRADE_SCALES, grade_column

EXAMPLE_SEED = 2024
EXAMPLE_COUNT = 1000


def _number(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def synthetic_truth(report: StructuredReport) -> dict[str, Any]:
    """A synthetic study's report per section and its findings.

    Returns:
        ``{"sections": [{"section", "text"}] (each section's body, no header or [SEP]),
        "findings": {finding: {"value": 0/1 or a measurement, None where the report does not
        say; "grade": index or None; "label": the grade's name or None}}}`` for the 21
        phenotypes and the extra measurements (heart rate).
    """
    found = extract_findings(report)
    findings: dict[str, dict[str, Any]] = {}
    for name in FINDING_BY_NAME:
        grade = _number(found.get(grade_column(name), math.nan)) if name in GRADE_SCALES else None
        label = None if grade is None else GRADE_SCALES[name].levels[int(grade)]
        findings[name] = {
            "value": _number(found.get(name, math.nan)),
            "grade": None if grade is None else int(grade),
            "label": label,
        }
    sections = [{"section": s, "text": report.section_body(s)} for s in report.sections]
    return {"sections": sections, "findings": findings}


def example_study(seed: int, index: int) -> dict[str, Any]:
    """Synthetic study ``index`` of cohort ``seed`` as files an upload would hold (MP4 and
    DICOM), each with its true view, and the study's truth (:func:`synthetic_truth`).

    Returns:
        ``{"index", "report" (the study's report text), "views", "files": [{"name",
        "media_type", "data" (base64), "view"}], "truth"}``.
    """
    from echoprime.synth.cohort import make_study, write_study

    st = make_study(seed, index, min_videos=3, max_videos=6, frames=32, size=64)
    with tempfile.TemporaryDirectory() as tmp:
        rows = write_study(st, tmp, fmt="both")
        files = [
            {
                "name": Path(r["path"]).name,
                "media_type": "application/dicom" if r["format"] == "dicom" else "video/mp4",
                "data": base64.b64encode((Path(tmp) / r["path"]).read_bytes()).decode("ascii"),
                "view": r["view"],
            }
            for r in rows
        ]
    return {
        "index": index,
        "report": st.report.to_text(),
        "views": [v.view for v in st.videos],
        "files": files,
        "truth": synthetic_truth(st.report),
    }
