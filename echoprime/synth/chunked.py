"""A cohort made chunk by chunk: the unit of work of ``echoprime synth`` and how its results join.

``ray_jobs/synth.py`` hands each chunk of :func:`cohort_chunks` to a Ray task running
:func:`make_chunk` (or runs them in turn with ``--no-ray``); :func:`finish_cohort` then writes
the manifest on the driver, once every study is on disk. Study ``(index, test)`` is drawn from
its own seed (:mod:`echoprime.synth.cohort`), so any chunking gives byte-identical files.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from echoprime.config import EchoPrimeConfig
from echoprime.synth.cohort import cohort_plan, make_study, write_manifest, write_study


def cohort_chunks(cfg: EchoPrimeConfig, chunk: int) -> list[list[tuple[int, bool]]]:
    """The ``(index, test)`` pairs of ``cfg.synth``'s cohort, ``chunk`` studies at a time."""
    plan = cohort_plan(cfg.synth.studies, cfg.synth.test_studies)
    return [plan[s : s + chunk] for s in range(0, len(plan), chunk)]


def make_chunk(seed: int, indices: list[tuple[int, bool]], out_dir: str, synth: dict[str, Any]) -> list[dict]:
    """Make and write the studies ``(index, test)`` of one chunk; returns their manifest rows."""
    rows: list[dict] = []
    for i, test in indices:
        study = make_study(
            seed,
            i,
            min_videos=synth["min_videos"],
            max_videos=synth["max_videos"],
            frames=synth["frames"],
            size=synth["size"],
            test=test,
            separate_test=synth.get("test_studies", 0) > 0,
        )
        rows.extend(write_study(study, out_dir, fmt=synth["format"]))
    return rows


def finish_cohort(cfg: EchoPrimeConfig, out_dir: Path, rows: list[dict], t0: float) -> dict[str, Any]:
    """Write the manifest of the chunks' ``rows`` (last: its presence means "complete") and the
    config into ``out_dir``; returns the headline numbers, the rate counted from ``t0``
    (``time.perf_counter()`` when the first chunk started)."""
    rows.sort(key=lambda r: (r["study_id"], r["video_id"]))
    write_manifest(rows, out_dir, label_only=cfg.synth.label_only)
    cfg.save(out_dir)
    wall = time.perf_counter() - t0
    studies = {r["study_id"] for r in rows}
    per_split: dict[str, set] = {}
    for r in rows:
        per_split.setdefault(r["split"], set()).add(r["study_id"])
    return {
        "studies": len(studies),
        "videos": len(rows),
        "videos_per_s": round(len(rows) / max(wall, 1e-9), 1),
        "splits": {k: len(v) for k, v in sorted(per_split.items())},
        "out": str(out_dir),
    }
