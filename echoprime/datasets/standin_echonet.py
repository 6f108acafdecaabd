"""EchoNet stand-ins: Dynamic, Pediatric and LVH in their published layouts (see :mod:`.standins`).

What each writes, quirks included (the adapters' docstrings say where each fact comes from):

* Dynamic: ``Videos/<0X...>.avi`` (MJPG, 112 x 112, masked outside the fan), ``FileList.csv``
  (names without ``.avi``, EF/ESV/EDV with up to 8 decimals, Split ``TRAIN``/``VAL``/``TEST``)
  and ``VolumeTracings.csv`` (names with ``.avi``; ES then ED, a long axis and 20 chords each).
* Pediatric: ``A4C/`` and ``PSAX/``, each ``Videos/``, ``FileList.csv`` (names
  ``<patient>-<accession>-<instance>.avi``, integer folds per patient) and ``VolumeTracings.csv``
  (``X,Y`` contour points, systolic then diastolic, ``<file>,,,No Systolic`` where one is missing).
* LVH: ``Batch1``-``Batch4/<0X...>.avi`` (MJPG at the rendered size, masked) and
  ``MeasurementsList.csv`` (an unnamed index column, one row per video per measurement, lower-case
  split).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.data.shards import assign_split
from echoprime.datasets.standins import (
    ed_es,
    fmt,
    hex_id,
    masked,
    patient,
    render,
    square,
    write_csv,
    write_mjpg_avi,
)

SIDE = 112


def _volumes(p: Any) -> tuple[float, float, float]:
    """EF (%), ESV and EDV (mL) of a stand-in patient: EF is the state's, EDV grows with the LV's
    dilation grade, ESV follows from both."""
    s = p.state
    edv = float(np.clip(p.rng.normal(95.0 + 30.0 * s.lv_size, 18.0), 35.0, 320.0))
    esv = edv * (1.0 - s.ef / 100.0)
    return 100.0 * (edv - esv) / edv, esv, edv


def _chords(cx: float, top: float, length: float, width: float, n: int = 20) -> list[tuple[float, ...]]:
    """A Simpson's-method tracing as EchoNet stores it: the long axis, then ``n`` chords."""
    rows = [(cx, top, cx, top + length)]
    for k in range(1, n + 1):
        y = top + length * k / (n + 1)
        half = 0.5 * width * math.sqrt(max(0.0, 1.0 - (2.0 * (y - top) / length - 1.0) ** 2))
        rows.append((cx - half, y, cx + half, y))
    return rows


def write_dynamic(
    root: Path, studies: int, seed: int, *, frames: int = 48, size: int = 112
) -> dict[str, Any]:
    """EchoNet-Dynamic: ``studies`` videos, one patient each."""
    filelist, tracings = [], []
    for i in range(studies):
        name = "0X" + hex_id("echonet-dynamic", seed, i)
        p = patient("echonet-dynamic", seed, i, name, name)
        video = render(p, "A4C", frames=frames, size=size)
        clip = square(masked(video), SIDE)
        write_mjpg_avi(root / "Videos" / f"{name}.avi", clip, round(video.fps))
        ef, esv, edv = _volumes(p)
        split = {"train": "TRAIN", "val": "VAL", "test": "TEST"}[assign_split(name)]
        filelist.append([name, fmt(ef), fmt(esv), fmt(edv), SIDE, SIDE, round(video.fps), len(clip), split])
        ed, es = ed_es(video)
        area = video.lv_area if video.lv_area is not None else np.ones(len(clip))
        for frame in (es, ed):  # the smaller (systolic) tracing first, as the dataset's loader expects
            s = math.sqrt(float(area[frame]) / float(area.max()))
            for x1, y1, x2, y2 in _chords(56.0 + p.rng.normal(0, 2), 20.0, 60.0 * s, 34.0 * s):
                tracings.append([f"{name}.avi", fmt(x1), fmt(y1), fmt(x2), fmt(y2), frame])
    write_csv(root / "FileList.csv", ["FileName", "EF", "ESV", "EDV", "FrameHeight", "FrameWidth", "FPS", "NumberOfFrames", "Split"], filelist)  # fmt: skip
    write_csv(root / "VolumeTracings.csv", ["FileName", "X1", "Y1", "X2", "Y2", "Frame"], tracings)
    return {"videos": studies, "studies": studies}


def _contour(cx: float, cy: float, rx: float, ry: float, n: int = 24) -> list[tuple[int, int]]:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [(int(round(cx + rx * math.cos(a))), int(round(cy + ry * math.sin(a)))) for a in t]


