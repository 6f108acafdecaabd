"""CAMUS and MIMIC-IV-ECHO stand-ins in their published layouts (see :mod:`.standins`).

* CAMUS, NIfTI release (``release=nifti``, the default): ``database_nifti/patientNNNN/`` with the
  two ``Info_{2CH,4CH}.cfg`` (``Key: value``), the ``_half_sequence.nii.gz`` cines (greyscale,
  ED -> ES), their ``_gt`` masks, the ``_ED``/``_ES`` stills and masks; ``database_split`` lists.
  2019 release (``release=mhd``): ``training/`` and ``testing/`` (numbering restarting at 1)
  with ``.mhd`` + ``.raw`` pairs (``_sequence``, stills, masks; no masks and no volumes or EF in
  ``testing/``). Volumes are written with SimpleITK.
* MIMIC-IV-ECHO: ``files/pNN/p<subject>/s<study>/<study>_NNNN.dcm`` (multi-frame ultrasound DICOM,
  mostly JPEG Baseline, and one single-frame still per study, as real studies hold Doppler
  stills), ``echo-record-list.csv``, ``echo-study-list.csv`` and a structured measurements table
  (``structured-measurement.csv.gz``) with each study's ``lvef``.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.data.shards import assign_split
from echoprime.datasets.base import DatasetOptionError
from echoprime.datasets.standins import ed_es, fmt, hex_id, patient, render, write_csv
from echoprime.synth.cohort import sample_views

QUALITIES = ("Good", "Medium", "Poor")


def _grey(frames: np.ndarray, fan: np.ndarray) -> np.ndarray:
    """A CAMUS-like greyscale cine: the B-mode level inside the fan, black outside: ``F x H x W``."""
    return (frames[..., 0] * fan[None]).astype(np.uint8)  # F x H x W x 3 -> F x H x W (grey: R = G = B)


def _masks(n: int, h: int, w: int, scale: np.ndarray) -> np.ndarray:
    """Crude label maps (1 LV cavity, 2 myocardium, 3 left atrium) that shrink with the LV area:
    ``n x H x W`` uint8. They stand in for the annotations, which no adapter reads."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.zeros((n, h, w), np.uint8)
    for k in range(n):
        s = float(scale[k])
        d = ((x - w / 2) / (0.12 * w * s)) ** 2 + ((y - 0.42 * h) / (0.22 * h * s)) ** 2
        out[k][d <= 1.6] = 2
        out[k][d <= 1.0] = 1
        out[k][((x - w / 2) / (0.1 * w)) ** 2 + ((y - 0.75 * h) / (0.1 * h)) ** 2 <= 1.0] = 3
    return out


def _write_volume(path: Path, array: np.ndarray, spacing: tuple[float, ...]) -> None:
    """A 2-D image or a ``T x H x W`` sequence as NIfTI or MetaImage (by suffix) with SimpleITK."""
    import SimpleITK as sitk  # noqa: N813  (the package's own name)

    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)  # numpy t x y x x -> ITK x, y, t
    img.SetSpacing(spacing[: img.GetDimension()])
    sitk.WriteImage(img, str(path), useCompression=False)


