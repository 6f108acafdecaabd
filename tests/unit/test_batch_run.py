"""batch-interpret's driver steps (echoprime.batch_run), without Ray."""

from __future__ import annotations

import json

import pytest

from echoprime.batch_run import BatchPlan, list_archive, name_studies, plan_batch, run_summary, summary_lines
from echoprime.data.deid import Deidentifier


def _plan(deid: Deidentifier, archive: bool = False) -> BatchPlan:
    return BatchPlan(deid, "tag", 2, 1.0, 0, 5, "sha", "src", archive)


def test_the_request_is_checked_before_the_bundle_is_read(tiny_cfg, tmp_path):
    kw = dict(actors=None, chunk=8, k=None, deidentify=True, id_map=None, secret=None, dicomweb=None)
    with pytest.raises(ValueError, match="--id-map needs keyed names"):
        plan_batch(
            tiny_cfg, "nowhere", "in", "out", **{**kw, "deidentify": False, "id_map": str(tmp_path / "m")}
        )
    with pytest.raises(ValueError, match="--actors and --chunk must be >= 1, got 0 and 8"):
        plan_batch(tiny_cfg, "nowhere", "in", "out", **{**kw, "actors": 0})


def test_list_archive_leaves_out_its_tables_and_reads_the_videos_table(tmp_path):
    (tmp_path / "s1").mkdir()
    (tmp_path / "s1" / "a.dcm").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    (tmp_path / "manifest.csv").write_text("path,study_id\nb.mp4,S9\n")
    files, videos, root = list_archive(str(tmp_path), None)
    assert sorted(f.rsplit("/", 1)[1] for f in files) == ["a.dcm", "b.mp4"]
    assert videos == {"b.mp4": "S9"} and root.endswith(tmp_path.name)
    (tmp_path / "bad.csv").write_text("path\nb.mp4\n")
    with pytest.raises(ValueError, match=r"bad.csv: videos row 0 needs 'path' and 'study_id'"):
        list_archive(str(tmp_path), str(tmp_path / "bad.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no studies: it is empty"):
        list_archive(str(tmp_path / "empty"), None)


def test_names_are_keys_that_keep_the_suffix_and_the_map_leads_back(tmp_path):
    grouped = {"UID1": ["/arch/s1/a.DCM", "/arch/s1/b.mp4"]}
    id_map = tmp_path / "ids.json"
    named = name_studies(grouped, _plan(Deidentifier(b"k" * 32, "site")), "/arch", str(id_map))
    (key,) = named.studies
    assert key.startswith("s-") and named.originals == {key: "UID1"}
    assert [n[-4:] for n in named.names.values()] == [".dcm", ".mp4"]
    assert all(n.startswith("f-") for n in named.names.values())
    assert "s1/a.DCM" in id_map.read_text() and "UID1" in id_map.read_text()
    (row,) = named.rows([key], archive=False)
    assert row == {
        "study_id": key,
        "files": grouped["UID1"],
        "names": list(named.names.values()),
        "source": "",
    }
    plain = name_studies(grouped, _plan(Deidentifier(None, "off"), archive=True), "", None)
    assert plain.studies == grouped and plain.names == {f: f for f in grouped["UID1"]}
    assert plain.rows(["UID1"], archive=True)[0]["source"] == "UID1"


def test_summary_counts_and_prints():
    rows = [
        {"status": "ok", "chunk_start": 1.0, "chunk_end": 3.0, "n_rejected": 1, "seconds": 1.5},
        {"status": "error", "chunk_start": 2.0, "chunk_end": 5.0, "n_rejected": 0, "seconds": 2.0},
    ]
    res = run_summary(
        rows, _plan(Deidentifier(b"k" * 32, "one-off")), studies=3, todo=2, files=7, out="O",
        started=0.0, t1=1.0, t2=5.0, first=0.5, now=6.0, recovered=None,
    )  # fmt: skip
    assert (res["studies"], res["skipped"], res["interpreted"], res["ok"], res["error"]) == (3, 1, 2, 1, 1)
    assert res["processing_s"] == 4.0 and res["studies_per_s"] == 0.5 and res["ids"] == "one-off"
    assert json.loads(json.dumps(res)) == res
    lines = summary_lines(res, None)
    assert lines[0].startswith(
        "batch-interpret: 3 studies: 2 interpreted (1 ok, 0 without a usable video, 1 failed)"
    )
    assert len(lines) == 2 and lines[1].endswith("; only --id-map relates them to the archive")
    assert len(summary_lines(res | {"ids": "site"}, "/m.json")) == 2
