"""Synthetic training data that never runs out: studies rendered on the fly, as shard rows.

Study ``i`` of a stream is ``make_study(seed, i)`` (:mod:`echoprime.synth.cohort`), rendered at
the synthetic cohort's size and made into clips by :func:`echoprime.data.ingest.video_clips`,
the function ingest applies to a decoded file: a stream row is an ingested row of the same study
minus the video codec. Nothing is written, decoded or stored, so a run can see thousands of
studies, each once, for the cost of rendering them (docs/learning.md: with ~200 stored studies
both towers memorise; with more the findings generalise).

The rows carry the columns pretraining reads from shards (:data:`STREAM_COLUMNS`), so they go
through the same tokenising map and ``get_dataset_shard`` path as file shards
(``ray_jobs/pretrain.py``). A stream is a pure function of its seed and the study indices;
its seed must differ from the stored cohort's (whose validation studies it would replay), and
the held-out test studies come from a namespace ``make_study(seed, index)`` never draws.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from echoprime.preprocess import PreprocessSpec

if TYPE_CHECKING:
    from echoprime.config import EchoPrimeConfig

STREAM_COLUMNS: tuple[str, ...] = ("clip", "study_id", "view", "report", "labels", "hidden_labels")
"""What a stream row holds: the shard columns pretraining, view training, attention fitting and
evaluation's probes read (``hidden_labels``: the diagnoses no report writes, as synthetic shards
hold them)."""


def stream_rows(
    indices: Iterable[int],
    *,
    seed: int,
    spec: PreprocessSpec,
    min_videos: int,
    max_videos: int,
    frames: int,
    size: int,
    clips_per_video: int = 1,
) -> dict[str, np.ndarray]:
    """Render studies ``indices`` of stream ``seed`` into clip rows (one per clip, study by study).

    Args:
        indices: study indices (non-negative).
        seed: the stream's seed.
        spec: preprocessing of a clip (the shards' spec, so stream and stored clips match).
        min_videos, max_videos, frames, size: the synthetic studies' shape (``synth`` config).
        clips_per_video: clips per video, as at ingest.

    Returns:
        ``{"clip": N x T x S x S x 3 uint8, "study_id", "view", "report", "labels" (JSON),
        "hidden_labels" (JSON)}``, all but the clip as object arrays of ``str``.
    """
    from echoprime.data.ingest import video_clips
    from echoprime.data.shards import dump_labels
    from echoprime.synth.cohort import make_study

    clips: list[np.ndarray] = []
    cols: dict[str, list[str]] = {k: [] for k in STREAM_COLUMNS[1:]}
    for i in indices:
        study = make_study(
            seed, int(i), min_videos=min_videos, max_videos=max_videos, frames=frames, size=size
        )
        report, labels = study.report.to_text(), dump_labels(study.labels())
        hidden = dump_labels(study.hidden_labels())
        for video in study.videos:
            for _, clip in video_clips(video.frames, spec, clips_per_video):
                clips.append(clip)
                cols["study_id"].append(study.study_id)
                cols["view"].append(video.view)
                cols["report"].append(report)
                cols["labels"].append(labels)
                cols["hidden_labels"].append(hidden)
    shape = (0, spec.frames, spec.size, spec.size, 3)
    out: dict[str, Any] = {"clip": np.stack(clips) if clips else np.zeros(shape, np.uint8)}
    return out | {k: np.array(v, dtype=object) for k, v in cols.items()}


def stream_reports(indices: Iterable[int], *, seed: int) -> dict[str, tuple[str, str]]:
    """``{study_id: (report text, labels JSON)}`` of stream studies ``indices``: the same studies
    :func:`stream_rows` renders, without rendering (for a report bank larger than the cohort)."""
    from echoprime.data.shards import dump_labels
    from echoprime.synth.cohort import study_report

    out = {}
    for i in indices:
        state, report = study_report(seed, int(i))
        out[state.study_id] = (report.to_text(), dump_labels(state.labels()))
    return out


def stream_overlap(seed: int, study_ids: Iterable[str]) -> list[str]:
    """The ids among ``study_ids`` that stream ``seed`` would draw again (``s{seed}_{index}``, the
    ids ``make_study(seed, index)`` gives): a cohort made with the stream's seed, whose
    validation or test studies would then be trained on."""
    import re

    own = re.compile(rf"s{int(seed)}_\d+")
    return sorted(i for i in set(study_ids) if own.fullmatch(str(i)))


def stream_clip_count(
    n_studies: int,
    *,
    seed: int,
    spec: PreprocessSpec,
    min_videos: int,
    max_videos: int,
    frames: int,
    clips_per_video: int = 1,
) -> int:
    """Exactly how many clips :func:`stream_rows` makes of stream studies ``0 .. n_studies - 1``,
    from each study's drawn video count, without rendering (~1 ms a study): an epoch of the
    stream can then be planned to use every clip it renders."""
    from echoprime.synth.cohort import study_video_count

    window = (spec.frames - 1) * spec.stride + 1
    # as video_clips: evenly spaced windows over a video of `frames` frames, duplicates merged
    per_video = len({int(round(x)) for x in np.linspace(0, max(0, frames - window), clips_per_video)})
    videos = sum(
        study_video_count(seed, i, min_videos=min_videos, max_videos=max_videos) for i in range(n_studies)
    )
    return videos * per_video


def stream_options(cfg: EchoPrimeConfig, spec: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`stream_rows`' keyword arguments for the config's stream (``stream.seed``, the
    studies' shape from ``synth``, clips per video from ``ingest``) at the clip ``spec``."""
    return {
        "seed": cfg.stream.seed,
        "spec": PreprocessSpec.from_dict(spec),
        "min_videos": cfg.synth.min_videos,
        "max_videos": cfg.synth.max_videos,
        "frames": cfg.synth.frames,
        "size": cfg.synth.size,
        "clips_per_video": cfg.ingest.clips_per_video,
    }


def stream_clips(cfg: EchoPrimeConfig, spec: Mapping[str, Any], n_studies: int) -> int:
    """How many clip rows the config's stream of ``n_studies`` studies yields at ``spec``: exact,
    drawn without rendering (:func:`stream_clip_count`)."""
    kw = stream_options(cfg, spec)
    del kw["size"]
    return stream_clip_count(n_studies, **kw)


def check_stream_seed(cfg: EchoPrimeConfig, shards: str) -> None:
    """Refuse a stream that would replay the shards' own studies (they were synthesised with the
    stream's seed): its validation and test studies would be trained on, or voted with.

    The config already refuses ``stream.seed == seed``; this catches shards made with another
    seed than the config's (``echoprime synth --seed N``).

    Raises:
        ValueError: naming the seed and a few of the studies.
    """
    from echoprime.data.shards import SPLITS, read_manifest, read_split

    m = read_manifest(shards)
    deid = m.extra.get("deidentified") or {}
    if deid.get("enabled"):
        # The shards hold pseudonyms: ingest recorded the synth seeds of the original ids.
        if cfg.stream.seed in deid.get("synthetic_seeds", []):
            raise ValueError(
                f"stream.seed={cfg.stream.seed} would draw studies these shards already hold: they were "
                f"synthesised with seed {cfg.stream.seed} (recorded at ingest); choose another stream.seed"
            )
        return
    ids: set[str] = set()
    for split in SPLITS:
        if m.rows.get(split, 0):
            ids.update(read_split(shards, split, columns=["study_id"]).column("study_id").to_pylist())
    if clash := stream_overlap(cfg.stream.seed, ids):
        raise ValueError(
            f"stream.seed={cfg.stream.seed} would draw {len(clash)} studies these shards already hold "
            f"(e.g. {clash[:3]}): they were synthesised with seed {cfg.stream.seed}; choose another stream.seed"
        )
