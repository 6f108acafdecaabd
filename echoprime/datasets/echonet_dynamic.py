"""EchoNet-Dynamic as published: ``FileList.csv``, ``VolumeTracings.csv``, ``Videos/*.avi``.

Layout (confirmed against the dataset's own loader, echonet/dynamic ``echonet/datasets/echo.py``,
which appends ``.avi`` to FileList's names and reads VolumeTracings' names as they are)::

    FileList.csv         FileName,EF,ESV,EDV,FrameHeight,FrameWidth,FPS,NumberOfFrames,Split
                         FileName without ".avi" (0X100009310A3BD7FC); Split TRAIN / VAL / TEST
    VolumeTracings.csv   FileName,X1,Y1,X2,Y2,Frame
                         FileName with ".avi"; per traced frame (ES first, ED last) one long-axis
                         line and 20 chords, Frame a 0-based frame index
    Videos/<FileName>.avi  MJPG, 112 x 112, one apical 4-chamber video per patient

Each video is its own study and patient (10 030 videos of as many patients). EF comes from
FileList.csv; VolumeTracings.csv is checked (header, ``.avi`` names, integer frames) and counted,
but a video without tracings is kept: the labels do not depend on them (the dataset's loader drops
such videos for its segmentation targets only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from echoprime.datasets.base import DatasetReject as Reject
from echoprime.datasets.base import (
    DatasetRoot,
    DatasetTables,
    check_fields,
    dump_labels,
    number,
    optional_number,
    read_csv,
    require_usable,
    unlisted,
)

NAME = "echonet-dynamic"
TITLE = "EchoNet-Dynamic"
VIEW = "A4C"
FILELIST_COLUMNS = (
    "FileName",
    "EF",
    "ESV",
    "EDV",
    "FrameHeight",
    "FrameWidth",
    "FPS",
    "NumberOfFrames",
    "Split",
)
TRACING_COLUMNS = ("FileName", "X1", "Y1", "X2", "Y2", "Frame")
SPLITS = {"TRAIN": "train", "VAL": "val", "TEST": "test"}
LABELS: dict[str, str] = {
    "ejection_fraction": "% (FileList.csv EF)",
    "esv": "mL, LV end-systolic volume (FileList.csv ESV)",
    "edv": "mL, LV end-diastolic volume (FileList.csv EDV)",
}
OPTIONS: dict[str, str] = {}


def read(root: DatasetRoot, options: Mapping[str, str], split_fractions: Any = None) -> DatasetTables:
    """The videos and studies tables of an EchoNet-Dynamic folder (see the module docstring)."""
    del split_fractions  # the dataset has its own split
    out = DatasetTables(NAME, root.uri, options=dict(options))
    files = read_csv(root, "FileList.csv", FILELIST_COLUMNS, published=",".join(FILELIST_COLUMNS))
    on_disk = {f for f in root.under("Videos") if f.lower().endswith(".avi")}
    listed: set[str] = set()
    named: set[str] = set()
    for line, row in files.rows:
        where = files.where(line)
        name = row["FileName"]
        rel = f"Videos/{name}.avi"
        named.add(f"Videos/{name}" if name.lower().endswith(".avi") else rel)
        bad = check_fields(row, files.header)
        if not bad and not name:
            bad = "FileName is empty"
        elif not bad and name.lower().endswith(".avi"):
            bad = (
                f"FileName {name!r} has the '.avi' suffix; EchoNet-Dynamic's FileList.csv names videos "
                "without it (VolumeTracings.csv is the table that has it)"
            )
        split = SPLITS.get(row["Split"])
        if not bad and split is None:
            bad = f"Split {row['Split']!r} is not one of {list(SPLITS)} (the published values, upper case)"
        labels: dict[str, float | None] = {}
        if not bad:
            try:
                labels = {
                    "ejection_fraction": number(row["EF"], "EF"),
                    "esv": optional_number(row["ESV"], "ESV"),
                    "edv": optional_number(row["EDV"], "EDV"),
                }
                fps = optional_number(row["FPS"], "FPS")
            except ValueError as e:
                bad = str(e)
        if bad:
            out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row"))
            continue
        if rel in listed:
            out.rejects.append(
                Reject(where, f"{where}: {rel} is listed a second time (the first row is used)", "conflict")
            )
            continue
        listed.add(rel)
        if rel not in on_disk:
            out.rejects.append(
                Reject(rel, f"{where} names {rel}, which is not on disk", "missing_video", rel)
            )
            continue
        out.videos.append(
            {"path": rel, "study_id": name, "view": VIEW, "patient_id": name, "split": split, "fps": fps}
        )
        out.studies.append(
            {
                "study_id": name,
                "report": "",
                "labels": dump_labels(labels),
                "patient_id": name,
                "split": split,
            }
        )
    require_usable(NAME, files, len(listed), out.rejects)
    out.rejects.extend(unlisted(on_disk, {v["path"] for v in out.videos}, "FileList.csv", named))
    if root.has("VolumeTracings.csv"):
        out.notes["traced_videos"] = _tracings(root, out, {v["path"].split("/")[-1] for v in out.videos})
    else:
        out.notes["traced_videos"] = "VolumeTracings.csv is absent (not needed for the labels)"
    return out


def _tracings(root: DatasetRoot, out: DatasetTables, names: set[str]) -> int:
    """Check VolumeTracings.csv; the number of ingested videos with at least two traced frames."""
    t = read_csv(root, "VolumeTracings.csv", TRACING_COLUMNS, published=",".join(TRACING_COLUMNS))
    frames: dict[str, set[int]] = {}
    for line, row in t.rows:
        where = t.where(line)
        name = row["FileName"]
        bad = check_fields(row, t.header)
        if not bad and not name.lower().endswith(".avi"):
            bad = f"FileName {name!r} has no '.avi' suffix; EchoNet-Dynamic's VolumeTracings.csv names videos with it"
        if not bad:
            try:
                for c in ("X1", "Y1", "X2", "Y2"):
                    number(row[c], c)
                frame = int(row["Frame"])
            except ValueError:
                bad = f"Frame {row['Frame']!r} or a coordinate is not a number"
        if bad:
            out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row"))
            continue
        frames.setdefault(name, set()).add(frame)
    require_usable(NAME, t, len(frames), out.rejects)
    return sum(1 for n in names if len(frames.get(n, ())) >= 2)
