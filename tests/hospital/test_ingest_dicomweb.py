"""``echoprime ingest --dicomweb``: training shards from the studies of a real DICOMweb archive
(Orthanc) that a QIDO-RS query finds, streamed to Ray Data decode actors by WADO-RS. The same
clips as an ingest of the same files from disk, reports joined by StudyInstanceUID, keys for
studies and instances, "up to date" on a re-run, a clear error for a query that finds nothing."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import pydicom
import pytest

from echoprime.cli import main as cli_main
from echoprime.data.shards import clips_to_numpy, read_manifest, read_split
from echoprime.hospital.ingest import ArchiveDecoder
from echoprime.retrieval.pseudonyms import read_id_map
from ray_jobs.ingest import run_ingest
from tests.conftest import ROOT
from tests.hospital.conftest import REAL_DICOM, REAL_STILL
from tests.leaks import files_under, leaks

pytestmark = pytest.mark.usefixtures("ray_cluster")
SITE_SECRET = "ingest-dicomweb-test-site-secret"
REPORT = (
    "Left Ventricle: The left ventricle is moderately dilated. Left ventricular ejection fraction is 35 %."
)


def _uid(path: Path, tag: str = "StudyInstanceUID") -> str:
    return str(getattr(pydicom.dcmread(path, stop_before_pixels=True), tag))


def _rows(out: Path) -> list[dict]:
    """Every row of the shards, its clip as the sha256 of its pixels."""
    m = read_manifest(str(out))
    shape = (m.spec["frames"], m.spec["size"], m.spec["size"], 3)
    rows = []
    for split, files in m.files.items():
        if not files:
            continue
        t = read_split(str(out), split)
        clips = clips_to_numpy(t.column("clip"), shape)
        for r, c in zip(t.drop(["clip"]).to_pylist(), clips, strict=True):
            rows.append(r | {"clip": hashlib.sha256(c.tobytes()).hexdigest()})
    return rows


def test_ingest_from_a_qido_query(tiny_cfg, study, archive, real_echo_dir, tmp_path, monkeypatch):
    uid, files = study
    still = _uid(real_echo_dir / REAL_STILL)
    real = _uid(real_echo_dir / REAL_DICOM[0])
    table = tmp_path / "reports.csv"
    with table.open("w", newline="") as f:
        csv.writer(f).writerows([["study_id", "report"], [uid, REPORT]])
    monkeypatch.setenv("ECHOPRIME_SITE_SECRET", SITE_SECRET)
    out, ids = tmp_path / "shards", tmp_path / "private" / "ids.json"
    argv = ["ingest", "--dicomweb", archive.url, "--modality", ""]
    argv += [a for u in (uid, real, still) for a in ("--study", u)]
    argv += ["--studies", str(table), "--out", str(out), "--id-map", str(ids)]
    argv += ["--config", str(ROOT / "configs" / "tiny-cpu.yaml")]
    assert cli_main(argv) == 0

    m = read_manifest(str(out))
    assert m.source == archive.url
    id_map = read_id_map(ids)
    rows = _rows(out)
    by_study: dict[str, list[dict]] = {}
    for r in rows:
        by_study.setdefault(id_map[r["study_id"]], []).append(r)
    assert set(by_study) == {uid, real}  # the still's study gave no clip
    # Every video instance of the synthetic study is a row, named by the key of its SOPInstanceUID,
    # with the study's report and the labels read from it.
    sops = {_uid(p, "SOPInstanceUID") for p in files}
    assert {id_map[r["video_id"]] for r in by_study[uid]} == sops
    assert all(r["report"] == REPORT for r in by_study[uid])
    assert all(json.loads(r["labels"])["ejection_fraction"] == 35.0 for r in by_study[uid])
    assert all(r["report"] == "" for r in by_study[real])  # no report in the table: none invented
    # The still (and anything else without a video, such as an SR stored back by another test)
    # is a reject with its reason, named by its key.
    import pyarrow.parquet as pq

    rejects = pq.read_table(m.rejects_file).to_pylist()
    still_sop = _uid(real_echo_dir / REAL_STILL, "SOPInstanceUID")
    assert any(id_map.get(r["source_uri"]) == still_sop for r in rejects), rejects
    assert all(r["source_uri"] in id_map for r in rejects)
    # No UID of the archive in the shards (the map, kept outside them, holds them).
    assert leaks(files_under(out), sops | {uid, real, still, still_sop}) == {}

    # The same clips as an ingest of the same files from disk.
    disk = tmp_path / "disk"
    disk.mkdir()
    for p in files:
        (disk / p.name).write_bytes(p.read_bytes())
    res = run_ingest(tiny_cfg, str(disk), str(tmp_path / "disk-shards"))
    assert res["status"] == "ingested"
    assert sorted(r["clip"] for r in by_study[uid]) == sorted(
        r["clip"] for r in _rows(tmp_path / "disk-shards")
    )

    # A re-run of the same query finds nothing to do; a query that finds no study is a clear error.
    again = run_ingest(
        tiny_cfg, None, str(out), studies=str(table), dicomweb=archive.url,
        query={"modality": None, "uids": [uid, real, still]},
    )  # fmt: skip
    assert again["status"] == "up to date"
    with pytest.raises(ValueError, match="found no study"):
        run_ingest(
            tiny_cfg, None, str(tmp_path / "none"), dicomweb=archive.url,
            query={"modality": None, "uids": ["1.2.3.4.5.6.7"]},
        )  # fmt: skip


def test_a_study_the_archive_cannot_send_is_a_reject_named_by_its_key(tiny_cfg, archive):
    from echoprime.data.deid import Deidentifier
    from echoprime.data.ingest import StudyIndex
    from echoprime.preprocess import PreprocessSpec

    spec = PreprocessSpec.from_dict(tiny_cfg.data.model_dump(mode="json"))
    deid = Deidentifier(b"archive-decoder-test", "site")
    dec = ArchiveDecoder(archive.url, spec, StudyIndex(), archive.url, deid=deid)
    rows, rejects = dec.decode_study("1.2.3.4.5.6.7")
    assert rows == []
    assert [r["code"] for r in rejects] == ["archive_error"]
    assert rejects[0]["source_uri"] == deid.study("1.2.3.4.5.6.7")
    assert "1.2.3.4.5.6.7" not in rejects[0]["reason"] and "holds no study" in rejects[0]["reason"]
