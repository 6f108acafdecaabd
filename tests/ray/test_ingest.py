"""Ingestion with Ray Data on the session's local Ray: local and S3 archives, bad files, commits."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from echoprime import storage
from echoprime.data.shards import ShardError, clips_to_numpy, read_manifest, read_split, validate_split
from echoprime.io.writers import dicom_dataset, write_dicom, write_video
from ray_jobs.ingest import run_ingest

pytestmark = pytest.mark.usefixtures("ray_cluster")

REAL_VIDEOS = {
    "examples_ybr_color.dcm": 30,
    "US-PAL-8-10x-echo.dcm": 10,
    "IM00001.implicit_little_endian.dcm": 8,
    "OBXXXX1A_rle_2frame.dcm": 2,
    "echo_a4c_h264.mp4": 30,
}
REAL_STILLS = ("color-pl.dcm", "US1_J2KR.dcm")


def _clip(n: int = 8, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(n)
    return rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def _bad_files(folder: Path) -> dict[str, str]:
    """Every kind of bad input of issue 3, with the words its reject reason must contain."""
    folder.mkdir(parents=True)
    good = write_dicom(_clip())
    (folder / "truncated.dcm").write_bytes(good[: len(good) // 2])
    ds = dicom_dataset(_clip())
    del ds.PixelData
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    (folder / "nopixels.dcm").write_bytes(buf.getvalue())
    (folder / "oneframe.mp4").write_bytes(write_video(_clip(n=1)))
    (folder / "corrupt.mp4").write_bytes(
        np.random.default_rng(1).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    )
    huge = dicom_dataset(_clip(n=2, h=16, w=16))
    huge.Rows = huge.Columns = 20000
    buf = io.BytesIO()
    huge.save_as(buf, enforce_file_format=True)
    (folder / "huge.dcm").write_bytes(buf.getvalue())
    (folder / "notes.dcm").write_text("not a DICOM file\n" * 20)
    (folder / "empty.dcm").write_bytes(b"")
    return {
        "truncated.dcm": "truncated",
        "nopixels.dcm": "Pixel Data",
        "oneframe.mp4": "single frame",
        "corrupt.mp4": "not a readable video",
        "huge.dcm": "20000 x 20000",
        "notes.dcm": "not DICOM",
        "empty.dcm": "empty",
    }


@pytest.fixture(scope="module")
def archive(tmp_path_factory, tiny_cfg, real_echo_dir):
    from ray_jobs.synth import generate

    root = tmp_path_factory.mktemp("archive")
    cfg = tiny_cfg.replace(
        synth={
            **tiny_cfg.synth.model_dump(),
            "studies": 6,
            "size": 64,
            "format": "both",
            "max_videos": 8,
            "test_studies": 0,
        }
    )
    generate(cfg, root, use_ray=True)
    bad = _bad_files(root / "incoming" / "bad")
    for name in (*REAL_VIDEOS, *REAL_STILLS):
        shutil.copy(real_echo_dir / name, root / "incoming" / name)
    return root, cfg, bad


def _rejects(out: str) -> dict[str, dict]:
    m = read_manifest(out)
    loc = storage.locate(m.rejects_file)
    return {Path(r["source_uri"]).name: r for r in pq.read_table(loc.path, filesystem=loc.fs).to_pylist()}


def test_ingest_local_archive_with_bad_files(archive, tmp_path):
    root, cfg, bad = archive
    out = tmp_path / "shards"
    res = run_ingest(cfg, str(root), str(out))
    manifest = pq.read_table(root / "manifest.parquet").to_pylist()
    n_synth = len(manifest)
    total = sum(res["rows"].values())
    # every good file is in the shards: all synthetic clips + the real videos
    assert total == n_synth + len(REAL_VIDEOS)
    rejects = _rejects(str(out))
    assert set(rejects) == set(bad) | set(REAL_STILLS)
    for name, words in bad.items():
        assert words in rejects[name]["reason"], (name, rejects[name])
    for name in REAL_STILLS:
        assert rejects[name]["code"] == "not_a_video"
    m = read_manifest(str(out))
    assert m.rejects == len(rejects) and m.clip_shape == (16, 32, 32, 3)

    # shard rows carry the contract's columns; clips have the spec's shape; reports/labels joined
    t = read_split(str(out), "train")
    files = validate_split(str(out), "train")
    assert files and all(Path(f).stat().st_size > 0 for f in files)
    clips = clips_to_numpy(t.column("clip"), m.clip_shape)
    assert clips.dtype == np.uint8 and clips.shape[1:] == (16, 32, 32, 3) and clips.max() > 0
    rows = [r for r in t.drop(["clip"]).to_pylist() if r["view"] is not None]
    by_path = {Path(r["path"]).stem: r for r in manifest}
    for r in rows:
        src = by_path[Path(r["source_uri"]).stem]
        assert r["study_id"] == src["study_id"] and r["view"] == src["view"]
        labels = json.loads(r["labels"])
        assert len(labels) == 21 and r["report"].startswith("Left Ventricle:")
    # the split of every synthetic clip is its patient's split (whole studies, never mixed)
    study_split = {}
    for split in ("train", "val", "test"):
        for sid in read_split(str(out), split, columns=["study_id"]).column("study_id").to_pylist():
            assert study_split.setdefault(sid, split) == split
    # a real DICOM without manifest entry is grouped by StudyInstanceUID, the MP4 by its folder
    real = [
        r
        for r in sum(
            (
                read_split(str(out), s, columns=["study_id", "source_uri", "n_frames_src"]).to_pylist()
                for s in ("train", "val", "test")
                if m.rows[s]
            ),
            [],
        )
        if "incoming" in r["source_uri"]
    ]
    assert {Path(r["source_uri"]).name: r["n_frames_src"] for r in real} == REAL_VIDEOS
    mp4 = next(r for r in real if r["source_uri"].endswith(".mp4"))
    assert mp4["study_id"] == "incoming"
    dcm = next(r for r in real if r["source_uri"].endswith("examples_ybr_color.dcm"))
    assert dcm["study_id"].startswith("1.") or dcm["study_id"][0].isdigit()

    # idempotent: the same input and settings -> nothing to do, same commit
    again = run_ingest(cfg, str(root), str(out))
    assert again["status"] == "up to date" and read_manifest(str(out)).run_id == m.run_id

    # a forced re-run commits a new run and removes the old data; an uncommitted folder is never read
    orphan = out / "data-interrupted" / "split=train"
    orphan.mkdir(parents=True)
    (orphan / "half.parquet").write_bytes(b"PAR1 not finished")
    forced = run_ingest(cfg, str(root), str(out), force=True)
    m2 = read_manifest(str(out))
    assert forced["status"] == "ingested" and m2.run_id != m.run_id
    assert not (out / f"data-{m.run_id}").exists()
    assert sum(m2.rows.values()) == total
    assert all("data-interrupted" not in f for fs in m2.files.values() for f in fs)


def test_ingest_s3_to_s3(archive, s3_server, tmp_path):
    import boto3

    root, cfg, _ = archive
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="echo-archive")
    s3.create_bucket(Bucket="echo-shards")
    n = 0
    for p in sorted(root.rglob("*")):
        if p.is_file() and "incoming" not in p.parts:
            s3.upload_file(str(p), "echo-archive", f"cohort/{p.relative_to(root).as_posix()}")
            n += 1
    res = run_ingest(cfg, "s3://echo-archive/cohort", "s3://echo-shards/run1")
    manifest = pq.read_table(root / "manifest.parquet")
    assert sum(res["rows"].values()) == manifest.num_rows and res["rejects"] == 0
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="echo-shards", Prefix="run1/")["Contents"]]
    assert "run1/_manifest.json" in keys and any(k.endswith(".parquet") and "split=train" in k for k in keys)
    t = read_split("s3://echo-shards/run1", "train", columns=["study_id", "clip"])
    assert t.num_rows == res["rows"]["train"]


def test_empty_input_is_a_clear_error(tmp_path, tiny_cfg):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no files to ingest"):
        run_ingest(tiny_cfg, str(tmp_path / "empty"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        run_ingest(tiny_cfg, str(tmp_path / "missing"), str(tmp_path / "out"))


def test_unready_shards_are_refused(tmp_path):
    with pytest.raises(ShardError, match="_manifest.json is missing"):
        read_manifest(str(tmp_path))
