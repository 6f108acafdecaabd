"""The synthetic training stream: a pure function of (seed, index), the clips ingest would make of
the same study's files (less the codec), and a stream seed that cannot replay the stored cohort."""

from __future__ import annotations

import json

import numpy as np
import pytest

from echoprime.data.stream import STREAM_COLUMNS, stream_clip_count, stream_rows
from echoprime.preprocess import PreprocessSpec

SPEC = PreprocessSpec(size=32, frames=16, stride=2, crop_fraction=0.1, mask=True)
SHAPE = {"min_videos": 2, "max_videos": 3, "frames": 32, "size": 64}


def test_rows_are_a_pure_function_of_seed_and_index():
    a = stream_rows([3, 4], seed=5, spec=SPEC, **SHAPE)
    b = stream_rows([4], seed=5, spec=SPEC, **SHAPE)
    assert set(a) == set(STREAM_COLUMNS)
    assert a["clip"].dtype == np.uint8 and a["clip"].shape[1:] == (16, 32, 32, 3)
    n3 = int((a["study_id"] == "s5_000003").sum())
    assert 2 <= n3 <= 3 and len(a["clip"]) - n3 == len(b["clip"])  # study 4 alone renders the same rows
    assert np.array_equal(a["clip"][n3:], b["clip"]) and list(a["report"][n3:]) == list(b["report"])
    other = stream_rows([3], seed=6, spec=SPEC, **SHAPE)
    assert set(other["study_id"]) == {"s6_000003"} and not np.array_equal(other["clip"][:2], a["clip"][:2])
    labels = json.loads(a["labels"][0])
    assert len(labels) == 21 and labels["ejection_fraction"] > 0
    assert all(r.startswith("Left Ventricle:") for r in a["report"])
    assert stream_rows([], seed=5, spec=SPEC, **SHAPE)["clip"].shape == (0, 16, 32, 32, 3)


@pytest.mark.parametrize("clips_per_video", [1, 2, 40])
def test_the_clip_count_of_a_stream_is_exact_without_rendering(clips_per_video):
    """An epoch over the stream is planned from this count: it must be what rendering yields (40
    windows over a 32-frame video merge into the few distinct offsets video_clips makes)."""
    shape = {**SHAPE, "min_videos": 1, "max_videos": 4}
    rows = stream_rows(range(6), seed=5, spec=SPEC, clips_per_video=clips_per_video, **shape)
    counts = {k: v for k, v in shape.items() if k != "size"}  # the frame size changes no count
    n = stream_clip_count(6, seed=5, spec=SPEC, clips_per_video=clips_per_video, **counts)
    assert n == len(rows["clip"]) and n > 6


def test_stream_clip_equals_the_ingested_clip_of_a_lossless_file(tmp_path):
    """Written as native RGB DICOM (no codec loss), read back and cut into clips as ingest does:
    the same bytes as the stream's row."""
    from echoprime.data.ingest import video_clips
    from echoprime.io import read_any
    from echoprime.synth.cohort import make_study
    from echoprime.synth.writers import write_dicom

    rows = stream_rows([7], seed=9, spec=SPEC, **SHAPE)
    study = make_study(9, 7, **SHAPE)
    assert len(rows["clip"]) == len(study.videos)
    for k, video in enumerate(study.videos):
        path = tmp_path / f"v{k}.dcm"
        write_dicom(path, video.frames, video.fps, study_uid="1.2.3", series_uid="1.2.3.4",
                    sop_uid=f"1.2.3.4.{k}", patient_id="p", photometric="RGB")  # fmt: skip
        vid = read_any(path.read_bytes(), name=path.name)
        assert np.array_equal(vid.frames, video.frames)
        ((off, clip),) = video_clips(vid.frames, SPEC)
        assert off == 0 and np.array_equal(clip, rows["clip"][k]) and rows["view"][k] == video.view
    assert rows["report"][0] == study.report.to_text()


def test_stream_seed_must_differ_from_the_cohort_seed():
    from echoprime.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="stream.seed \\(0\\) equals seed \\(0\\)"):
        load_config("configs/tiny-cpu.yaml", ["seed=0", "stream.studies=10", "stream.seed=0"])
    assert load_config("configs/tiny-cpu.yaml", ["stream.studies=10", "stream.seed=7"]).stream.studies == 10


def test_stream_reports_are_the_rendered_studies_reports_without_rendering():
    from echoprime.data.stream import stream_reports
    from echoprime.synth.cohort import make_study

    reps = stream_reports([3, 4], seed=5)
    rows = stream_rows([3, 4], seed=5, spec=SPEC, **SHAPE)
    assert list(reps) == ["s5_000003", "s5_000004"]
    for sid, (text, labels) in reps.items():
        k = list(rows["study_id"]).index(sid)
        assert text == rows["report"][k] and labels == rows["labels"][k]
    assert reps["s5_000003"][0] == make_study(5, 3, **SHAPE).report.to_text()


def test_stream_overlap_names_the_ids_a_stream_would_draw_again():
    from echoprime.data.stream import stream_overlap

    ids = ["s1_000003", "s1_t000004", "s11_000002", "s1_000010", "p1_000003", "IM0001"]
    assert stream_overlap(1, ids) == ["s1_000003", "s1_000010"]  # not the test namespace, not seed 11
    assert stream_overlap(2, ids) == []
