"""CAMUS as published, in either release: the NIfTI one (``CAMUS_public``) or the 2019 MetaImage one.

NIfTI release (the dataset root is the ``CAMUS_public`` folder)::

    database_nifti/patientNNNN/Info_2CH.cfg, Info_4CH.cfg        "Key: value" lines: ED, ES (1-indexed),
                                                                 NbFrame, Sex, Age, ImageQuality, EF, FrameRate
    database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_half_sequence.nii.gz      the cine, ED -> ES
    database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].nii.gz       stills and masks
    database_nifti/patientNNNN/patientNNNN_{2CH,4CH}_half_sequence_gt.nii.gz   masks
    database_split/subgroup_{training,validation,testing}.txt     one patient id a line

2019 release (the dataset root holds ``training/`` and ``testing/``)::

    training/patientNNNN/Info_{2CH,4CH}.cfg        ED, ES, NbFrame, Sex, Age, ImageQuality, LVedv, LVesv, LVef
    training/patientNNNN/patientNNNN_{2CH,4CH}_sequence.mhd (+ .raw)       the cine, ED -> ES
    training/patientNNNN/patientNNNN_{2CH,4CH}_{ED,ES}[_gt].mhd (+ .raw)   stills and masks
    testing/patientNNNN/...                        the 50 challenge patients, without masks or volumes

(Confirmed against public CAMUS loaders: vital's dataset generator, CardioBench's split builder,
zea's converter.) A study is one patient, with its 2CH (``A2C``) and 4CH (``A4C``) cines. Only the
``_half_sequence`` / ``_sequence`` files are videos; the ED/ES stills and every ``_gt`` mask are
annotations of them and are skipped without a reject (counted in the notes). The cines are read by
:mod:`echoprime.io.sequence` (SimpleITK), with the frame rate from the cfg where it has one.

Splits: the NIfTI release's ``database_split`` lists (train / val / test). The 2019 release has
only the challenge's division: ``testing/`` patients are test (their cfg holds no EF: the
challenge kept it), ``training/`` patients are split train / val by a hash of the patient as
ingest splits an archive (its val share of ``split_fractions``, renormalised). The 2019 numbering
restarts in ``testing/`` (``testing/patient0001`` is not ``training/patient0001``), so there the
study and patient ids carry the folder.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from echoprime.data.shards import assign_split
from echoprime.datasets.base import (
    DatasetLayoutError,
    DatasetOptionError,
    DatasetRoot,
    DatasetTables,
    dump_labels,
    number,
    sex_female,
)
from echoprime.datasets.base import DatasetReject as Reject

NAME = "camus"
TITLE = "CAMUS"
VIEWS = {"2CH": "A2C", "4CH": "A4C"}
RELEASES = ("nifti", "mhd")
SPLIT_FILES = {"training": "train", "validation": "val", "testing": "test"}
QUALITY = {"Poor": 0.0, "Medium": 1.0, "Good": 2.0}
PATIENT = re.compile(r"patient\d{4}")
LABELS: dict[str, str] = {
    "ejection_fraction": "% (cfg EF in the NIfTI release, LVef in 2019; the 4CH cfg's, else the 2CH's)",
    "edv": "mL, LV end-diastolic volume (cfg LVedv, 2019 training only)",
    "esv": "mL, LV end-systolic volume (cfg LVesv, 2019 training only)",
    "age": "years (cfg Age)",
    "sex_female": "1 = F, 0 = M (cfg Sex)",
    "image_quality_2ch": "0 = Poor, 1 = Medium, 2 = Good (Info_2CH.cfg ImageQuality)",
    "image_quality_4ch": "0 = Poor, 1 = Medium, 2 = Good (Info_4CH.cfg ImageQuality)",
}
OPTIONS: dict[str, str] = {
    "release": "nifti (CAMUS_public: database_nifti + database_split) or mhd (2019: training/ + testing/); "
    "default: whichever the folder holds"
}


def parse_cfg(text: str, rel: str) -> tuple[dict[str, str], list[Reject]]:
    """``Key: value`` lines of an ``Info_*.cfg`` (blank lines skipped; others are rejects)."""
    out: dict[str, str] = {}
    rejects = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep or not key.strip():
            rejects.append(
                Reject(
                    f"{rel} line {i}", f"{rel} line {i}: {line.strip()[:60]!r} is not 'Key: value'", "bad_row"
                )
            )
            continue
        out[key.strip()] = value.strip()
    return out, rejects


def _release(root: DatasetRoot, options: Mapping[str, str]) -> str:
    release = options.get("release")
    if release is not None and release not in RELEASES:
        raise DatasetOptionError(f"{NAME}: release must be one of {list(RELEASES)}, got {release!r}")
    has_nifti, has_mhd = (
        bool(root.under("database_nifti")),
        bool(root.under("training") or root.under("testing")),
    )
    if release is None:
        if has_nifti == has_mhd:
            raise DatasetLayoutError(
                f"{NAME}: {root.uri} holds "
                + ("both database_nifti/ and training/ or testing/: say which with release=nifti|mhd" if has_nifti
                   else "neither database_nifti/ (the NIfTI release, CAMUS_public) nor training/ or testing/ (the 2019 release)")
            )  # fmt: skip
        release = "nifti" if has_nifti else "mhd"
    if release == "nifti" and not has_nifti:
        raise DatasetLayoutError(
            f"{NAME}: release=nifti, but {root.uri} has no database_nifti/ (give the CAMUS_public folder)"
        )
    if release == "mhd" and not has_mhd:
        raise DatasetLayoutError(f"{NAME}: release=mhd, but {root.uri} has neither training/ nor testing/")
    return release


def _nifti_splits(root: DatasetRoot) -> tuple[dict[str, str], list[Reject]]:
    splits: dict[str, str] = {}
    rejects = []
    for stem, split in SPLIT_FILES.items():
        rel = f"database_split/subgroup_{stem}.txt"
        root.require(rel, "the NIfTI release's official split: one patient id a line")
        for i, line in enumerate(root.text(rel).splitlines(), start=1):
            pid = line.strip()
            if not pid:
                continue
            if not PATIENT.fullmatch(pid):
                rejects.append(
                    Reject(
                        f"{rel} line {i}",
                        f"{rel} line {i}: {pid[:40]!r} is not a patient id (patientNNNN)",
                        "bad_row",
                    )
                )
            elif splits.setdefault(pid, split) != split:
                rejects.append(
                    Reject(
                        f"{rel} line {i}",
                        f"{rel} line {i}: {pid} is also in the {splits[pid]} list",
                        "conflict",
                    )
                )
    return splits, rejects


def read(
    root: DatasetRoot, options: Mapping[str, str], split_fractions: Any = (0.7, 0.15, 0.15)
) -> DatasetTables:
    """The videos and studies tables of a CAMUS folder (see the module docstring)."""
    release = _release(root, options)
    out = DatasetTables(NAME, root.uri, options={"release": release})
    if release == "nifti":
        splits, rejects = _nifti_splits(root)
        out.rejects.extend(rejects)
        patients = [("database_nifti", p) for p in root.folders("database_nifti")]
    else:
        splits = {}
        patients = [(top, p) for top in ("training", "testing") for p in root.folders(top)]
        train, val = float(split_fractions[0]), float(split_fractions[1])
    skipped = 0
    for top, patient in patients:
        folder = f"{top}/{patient}"
        if not PATIENT.fullmatch(patient):
            out.notes.setdefault("other_folders", []).append(folder)
            continue
        if release == "nifti":
            pid, split = patient, splits.get(patient)
        else:
            pid = folder
            split = "test" if top == "testing" else (
                "train" if assign_split(pid, (train / (train + val), val / (train + val), 0.0)) == "train" else "val"
            )  # fmt: skip
        suffix = "_half_sequence.nii.gz" if release == "nifti" else "_sequence.mhd"
        labels: dict[str, float | None] = {}
        videos = []
        for code, view in VIEWS.items():
            rel = f"{folder}/{patient}_{code}{suffix}"
            cfg_rel = f"{folder}/Info_{code}.cfg"
            if not root.has(rel):
                out.rejects.append(
                    Reject(rel, f"{rel} is missing (the patient's {code} cine)", "missing_video", rel)
                )
                continue
            if not root.has(cfg_rel):
                out.rejects.append(
                    Reject(
                        rel,
                        f"{rel}: its {cfg_rel} is missing (no frame rate, no labels)",
                        "missing_video",
                        rel,
                    )
                )
                continue
            if release == "mhd" and (why := _mhd_data_missing(root, rel)):
                out.rejects.append(Reject(rel, why, "missing_video", rel))
                continue
            info, rejects = parse_cfg(root.text(cfg_rel), cfg_rel)
            out.rejects.extend(rejects)
            fps, view_labels = _cfg_values(info, cfg_rel, release, out)
            labels[f"image_quality_{code.lower()}"] = view_labels.pop("image_quality", None)
            for k, v in view_labels.items():  # the 4CH cfg comes second and wins
                if v is not None:
                    labels[k] = v
            videos.append({"path": rel, "study_id": pid, "view": view, "patient_id": pid, "fps": fps})
        skipped += sum(1 for f in root.under(folder) if _is_annotation(f))
        if not videos:
            continue
        if split is None:
            for v in videos:
                out.rejects.append(
                    Reject(
                        v["path"],
                        f"{v['path']}: its patient is in none of database_split/subgroup_*.txt",
                        "missing_split",
                        v["path"],
                    )
                )
            continue
        for v in videos:
            out.videos.append({**v, "split": split})
        out.studies.append(
            {"study_id": pid, "report": "", "labels": dump_labels(labels), "patient_id": pid, "split": split}
        )
    if not out.videos and not out.rejects:
        raise DatasetLayoutError(
            f"{NAME}: no patientNNNN folder with a cine under {root.uri} ({release} release)"
        )
    out.notes["skipped_stills_and_masks"] = skipped
    return out


def _cfg_values(
    info: Mapping[str, str], rel: str, release: str, out: DatasetTables
) -> tuple[float | None, dict[str, float | None]]:
    """The frame rate and the labels one ``Info_*.cfg`` gives (bad values become rejects)."""
    keys = {
        "ejection_fraction": "EF" if release == "nifti" else "LVef",
        "edv": "LVedv",
        "esv": "LVesv",
        "age": "Age",
    }
    labels: dict[str, float | None] = {}
    for label, key in keys.items():
        if key in info:
            try:
                labels[label] = number(info[key], key)
            except ValueError as e:
                out.rejects.append(Reject(rel, f"{rel}: {e}", "bad_row"))
    if "Sex" in info:
        labels["sex_female"] = sex_female(info["Sex"])
    quality = info.get("ImageQuality")
    if quality is not None and quality not in QUALITY:
        out.rejects.append(
            Reject(rel, f"{rel}: ImageQuality {quality!r} is not one of {list(QUALITY)}", "bad_row")
        )
    labels["image_quality"] = QUALITY.get(quality or "")
    fps = None
    if "FrameRate" in info:
        try:
            fps = number(info["FrameRate"], "FrameRate")
        except ValueError as e:
            out.rejects.append(Reject(rel, f"{rel}: {e}", "bad_row"))
    return fps, labels


def _is_annotation(rel: str) -> bool:
    """A CAMUS still (``_ED``/``_ES``) or mask (``_gt``) image, not a cine."""
    name = rel.rsplit("/", 1)[-1]
    stem = name.split(".", 1)[0]
    return name.endswith((".mhd", ".nii.gz", ".nii")) and (
        stem.endswith(("_ED", "_ES")) or stem.endswith("_gt")
    )


def _mhd_data_missing(root: DatasetRoot, rel: str) -> str | None:
    """Why a MetaImage header's data file is not there (``None`` when it is, or is embedded)."""
    from echoprime.io.errors import EchoIOError
    from echoprime.io.sequence import metaimage_data_file

    try:
        data = metaimage_data_file(root.read(rel), rel)
    except EchoIOError as e:
        return f"{rel}: {e.reason}"
    if data is None:
        return None
    target = f"{rel.rsplit('/', 1)[0]}/{data}"
    return None if root.has(target) else f"{rel}: its data file {data} is not beside it"
