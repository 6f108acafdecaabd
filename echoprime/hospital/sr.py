"""A DICOM Comprehensive SR of one interpretation: what goes back to the archive.

:func:`build_sr` turns a :class:`~echoprime.inference.StudyResult` and the DICOM headers of the
study's source instances into a Comprehensive SR instance (highdicom) in the same study, in a
series of its own:

- the root container "Echocardiography Report" (LOINC 42148-7) with a device observer context
  naming the algorithm (echoprime, its version, the bundle's content hash);
- a comment saying that the content is generated and not verified by a physician, and the
  algorithm's name and version (DCM 111001 / 111003);
- one container per report section, holding the section's text (LOINC 59776-5 "Findings"), its
  findings (a measurement as NUM with its UCUM unit, the neighbours' spread and its interval as
  NUM properties; a binary as CODE present/absent with its probability, calibrated probability
  and decision threshold as NUM properties and, for a graded finding, its severity as a coded
  property (SNOMED CT where a concept means the grade, see :mod:`echoprime.hospital.codes`), the
  severity the report text states and whether the two agree; a comment in the section where they
  do not) and references to the videos the anatomical attention weighted most for the section
  ("Best illustration of finding").

The SR carries the study's patient and study modules, copied from the sources as the standard
requires for it to join the study, so it holds the patient's identifiers: write it only where the
source study lives (the archive it came from, or a file the operator asked for). Completion flag
COMPLETE, verification flag UNVERIFIED: a physician signs it, not echoprime.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import highdicom as hd
from highdicom.sr import (
    CodeContentItem,
    ContainerContentItem,
    DeviceObserverIdentifyingAttributes,
    ImageContentItem,
    NumContentItem,
    ObservationContext,
    ObserverContext,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID, generate_uid

from echoprime.hospital import codes as ec
from echoprime.taxonomy import FINDING_BY_NAME, SECTIONS

SR_SERIES_NUMBER = 9901
"""Series number of the SR series (a number no scanner series is likely to use)."""
EVIDENCE_PER_SECTION = 2
"""Videos referenced per section: the ones its attention weighted most."""
MAX_TEXT = 1024
"""Characters of a section's text kept in its TEXT item (an UT value may be longer; viewers cut)."""
_SEP = re.compile(r"\s*\[SEP\]\s*")


class SRError(ValueError):
    """The result and its sources cannot make an SR (no DICOM source, several studies, ...)."""


@dataclass(frozen=True)
class Algorithm:
    """Who made the result: recorded in the SR's observer context and algorithm items.

    Attributes:
        name: the algorithm's name.
        version: its version (the package version).
        bundle_hash: the model bundle's content hash (manifest sha256).
        bundle_name: the bundle's name, for people.
    """

    name: str
    version: str
    bundle_hash: str
    bundle_name: str = ""

    @property
    def device_uid(self) -> UID:
        """A UID for the algorithm as a device, the same for the same bundle."""
        return generate_uid(entropy_srcs=["echoprime-device", self.bundle_hash])


def section_text(text: str, section: str) -> str:
    """A report section as a reader sees it: without the ``[SEP]`` markers and the section's own
    name in front (the SR's container names the section)."""
    body = _SEP.sub(" ", text).strip()
    if body.lower().startswith(section.lower() + ":"):
        body = body[len(section) + 1 :].strip()
    return body[:MAX_TEXT]


