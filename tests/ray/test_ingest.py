"""Ingestion with Ray Data on the session's local Ray: local and S3 archives, bad files, commits."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest

from echoprime import storage
from echoprime.data.deid import SCHEME as DEID_SCHEME
from echoprime.data.shards import ShardError, clips_to_numpy, read_manifest, read_split, validate_split
from echoprime.io.writers import dicom_dataset, write_dicom, write_video
from echoprime.locks import OutputBusy, OutputLock
from echoprime.retrieval.pseudonyms import read_id_map
from echoprime.synth.writers import patient_attributes
from ray_jobs.ingest import run_ingest
from tests.leaks import files_under, leaks

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


def _rejects(out: str, id_map: dict[str, str] | None = None) -> dict[str, dict]:
    """The rejects table by file name (through the operator's map when the shards hold keys)."""
    m = read_manifest(out)
    loc = storage.locate(m.rejects_file)
    rows = pq.read_table(loc.path, filesystem=loc.fs).to_pylist()
    return {Path((id_map or {}).get(r["source_uri"], r["source_uri"])).name: r for r in rows}


def test_ingest_local_archive_with_bad_files(archive, tmp_path):
    root, cfg, bad = archive
    out = tmp_path / "shards"
    res = run_ingest(cfg, str(root), str(out), id_map=str(tmp_path / "private" / "ids.json"))
    manifest = pq.read_table(root / "manifest.parquet").to_pylist()
    n_synth = len(manifest)
    total = sum(res["rows"].values())
    # every good file is in the shards: all synthetic clips + the real videos
    assert total == n_synth + len(REAL_VIDEOS)
    # de-identified (the default): keys in the shards, the originals only in the operator's map
    ids = read_id_map(tmp_path / "private" / "ids.json")
    assert (tmp_path / "private" / "ids.json").stat().st_mode & 0o777 == 0o600
    rejects = _rejects(str(out), ids)
    assert set(rejects) == set(bad) | set(REAL_STILLS)
    for name, words in bad.items():
        assert words in rejects[name]["reason"], (name, rejects[name])
        assert rejects[name]["source_uri"].startswith("f-") and name not in rejects[name]["reason"]
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
    by_path = {r["path"]: r for r in manifest}
    for r in rows:
        assert r["study_id"].startswith("s-") and r["source_uri"].startswith("f-")
        assert r["video_id"] == r["source_uri"]
        src = by_path[ids[r["source_uri"]]]
        assert ids[r["study_id"]] == src["study_id"] and r["view"] == src["view"]
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
        if "incoming" in ids[r["source_uri"]]
    ]
    assert {Path(ids[r["source_uri"]]).name: r["n_frames_src"] for r in real} == REAL_VIDEOS
    mp4 = next(r for r in real if ids[r["source_uri"]].endswith(".mp4"))
    assert ids[mp4["study_id"]] == "incoming"
    dcm = next(r for r in real if ids[r["source_uri"]].endswith("examples_ybr_color.dcm"))
    assert ids[dcm["study_id"]][0].isdigit()  # grouped by its StudyInstanceUID
    # no file of the output holds an original study id, patient id or path
    originals = (
        {v["study_id"] for v in manifest} | {v["patient_id"] for v in manifest} | {ids[dcm["study_id"]]}
    )
    originals |= {Path(v["path"]).name for v in manifest} | set(REAL_VIDEOS) | set(bad)
    # ... nor any identifying attribute the synthetic DICOMs carry (as a scanner's do)
    dicoms = [root / v["path"] for v in manifest if v["format"] == "dicom"]
    assert dicoms
    originals |= {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in dicoms}
    for pid in {v["patient_id"] for v in manifest}:
        attrs = patient_attributes(pid)
        assert str(pydicom.dcmread(dicoms[0], stop_before_pixels=True).PatientName).startswith("SYNTH^")
        originals |= {v for k, v in attrs.items() if k not in ("PatientSex", "SeriesDescription")}
    assert leaks(files_under(out), originals) == {}
    assert read_manifest(str(out)).extra["deidentified"] == {
        "enabled": True,
        "synthetic_seeds": [cfg.seed],
        "scheme": DEID_SCHEME,
        "secret": "one-off",
    }

    # idempotent: the same input and settings -> nothing to do, same commit
    again = run_ingest(cfg, str(root), str(out))
    assert again["status"] == "up to date" and read_manifest(str(out)).run_id == m.run_id

    # a forced re-run commits a new run; the old data stays for its readers (see the next test),
    # and an uncommitted folder (a run that died) is never read, and is cleaned up
    orphan = out / "data-interrupted" / "split=train"
    orphan.mkdir(parents=True)
    (orphan / "half.parquet").write_bytes(b"PAR1 not finished")
    forced = run_ingest(cfg, str(root), str(out), force=True)
    m2 = read_manifest(str(out))
    assert forced["status"] == "ingested" and m2.run_id != m.run_id
    assert m2.previous_runs == [m.run_id] and (out / f"data-{m.run_id}").is_dir()
    assert sum(m2.rows.values()) == total
    assert all("data-interrupted" not in f for fs in m2.files.values() for f in fs)
    assert not (out / "data-interrupted").exists()


def _data_dirs(out: str) -> set[str]:
    return {f.split("/data-", 1)[1].split("/", 1)[0] for f in storage.list_files(out) if "/data-" in f}


