"""EchoNet-Pediatric as published: ``A4C/`` and ``PSAX/``, each a FileList, tracings and videos.

Layout (confirmed against the authors' own scripts, which write and read these files)::

    A4C/FileList.csv        FileName,EF,Sex,Age,Weight,Height,Split
    PSAX/FileList.csv       FileName "<patient>-<accession>-<instance, 6 digits>.avi" (with ".avi");
                            Split an integer fold 0-9, one per patient; EF one per visit
    A4C/VolumeTracings.csv  FileName,X,Y,Frame (FileName with ".avi"); a systolic then a diastolic
    PSAX/VolumeTracings.csv tracing; "<file>,,,No Systolic" / "No Diastolic" where one is missing
    A4C/Videos/*.avi        112 x 112 (cropped, masked and scaled as EchoNet-Dynamic's)
    PSAX/Videos/*.avi

A study is one visit (``<patient>-<accession>``): its A4C and PSAX videos together, the visit's EF
as the label (both lists give the same EF for a visit; a row that disagrees is a ``conflict``).
The patient is the first part of the name. Split: the authors' protocol with the fold as an option
(``fold=i``, default 0): fold ``i`` is test, fold ``i+1`` (mod 10) val, the other eight train.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from echoprime.datasets.base import (
    DatasetOptionError,
    DatasetRoot,
    DatasetTables,
    check_fields,
    dump_labels,
    number,
    optional_number,
    read_csv,
    require_usable,
    sex_female,
    unlisted,
)
from echoprime.datasets.base import DatasetReject as Reject

NAME = "echonet-pediatric"
TITLE = "EchoNet-Pediatric"
VIEWS = {"A4C": "A4C", "PSAX": "Parasternal_Short"}
FILELIST_COLUMNS = ("FileName", "EF", "Sex", "Age", "Weight", "Height", "Split")
TRACING_COLUMNS = ("FileName", "X", "Y", "Frame")
MISSING_TRACING = ("No Systolic", "No Diastolic")
FOLDS = 10
FILE_NAME = re.compile(r"(?P<patient>[^-/]+)-(?P<accession>[^-/]+)-(?P<instance>\d+)\.avi")
LABELS: dict[str, str] = {
    "ejection_fraction": "% (FileList.csv EF, one per visit)",
    "age": "years (FileList.csv Age)",
    "weight": "kg (FileList.csv Weight)",
    "height": "cm (FileList.csv Height)",
    "sex_female": "1 = F, 0 = M (FileList.csv Sex)",
}
OPTIONS: dict[str, str] = {
    "fold": "the test fold 0-9 of the authors' protocol (default 0): fold i test, i+1 val, the rest train"
}


def fold_split(fold: int, test_fold: int) -> str:
    """The split of a patient in ``fold`` when ``test_fold`` is the test fold."""
    if fold == test_fold:
        return "test"
    return "val" if fold == (test_fold + 1) % FOLDS else "train"


def read(root: DatasetRoot, options: Mapping[str, str], split_fractions: Any = None) -> DatasetTables:
    """The videos and studies tables of an EchoNet-Pediatric folder (see the module docstring)."""
    del split_fractions  # the dataset has its own folds
    try:
        test_fold = int(options.get("fold", "0"))
    except ValueError:
        test_fold = -1
    if not 0 <= test_fold < FOLDS:
        raise DatasetOptionError(f"{NAME}: fold must be an integer 0-9, got {options.get('fold')!r}")
    out = DatasetTables(NAME, root.uri, options={"fold": test_fold})
    studies: dict[str, dict[str, Any]] = {}
    patient_fold: dict[str, tuple[int, str]] = {}
    for view_dir, view in VIEWS.items():
        files = read_csv(
            root, f"{view_dir}/FileList.csv", FILELIST_COLUMNS, published=",".join(FILELIST_COLUMNS)
        )
        on_disk = {f for f in root.under(f"{view_dir}/Videos") if f.lower().endswith(".avi")}
        listed: set[str] = set()
        named: set[str] = set()
        for line, row in files.rows:
            where = files.where(line)
            name = row["FileName"]
            rel = f"{view_dir}/Videos/{name}"
            named.add(rel)
            m = FILE_NAME.fullmatch(name)
            bad = check_fields(row, files.header)
            if not bad and m is None:
                bad = (
                    f"FileName {name!r} is not '<patient>-<accession>-<instance>.avi' (EchoNet-Pediatric's "
                    "names carry the '.avi' suffix and the patient and visit)"
                )
            try:
                fold = int(row["Split"])
            except ValueError:
                fold = -1
            if not bad and not 0 <= fold < FOLDS:
                bad = f"Split {row['Split']!r} is not an integer fold 0-9 (EchoNet-Pediatric's folds)"
            labels: dict[str, float | None] = {}
            if not bad:
                try:
                    labels = {
                        "ejection_fraction": number(row["EF"], "EF"),
                        "age": optional_number(row["Age"], "Age"),
                        "weight": optional_number(row["Weight"], "Weight"),
                        "height": optional_number(row["Height"], "Height"),
                        "sex_female": sex_female(row["Sex"]),
                    }
                except ValueError as e:
                    bad = str(e)
            if bad:
                out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row"))
                continue
            assert m is not None
            patient, study = m["patient"], f"{m['patient']}-{m['accession']}"
            if rel in listed:
                out.rejects.append(
                    Reject(
                        where, f"{where}: {rel} is listed a second time (the first row is used)", "conflict"
                    )
                )
                continue
            listed.add(rel)
            first = patient_fold.setdefault(patient, (fold, where))
            if first[0] != fold:
                out.rejects.append(
                    Reject(
                        rel,
                        f"{where}: {rel} is in fold {fold}, but {first[1]} put its patient in fold {first[0]}",
                        "conflict",
                        rel,
                    )
                )
                continue
            known = studies.get(study)
            if known is not None and known["labels"]["ejection_fraction"] != labels["ejection_fraction"]:
                out.rejects.append(
                    Reject(
                        rel,
                        f"{where}: {rel} gives EF {labels['ejection_fraction']} for its visit, {known['where']} "
                        f"gave {known['labels']['ejection_fraction']}",
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
            split = fold_split(fold, test_fold)
            if known is None:
                studies[study] = {"labels": labels, "patient": patient, "split": split, "where": where}
            out.videos.append(
                {
                    "path": rel,
                    "study_id": study,
                    "view": view,
                    "patient_id": patient,
                    "split": split,
                    "fps": None,
                }
            )
        require_usable(NAME, files, len(listed), out.rejects)
        used = {v["path"] for v in out.videos}
        out.rejects.extend(unlisted(on_disk, used, f"{view_dir}/FileList.csv", named))
        if root.has(f"{view_dir}/VolumeTracings.csv"):
            _tracings(root, out, view_dir)
    out.studies = [
        {
            "study_id": s,
            "report": "",
            "labels": dump_labels(d["labels"]),
            "patient_id": d["patient"],
            "split": d["split"],
        }
        for s, d in sorted(studies.items())
    ]
    return out


def _tracings(root: DatasetRoot, out: DatasetTables, view_dir: str) -> None:
    """Check one VolumeTracings.csv (header, ``.avi`` names, integer frames or the two "No ..." words)."""
    t = read_csv(root, f"{view_dir}/VolumeTracings.csv", TRACING_COLUMNS, published=",".join(TRACING_COLUMNS))
    traced: set[str] = set()
    missing = 0
    for line, row in t.rows:
        where = t.where(line)
        bad = check_fields(row, t.header)
        if not bad and not row["FileName"].lower().endswith(".avi"):
            bad = f"FileName {row['FileName']!r} has no '.avi' suffix (EchoNet-Pediatric's tracings name videos with it)"
        if not bad and row["Frame"] in MISSING_TRACING:
            missing += 1
            continue
        if not bad:
            try:
                int(row["Frame"])
                number(row["X"], "X")
                number(row["Y"], "Y")
            except ValueError:
                bad = f"Frame {row['Frame']!r} is neither a frame number nor one of {list(MISSING_TRACING)}, or X/Y is not a number"
        if bad:
            out.rejects.append(Reject(where, f"{where}: {bad}", "bad_row"))
            continue
        traced.add(row["FileName"])
    out.notes[f"{view_dir}_traced_videos"] = len(traced)
    out.notes[f"{view_dir}_missing_tracings"] = missing
