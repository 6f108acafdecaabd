"""MIMIC-IV-ECHO: the stand-in mirrors PhysioNet's folders and lists, the adapter groups DICOMs into
studies, splits by patient, joins measurements and (optional) reports, and rejects bad rows."""

from __future__ import annotations

import csv
import gzip
import shutil
from pathlib import Path

import pytest

from echoprime.data.ingest import FileDecoder, StudyIndex
from echoprime.data.shards import assign_split
from echoprime.datasets import DatasetLayoutError, read_dataset
from echoprime.datasets.standins import write_standin
from echoprime.preprocess import PreprocessSpec

RECORD_HEADER = "subject_id,study_id,acquisition_datetime,dicom_filepath"


@pytest.fixture(scope="module")
def mimic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mimic") / "mimic-iv-echo"
    write_standin("mimic-echo", root, studies=4, seed=1, frames=8, size=48)
    return root


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_standin_is_the_published_layout(mimic):
    assert (mimic / "echo-record-list.csv").read_text().splitlines()[0] == RECORD_HEADER
    study_header = (mimic / "echo-study-list.csv").read_text().splitlines()[0].split(",")
    assert study_header[:3] == ["subject_id", "study_id", "study_datetime"] and "note_id" in study_header
    for subject, study, _, path in _rows(mimic / "echo-record-list.csv")[1:]:
        assert path == f"files/p{subject[:2]}/p{subject}/s{study}/{path.rsplit('/', 1)[1]}"
        assert (
            path.rsplit("/", 1)[1].startswith(f"{study}_") and (mimic / path).read_bytes()[128:132] == b"DICM"
        )
    text = gzip.decompress((mimic / "structured-measurement.csv.gz").read_bytes()).decode()
    assert (
        text.splitlines()[0]
        == "subject_id,measurement_id,measurement_datetime,measurement,test_type,result,unit"
    )


def test_adapter_groups_studies_splits_by_patient_and_joins_measurements(mimic):
    t = read_dataset("mimic-echo", str(mimic))
    assert not t.rejects
    records = _rows(mimic / "echo-record-list.csv")[1:]
    assert len(t.videos) == len(records) and {v["path"] for v in t.videos} == {r[3] for r in records}
    for v in t.videos:
        assert v["view"] is None and v["split"] == assign_split(v["patient_id"])
    assert len(t.studies) == len({r[1] for r in records}) == 5  # one patient of four has two studies
    lvef = {}
    study_list = {r[1]: r for r in _rows(mimic / "echo-study-list.csv")[1:]}
    for line in (
        gzip.decompress((mimic / "structured-measurement.csv.gz").read_bytes()).decode().splitlines()[1:]
    ):
        subject, mid, _, name, _, result, _ = line.split(",")
        if name == "lvef":
            lvef[mid] = float(result)
    for s in t.studies:
        labels = t.labels_of(s["study_id"])
        assert labels["ejection_fraction"] == labels["lvef"] == lvef[study_list[s["study_id"]][3]]
        assert s["report"] == "" and "sinus_diam" in labels
    assert t.notes["measurement_units"] == {"lvef": "%", "sinus_diam": "cm"}
    # the stills among a study's DICOMs are rejected at decode time, as in any archive
    spec = PreprocessSpec(size=32, frames=8, stride=2)
    dec = FileDecoder(spec, StudyIndex.from_tables(t.videos, t.studies), t.root)
    out = dec({"uri": [f"{t.root}/{v['path']}" for v in t.videos]})
    assert len(out["study_id"]) == len(t.videos) - 5 and {r["code"] for r in dec.rejects} == {"not_a_video"}


def test_reports_are_optional_and_joined_on_note_id(mimic, tmp_path):
    study_list = _rows(mimic / "echo-study-list.csv")
    note = study_list[0].index("note_id")
    reports = tmp_path / "notes.csv.gz"
    body = (
        "note_id,subject_id,text\n"
        + f'{study_list[1][note]},{study_list[1][0]},"LEFT VENTRICLE: Normal, EF 55%."\n'
    )
    reports.write_bytes(gzip.compress(body.encode()))
    t = read_dataset("mimic-echo", str(mimic), [f"reports={reports}"])
    got = {s["study_id"]: s["report"] for s in t.studies}
    assert got[study_list[1][1]] == "LEFT VENTRICLE: Normal, EF 55%."
    assert sum(bool(r) for r in got.values()) == 1 and t.notes["studies_with_reports"] == 1
    with pytest.raises(DatasetLayoutError, match="reports table"):
        read_dataset("mimic-echo", str(mimic), [f"reports={tmp_path / 'none.csv'}"])


def test_bad_rows_missing_files_and_no_measurements(mimic, tmp_path):
    root = tmp_path / "m"
    shutil.copytree(mimic, root)
    rows = _rows(root / "echo-record-list.csv")
    (root / rows[1][3]).unlink()
    rows[2][3] = rows[2][3].replace("/s", "/x")  # not PhysioNet's folder scheme
    rows[3][0] = "19999999"  # a subject that does not own the path
    rows.append(
        ["10000001", "2", "2018-01-01 00:00:00", "files/p10/p10000001/s2/2_0001.dcm"]
    )  # a study not in the study list
    with open(root / "echo-record-list.csv", "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    (root / "structured-measurement.csv.gz").unlink()
    t = read_dataset("mimic-echo", str(root))
    codes = sorted(r.code for r in t.rejects)
    assert codes.count("missing_video") == 1 and codes.count("bad_row") == 3
    assert len({r.path for r in t.rejects}) == len(t.rejects)  # a file is rejected once
    reasons = " | ".join(r.reason for r in t.rejects)
    assert "is not files/pNN/p<subject_id>/s<study_id>/<study_id>_NNNN.dcm" in reasons
    assert (
        "does not match the row's subject_id and study_id" in reasons
        and "19999999" not in reasons
        and "not in echo-study-list.csv" in reasons
    )
    assert (
        all(s["labels"] == "{}" for s in t.studies)
        and "no structured measurements" in t.notes["measurements"]
    )
    (root / "echo-record-list.csv").write_text("subject_id,study_id,dicom_filepath\n")
    with pytest.raises(DatasetLayoutError, match="echo-record-list.csv has no column 'acquisition_datetime'"):
        read_dataset("mimic-echo", str(root))
