"""echoprime.data.shards.commit_run without Ray, on a local folder and on a real S3 server (moto):
the manifest switches in one write, the previous run's data stays for its readers, older runs
and the folders of runs that died go after the switch."""

from __future__ import annotations

import os

import pytest

from echoprime import storage
from echoprime.data.shards import ShardManifest, commit_run, data_runs, read_manifest


@pytest.fixture(params=["local", "s3"])
def out_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "shards")
    import boto3

    request.getfixturevalue("s3_server")
    bucket = "shards-" + os.urandom(4).hex()
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/shards"


def _run(out: str, run_id: str) -> ShardManifest:
    """A run's data folder as ingest writes it, and its (uncommitted) manifest."""
    f = storage.locate(out).join(f"data-{run_id}", "split=train", "part-0.parquet").uri
    storage.write_bytes(f, f"rows of {run_id}".encode())
    return ShardManifest(
        run_id=run_id,
        files={"train": [f], "val": [], "test": []},
        rows={"train": 1, "val": 0, "test": 0},
        studies={"train": 1, "val": 0, "test": 0},
        rejects=0,
        rejects_file=None,
        spec={"frames": 16, "size": 32},
        fingerprint=run_id,
        source="archive",
    )


def test_runs_are_kept_for_one_more_commit_then_deleted(out_uri):
    a = _run(out_uri, "a")
    assert commit_run(out_uri, a) == [] and read_manifest(out_uri).previous_runs == []
    b = _run(out_uri, "b")
    assert commit_run(out_uri, b) == []  # a stays: a reader may hold its manifest
    assert read_manifest(out_uri).run_id == "b" and read_manifest(out_uri).previous_runs == ["a"]
    assert storage.read_bytes(a.files["train"][0]) == b"rows of a"
    _run(out_uri, "died")  # a run that never committed
    c = _run(out_uri, "c")
    assert sorted(commit_run(out_uri, c)) == ["a", "died"]
    assert data_runs(out_uri) == ["b", "c"] and read_manifest(out_uri).previous_runs == ["b"]
    # more kept, or none
    d = _run(out_uri, "d")
    assert commit_run(out_uri, d, keep_previous=2) == [] and data_runs(out_uri) == ["b", "c", "d"]
    assert read_manifest(out_uri).previous_runs == ["c", "b"]
    e = _run(out_uri, "e")
    assert sorted(commit_run(out_uri, e, keep_previous=0)) == ["b", "c", "d"]
    assert data_runs(out_uri) == ["e"] and read_manifest(out_uri).previous_runs == []


def test_a_failed_switch_deletes_nothing(out_uri, monkeypatch):
    import echoprime.data.shards as shards

    commit_run(out_uri, _run(out_uri, "a"))
    b = _run(out_uri, "b")

    def fail(*args, **kwargs):
        raise OSError("simulated: no space left")

    monkeypatch.setattr(shards, "write_manifest", fail)
    with pytest.raises(OSError, match="simulated"):
        commit_run(out_uri, b)
    monkeypatch.undo()
    assert read_manifest(out_uri).run_id == "a" and data_runs(out_uri) == ["a", "b"]


def test_an_unreadable_manifest_leaves_every_folder(out_uri):
    _run(out_uri, "a")
    storage.write_bytes(storage.locate(out_uri).join("_manifest.json").uri, b"{not json")
    assert commit_run(out_uri, _run(out_uri, "b")) == []  # which runs it named is unknown
    assert data_runs(out_uri) == ["a", "b"] and read_manifest(out_uri).run_id == "b"
