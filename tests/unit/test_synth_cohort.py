"""Synthetic studies and cohorts: determinism, view coverage, patient splits, manifests."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from echoprime.data.shards import assign_split
from echoprime.io.video import read_video
from echoprime.reports import extract_labels
from echoprime.synth import cohort
from echoprime.synth.cohort import (
    APICAL_VIEWS,
    DICOM_VARIANTS,
    MANIFEST_COLUMNS,
    generate_cohort,
    make_study,
    sample_views,
    write_manifest,
    write_study,
)
from echoprime.taxonomy import DOPPLER_VIEWS, PHENOTYPE_NAMES, VIEWS

TINY = dict(min_videos=3, max_videos=5, frames=4, size=32)


def test_make_study_is_deterministic_and_order_free():
    late = make_study(5, 2, **TINY)
    make_study(5, 0, **TINY)
    again = make_study(5, 2, **TINY)
    assert late.study_id == again.study_id == "s5_000002" and late.patient_id == "p5_000002"
    assert late.report.to_text() == again.report.to_text()
    assert [v.view for v in late.videos] == [v.view for v in again.videos]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(late.videos, again.videos, strict=True))
    other = make_study(6, 2, **TINY)
    assert not np.array_equal(other.videos[0].frames, late.videos[0].frames) or other.state != late.state


def test_study_content():
    for i in range(6):
        st = make_study(1, i, min_videos=6, max_videos=8, frames=2, size=32)
        views = [v.view for v in st.videos]
        assert 6 <= len(views) <= 8 and len(set(views)) == len(views)  # distinct until all 11 are used
        assert set(views) & set(APICAL_VIEWS) and set(views) & DOPPLER_VIEWS and "Parasternal_Long" in views
        assert set(st.labels()) == set(PHENOTYPE_NAMES) and set(st.hidden_labels()) == {
            "amyloidosis",
            "stemi",
        }
        assert st.split == assign_split(st.patient_id)
        assert len(st.dicom_variant) == len(st.as_dicom) == len(views)


def test_sample_views_covers_all_views_before_repeating():
    views = sample_views(np.random.default_rng(0), 15)
    assert set(views) == set(VIEWS) and len(views) == 15
    assert len(sample_views(np.random.default_rng(0), 2)) == 2


def test_split_by_patient_is_stable_and_proportional():
    ids = [f"p0_{i:06d}" for i in range(3000)]
    splits = [assign_split(p) for p in ids]
    assert splits == [assign_split(p) for p in ids]
    share = {s: splits.count(s) / len(ids) for s in ("train", "val", "test")}
    assert share["train"] == pytest.approx(0.7, abs=0.03) and share["val"] == pytest.approx(0.15, abs=0.03)
    assert {assign_split(p, (0.0, 0.0, 1.0)) for p in ids[:50]} == {"test"}
    with pytest.raises(ValueError, match="fractions"):
        assign_split("p", (0.5, 0.2, 0.2))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("fmt", ["mp4", "dicom", "both"])
def test_cohort_is_byte_identical_for_the_same_seed(tmp_path, fmt):
    a = generate_cohort(tmp_path / "a", 3, seed=4, fmt=fmt, progress=False, **TINY)
    b = generate_cohort(tmp_path / "b", 3, seed=4, fmt=fmt, progress=False, **TINY)
    assert a == b
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    assert {"manifest.parquet", "studies.parquet"} <= set(fa) and not any(k.endswith(".part") for k in fa)
    formats = {r["format"] for r in a}
    assert formats == ({"mp4", "dicom"} if fmt == "both" else {fmt})


def _hashes(root: Path) -> dict[str, str]:
    return {k: hashlib.sha256(v).hexdigest() for k, v in _files(root).items()}


def test_cohort_hashes_equal_across_processes(tmp_path):
    """Same seed, two processes: every file hashes equal, every format and DICOM variant included.

    At the default size and frame count (not TINY): x264's SIMD macroblock-tree read uninitialised
    memory, so a fifth to a half of the MP4s differed from run to run at 112 px / 32 frames (seed 9
    writes 21 of them; 8 differed in a run of this test before the fix), rarely on tiny clips.
    """
    kw = dict(n_studies=2, seed=9, fmt="both", progress=False)
    code = (
        "import sys; from echoprime.synth.cohort import generate_cohort; generate_cohort(sys.argv[1], **{kw})"
    )
    subprocess.run([sys.executable, "-c", code.format(kw=kw), str(tmp_path / "a")], check=True, timeout=300)
    rows = generate_cohort(tmp_path / "b", **kw)
    a, b = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert a and sorted(a) == sorted(b)
    assert {Path(k).suffix for k in a} == {".mp4", ".dcm", ".parquet"}
    assert {r["dicom_variant"] for r in rows} == {""} | {
        p + ("/JPEG" if j else "") for p, j in DICOM_VARIANTS
    }
    assert (rows[0]["height"], rows[0]["n_frames"]) == (112, 32)
    assert [k for k in a if a[k] != b[k]] == []


def test_manifest_and_studies_tables(tmp_path):
    out = tmp_path / "c"
    rows = generate_cohort(out, 4, seed=2, fmt="both", progress=False, **TINY)
    man = pq.read_table(out / "manifest.parquet").to_pylist()
    assert tuple(pq.read_table(out / "manifest.parquet").column_names) == MANIFEST_COLUMNS
    assert len(man) == len(rows) and len({r["video_id"] for r in man}) == len(man)
    for r in man:
        path = out / r["path"]
        assert path.is_file() and not Path(r["path"]).is_absolute()
        assert (r["n_frames"], r["height"], r["width"]) == (4, 32, 42) and r["view"] in VIEWS
        if r["format"] == "dicom":
            ds = pydicom.dcmread(path)
            assert ds.PatientID == r["patient_id"] and int(ds.NumberOfFrames) == 4
            photometric, jpeg = DICOM_VARIANTS[
                [p + ("/JPEG" if j else "") for p, j in DICOM_VARIANTS].index(r["dicom_variant"])
            ]
            assert (
                ds.PhotometricInterpretation == photometric
                and ds.file_meta.TransferSyntaxUID.is_compressed == jpeg
            )
        else:
            v = read_video(path)
            assert v.frames.shape == (4, 32, 42, 3) and v.fps == pytest.approx(r["fps"])
    studies = pq.read_table(out / "studies.parquet").to_pylist()
    assert sorted(s["study_id"] for s in studies) == sorted({r["study_id"] for r in man})
    for s in studies:
        st = make_study(2, int(s["study_id"].split("_")[1]), **TINY)
        assert s["report"] == st.report.to_text() and s["split"] == st.split == assign_split(s["patient_id"])
        assert json.loads(s["labels"]) == st.labels() and json.loads(s["hidden_labels"]) == st.hidden_labels()
        assert json.loads(s["state"])["ef"] == st.state.ef and s["n_videos"] == len(st.videos)
        # the report states the labels, and never the hidden diagnoses
        assert extract_labels(s["report"]) == st.labels()
        assert "amyloid" not in s["report"].lower() and "infarct" not in s["report"].lower()
    # one study, one patient, one split: a patient never straddles splits
    for sid in {r["study_id"] for r in man}:
        assert len({(r["patient_id"], r["split"]) for r in man if r["study_id"] == sid}) == 1


def test_interrupted_run_leaves_no_manifest(tmp_path, monkeypatch):
    out = tmp_path / "d"
    generate_cohort(out, 1, seed=0, progress=False, **TINY)
    assert (out / "manifest.parquet").exists()
    calls = {"n": 0}
    real = cohort.write_study

    def failing(study, out_dir, fmt="mp4"):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(study, out_dir, fmt)

    monkeypatch.setattr(cohort, "write_study", failing)
    with pytest.raises(OSError, match="disk full"):
        generate_cohort(out, 3, seed=0, progress=False, **TINY)
    assert not (out / "manifest.parquet").exists()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="fmt must be one of"):
        write_study(make_study(0, 0, **TINY), tmp_path, fmt="avi")
    with pytest.raises(ValueError, match="min_videos"):
        make_study(0, 0, min_videos=5, max_videos=2)
    with pytest.raises(ValueError, match="non-negative"):
        make_study(-1, 0)
    with pytest.raises(ValueError, match="n_studies"):
        generate_cohort(tmp_path, 0)
    with pytest.raises(ValueError, match="at least one row"):
        write_manifest([], tmp_path)


def test_test_studies_have_their_own_namespace():
    """A test study's ids and generator belong to no ordinary study of any seed."""
    t = make_study(3, 0, test=True, **TINY)
    assert (t.patient_id, t.study_id, t.split, t.test) == ("p3_t000000", "s3_t000000", "test", True)
    assert t.video_id(0) == "s3_t000000_v00"
    again = make_study(3, 0, test=True, **TINY)
    assert t.report.to_text() == again.report.to_text()
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(t.videos, again.videos, strict=True))
    # ids: an ordinary id is p{seed}_{digits}, so no ordinary index of any seed spells a test id
    ordinary = {cohort.study_ids(s, i)[k] for s in range(5) for i in range(300) for k in (0, 1)}
    tests = {cohort.study_ids(s, i, test=True)[k] for s in range(5) for i in range(300) for k in (0, 1)}
    assert not ordinary & tests and all("_t" in x for x in tests)
    # rngs: NumPy pads a key with zero words ([s, i] == [s, i, 0]), so the third word must be non-zero
    assert cohort.TEST_NAMESPACE % 2**32 != 0
    assert np.array_equal(np.random.default_rng([3, 5]).random(4), np.random.default_rng([3, 5, 0]).random(4))
    first = lambda g: tuple(g.integers(0, 2**63 - 1, size=4))  # noqa: E731
    seen = {
        first(cohort.study_rng(s, i)) for s in range(4) for i in list(range(200)) + [cohort.TEST_NAMESPACE]
    }
    drawn = {first(cohort.study_rng(s, i, test=True)) for s in range(4) for i in range(200)}
    assert len(drawn) == 800 and not seen & drawn
    # the index that would make [seed, index] spell a test key is refused
    for bad in (2**32, 2**32 * cohort.TEST_NAMESPACE):
        with pytest.raises(ValueError, match="below 2\\*\\*32"):
            make_study(3, bad, **TINY)
        with pytest.raises(ValueError, match="below 2\\*\\*32"):
            make_study(bad, 0, **TINY)


