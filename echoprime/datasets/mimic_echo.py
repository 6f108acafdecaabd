"""MIMIC-IV-ECHO as published on PhysioNet: DICOM studies under ``files/`` and two study lists.

Layout (PhysioNet's description of the module and public readers of it)::

    echo-record-list.csv   subject_id,study_id,acquisition_datetime,dicom_filepath
                           one row per DICOM; dicom_filepath relative to the root:
                           files/p<first 2 digits>/p<subject_id>/s<study_id>/<study_id>_<NNNN>.dcm
    echo-study-list.csv    subject_id,study_id,study_datetime,... : one row per study; version 1.0
                           adds measurement_id (the nearest structured measurements) and note_id
                           (the report, in MIMIC-IV-Note once released)
    structured_measurement.csv[.gz]   (1.0) subject_id,measurement_id,measurement_datetime,
                           measurement,test_type,result,unit; one row per value (lvef, ...)
    files/pNN/p<subject>/s<study>/*.dcm   multi-frame ultrasound cines, and stills

Reasons never quote a subject or study id (ingest names a rejected file by its key and scrubs its
path from the reason; an id quoted on its own would pass through). A study is a ``study_id`` with all its DICOMs (the stills among them are rejected at decode time
as ``not_a_video``, as for any archive); the patient is ``subject_id``, and studies are split by
patient with ingest's hash (:func:`echoprime.data.shards.assign_split`, the config's
``ingest.split_fractions``): the dataset has no official split. No view is given (the view
classifier decides). Labels come from the structured measurements of the study's
``measurement_id`` where the study list and a measurements table have them: every numeric result
under its own name (unit as the table gives it), and ``ejection_fraction`` (%) from ``lvef``
(else ``biplane_lvef``, else ``lvef_3d``). Reports are optional: ``reports=PATH`` names a table
with ``note_id`` and ``text`` (MIMIC-IV-Note's columns), joined on the study list's ``note_id``.

The measurements table's file name differs between descriptions of release 1.0
(``structured_measurement.csv`` / ``structured-measurement.csv.gz``): any of those spellings in
the root is used, or ``measurements=PATH`` names it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from echoprime.data.shards import assign_split
from echoprime.datasets.base import DatasetReject as Reject
from echoprime.datasets.base import (
    DatasetRoot,
    DatasetTables,
    Table,
    check_fields,
    dump_labels,
    read_csv,
    require_usable,
    unlisted,
)

NAME = "mimic-echo"
TITLE = "MIMIC-IV-ECHO"
RECORD_COLUMNS = ("subject_id", "study_id", "acquisition_datetime", "dicom_filepath")
STUDY_COLUMNS = ("subject_id", "study_id", "study_datetime")
MEASUREMENT_COLUMNS = ("measurement_id", "measurement", "result")
MEASUREMENT_FILES = tuple(
    f"{stem}.csv{gz}" for stem in ("structured_measurement", "structured-measurement") for gz in ("", ".gz")
)
EF_MEASUREMENTS = ("lvef", "biplane_lvef", "lvef_3d")
DICOM_PATH = re.compile(r"files/p(?P<pp>\d{2})/p(?P<subject>\d+)/s(?P<study>\d+)/(?P=study)_\d+\.dcm")
LABELS: dict[str, str] = {
    "ejection_fraction": "% (structured measurement lvef, else biplane_lvef, else lvef_3d)",
    "<measurement>": "every numeric structured measurement of the study, under its own name, in the table's unit",
}
OPTIONS: dict[str, str] = {
    "reports": "a CSV/CSV.gz table with note_id and text (MIMIC-IV-Note's columns), joined on note_id",
    "measurements": "the structured measurements table, when it is not in the root under its usual name",
}


def read(
    root: DatasetRoot, options: Mapping[str, str], split_fractions: Any = (0.7, 0.15, 0.15)
) -> DatasetTables:
    """The videos and studies tables of a MIMIC-IV-ECHO folder (see the module docstring)."""
    out = DatasetTables(NAME, root.uri, options=dict(options))
    fractions = tuple(float(x) for x in split_fractions)
    records = read_csv(root, "echo-record-list.csv", RECORD_COLUMNS, published=",".join(RECORD_COLUMNS))
    studies_t = read_csv(
        root, "echo-study-list.csv", STUDY_COLUMNS, published=",".join(STUDY_COLUMNS) + ",..."
    )
    study_rows: dict[str, dict[str, str]] = {}
    for line, row in studies_t.rows:
        where = studies_t.where(line)
        bad = check_fields(row, studies_t.header) or _ids(row)
        if bad:
            out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row"))
            continue
        if study_rows.setdefault(row["study_id"], {**row, "#where": where})["#where"] != where:
            out.rejects.append(
                Reject(
                    where,
                    f"{where}: the study of this row is listed a second time (the first row is used)",
                    "conflict",
                )
            )
    require_usable(NAME, studies_t, len(study_rows), out.rejects)
    measurements = _measurements(root, options, out)
    reports = _reports(options, out)

    on_disk = {f for f in root.under("files") if f.lower().endswith(".dcm")}
    named: set[str] = set()
    used_studies: dict[str, str] = {}
    for line, row in records.rows:
        where = records.where(line)
        rel = row["dicom_filepath"].lstrip("/")
        named.add(rel)
        m = DICOM_PATH.fullmatch(rel)
        bad = check_fields(row, records.header) or _ids(row)
        if not bad and m is None:
            bad = f"dicom_filepath {rel!r} is not files/pNN/p<subject_id>/s<study_id>/<study_id>_NNNN.dcm"
        elif (
            not bad
            and m is not None
            and (
                m["subject"] != row["subject_id"]
                or m["study"] != row["study_id"]
                or m["pp"] != row["subject_id"][:2]
            )
        ):
            bad = f"dicom_filepath {rel!r} does not match the row's subject_id and study_id"
        if bad:
            out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row", rel if m else None))
            continue
        study, subject = row["study_id"], row["subject_id"]
        if study not in study_rows:
            out.rejects.append(
                Reject(rel, f"{where}: the study of {rel} is not in echo-study-list.csv", "bad_row", rel)
            )
            continue
        if study_rows[study]["subject_id"] != subject:
            out.rejects.append(
                Reject(
                    rel,
                    f"{where}: {rel} belongs to another subject than its study in echo-study-list.csv",
                    "conflict",
                    rel,
                )
            )
            continue
        if rel not in on_disk:
            out.rejects.append(
                Reject(rel, f"{where} names {rel}, which is not on disk", "missing_video", rel)
            )
            continue
        split = assign_split(subject, fractions)  # type: ignore[arg-type]
        used_studies[study] = split
        out.videos.append(
            {"path": rel, "study_id": study, "view": None, "patient_id": subject, "split": split, "fps": None}
        )
    require_usable(
        NAME, records, len(out.videos) + sum(r.code == "missing_video" for r in out.rejects), out.rejects
    )
    used = {v["path"] for v in out.videos}
    out.rejects.extend(unlisted(on_disk, used, "echo-record-list.csv", named, [r.path for r in out.rejects]))
    n_reports = 0
    for study, split in sorted(used_studies.items()):
        row = study_rows[study]
        labels = dict(measurements.get(row.get("measurement_id", ""), {}))
        ef = next((labels[k] for k in EF_MEASUREMENTS if k in labels), None)
        if ef is not None:
            labels["ejection_fraction"] = ef
        report = reports.get(row.get("note_id", ""), "")
        n_reports += bool(report)
        out.studies.append(
            {
                "study_id": study,
                "report": report,
                "labels": dump_labels(labels),
                "patient_id": row["subject_id"],
                "split": split,
            }
        )
    out.notes["studies_with_measurements"] = sum(1 for s in out.studies if s["labels"] != "{}")
    out.notes["studies_with_reports"] = n_reports
    return out


def _ids(row: Mapping[str, str]) -> str | None:
    for col in ("subject_id", "study_id"):
        if not row[col].isdigit():
            return f"{col} {row[col][:20]!r} is not a number"
    return None


def _table_at(uri: str, what: str, required: tuple[str, ...]) -> Table:
    """A table the user named by path (local or s3://)."""
    folder, name = DatasetRoot.of_file(uri, NAME, what)
    return read_csv(folder, name, required, published=",".join(required) + ",...")


def _measurements(
    root: DatasetRoot, options: Mapping[str, str], out: DatasetTables
) -> dict[str, dict[str, float]]:
    """``{measurement_id: {measurement: value}}`` of the structured measurements table, if any."""
    if "measurements" in options:
        t = _table_at(options["measurements"], "measurements", MEASUREMENT_COLUMNS)
    else:
        found = [f for f in MEASUREMENT_FILES if root.has(f)]
        if not found:
            out.notes["measurements"] = "no structured measurements table: studies have no labels"
            return {}
        t = read_csv(root, found[0], MEASUREMENT_COLUMNS, published=",".join(MEASUREMENT_COLUMNS) + ",...")
    table: dict[str, dict[str, float]] = {}
    units: dict[str, str] = {}
    skipped = 0
    for _, row in t.rows:
        try:
            value = float(row["result"])
        except ValueError:
            skipped += 1  # free-text results (grades in words) are not numeric labels
            continue
        table.setdefault(row["measurement_id"], {}).setdefault(row["measurement"], value)
        if row.get("unit"):
            units.setdefault(row["measurement"], row["unit"])
    out.notes["measurement_units"] = dict(sorted(units.items()))
    out.notes["non_numeric_results"] = skipped
    return table


def _reports(options: Mapping[str, str], out: DatasetTables) -> dict[str, str]:
    if "reports" not in options:
        return {}
    t = _table_at(options["reports"], "reports", ("note_id", "text"))
    return {row["note_id"]: row["text"] for _, row in t.rows if row["note_id"] and row["text"]}
