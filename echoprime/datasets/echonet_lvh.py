"""EchoNet-LVH as published: ``Batch1``-``Batch4/<HashedFileName>.avi`` and ``MeasurementsList.csv``.

Layout (confirmed against the conversion scripts that read the dataset as downloaded, e.g.
zea's ``echonetlvh`` converter and CardioBench's split builder)::

    MeasurementsList.csv   ,HashedFileName,Calc,CalcValue,Frame,X1,X2,Y1,Y2,Frames,FPS,Width,Height,split
                           an unnamed index column first; one row per video per measurement; Calc
                           IVSd, LVIDd, LVPWd, LVIDs, ...; CalcValue in cm; split train / val / test
    Batch1/<HashedFileName>.avi ... Batch4/   parasternal long-axis videos at native resolution

Each video is its own study; the dataset gives no patient id, so the patient is the video (say so
when comparing splits). Labels: every measurement of the video under the dataset's own name
(``IVSd``, ``LVIDd``, ...), in centimetres as the table holds them (published MAEs are in mm:
multiply by 10). A video measured twice for the same Calc keeps the first row, as CardioBench's
evaluation does.
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

NAME = "echonet-lvh"
TITLE = "EchoNet-LVH"
VIEW = "Parasternal_Long"
COLUMNS = (
    "HashedFileName",
    "Calc",
    "CalcValue",
    "Frame",
    "X1",
    "X2",
    "Y1",
    "Y2",
    "Frames",
    "FPS",
    "Width",
    "Height",
    "split",
)
PUBLISHED_HEADER = "," + ",".join(COLUMNS)
BATCHES = ("Batch1", "Batch2", "Batch3", "Batch4")
SPLITS = ("train", "val", "test")
LABELS: dict[str, str] = {
    "IVSd": "cm, interventricular septum in diastole",
    "LVIDd": "cm, LV internal diameter in diastole",
    "LVPWd": "cm, LV posterior wall in diastole",
    "LVIDs": "cm, LV internal diameter in systole",
    "<other Calc>": "cm, any other measurement the table holds, under its Calc name",
}
OPTIONS: dict[str, str] = {}


def read(root: DatasetRoot, options: Mapping[str, str], split_fractions: Any = None) -> DatasetTables:
    """The videos and studies tables of an EchoNet-LVH folder (see the module docstring)."""
    del split_fractions  # the dataset has its own split
    out = DatasetTables(NAME, root.uri, options=dict(options))
    t = read_csv(root, "MeasurementsList.csv", COLUMNS, published=PUBLISHED_HEADER, leading_unnamed=True)
    on_disk: dict[str, str] = {}
    for batch in BATCHES:
        for rel in root.under(batch):
            if rel.lower().endswith(".avi") and rel.count("/") == 1:
                on_disk.setdefault(rel.split("/")[1][: -len(".avi")], rel)
    if not any(root.under(b) for b in BATCHES):
        out.notes["batches"] = f"none of {list(BATCHES)} holds a file"
    videos: dict[str, dict[str, Any]] = {}
    named: set[str] = set()
    for line, row in t.rows:
        where = t.where(line)
        name = row["HashedFileName"]
        if name in on_disk:
            named.add(on_disk[name])
        bad = check_fields(row, t.header)
        if not bad and not name:
            bad = "HashedFileName is empty"
        elif not bad and name.lower().endswith(".avi"):
            bad = f"HashedFileName {name!r} has the '.avi' suffix; EchoNet-LVH names videos without it"
        if not bad and row["split"] not in SPLITS:
            bad = f"split {row['split']!r} is not one of {list(SPLITS)} (the published values, lower case)"
        if not bad and not row["Calc"]:
            bad = "Calc is empty"
        value = fps = None
        if not bad:
            try:
                value = number(row["CalcValue"], "CalcValue")
                fps = optional_number(row["FPS"], "FPS")
            except ValueError as e:
                bad = str(e)
        if bad:
            out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row"))
            continue
        v = videos.setdefault(name, {"split": row["split"], "where": where, "labels": {}, "fps": fps})
        if v["split"] != row["split"]:
            out.rejects.append(
                Reject(
                    where,
                    f"{where}: split {row['split']!r} for {name}, but {v['where']} gave {v['split']!r}",
                    "conflict",
                )
            )
            continue
        v["labels"].setdefault(row["Calc"], value)
    require_usable(NAME, t, len(videos), out.rejects)
    for name, v in sorted(videos.items()):
        rel = on_disk.get(name)
        if rel is None:
            out.rejects.append(
                Reject(
                    f"{name}.avi",
                    f"{v['where']} names {name}.avi, which is in none of {list(BATCHES)}",
                    "missing_video",
                )
            )
            continue
        out.videos.append(
            {
                "path": rel,
                "study_id": name,
                "view": VIEW,
                "patient_id": name,
                "split": v["split"],
                "fps": v["fps"],
            }
        )
        out.studies.append(
            {
                "study_id": name,
                "report": "",
                "labels": dump_labels(v["labels"]),
                "patient_id": name,
                "split": v["split"],
            }
        )
    used = {v["path"] for v in out.videos}
    out.rejects.extend(unlisted(on_disk.values(), used, "MeasurementsList.csv", named))
    return out