def write_pediatric(
    root: Path, studies: int, seed: int, *, frames: int = 48, size: int = 112
) -> dict[str, Any]:
    """EchoNet-Pediatric: ``studies`` patients, some with two visits, each visit an A4C and (most)
    a PSAX video."""
    lists: dict[str, list[list[Any]]] = {"A4C": [], "PSAX": []}
    traces: dict[str, list[list[Any]]] = {"A4C": [], "PSAX": []}
    n_videos = n_visits = 0
    for i in range(studies):
        pid = "CR" + hex_id("echonet-pediatric", seed, i, n=7).lower()
        fold = int(hex_id("fold", seed, i, n=8), 16) % 10
        visits = 2 if i % 5 == 4 else 1
        for v in range(visits):
            acc = "CR" + hex_id("accession", seed, i, v, n=7).lower()
            p = patient("echonet-pediatric", seed, 2 * i + v, pid, f"{pid}-{acc}")
            age = int(p.rng.integers(0, 19))
            height = float(np.clip(55 + 6.5 * age + p.rng.normal(0, 6), 45, 200))
            weight = float(np.clip(4 + 0.9 * age**1.45 + p.rng.normal(0, 3), 2.5, 120))
            sex = "F" if p.rng.random() < 0.43 else "M"
            n_visits += 1
            for view_dir, view in (("A4C", "A4C"), ("PSAX", "Parasternal_Short")):
                if view_dir == "PSAX" and (i + v) % 6 == 5:
                    continue  # not every visit has both views
                instance = int(p.rng.integers(1, 200))
                name = f"{pid}-{acc}-{instance:06d}.avi"
                video = render(p, view, frames=frames, size=size)
                clip = square(masked(video), SIDE)
                write_mjpg_avi(root / view_dir / "Videos" / name, clip, round(video.fps))
                n_videos += 1
                lists[view_dir].append([name, p.state.ef, sex, age, fmt(weight, 1), fmt(height, 1), fold])
                ed, es = ed_es(video)
                for label, frame in (("Systolic", es), ("Diastolic", ed)):
                    if (n_videos + (label == "Diastolic")) % 7 == 0:
                        traces[view_dir].append([name, "", "", f"No {label}"])
                        continue
                    r = 14.0 if label == "Systolic" else 18.0
                    for x, y in _contour(56, 58, r, r * 1.6 if view == "A4C" else r):
                        traces[view_dir].append([name, x, y, frame])
    for view_dir in lists:
        write_csv(
            root / view_dir / "FileList.csv",
            ["FileName", "EF", "Sex", "Age", "Weight", "Height", "Split"],
            lists[view_dir],
        )
        write_csv(root / view_dir / "VolumeTracings.csv", ["FileName", "X", "Y", "Frame"], traces[view_dir])
    return {"videos": n_videos, "studies": n_visits, "patients": studies}


def _lvh_measurements(p: Any) -> dict[str, float]:
    """Wall thicknesses and diameters (cm) of a stand-in patient from what the renderer draws: the
    LV dilation grade sets the diameter, amyloidosis thickens the walls and shrinks the cavity,
    the EF sets systolic shortening."""
    s, rng = p.state, p.rng
    lvidd = 4.5 + 0.45 * s.lv_size - (0.6 if s.amyloidosis else 0.0) + rng.normal(0, 0.2)
    wall = 0.9 + (0.65 if s.amyloidosis else 0.0)
    fs = 1.0 - (1.0 - s.ef / 100.0) ** (1.0 / 3.0)  # fractional shortening of a cavity that keeps its shape
    return {
        "IVSd": round(float(wall + rng.normal(0, 0.08)), 2),
        "LVIDd": round(float(lvidd), 2),
        "LVPWd": round(float(wall - 0.05 + rng.normal(0, 0.08)), 2),
        "LVIDs": round(float(lvidd * (1.0 - fs)), 2),
    }


def write_lvh(root: Path, studies: int, seed: int, *, frames: int = 32, size: int = 300) -> dict[str, Any]:
    """EchoNet-LVH: ``studies`` parasternal long-axis videos at the rendered size, in 4 batches."""
    rows: list[list[Any]] = []
    for i in range(studies):
        name = "0X" + hex_id("echonet-lvh", seed, i)
        p = patient("echonet-lvh", seed, i, name, name)
        video = render(p, "Parasternal_Long", frames=frames, size=size)
        clip = masked(video)
        fps = round(video.fps)
        write_mjpg_avi(root / f"Batch{1 + i % 4}" / f"{name}.avi", clip, fps)
        n, h, w = clip.shape[:3]
        ed, es = ed_es(video)
        split = assign_split(name)
        px_cm = h / 16.0
        for calc, value in _lvh_measurements(p).items():
            frame = es if calc.endswith("s") else ed
            x = w / 2 + p.rng.normal(0, w / 40)
            y1 = h * 0.35 + p.rng.normal(0, h / 60)
            rows.append([len(rows), name, calc, value, frame, fmt(x, 2), fmt(x, 2), fmt(y1, 2), fmt(y1 + value * px_cm, 2), n, fps, w, h, split])  # fmt: skip
    header = ["", "HashedFileName", "Calc", "CalcValue", "Frame", "X1", "X2", "Y1", "Y2", "Frames", "FPS", "Width", "Height", "split"]  # fmt: skip
    write_csv(root / "MeasurementsList.csv", header, rows)
    return {"videos": studies, "studies": studies}
