"""``echoprime ingest --dataset``: a CAMUS stand-in (NIfTI release) through the ordinary Ray Data
ingest, with one cine missing and one cfg line broken, de-identified as always."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from echoprime import storage
from echoprime.data.shards import read_manifest, read_split
from echoprime.datasets.standins import write_standin
from echoprime.retrieval.pseudonyms import read_id_map
from ray_jobs.ingest import run_dataset_ingest

pytestmark = pytest.mark.usefixtures("ray_cluster")


def test_camus_standin_through_ingest_dataset(tmp_path, tiny_cfg):
    root = tmp_path / "CAMUS_public"
    write_standin("camus", root, studies=4, seed=7, frames=24, size=64)
    gone = "database_nifti/patient0002/patient0002_2CH_half_sequence.nii.gz"
    (root / gone).unlink()
    cfg_file = root / "database_nifti" / "patient0003" / "Info_4CH.cfg"
    cfg_file.write_text(cfg_file.read_text() + "not a key-value line\n")
    out, ids_file = tmp_path / "shards", tmp_path / "private" / "ids.json"

    res = run_dataset_ingest(tiny_cfg, "camus", str(root), str(out), id_map=str(ids_file))
    assert res["status"] == "ingested" and sum(res["rows"].values()) == 7  # 8 cines, one missing
    assert res["dataset"]["videos"] == res["rows"] and res["dataset"]["rejects"] == {
        "bad_row": 1,
        "missing_video": 1,
    }
    assert res["files"] == 7  # only the listed cines were decoded: no cfg, still, mask or split list
    ids = read_id_map(ids_file)

    m = read_manifest(str(out))
    loc = storage.locate(m.rejects_file)
    rejects = pq.read_table(loc.path, filesystem=loc.fs).to_pylist()
    assert m.rejects == len(rejects) == 2
    missing = next(r for r in rejects if r["code"] == "missing_video")
    assert missing["source_uri"].startswith("f-") and ids[missing["source_uri"]] == gone
    assert "patient0002" not in missing["reason"]  # the path is quoted by its key
    assert any(r["code"] == "bad_row" and "Info_4CH.cfg line" in r["reason"] for r in rejects)

    rows = [
        {**r, "split": s}  # the split is the shards' partition folder, not a column
        for s in ("train", "val", "test")
        if m.rows[s]
        for r in read_split(str(out), s).drop(["clip"]).to_pylist()
    ]
    splits = {}
    for stem, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
        for pid in (root / "database_split" / f"subgroup_{stem}.txt").read_text().split():
            splits[pid] = split
    for r in rows:
        path = ids[r["source_uri"]]
        pid = path.split("/")[1]
        assert ids[r["study_id"]] == pid and r["split"] == splits[pid]
        assert r["view"] == ("A2C" if "_2CH_" in path else "A4C") and r["report"] == ""
        cfg = dict(line.split(": ") for line in (root / "database_nifti" / pid / f"Info_{path.split('_')[-3]}.cfg").read_text().splitlines() if ": " in line)  # fmt: skip
        assert r["fps"] == pytest.approx(float(cfg["FrameRate"]))  # the cfg's frame rate: the volume has none
        assert json.loads(r["labels"])["ejection_fraction"] == float(cfg["EF"])

    again = run_dataset_ingest(tiny_cfg, "camus", str(root), str(out))
    assert again["status"] == "up to date"