def test_ordinary_split_without_and_with_a_separate_test_set():
    ids = [f"p0_{i:06d}" for i in range(3000)]
    assert [cohort.ordinary_split(p) for p in ids] == [assign_split(p) for p in ids]
    two = [cohort.ordinary_split(p, separate_test=True) for p in ids]
    assert set(two) == {"train", "val"}
    assert two.count("train") / len(ids) == pytest.approx(0.7 / 0.85, abs=0.03)
    # the same hash: a patient in train of the three-way split stays in train
    assert all(t == "train" for p, t in zip(ids, two, strict=True) if assign_split(p) == "train")


def _split_counts(root: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for s in pq.read_table(root / "studies.parquet").to_pylist():
        out.setdefault(s["split"], []).append(s["study_id"])
    return out


def test_cohort_with_test_studies_is_reproducible_and_split_as_stated(tmp_path):
    kw = dict(n_studies=12, seed=4, fmt="both", progress=False, test_studies=5, **TINY)
    a = generate_cohort(tmp_path / "a", **kw)
    b = generate_cohort(tmp_path / "b", **kw)
    assert a == b
    fa, fb = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)
    splits = _split_counts(tmp_path / "a")
    assert sorted(splits["test"]) == [f"s4_t{i:06d}" for i in range(5)]
    assert len(splits.get("train", [])) + len(splits.get("val", [])) == 12
    for sid in splits.get("train", []) + splits.get("val", []):
        assert "_t" not in sid
    # the ordinary studies are the same studies as without a test set, split train/val only
    plain = generate_cohort(tmp_path / "c", **{**kw, "test_studies": 0})
    with_test = {r["video_id"]: r for r in a}
    for r in plain:
        other = with_test[r["video_id"]]
        assert {k: v for k, v in other.items() if k != "split"} == {
            k: v for k, v in r.items() if k != "split"
        }
        assert other["split"] == cohort.ordinary_split(r["patient_id"], separate_test=True)
    # DICOM UIDs of test study i differ from those of ordinary study i
    uids = {}
    for r in a:
        if r["format"] == "dicom":
            uids.setdefault(r["study_id"], pydicom.dcmread(tmp_path / "a" / r["path"]).StudyInstanceUID)
    assert len(set(uids.values())) == len(uids)


