"""EchoNet-Dynamic, -Pediatric and -LVH: the stand-ins mirror the published files, the adapters
read them, and the adapters refuse tidier layouts than the real ones.

The literal headers below are the published ones (confirmed against the datasets' own loaders and
the authors' scripts: echoprime/datasets/*.py say where each comes from); they are written out here
rather than imported, so a wrong constant in the code cannot make the fixture agree with it.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import av
import pytest

from echoprime.data.ingest import FileDecoder, StudyIndex
from echoprime.datasets import DatasetLayoutError, DatasetOptionError, read_dataset
from echoprime.datasets.standins import write_standin
from echoprime.preprocess import PreprocessSpec

DYNAMIC_FILELIST = "FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split"
DYNAMIC_TRACINGS = "FileName,X1,Y1,X2,Y2,Frame"
PEDS_FILELIST = "FileName,EF,Sex,Age,Weight,Height,Split"
PEDS_TRACINGS = "FileName,X,Y,Frame"
LVH_HEADER = ",HashedFileName,Calc,CalcValue,Frame,X1,X2,Y1,Y2,Frames,FPS,Width,Height,split"


@pytest.fixture(scope="module")
def standins(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("echonet")
    out = {}
    for name, n in (("echonet-dynamic", 8), ("echonet-pediatric", 6), ("echonet-lvh", 6)):
        out[name] = base / name
        write_standin(name, out[name], studies=n, seed=5, frames=20)
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _rewrite(path: Path, edit) -> None:
    rows = _rows(path)
    rows = edit(rows)
    with open(path, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)


def _decode_all(tables) -> tuple[int, list]:
    spec = PreprocessSpec(size=32, frames=8, stride=2)
    dec = FileDecoder(spec, StudyIndex.from_tables(tables.videos, tables.studies), tables.root)
    out = dec({"uri": [f"{tables.root}/{v['path']}" for v in tables.videos]})
    return len(out["study_id"]), dec.rejects


# ---------------------------------------------------------------- EchoNet-Dynamic


def test_dynamic_standin_is_the_published_layout(standins):
    root = standins["echonet-dynamic"]
    assert (root / "FileList.csv").read_text().splitlines()[0] == DYNAMIC_FILELIST
    assert (root / "VolumeTracings.csv").read_text().splitlines()[0] == DYNAMIC_TRACINGS
    files = _rows(root / "FileList.csv")[1:]
    assert all(not r[0].endswith(".avi") and r[0].startswith("0X") for r in files)
    assert {r[8] for r in files} <= {"TRAIN", "VAL", "TEST"}
    traces = _rows(root / "VolumeTracings.csv")[1:]
    assert all(r[0].endswith(".avi") for r in traces)
    per_video = {}
    for r in traces:
        per_video.setdefault(r[0], []).append(int(r[5]))
    assert all(len(v) == 42 and len(set(v)) == 2 for v in per_video.values())  # 2 frames x (axis + 20 chords)
    with av.open(str(root / "Videos" / f"{files[0][0]}.avi")) as c:
        s = c.streams.video[0]
        assert (s.codec_context.name, s.width, s.height) == ("mjpeg", 112, 112)
        assert c.format.name == "avi"


def test_dynamic_adapter_reads_rows_splits_labels_views(standins):
    root = standins["echonet-dynamic"]
    t = read_dataset("echonet-dynamic", str(root))
    files = {r[0]: r for r in _rows(root / "FileList.csv")[1:]}
    assert len(t.videos) == len(t.studies) == 8 and not t.rejects
    split = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
    for v in t.videos:
        row = files[v["study_id"]]
        assert v["path"] == f"Videos/{row[0]}.avi" and v["view"] == "A4C" and v["patient_id"] == row[0]
        assert v["split"] == split[row[8]] and v["fps"] == float(row[6])
        labels = t.labels_of(v["study_id"])
        assert labels == pytest.approx(
            {"ejection_fraction": float(row[1]), "esv": float(row[2]), "edv": float(row[3])}
        )
    assert t.notes["traced_videos"] == 8
    n, rejects = _decode_all(t)
    assert n == 8 and not rejects


def test_dynamic_rejects_tidier_layouts(standins, tmp_path):
    root = _copy(standins["echonet-dynamic"], tmp_path)
    # FileName with ".avi" (the tidy spelling the real FileList does not have) and lower-case split
    _rewrite(root / "FileList.csv", lambda rows: [rows[0], [rows[1][0] + ".avi", *rows[1][1:]], [*rows[2][:8], rows[2][8].lower()], *rows[3:]])  # fmt: skip
    t = read_dataset("echonet-dynamic", str(root))
    reasons = {r.source: r.reason for r in t.rejects}
    assert (
        "'.avi' suffix" in reasons["FileList.csv line 2"] and "upper case" in reasons["FileList.csv line 3"]
    )
    assert len(t.videos) == 6
    # their videos are named by no usable row: rejected as such, never a silent drop
    assert sum(r.code == "bad_row" and r.path is not None for r in t.rejects) == 2
    # every row tidied: not the dataset at all
    _rewrite(root / "FileList.csv", lambda rows: [rows[0], *[[r[0] + ".avi", *r[1:]] for r in rows[1:]]])
    with pytest.raises(DatasetLayoutError, match="none of the 8 rows of FileList.csv"):
        read_dataset("echonet-dynamic", str(root))


def test_dynamic_missing_column_names_file_and_column(standins, tmp_path):
    root = _copy(standins["echonet-dynamic"], tmp_path)
    _rewrite(root / "FileList.csv", lambda rows: [[c for i, c in enumerate(r) if i != 8] for r in rows])
    with pytest.raises(DatasetLayoutError, match=r"FileList.csv has no column 'Split'"):
        read_dataset("echonet-dynamic", str(root))
    _rewrite(root / "FileList.csv", lambda rows: [[rows[0][0].lower(), *rows[0][1:]], *rows[1:]])
    with pytest.raises(DatasetLayoutError, match="case-sensitive"):
        read_dataset("echonet-dynamic", str(root))


def test_dynamic_bad_rows_and_missing_videos_are_rejects(standins, tmp_path):
    root = _copy(standins["echonet-dynamic"], tmp_path)
    rows = _rows(root / "FileList.csv")
    (root / "Videos" / f"{rows[1][0]}.avi").unlink()
    shutil.copy(root / "Videos" / f"{rows[2][0]}.avi", root / "Videos" / "0XSTRAY.avi")
    _rewrite(root / "FileList.csv", lambda r: [r[0], r[1], [r[2][0], "n/a", *r[2][2:]], [r[3][0]], *r[4:]])
    _rewrite(root / "VolumeTracings.csv", lambda r: [r[0], [r[1][0][:-4], *r[1][1:]], *r[2:]])
    t = read_dataset("echonet-dynamic", str(root))
    by_code: dict[str, list] = {}
    for r in t.rejects:
        by_code.setdefault(r.code, []).append(r)
    assert [r.path for r in by_code["missing_video"]] == [f"Videos/{rows[1][0]}.avi"]
    assert [r.path for r in by_code["unlisted_video"]] == ["Videos/0XSTRAY.avi"]
    reasons = " | ".join(r.reason for r in by_code["bad_row"])
    assert "EF 'n/a' is not a number" in reasons and "has 1 fields, the header 9" in reasons
    assert "VolumeTracings.csv line 2" in reasons and "no '.avi' suffix" in reasons
    assert len(t.videos) == 5


def test_unknown_options_and_datasets_are_errors(standins):
    with pytest.raises(DatasetOptionError, match="unknown dataset option 'fold'"):
        read_dataset("echonet-dynamic", str(standins["echonet-dynamic"]), ["fold=1"])
    with pytest.raises(ValueError, match="known datasets"):
        read_dataset("echonet", str(standins["echonet-dynamic"]))
    with pytest.raises(DatasetLayoutError, match="does not exist"):
        read_dataset("echonet-dynamic", str(standins["echonet-dynamic"] / "nowhere"))


# ---------------------------------------------------------------- EchoNet-Pediatric


def test_pediatric_standin_is_the_published_layout(standins):
    root = standins["echonet-pediatric"]
    for view in ("A4C", "PSAX"):
        assert (root / view / "FileList.csv").read_text().splitlines()[0] == PEDS_FILELIST
        assert (root / view / "VolumeTracings.csv").read_text().splitlines()[0] == PEDS_TRACINGS
        files = _rows(root / view / "FileList.csv")[1:]
        assert all(r[0].endswith(".avi") and r[0].count("-") == 2 for r in files)
        assert all(r[6].isdigit() and 0 <= int(r[6]) <= 9 for r in files)
        assert all((root / view / "Videos" / r[0]).is_file() for r in files)
    traces = _rows(root / "A4C" / "VolumeTracings.csv")[1:] + _rows(root / "PSAX" / "VolumeTracings.csv")[1:]
    missing = [r for r in traces if r[3].startswith("No ")]
    assert missing and all(r[1] == r[2] == "" and r[3] in ("No Systolic", "No Diastolic") for r in missing)


def test_pediatric_adapter_groups_visits_and_splits_by_fold(standins):
    root = standins["echonet-pediatric"]
    t = read_dataset("echonet-pediatric", str(root))
    assert not t.rejects and t.options == {"fold": 0}
    folds = {}
    for view in ("A4C", "PSAX"):
        for r in _rows(root / view / "FileList.csv")[1:]:
            folds[r[0].split("-")[0]] = int(r[6])
    expect = {0: "test", 1: "val"}
    for v in t.videos:
        assert v["split"] == expect.get(folds[v["patient_id"]], "train")
        assert v["study_id"].startswith(v["patient_id"] + "-") and v["path"].startswith(
            {"A4C": "A4C/Videos/", "Parasternal_Short": "PSAX/Videos/"}[v["view"]]
        )
    views = {}
    for v in t.videos:
        views.setdefault(v["study_id"], set()).add(v["view"])
    assert any(len(s) == 2 for s in views.values())  # a visit's A4C and PSAX videos are one study
    assert {s["study_id"] for s in t.studies} == set(views)
    labels = t.labels_of(t.studies[0]["study_id"])
    assert set(labels) == {"ejection_fraction", "age", "weight", "height", "sex_female"}
    t3 = read_dataset("echonet-pediatric", str(root), {"fold": 3})
    assert all(v["split"] == ({3: "test", 4: "val"}.get(folds[v["patient_id"]], "train")) for v in t3.videos)
    with pytest.raises(DatasetOptionError, match="fold must be an integer 0-9"):
        read_dataset("echonet-pediatric", str(root), ["fold=10"])
    n, rejects = _decode_all(t)
    assert n == len(t.videos) and not rejects


def test_pediatric_rejects_tidier_layouts_and_conflicts(standins, tmp_path):
    root = _copy(standins["echonet-pediatric"], tmp_path)
    rows = _rows(root / "A4C" / "FileList.csv")
    psax = {r[0].rsplit("-", 1)[0]: r for r in _rows(root / "PSAX" / "FileList.csv")[1:]}
    visit = next(r for r in rows[1:] if r[0].rsplit("-", 1)[0] in psax)  # a visit with both views
    _rewrite(
        root / "A4C" / "FileList.csv",
        lambda rs: [rs[0], *[
            [r[0][:-4], *r[1:]] if i == 0 else [*r[:6], "TRAIN"] if i == 1 else r
            for i, r in enumerate(x for x in rs[1:] if x[0] != visit[0])
        ]],
    )  # fmt: skip
    _rewrite(root / "PSAX" / "FileList.csv", lambda rs: [rs[0], *[[r[0], str(float(r[1]) + 7), *r[2:]] if r[0].rsplit("-", 1)[0] == visit[0].rsplit("-", 1)[0] else r for r in rs[1:]]])  # fmt: skip
    # the A4C row of that visit comes back last, so the PSAX one (read after A4C) conflicts with it
    with open(root / "A4C" / "FileList.csv", "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(visit)
    t = read_dataset("echonet-pediatric", str(root))
    reasons = " | ".join(r.reason for r in t.rejects)
    assert "is not '<patient>-<accession>-<instance>.avi'" in reasons
    assert "Split 'TRAIN' is not an integer fold 0-9" in reasons
    assert any(r.code == "conflict" and "gives EF" in r.reason for r in t.rejects)


# ---------------------------------------------------------------- EchoNet-LVH


def test_lvh_standin_is_the_published_layout(standins):
    root = standins["echonet-lvh"]
    rows = _rows(root / "MeasurementsList.csv")
    assert ",".join(rows[0]) == LVH_HEADER
    assert [int(r[0]) for r in rows[1:]] == list(range(len(rows) - 1))  # the unnamed index column
    per_video = {}
    for r in rows[1:]:
        per_video.setdefault(r[1], []).append(r[2])
        assert r[13] in ("train", "val", "test") and not r[1].endswith(".avi")
    assert all(
        sorted(c) == ["IVSd", "LVIDd", "LVIDs", "LVPWd"] for c in per_video.values()
    )  # one row per measurement
    batches = {p.parent.name for p in root.glob("Batch*/*.avi")}
    assert batches <= {"Batch1", "Batch2", "Batch3", "Batch4"} and len(batches) == 4
    with av.open(str(next(root.glob("Batch1/*.avi")))) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "mjpeg" and (s.height, s.width) == (300, 400)


def test_lvh_adapter_reads_measurements(standins):
    t = read_dataset("echonet-lvh", str(standins["echonet-lvh"]))
    assert len(t.videos) == 6 and not t.rejects
    rows = _rows(standins["echonet-lvh"] / "MeasurementsList.csv")[1:]
    for v in t.videos:
        assert v["view"] == "Parasternal_Long" and v["path"].startswith("Batch")
        mine = {r[2]: float(r[3]) for r in rows if r[1] == v["study_id"]}
        assert t.labels_of(v["study_id"]) == pytest.approx(mine)
        assert v["split"] == next(r[13] for r in rows if r[1] == v["study_id"])
    n, rejects = _decode_all(t)
    assert n == 6 and not rejects


def test_lvh_rejects_tidier_layouts(standins, tmp_path):
    root = _copy(standins["echonet-lvh"], tmp_path)
    _rewrite(
        root / "MeasurementsList.csv",
        lambda rs: [[*r[:13], r[13].upper()] if i == 1 else r for i, r in enumerate(rs)],
    )
    t = read_dataset("echonet-lvh", str(root))
    assert any("lower case" in r.reason for r in t.rejects)
    # without the unnamed index column (a tidier table than the published one)
    _rewrite(root / "MeasurementsList.csv", lambda rs: [r[1:] for r in rs])
    with pytest.raises(DatasetLayoutError, match="no unnamed index column first"):
        read_dataset("echonet-lvh", str(root))


def test_lvh_duplicate_measurements_keep_the_first_row(standins, tmp_path):
    root = _copy(standins["echonet-lvh"], tmp_path)
    rows = _rows(root / "MeasurementsList.csv")
    extra = [str(len(rows) - 1), rows[1][1], rows[1][2], "9.99", *rows[1][4:]]
    with open(root / "MeasurementsList.csv", "a", newline="") as f:
        csv.writer(f, lineterminator="\n").writerow(extra)
    t = read_dataset("echonet-lvh", str(root))
    assert t.labels_of(rows[1][1])[rows[1][2]] == float(rows[1][3])
    assert json.loads(next(s["labels"] for s in t.studies if s["study_id"] == rows[1][1]))