def _read_all(files: list[str]) -> list[int]:
    """What a reader holding an older manifest gets from its files (rows per file)."""
    out = []
    for f in files:
        loc = storage.locate(f)
        out.append(pq.read_table(loc.path, filesystem=loc.fs, columns=["video_id"]).num_rows)
    return out


def test_deidentification_off_keeps_the_archive_ids_and_a_map_inside_the_output_is_refused(archive, tmp_path):
    """``ingest.deidentify: false`` (public data sets) keeps the archive's ids and paths as they
    are; the operator's map is refused inside the shard output or with de-identification off."""
    root, cfg, _ = archive
    with pytest.raises(ValueError, match="inside the shard output"):
        run_ingest(
            cfg, str(root / "incoming"), str(tmp_path / "out"), id_map=str(tmp_path / "out" / "ids.json")
        )
    off = cfg.replace(ingest={**cfg.ingest.model_dump(), "deidentify": False})
    with pytest.raises(ValueError, match="deidentify"):
        run_ingest(off, str(root / "incoming"), str(tmp_path / "out"), id_map=str(tmp_path / "ids.json"))
    run_ingest(off, str(root / "incoming"), str(tmp_path / "out"))
    rows = sum(
        (
            read_split(str(tmp_path / "out"), s, ["study_id", "source_uri"]).to_pylist()
            for s in ("train", "val", "test")
            if read_manifest(str(tmp_path / "out")).rows[s]
        ),
        [],
    )
    assert {Path(r["source_uri"]).name for r in rows} == set(REAL_VIDEOS)
    assert "echo_a4c_h264" in {r["study_id"] for r in rows}  # an MP4 without a folder: its own name
    assert set(_rejects(str(tmp_path / "out"))) >= set(REAL_STILLS)
    assert read_manifest(str(tmp_path / "out")).extra["deidentified"] == {
        "enabled": False,
        "synthetic_seeds": [],
    }


def test_a_failed_or_empty_ingest_changes_nothing_and_leaves_nothing(archive, tmp_path, monkeypatch):
    """A run that fails at its commit, and a run that finds no usable clip, leave the shards
    there as they were and remove their own half-made folder. (A forced re-run that succeeds
    keeps the run before it: test_ingest_local_archive_with_bad_files, and on S3 below.)"""
    import echoprime.data.shards as shards

    root, cfg, _ = archive
    out = str(tmp_path / "shards")
    run_ingest(cfg, str(root / "incoming"), out)
    a = read_manifest(out)

    def no_commit(*args, **kwargs):  # say the manifest PUT fails
        raise OSError("simulated: the manifest could not be written")

    with monkeypatch.context() as mp:
        mp.setattr(shards, "write_manifest", no_commit)
        with pytest.raises(OSError, match="simulated"):
            run_ingest(cfg, str(root / "incoming"), out, force=True)
    assert read_manifest(out).run_id == a.run_id and _data_dirs(out) == {a.run_id}

    # Every file rejected (a wrong --input, an unreadable mount): refused, not an empty commit
    # that would replace good shards with none.
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "a.dcm").write_text("not a DICOM file\n")
    (junk / "b.mp4").write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match=rf"no usable clip: all 2 files were rejected.*kept: run {a.run_id}"):
        run_ingest(cfg, str(junk), out)
    assert read_manifest(out).run_id == a.run_id and _data_dirs(out) == {a.run_id}
    assert sum(_read_all([f for fs in a.files.values() for f in fs])) == sum(a.rows.values())


def test_a_reader_of_the_old_shards_on_s3_keeps_them_through_the_next_ingest(archive, s3_server):
    """A reader that read run A's manifest (a training run streams its files for hours) can still
    read every file after run B replaced A; A's folder goes when the run after B commits
    (tests/unit/test_shards_commit.py)."""
    import boto3

    root, cfg, _ = archive
    boto3.client("s3").create_bucket(Bucket="echo-replace")
    for p in sorted((root / "incoming").rglob("*")):
        if p.is_file():
            rel = p.relative_to(root / "incoming").as_posix()
            storage.write_bytes(f"s3://echo-replace/in/{rel}", p.read_bytes())
    out = "s3://echo-replace/shards"
    run_ingest(cfg, "s3://echo-replace/in", out)
    a = read_manifest(out)
    held = [f for fs in a.files.values() for f in fs]
    rows_a = _read_all(held)
    assert held and sum(rows_a) == sum(a.rows.values()) > 0
    run_ingest(cfg, "s3://echo-replace/in", out, force=True)
    b = read_manifest(out)
    assert _read_all(held) == rows_a  # the reader of A still has every file
    assert b.run_id != a.run_id and b.previous_runs == [a.run_id]
    assert _data_dirs(out) == {a.run_id, b.run_id}


def test_two_ingests_on_one_output_are_not_allowed(archive, tmp_path):
    root, cfg, _ = archive
    out = tmp_path / "shards"
    with OutputLock(str(out), "echoprime ingest"):
        with pytest.raises(OutputBusy, match=f"{out} is in use by echoprime ingest \\(pid "):
            run_ingest(cfg, str(root / "incoming"), str(out))
    assert storage.list_files(str(out)) == []  # refused before writing anything


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
