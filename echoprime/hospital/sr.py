"""A DICOM Comprehensive SR of one interpretation: what goes back to the archive.

:func:`build_sr` turns a :class:`~echoprime.interpret.StudyResult` and the DICOM headers of the
study's source instances into a Comprehensive SR instance (highdicom) in the same study, in a
series of its own:

- the root container "Echocardiography Report" (LOINC 42148-7) with a device observer context
  naming the algorithm (echoprime, its version, the bundle's content hash);
- a comment saying that the content is generated and not verified by a physician, and the
  algorithm's name and version (DCM 111001 / 111003);
- one container per report section, holding the section's text (LOINC 59776-5 "Findings"), its
  findings (a measurement as NUM with its UCUM unit; a binary as CODE present/absent with its
  probability and decision threshold as NUM properties) and references to the videos the
  anatomical attention weighted most for the section ("Best illustration of finding").

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
from echoprime.taxonomy import PHENOTYPE_BY_NAME, SECTIONS

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
        for name, m in metrics.items():
            if PHENOTYPE_BY_NAME.get(name) is None or PHENOTYPE_BY_NAME[name].section != sec:
                continue
            children.extend(_finding_items(name, m))
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


def _finding_items(name: str, m: Mapping[str, Any]) -> list[Any]:
    code = ec.finding(name)
    value = m.get("value")
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return []  # no labelled neighbour: nothing to state
    if m.get("kind") == "regression":
        num = NumContentItem(code.concept, float(value), code.unit, relationship_type="CONTAINS")
        if m.get("spread") is not None and math.isfinite(float(m["spread"])):
            num.ContentSequence = hd.sr.ContentSequence(
                [
                    NumContentItem(
                        ec.NEIGHBOUR_SPREAD, float(m["spread"]), code.unit, relationship_type="HAS PROPERTIES"
                    )
                ],
                is_root=False,
            )
        return [num]
    decision = m.get("decision")
    if decision is None:
        return []
    item = CodeContentItem(code.concept, ec.PRESENT if decision else ec.ABSENT, relationship_type="CONTAINS")
    props = [
        NumContentItem(
            ec.PROBABILITY, float(m["probability"]), ec.UCUM_RATIO, relationship_type="HAS PROPERTIES"
        )
    ]
    if m.get("threshold") is not None:
        props.append(
            NumContentItem(
                ec.DECISION_THRESHOLD,
                float(m["threshold"]),
                ec.UCUM_RATIO,
                relationship_type="HAS PROPERTIES",
            )
        )
    item.ContentSequence = hd.sr.ContentSequence(props, is_root=False)
    return [item]


def findings_of(sr: Dataset) -> dict[str, Any]:
    """What an SR says, read back (for tests, and for anyone checking an SR without a viewer):
    ``{"sections": {section: text}, "findings": {meaning: value}, "properties": {(finding,
    property): value}, "images": {section: [SOP instance UID]}}``; a CODE's value is its meaning."""
    out: dict[str, Any] = {"sections": {}, "findings": {}, "properties": {}, "images": {}}

    def value(it: Dataset) -> Any:
        if it.ValueType == "NUM":
            return float(it.MeasuredValueSequence[0].NumericValue)
        return str(it.ConceptCodeSequence[0].CodeMeaning)

    for sec in sr.ContentSequence:
        if sec.ValueType != "CONTAINER":
            continue
        section = str(sec.ConceptNameCodeSequence[0].CodeMeaning)
        for it in sec.get("ContentSequence", []):
            name = str(it.ConceptNameCodeSequence[0].CodeMeaning)
            if it.ValueType == "TEXT":
                out["sections"][section] = str(it.TextValue)
            elif it.ValueType in ("NUM", "CODE"):
                out["findings"][name] = value(it)
                for prop in it.get("ContentSequence", []):
                    out["properties"][(name, str(prop.ConceptNameCodeSequence[0].CodeMeaning))] = value(prop)
            elif it.ValueType == "IMAGE":
                ref = it.ReferencedSOPSequence[0]
                out["images"].setdefault(section, []).append(str(ref.ReferencedSOPInstanceUID))
    return out
