"""Stand-ins: synthetic studies written in each public dataset's exact layout and formats.

``echoprime synth --as NAME --out DIR`` writes a folder that the dataset's adapter reads as it
reads the real one: the same tables with the same columns and quirks, the same codecs and file
formats, the same folder scheme. The pictures and labels come from the synthetic cohort
(:mod:`echoprime.synth`): each study is a synthetic patient whose videos are rendered by
:func:`~echoprime.synth.render.render_video` and whose labels (EF, volumes, wall thicknesses,
...) are taken from the same :class:`~echoprime.synth.state.PatientState`, so what a probe learns
on a stand-in is what the videos show. The EchoNet writers are in :mod:`.standin_echonet`, CAMUS
and MIMIC-IV-ECHO in :mod:`.standin_volumes`.

Everything is drawn from ``np.random.default_rng([seed, index, namespace])`` with a namespace per
dataset, so the same seed gives the same studies, and no stand-in patient is a study of the
ordinary synthetic cohort.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.datasets.base import DatasetOptionError, parse_options
from echoprime.synth.render import RenderedVideo, render_video
from echoprime.synth.state import PatientState, sample_state

STANDINS: dict[str, tuple[str, str]] = {
    "echonet-dynamic": ("echoprime.datasets.standin_echonet", "write_dynamic"),
    "echonet-pediatric": ("echoprime.datasets.standin_echonet", "write_pediatric"),
    "echonet-lvh": ("echoprime.datasets.standin_echonet", "write_lvh"),
    "camus": ("echoprime.datasets.standin_volumes", "write_camus"),
    "mimic-echo": ("echoprime.datasets.standin_volumes", "write_mimic"),
}
DEFAULT_STUDIES = 48
STANDIN_OPTIONS: dict[str, dict[str, str]] = {
    "camus": {"release": "nifti (CAMUS_public, the default) or mhd (the 2019 release)"},
}


@dataclass(frozen=True)
class Patient:
    """One stand-in patient: its state and the generator its videos draw from."""

    state: PatientState
    rng: np.random.Generator


def patient(dataset: str, seed: int, index: int, patient_id: str, study_id: str) -> Patient:
    """Stand-in patient ``index`` of ``dataset`` (its own rng namespace per dataset)."""
    namespace = 0x5D00 + zlib.crc32(dataset.encode()) % 0x1000
    rng = np.random.default_rng([seed, index, namespace])
    return Patient(sample_state(rng, patient_id, study_id), rng)


def hex_id(*parts: object, n: int = 16) -> str:
    """A stable upper-case hex token of ``parts`` (EchoNet's names look like ``0X`` + 16 of these)."""
    return hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:n].upper()


def render(p: Patient, view: str, *, frames: int, size: int) -> RenderedVideo:
    """A video of the patient in a view (the renderer of the synthetic cohort)."""
    return render_video(
        p.state, view, np.random.default_rng(p.rng.integers(0, 2**63 - 1)), frames=frames, size=size
    )


def masked(video: RenderedVideo) -> np.ndarray:
    """The video's frames with everything outside the fan black, as the EchoNet datasets publish
    their videos ("cropped and masked to remove text and information outside of the scanning
    sector"): ``F x H x W x 3`` uint8."""
    return video.frames * video.sector_mask[None, :, :, None].astype(np.uint8)  # H x W -> 1 x H x W x 1


def square(frames: np.ndarray, side: int) -> np.ndarray:
    """The centre square of each frame scaled to ``side`` (INTER_AREA), as the EchoNet authors
    made their 112 x 112 videos: ``F x H x W x 3`` -> ``F x side x side x 3``."""
    import cv2

    _, h, w, _ = frames.shape
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    crop = frames[:, y0 : y0 + s, x0 : x0 + s]
    return np.stack([cv2.resize(f, (side, side), interpolation=cv2.INTER_AREA) for f in crop])


def ed_es(video: RenderedVideo) -> tuple[int, int]:
    """End-diastolic and end-systolic frame indices from the renderer's LV area (ED: the largest
    area; ES: the smallest after it)."""
    area = video.lv_area
    if area is None or len(area) < 2:
        return 0, max(0, video.frames.shape[0] - 1)
    ed = int(np.argmax(area))
    if ed >= len(area) - 1:
        ed = int(np.argmax(area[:-1]))
    es = ed + 1 + int(np.argmin(area[ed + 1 :]))
    return ed, es


def write_mjpg_avi(path: Path, frames: np.ndarray, fps: float) -> None:
    """An MJPG AVI written with OpenCV, as the EchoNet authors wrote theirs (``cv2.VideoWriter``
    with fourcc ``MJPG``); through a temporary name, so no half-written file is left."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".part.avi")
    h, w = frames.shape[1:3]
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write an MJPG AVI at {tmp}")
    try:
        for f in frames:
            writer.write(np.ascontiguousarray(f[:, :, ::-1]))  # RGB -> BGR, OpenCV's order
    finally:
        writer.release()
    os.replace(tmp, path)


def write_csv(path: Path, header: list[str] | None, rows: Iterable[Iterable[object]]) -> None:
    """A CSV file as the datasets write theirs: comma-separated, ``\\n`` line ends, no quoting
    unless a value needs it."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header is not None:
        w.writerow(header)
    w.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())


def fmt(x: float, digits: int = 8) -> str:
    """A float as the EchoNet tables print theirs: up to ``digits`` decimals, no trailing zeros."""
    s = f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return s if s not in ("-0", "") else "0"


def write_standin(
    name: str,
    out: str | os.PathLike[str],
    *,
    studies: int = DEFAULT_STUDIES,
    seed: int = 0,
    frames: int | None = None,
    size: int | None = None,
    options: Mapping[str, Any] | Iterable[str] | None = None,
) -> dict[str, Any]:
    """Write a stand-in of dataset ``name`` into ``out``; returns what was written.

    Args:
        name: a dataset of :data:`STANDINS`.
        out: the folder to write (it becomes the dataset root: give it to ``ingest --dataset``).
        studies: how many studies (EchoNet-Dynamic, -LVH: videos; -Pediatric: patients; CAMUS:
            patients; MIMIC-IV-ECHO: patients).
        seed: the random seed.
        frames: frames rendered per video (default per dataset).
        size: frame height rendered (default per dataset; EchoNet's are then scaled to 112 x 112).
        options: stand-in options (:data:`STANDIN_OPTIONS`; CAMUS ``release``).

    Raises:
        ValueError: an unknown dataset, ``studies < 1``.
        DatasetOptionError: an unknown option.
    """
    import importlib

    if name not in STANDINS:
        raise ValueError(f"no stand-in for {name!r}; stand-ins exist for: {', '.join(STANDINS)}")
    if studies < 1:
        raise ValueError(f"studies must be at least 1, got {studies}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    opts = parse_options(options, STANDIN_OPTIONS.get(name, {}), name)
    module, func = STANDINS[name]
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = {k: v for k, v in (("frames", frames), ("size", size)) if v is not None}
    try:
        res = getattr(importlib.import_module(module), func)(root, studies, seed, **kw, **opts)
    except TypeError as e:  # an option the writer does not take
        raise DatasetOptionError(f"{name}: {e}") from None
    return {"dataset": name, "out": str(root), **res}