def test_synth_job_with_test_studies_matches_the_serial_cohort(tmp_path):
    """ray_jobs.synth.generate (its chunked path, without Ray here) writes the same files as generate_cohort."""
    from echoprime.config import EchoPrimeConfig
    from ray_jobs.synth import generate

    cfg = EchoPrimeConfig().replace(
        seed=6,
        synth=dict(studies=6, test_studies=3, min_videos=3, max_videos=5, frames=4, size=32, format="mp4"),
    )
    res = generate(cfg, tmp_path / "job", use_ray=False, chunk=4)
    assert res["studies"] == 9 and res["splits"]["test"] == 3
    assert sum(v for k, v in res["splits"].items() if k != "test") == 6
    generate_cohort(tmp_path / "serial", 6, seed=6, progress=False, test_studies=3, **TINY)
    fa, fb = _files(tmp_path / "job"), _files(tmp_path / "serial")
    fa = {k: v for k, v in fa.items() if k != "config.yaml"}
    assert fa.keys() == fb.keys() and all(fa[k] == fb[k] for k in fa)


def test_synth_cli_test_studies_flag():
    import argparse

    from echoprime.commands.synth import add_arguments, synth_config

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--out", "x", "--test-studies", "7", "--config", "configs/tiny-cpu.yaml"])
    assert synth_config(args).synth.test_studies == 7
    # "--studies N" alone means N studies; the config's test set joins when the size is the config's too
    only = p.parse_args(["--out", "x", "--studies", "5", "--config", "configs/tiny-cpu.yaml"])
    assert synth_config(only).synth.test_studies == 0
    both = p.parse_args(
        ["--out", "x", "--studies", "5", "--test-studies", "3", "--config", "configs/tiny-cpu.yaml"]
    )
    assert synth_config(both).synth.test_studies == 3
    cfg_size = p.parse_args(["--out", "x", "--config", "configs/tiny-cpu.yaml"])
    assert synth_config(cfg_size).synth.test_studies == 200
    with pytest.raises(ValueError, match="test-studies"):
        synth_config(p.parse_args(["--out", "x", "--test-studies", "-1"]))