def write_camus(
    root: Path, studies: int, seed: int, *, frames: int = 40, size: int = 128, release: str = "nifti"
) -> dict[str, Any]:
    """CAMUS: ``studies`` patients with a 2CH and a 4CH cine each, in the NIfTI or the 2019 release."""
    if release not in ("nifti", "mhd"):
        raise DatasetOptionError(f"camus: release must be nifti or mhd, got {release!r}")
    n_test = max(1, studies // 10) if studies > 2 else 0
    split_lists: dict[str, list[str]] = {"training": [], "validation": [], "testing": []}
    for i in range(studies):
        testing = i >= studies - n_test
        if release == "nifti":
            pid = f"patient{i + 1:04d}"
            folder = root / "database_nifti" / pid
            group = (
                "testing"
                if testing
                else ("validation" if assign_split(pid, (0.85, 0.15, 0.0)) == "val" else "training")
            )
            split_lists[group].append(pid)
        else:
            pid = f"patient{(i - (studies - n_test) if testing else i) + 1:04d}"
            folder = root / ("testing" if testing else "training") / pid
        p = patient("camus", seed, i, pid, pid)
        sex, age = ("F" if p.rng.random() < 0.35 else "M"), int(p.rng.integers(25, 90))
        edv = float(np.clip(p.rng.normal(110 + 30 * p.state.lv_size, 20), 40, 330))
        esv = edv * (1 - p.state.ef / 100)
        for code, view in (("2CH", "A2C"), ("4CH", "A4C")):
            video = render(p, view, frames=frames, size=size)
            ed, es = ed_es(video)
            if es - ed < 2:
                ed, es = 0, video.frames.shape[0] - 1
            seq = _grey(video.frames[ed : es + 1], video.sector_mask)
            area = video.lv_area[ed : es + 1] if video.lv_area is not None else np.ones(len(seq))
            gt = _masks(len(seq), *seq.shape[1:], np.sqrt(area / area.max()))
            quality = QUALITIES[int(p.rng.choice(3, p=[0.45, 0.4, 0.15]))]
            info = {
                "ED": 1,
                "ES": len(seq),
                "NbFrame": len(seq),
                "Sex": sex,
                "Age": age,
                "ImageQuality": quality,
            }
            if release == "nifti":
                info |= {"EF": fmt(p.state.ef, 1), "FrameRate": fmt(video.fps, 1)}
                stem, ext, spacing = f"{pid}_{code}", ".nii.gz", (0.31, 0.31, 1.0)
                _write_volume(folder / f"{stem}_half_sequence{ext}", seq, spacing)
                _write_volume(folder / f"{stem}_half_sequence_gt{ext}", gt, spacing)
            else:
                if not testing:
                    info |= {"LVedv": fmt(edv, 1), "LVesv": fmt(esv, 1), "LVef": fmt(p.state.ef, 1)}
                stem, ext, spacing = f"{pid}_{code}", ".mhd", (0.31, 0.31, 1.0)
                _write_volume(folder / f"{stem}_sequence{ext}", seq, spacing)
            for phase, k in (("ED", 0), ("ES", len(seq) - 1)):
                _write_volume(folder / f"{stem}_{phase}{ext}", seq[k], spacing)
                if release == "nifti" or not testing:
                    _write_volume(folder / f"{stem}_{phase}_gt{ext}", gt[k], spacing)
            (folder / f"Info_{code}.cfg").write_text("".join(f"{k}: {v}\n" for k, v in info.items()))
    if release == "nifti":
        for group, ids in split_lists.items():
            write_csv(root / "database_split" / f"subgroup_{group}.txt", None, [[i] for i in ids])
    return {"videos": 2 * studies, "studies": studies, "release": release}


def write_mimic(root: Path, studies: int, seed: int, *, frames: int = 32, size: int = 96) -> dict[str, Any]:
    """MIMIC-IV-ECHO: ``studies`` patients (one in four with a second study), 3-4 cines and a
    still per study, the two study lists and the structured measurements (``lvef``, ``sinus_diam``)."""
    from echoprime.synth.writers import write_dicom

    records, study_list, measurements = [], [], []
    n_studies = n_files = 0
    for i in range(studies):
        subject = str(10_000_000 + int(hex_id("mimic-subject", seed, i, n=8), 16) % 9_990_000)
        for k in range(2 if i % 4 == 3 else 1):
            study = str(90_000_000 + int(hex_id("mimic-study", seed, i, k, n=8), 16) % 9_999_999)
            p = patient("mimic-echo", seed, 2 * i + k, subject, study)
            n_studies += 1
            when = f"2018-{1 + (i + 5 * k) % 12:02d}-{1 + i % 28:02d} {8 + i % 9:02d}:{(7 * i) % 60:02d}:00"
            folder = Path("files") / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
            views = sample_views(p.rng, 3 + (i % 2))
            uid = f"1.2.826.0.1.3680043.10.{int(study) % 10**9}"
            (root / folder).mkdir(parents=True, exist_ok=True)
            for j, view in enumerate([*views, "Apical_Doppler"], start=1):
                video = render(p, view, frames=frames if j <= len(views) else 1, size=size)
                rel = folder / f"{study}_{j:04d}.dcm"
                jpeg = j % 3 != 0
                write_dicom(
                    root / rel, video.frames, video.fps, study_uid=uid, series_uid=f"{uid}.{j}",
                    sop_uid=f"{uid}.{j}.1", patient_id=subject,
                    photometric="YBR_FULL_422" if jpeg or j % 2 else "RGB", compress=jpeg, series_number=j,
                )  # fmt: skip
                records.append([subject, study, when, rel.as_posix()])
                n_files += 1
            mid = str(40_000_000 + int(hex_id("mimic-measurement", seed, i, k, n=8), 16) % 9_999_999)
            study_list.append([subject, study, when, mid, when, f"{subject}-EC-{k + 1}", k + 1, when])
            diam = 3.1 + 0.2 * p.state.aortic_root + p.rng.normal(0, 0.15)
            measurements += [
                [subject, mid, when, "lvef", "tte", str(p.state.ef), "%"],
                [subject, mid, when, "sinus_diam", "tte", fmt(diam, 1), "cm"],
            ]
    write_csv(
        root / "echo-record-list.csv",
        ["subject_id", "study_id", "acquisition_datetime", "dicom_filepath"],
        records,
    )
    write_csv(
        root / "echo-study-list.csv",
        ["subject_id", "study_id", "study_datetime", "measurement_id", "measurement_datetime", "note_id", "note_seq", "note_charttime"],
        study_list,
    )  # fmt: skip
    tmp = root / "structured-measurement.csv"
    write_csv(tmp, ["subject_id", "measurement_id", "measurement_datetime", "measurement", "test_type", "result", "unit"], measurements)  # fmt: skip
    (root / "structured-measurement.csv.gz").write_bytes(gzip.compress(tmp.read_bytes(), mtime=0))
    tmp.unlink()
    return {"videos": n_files, "studies": n_studies, "patients": studies}
