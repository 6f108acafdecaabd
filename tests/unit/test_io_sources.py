"""The one study-input reader: folders and prefixes listed the same way, objects and files read
into bytes with one set of error codes, any study input turned into load_file's items."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

import pytest

from echoprime import storage
from echoprime.io.sources import (
    NOT_FOUND,
    UNREADABLE,
    StudyTooLarge,
    list_study,
    read_objects,
    study_items,
)


def _folder(root: Path) -> Path:
    for rel, data in {
        "b.dcm": b"bb",
        "a/b.mp4": b"ab",
        "a-b/c.avi": b"abc",
        ".DS_Store": b"x",
        "a/.hidden.dcm": b"h",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def _bucket_with(files: dict[str, bytes]) -> str:
    import boto3

    bucket = "study-" + os.urandom(4).hex()
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    for key, data in files.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    return f"s3://{bucket}"


def test_a_local_folder_lists_its_files_sorted_part_by_part_without_hidden_ones(tmp_path):
    root = _folder(tmp_path / "study")
    got = list_study(root)
    assert got == [str(root / "a" / "b.mp4"), str(root / "a-b" / "c.avi"), str(root / "b.dcm")]
    assert list_study(root, recursive=False) == [str(root / "b.dcm")]
    assert str(root / ".DS_Store") in list_study(root, hidden=True)
    for missing in (tmp_path / "nothing", root / "b.dcm"):
        with pytest.raises(FileNotFoundError, match="study folder .* does not exist"):
            list_study(missing)


def test_an_s3_prefix_lists_like_a_folder(s3_server):
    base = _bucket_with({"s/b.dcm": b"bb", "s/a/b.mp4": b"ab", "s/a-b/c.avi": b"abc", "s/.DS_Store": b"x"})
    assert list_study(f"{base}/s") == [f"{base}/s/a/b.mp4", f"{base}/s/a-b/c.avi", f"{base}/s/b.dcm"]
    assert list_study(f"{base}/s/", recursive=False) == [f"{base}/s/b.dcm"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_study(f"{base}/none")


def test_objects_and_files_read_with_one_set_of_codes(s3_server, tmp_path):
    base = _bucket_with({"s/a.dcm": b"aaa", "s/b.mp4": b"bbbb"})
    local = tmp_path / "c.avi"
    local.write_bytes(b"cc")
    sources = [f"{base}/s/a.dcm", f"{base}/s/missing.dcm", str(local), str(tmp_path / "gone.mp4")]
    got, failed = read_objects(sources)
    assert got == [(f"{base}/s/a.dcm", b"aaa"), (str(local), b"cc")]
    assert failed == {
        f"{base}/s/missing.dcm": (NOT_FOUND, "no such object in the object store"),
        str(tmp_path / "gone.mp4"): (NOT_FOUND, "no such object in the object store"),
    }
    got, _ = read_objects([f"{base}/s/b.mp4"], names=["b.mp4"])
    assert got == [("b.mp4", b"bbbb")]
    with pytest.raises(StudyTooLarge, match="is 7 bytes; the limit is 6 bytes") as e:
        read_objects([f"{base}/s/a.dcm", f"{base}/s/b.mp4"], max_total_bytes=6)
    assert (e.value.total, e.value.limit) == (7, 6)


def test_an_unreachable_store_is_unreadable_and_the_key_stays_out_of_the_log(monkeypatch, caplog):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    caplog.set_level(logging.WARNING)
    uri = "s3://archive/patients/Jane-Doe/IM0001.dcm"
    got, failed = read_objects([uri])
    assert got == [] and failed[uri][0] == UNREADABLE and str(port) not in failed[uri][1]
    (line,) = [r.getMessage() for r in caplog.records]
    assert "bucket archive" in line and "Jane-Doe" not in line


def test_any_study_input_becomes_load_files_items(s3_server, tmp_path):
    root = _folder(tmp_path / "study")
    items, failed = study_items(root)
    assert [(n, type(s)) for n, s in items] == [(p, type(Path(p))) for p in list_study(root)] and not failed
    assert all(Path(n) == s for n, s in items)
    base = _bucket_with({"s/a.dcm": b"aaa", "s/b.mp4": b"bbbb"})
    items, failed = study_items(f"{base}/s")
    assert items == [(f"{base}/s/a.dcm", b"aaa"), (f"{base}/s/b.mp4", b"bbbb")] and not failed
    mixed = [("up.dcm", b"u"), f"{base}/s/b.mp4", str(root / "b.dcm"), f"{base}/s/no.dcm"]
    items, failed = study_items(mixed)
    assert items == [("up.dcm", b"u"), (f"{base}/s/b.mp4", b"bbbb"), (str(root / "b.dcm"), root / "b.dcm")]
    assert failed == {f"{base}/s/no.dcm": (NOT_FOUND, "no such object in the object store")}
    with pytest.raises(StudyTooLarge):
        study_items(f"{base}/s", max_total_bytes=3)
    assert storage.is_s3(items[1][0])