STUDY_ATTRIBUTES = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
)
"""Type 2 attributes of the patient and study modules an instance of the study must carry
(empty when unknown): copied from the source, which may lack them."""
_OLD_DATE = re.compile(r"(\d{4})\.(\d{2})\.(\d{2})")
_DATE = re.compile(r"\d{8}")
_TIME = re.compile(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?")


def study_context(ds: Dataset) -> Dataset:
    """A copy of a source header that a new instance of its study can be made from: the Type 2
    patient and study attributes present (empty where the source lacks them), and dates and times
    in the DA and TM forms (an ACR-NEMA ``1994.01.30`` or ``11:25:01``, as old scanners wrote,
    becomes ``19940130`` or ``112501``; a value in no known form is left empty rather than copied
    wrong; a character set named ``ISO-IR 100`` is named ``ISO_IR 100``)."""
    out = Dataset()
    out.update(ds)
    if hasattr(ds, "file_meta"):
        out.file_meta = ds.file_meta
    if "SpecificCharacterSet" in ds:  # "ISO-IR 100" (seen in the wild) is read as ISO_IR 100
        terms = ds.SpecificCharacterSet
        terms = [terms] if isinstance(terms, str) else list(terms)
        out.SpecificCharacterSet = [re.sub(r"^ISO-IR", "ISO_IR", str(t).strip()) for t in terms]
    for kw in STUDY_ATTRIBUTES:
        value = ds.get(kw)
        if value is None:
            setattr(out, kw, "")
        elif kw in ("StudyDate", "PatientBirthDate"):
            text = str(value).strip()
            if m := _OLD_DATE.fullmatch(text):
                text = "".join(m.groups())
            setattr(out, kw, text if _DATE.fullmatch(text) else "")
        elif kw == "StudyTime":
            text = str(value).strip().replace(":", "")
            setattr(out, kw, text if _TIME.fullmatch(text) else "")
    return out


def build_sr(
    result: Mapping[str, Any],
    sources: Mapping[str, Dataset],
    algorithm: Algorithm,
    *,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.ComprehensiveSR:
    """The SR of one interpretation.

    Args:
        result: ``StudyResult.to_dict()`` of the study.
        sources: the DICOM header (no pixel data needed) of each used file that is a DICOM
            instance, by the file's name in ``result`` (a video without one is interpreted but
            cannot be referenced).
        algorithm: the algorithm and bundle that made the result.
        series_instance_uid, sop_instance_uid: given UIDs (default: new ones).

    Raises:
        SRError: no used file is a DICOM instance, or they belong to several studies.
    """
    used = [v["file"] for v in result.get("videos", [])]
    evidence = [study_context(sources[f]) for f in used if f in sources]
    if not evidence:
        raise SRError(
            "a DICOM SR joins the study of its source instances, and no video used for this study is "
            "a DICOM instance (MP4/AVI files carry no study); interpret the DICOM files instead"
        )
    studies = {str(ds.StudyInstanceUID) for ds in evidence}
    if len(studies) > 1:
        raise SRError(f"the videos come from {len(studies)} different studies; an SR belongs to one")

    root = ContainerContentItem(name=ec.ALGORITHM_REPORT, template_id=None)
    items: list[Any] = list(
        ObservationContext(
            observer_person_context=None,
            observer_device_context=ObserverContext(
                observer_type=codes.DCM.Device,
                observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                    uid=algorithm.device_uid,
                    name=algorithm.name,
                    manufacturer_name="echoprime project",
                    model_name=(algorithm.bundle_name or algorithm.name)[:64],
                    serial_number=algorithm.bundle_hash[:64],
                ),
            ),
        )
    )
    items.append(
        TextContentItem(
            name=ec.COMMENT,
            value=(
                f"Generated by {algorithm.name} {algorithm.version} (model bundle "
                f"{algorithm.bundle_hash[:12]}) from the study's echo videos. Not verified by a "
                "physician; the findings are estimates from similar prior studies."
            ),
            relationship_type="CONTAINS",
        )
    )
    if any((m.get("grade") or {}).get("label") is not None for m in result.get("metrics", {}).values()):
        items.append(
            TextContentItem(
                name=ec.COMMENT,
                value=(
                    "A graded finding is stated twice: as present or absent by the published model's "
                    "rule (moderate or worse is present), and by its severity."
                ),
                relationship_type="CONTAINS",
            )
        )
    items.append(TextContentItem(ec.ALGORITHM_NAME, algorithm.name, relationship_type="CONTAINS"))
    items.append(
        TextContentItem(
            ec.ALGORITHM_VERSION,
            f"{algorithm.version} {algorithm.bundle_hash[:16]}",
            relationship_type="CONTAINS",
        )
    )
    by_file = {f: ds for f, ds in sources.items()}
    texts = {s["section"]: s["text"] for s in result.get("report", [])}
    metrics = result.get("metrics", {})
    evid = result.get("evidence", {})
    for sec in SECTIONS:
        children: list[Any] = []
        if sec in texts and (body := section_text(texts[sec], sec)):
            children.append(TextContentItem(ec.FINDINGS, body, relationship_type="CONTAINS"))
        # A finding this version does not know has no code and no section: left out.
        mine = [(n, m) for n, m in metrics.items() if (f := FINDING_BY_NAME.get(n)) and f.section == sec]
        for name, m in mine:
            children.extend(_finding_items(name, m))
        for name, m in mine:
            if note := disagreement(name, m):
                children.append(TextContentItem(ec.COMMENT, note, relationship_type="CONTAINS"))
        for e in evid.get(sec, [])[:EVIDENCE_PER_SECTION]:
            ds = by_file.get(e.get("file"))
            if ds is not None:
                children.append(
                    ImageContentItem(
                        name=ec.BEST_ILLUSTRATION,
                        referenced_sop_class_uid=str(ds.SOPClassUID),
                        referenced_sop_instance_uid=str(ds.SOPInstanceUID),
                        relationship_type="CONTAINS",
                    )
                )
        if children:
            container = ContainerContentItem(name=ec.section(sec), relationship_type="CONTAINS")
            container.ContentSequence = hd.sr.ContentSequence(children, is_root=False)
            items.append(container)
    root.ContentSequence = hd.sr.ContentSequence(items, is_root=False)

    first = evidence[0]
    sr = hd.sr.ComprehensiveSR(
        evidence=evidence,
        content=root,
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer="echoprime project",
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"{algorithm.name} AI report (unverified)",
        institution_name=str(first.get("InstitutionName", "") or "") or None,
    )
    # A private coding scheme is declared in the instance that uses it (PS3.3 C.12.1.1.1.3).
    scheme = Dataset()
    scheme.CodingSchemeDesignator = ec.LOCAL_SCHEME
    scheme.CodingSchemeName = ec.LOCAL_SCHEME_NAME
    scheme.CodingSchemeResponsibleOrganization = "echoprime project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _finite(x: Any) -> bool:
    return x is not None and not isinstance(x, bool) and math.isfinite(float(x))


def disagreement(name: str, m: Mapping[str, Any]) -> str | None:
    """A sentence saying that a graded finding and the report text disagree (None when they agree,
    or either is unknown): the report text stays the retrieved text, so the result says so."""
    g = m.get("grade") or {}
    if g.get("agrees_with_report") is not False:
        return None
    return (
        f"{ec.finding(name).concept.meaning}: graded {g.get('label') or 'ungraded'}, while the report "
        f"text states {g.get('report_label') or 'no grade'}."
    )


def _num(concept: Any, value: float, unit: Any) -> NumContentItem:
    return NumContentItem(concept, float(value), unit, relationship_type="HAS PROPERTIES")


def _grade_item(concept: Any, label: str) -> CodeContentItem | TextContentItem:
    """A grade as a coded property; a grade the taxonomy does not know (a bundle's own scale) as
    text, since no code can be made up for it."""
    try:
        return CodeContentItem(concept, ec.grade(label), relationship_type="HAS PROPERTIES")
    except KeyError:
        return TextContentItem(concept, label, relationship_type="HAS PROPERTIES")


def _finding_items(name: str, m: Mapping[str, Any]) -> list[Any]:
    code = ec.finding(name)
    value = m.get("value")
    if not _finite(value):
        return []  # no labelled neighbour: nothing to state
    if m.get("kind") == "regression":
        num = NumContentItem(code.concept, float(value), code.unit, relationship_type="CONTAINS")
        props: list[Any] = []
        if _finite(m.get("spread")):
            props.append(_num(ec.NEIGHBOUR_SPREAD, m["spread"], code.unit))
        interval = m.get("interval") or {}
        if _finite(interval.get("low")) and _finite(interval.get("high")):
            props.append(_num(ec.INTERVAL_LOW, interval["low"], code.unit))
            props.append(_num(ec.INTERVAL_HIGH, interval["high"], code.unit))
            if _finite(interval.get("level")):
                props.append(_num(ec.INTERVAL_LEVEL, interval["level"], ec.UCUM_RATIO))
        if props:
            num.ContentSequence = hd.sr.ContentSequence(props, is_root=False)
        return [num]
    decision = m.get("decision")
    if decision is None:
        return []
    item = CodeContentItem(code.concept, ec.PRESENT if decision else ec.ABSENT, relationship_type="CONTAINS")
    props = [_num(ec.PROBABILITY, m["probability"], ec.UCUM_RATIO)]
    if _finite(m.get("calibrated_probability")):
        props.append(_num(ec.CALIBRATED_PROBABILITY, m["calibrated_probability"], ec.UCUM_RATIO))
        if m.get("calibration"):
            props.append(
                TextContentItem(
                    ec.CALIBRATION_METHOD, str(m["calibration"]), relationship_type="HAS PROPERTIES"
                )
            )
    if m.get("threshold") is not None:
        props.append(_num(ec.DECISION_THRESHOLD, m["threshold"], ec.UCUM_RATIO))
    g = m.get("grade") or {}
    for concept, label in ((ec.SEVERITY, g.get("label")), (ec.REPORT_SEVERITY, g.get("report_label"))):
        if label is not None:
            props.append(_grade_item(concept, str(label)))
    if g.get("agrees_with_report") is not None:
        props.append(
            CodeContentItem(
                ec.AGREES_WITH_REPORT,
                ec.YES if g["agrees_with_report"] else ec.NO,
                relationship_type="HAS PROPERTIES",
            )
        )
    item.ContentSequence = hd.sr.ContentSequence(props, is_root=False)
    return [item]


def findings_of(sr: Dataset) -> dict[str, Any]:
    """What an SR says, read back (for tests, and for anyone checking an SR without a viewer):
    ``{"sections": {section: text}, "findings": {meaning: value}, "properties": {(finding,
    property): value}, "images": {section: [SOP instance UID]}, "comments": {section: [text]},
    "severity": {finding: grade}, "intervals": {finding: (low, high)}}``; a CODE's value is its
    meaning (a grade's: e.g. ``Mild``, ``Trace``), a TEXT's its text. ``severity`` and
    ``intervals`` repeat, per finding, the properties a graded finding and an interval make."""
    out: dict[str, Any] = {
        "sections": {},
        "findings": {},
        "properties": {},
        "images": {},
        "comments": {},
        "severity": {},
        "intervals": {},
    }

    def value(it: Dataset) -> Any:
        if it.ValueType == "NUM":
            return float(it.MeasuredValueSequence[0].NumericValue)
        if it.ValueType == "TEXT":
            return str(it.TextValue)
        return str(it.ConceptCodeSequence[0].CodeMeaning)

    def concept(it: Dataset) -> tuple[str, str]:
        c = it.ConceptNameCodeSequence[0]
        return str(c.CodeValue), str(c.CodingSchemeDesignator)

    findings = (ec.FINDINGS.value, ec.FINDINGS.scheme_designator)
    for sec in sr.ContentSequence:
        if sec.ValueType != "CONTAINER":
            continue
        section = str(sec.ConceptNameCodeSequence[0].CodeMeaning)
        for it in sec.get("ContentSequence", []):
            name = str(it.ConceptNameCodeSequence[0].CodeMeaning)
            if it.ValueType == "TEXT":
                if concept(it) == findings:
                    out["sections"][section] = str(it.TextValue)
                else:
                    out["comments"].setdefault(section, []).append(str(it.TextValue))
            elif it.ValueType in ("NUM", "CODE"):
                out["findings"][name] = value(it)
                low = high = None
                for prop in it.get("ContentSequence", []):
                    pname, got = str(prop.ConceptNameCodeSequence[0].CodeMeaning), value(prop)
                    out["properties"][(name, pname)] = got
                    key = concept(prop)
                    if key == (ec.SEVERITY.value, ec.SEVERITY.scheme_designator):
                        out["severity"][name] = got
                    elif key == (ec.INTERVAL_LOW.value, ec.LOCAL_SCHEME):
                        low = got
                    elif key == (ec.INTERVAL_HIGH.value, ec.LOCAL_SCHEME):
                        high = got
                if low is not None and high is not None:
                    out["intervals"][name] = (low, high)
            elif it.ValueType == "IMAGE":
                ref = it.ReferencedSOPSequence[0]
                out["images"].setdefault(section, []).append(str(ref.ReferencedSOPInstanceUID))
    return out
