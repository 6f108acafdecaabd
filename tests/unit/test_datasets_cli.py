"""``echoprime synth --as`` and ``echoprime ingest --dataset`` as a user types them (no Ray: the
checks that come before any job starts), and the adapter's rejects as the rejects table names them."""

from __future__ import annotations

from echoprime.cli import main
from echoprime.commands.ingest_run import keyed_rejects
from echoprime.data.deid import Deidentifier


def test_synth_as_writes_a_standin(tmp_path, capsys):
    assert main(["synth", "--as", "echonet-lvh", "--studies", "2", "--size", "64", "--frames", "8", "--out", str(tmp_path / "lvh")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "echoprime ingest --dataset echonet-lvh" in out
    assert (tmp_path / "lvh" / "MeasurementsList.csv").is_file() and len(
        list((tmp_path / "lvh").glob("Batch*/*.avi"))
    ) == 2
    assert (
        main(["synth", "--as", "camus", "--dataset-option", "release=2019", "--out", str(tmp_path / "c")])
        == 2
    )
    assert "release must be nifti or mhd" in capsys.readouterr().err
    assert main(["synth", "--as", "camus", "--format", "mp4", "--out", str(tmp_path / "c")]) == 2
    assert "--format does not apply" in capsys.readouterr().err


def test_ingest_dataset_refuses_what_does_not_apply(tmp_path, capsys):
    base = ["ingest", "--dataset", "echonet-dynamic", "--out", str(tmp_path / "shards")]
    assert main([*base, "--input", str(tmp_path), "--manifest", "videos.csv"]) == 2
    assert "drop --manifest/--studies" in capsys.readouterr().err
    assert main([*base, "--dicomweb", "http://127.0.0.1:1/dicom-web"]) == 2
    assert "give it with --input" in capsys.readouterr().err
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "readme.txt").write_text("not the dataset\n")
    assert main([*base, "--input", str(tmp_path / "ds")]) == 2
    assert "FileList.csv is missing" in capsys.readouterr().err
    assert not (tmp_path / "shards").exists() or not any((tmp_path / "shards").iterdir())


def test_keyed_rejects_name_videos_by_their_file_key():
    records = [
        {
            "source": "Videos/0XA.avi",
            "reason": "FileList.csv line 2 names Videos/0XA.avi, which is not on disk",
            "code": "missing_video",
            "path": "Videos/0XA.avi",
        },  # fmt: skip
        {
            "source": "FileList.csv line 3",
            "reason": "FileList.csv line 3: EF 'x' is not a number",
            "code": "bad_row",
            "path": None,
        },  # fmt: skip
    ]
    off = keyed_rejects(records, Deidentifier(None, "off"))
    assert off[0] == {"source_uri": "Videos/0XA.avi", "reason": records[0]["reason"], "code": "missing_video"}
    deid = Deidentifier(b"k" * 32, "site")
    on = keyed_rejects(records, deid)
    key = deid.file("Videos/0XA.avi")
    assert on[0]["source_uri"] == key and "0XA" not in on[0]["reason"] and key in on[0]["reason"]
    assert on[1] == {"source_uri": "FileList.csv line 3", "reason": records[1]["reason"], "code": "bad_row"}
