"""echoprime.batch_interpret without Ray: grouping files into studies, UID probing, the resumable output."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from echoprime import storage
from echoprime.batch_interpret import (
    BatchOutput,
    finding_rows,
    group_studies,
    part_key,
    probe_study_uid,
    result_row,
    safe_name,
)
from echoprime.io.writers import write_dicom, write_video
from echoprime.locks import OutputBusy


def _clip(n: int = 4) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 255, (n, 16, 16, 3), dtype=np.uint8)


def test_group_by_table_then_uid_then_folder_uid_then_folder():
    root = "/a"
    files = [
        "/a/s1/x.dcm",  # UID U1
        "/a/s1/y.mp4",  # joins U1: the only UID in its folder
        "/a/moved/z.dcm",  # UID U1 in another folder: still U1
        "/a/s2/p.mp4",  # folder s2
        "/a/s2/q.mp4",
        "/a/mixed/m1.dcm",  # U2
        "/a/mixed/m2.dcm",  # U3
        "/a/mixed/v.mp4",  # two UIDs in the folder: the folder's name
        "/a/top.mp4",  # top level: its own name
        "/a/x/dup/a.mp4",  # two folders named dup: their relative paths
        "/a/y/dup/b.mp4",
        "/a/s1/listed.dcm",  # the videos table wins over the UID
    ]
    uids = {"/a/s1/x.dcm": "U1", "/a/moved/z.dcm": "U1", "/a/mixed/m1.dcm": "U2", "/a/mixed/m2.dcm": "U3"}
    uids["/a/s1/listed.dcm"] = "U9"
    groups = group_studies(files, root, uids, {"s1/listed.dcm": "T1"})
    assert groups == {
        "T1": ["/a/s1/listed.dcm"],
        "U1": ["/a/moved/z.dcm", "/a/s1/x.dcm", "/a/s1/y.mp4"],
        "U2": ["/a/mixed/m1.dcm"],
        "U3": ["/a/mixed/m2.dcm"],
        "mixed": ["/a/mixed/v.mp4"],
        "s2": ["/a/s2/p.mp4", "/a/s2/q.mp4"],
        "top": ["/a/top.mp4"],
        "x/dup": ["/a/x/dup/a.mp4"],
        "y/dup": ["/a/y/dup/b.mp4"],
    }


def test_group_s3_uris():
    files = ["s3://b/arch/st/a.mp4", "s3://b/arch/st/b.dcm"]
    assert group_studies(files, "s3://b/arch", {"s3://b/arch/st/b.dcm": "U"}) == {"U": sorted(files)}


def test_probe_study_uid(tmp_path):
    dcm = tmp_path / "a.dcm"
    write_dicom(_clip(), dcm, study_uid="1.2.3.4")
    (tmp_path / "noext").write_bytes(dcm.read_bytes())
    (tmp_path / "v.mp4").write_bytes(write_video(_clip()))
    (tmp_path / "video_no_suffix").write_bytes(write_video(_clip()))
    (tmp_path / "notes.txt").write_text("not an echo file\n")
    assert probe_study_uid(str(dcm)) == "1.2.3.4"
    assert probe_study_uid(str(tmp_path / "noext")) == "1.2.3.4"
    for name in ("v.mp4", "video_no_suffix", "notes.txt", "missing.dcm"):
        assert probe_study_uid(str(tmp_path / name)) is None, name


def test_part_key_and_safe_name():
    assert part_key(["b", "a"]) == part_key(["a", "b"]) != part_key(["a"])
    assert len(part_key(["a"])) == 16
    # a study id with a newline is not two studies: their chunks would share one set of files
    assert part_key(["a\nb"]) != part_key(["a", "b"])
    assert safe_name("1.2.840.10008") == "1.2.840.10008"
    assert safe_name("echo_1") == "echo_1"


def test_study_names_that_sanitise_alike_get_files_of_their_own(tmp_path):
    """Folder names become study ids; those that differ only where sanitising changes them
    ("echo 1" / "echo_1" / "echo/1"), or only in case (one file on a case-insensitive disk),
    or that would be hidden or too long, each get their own JSON document."""
    ids = ["echo 1", "echo_1", "echo/1", "Echo_1", "ECHO_1", "", ".", "..", ".hidden", "é" * 3, "x" * 300]
    names = [safe_name(s) for s in ids]
    assert len({n.lower() for n in names}) == len(ids), names
    assert names == [safe_name(s) for s in ids]  # deterministic: a re-run writes the same files
    for s, n in zip(ids, names, strict=True):
        assert re.fullmatch(r"[A-Za-z0-9._~-]{1,120}", n) and not n.startswith("."), (s, n)
    # changed names keep a readable prefix and end in a hash of the id
    assert names[0].startswith("echo_1~") and names[3].startswith("Echo_1~")
    out = BatchOutput(str(tmp_path / "out"))
    out.write_chunk(part_key(ids), [_row(s) for s in ids], [], {s: {"study_id": s} for s in ids})
    docs = [json.loads(p.read_text()) for p in sorted((tmp_path / "out" / "json").iterdir())]
    assert sorted(d["study_id"] for d in docs) == sorted(ids)


def _row(sid: str) -> dict:
    return {"study_id": sid, "status": "ok", "n_files": 1, "n_used": 1, "report_text": sid}


def test_output_commits_and_cleans(tmp_path):
    out = BatchOutput(str(tmp_path / "out"))
    out.start("b1", "id1", "arch", force=False)
    k1, k2 = part_key(["s1", "s2"]), part_key(["s3"])
    out.write_chunk(
        k1, [_row("s1"), _row("s2")], [{"study_id": "s1", "file": "f", "reason": "r", "code": "c"}]
    )
    out.write_chunk(k2, [_row("s3")], [], {"s3": {"study_id": "s3"}})
    assert out.committed() == {k1: ["s1", "s2"], k2: ["s3"]}
    assert sorted(out.read().column("study_id").to_pylist()) == ["s1", "s2", "s3"]
    assert out.read("rejects").to_pylist() == [{"study_id": "s1", "file": "f", "reason": "r", "code": "c"}]
    assert json.loads((tmp_path / "out/json/s3.json").read_text()) == {"study_id": "s3"}

    # A lost results part un-commits its studies (and its rejects go with it); a part written
    # without its _done record (an interrupted chunk) is removed.
    (tmp_path / f"out/results/part-{k1}.parquet").unlink()
    orphan = part_key(["s9"])
    storage.write_bytes(str(tmp_path / f"out/results/part-{orphan}.parquet"), b"partial")
    assert out.committed(clean=False) == {k2: ["s3"]}
    assert (tmp_path / f"out/_done/part-{k1}.json").exists()  # reading never deletes
    assert out.committed() == {k2: ["s3"]}
    left = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("part-*"))
    assert left == [
        f"_done/part-{k2}.json",
        f"findings/part-{k2}.parquet",
        f"rejects/part-{k2}.parquet",
        f"results/part-{k2}.parquet",
    ]


def test_output_refuses_another_bundle_unless_forced(tmp_path):
    out = BatchOutput(str(tmp_path / "out"))
    out.start("b1", "id1" * 8, "arch", force=False)
    out.write_chunk(part_key(["s1"]), [_row("s1")], [])
    out.start("b1", "id1" * 8, "arch", force=False)  # same bundle: resumes
    assert out.committed()
    with pytest.raises(ValueError, match="holds results of bundle 'b1'.*--force"):
        out.start("b2", "id2" * 8, "arch", force=False)
    out.start("b2", "id2" * 8, "arch", force=True)
    assert out.committed() == {}
    assert json.loads((tmp_path / "out/_job.json").read_text())["bundle"] == "b2"


def test_a_second_job_on_a_busy_output_is_refused(tmp_path):
    """Two batch-interpret jobs on one --out would overwrite each other's parts and delete each
    other's uncommitted ones as debris: the output is held from start() to close()."""
    first = BatchOutput(str(tmp_path / "out"))
    assert first.start("b1", "id1", "arch", force=False) is None
    with pytest.raises(OutputBusy, match=rf"in use by echoprime batch-interpret \(pid {os.getpid()} on "):
        BatchOutput(str(tmp_path / "out")).start("b1", "id1", "arch", force=False)
    with pytest.raises(OutputBusy):  # --force does not clear a running job's output either
        BatchOutput(str(tmp_path / "out")).start("b1", "id1", "arch", force=True)
    first.close()
    second = BatchOutput(str(tmp_path / "out"))
    assert second.start("b1", "id1", "arch", force=False) is None
    second.close()
    # a refused start leaves the output free: a job for another bundle is told so, and let go
    with pytest.raises(ValueError, match="holds results of bundle 'b1'"):
        BatchOutput(str(tmp_path / "out")).start("b2", "id2", "arch", force=False)
    third = BatchOutput(str(tmp_path / "out"))
    third.start("b1", "id1", "arch", force=False)
    third.close()


def test_output_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="not writable"):
        BatchOutput(str(blocker / "out")).start("b", "i", "a", force=False)


def test_the_findings_table_holds_grades_intervals_and_calibrated_probabilities(tmp_path):
    """Issue 23's keys reach the batch output twice: in the results' metrics JSON, and flat in
    findings/ (one row per study and finding), where a converted release's are null."""
    from types import SimpleNamespace

    from echoprime.io import FileReport
    from tests.fixtures_graded import graded_result, release_result

    files = [FileReport(path="a.dcm", status="used")]
    rows = [
        result_row("s1", SimpleNamespace(to_dict=graded_result), files),
        result_row("s2", SimpleNamespace(to_dict=release_result), files),
        result_row("s3", None, files, error="boom"),
    ]
    assert json.loads(rows[0]["metrics"]) == graded_result()["metrics"]
    out = BatchOutput(str(tmp_path / "out"))
    out.start("b1", "id1", "arch", force=False)
    out.write_chunk(part_key(["s1", "s2", "s3"]), rows, [])
    table = out.read("findings")
    assert set(table.column("study_id").to_pylist()) == {"s1", "s2"}  # s3 failed: no finding
    got = {(r["study_id"], r["finding"]): r for r in table.to_pylist()}
    assert len(got) == len(graded_result()["metrics"]) + len(release_result()["metrics"])

    mr = got["s1", "mitral_regurgitation"]
    assert (mr["probability"], mr["calibrated_probability"], mr["calibration"]) == (0.3, 0.25, "isotonic")
    assert (mr["grade"], mr["grade_label"], mr["report_grade_label"], mr["agrees_with_report"]) == (
        2,
        "mild",
        "moderate",
        False,
    )
    assert mr["grade_scale"] == ["none", "trace", "mild", "moderate", "severe"]
    assert mr["grade_distribution"] == [0.1, 0.2, 0.4, 0.2, 0.1] and mr["n_graded"] == 10
    assert got["s1", "right_atrium_dilation"]["grade_distribution"] == [None] * 4
    ef = got["s1", "ejection_fraction"]
    assert (ef["value"], ef["interval_low"], ef["interval_high"], ef["interval_level"]) == (
        35.0,
        30.0,
        41.0,
        0.8,
    )
    hr = got["s1", "heart_rate"]
    assert (hr["kind"], hr["unit"], hr["interval_low"], hr["interval_high"]) == (
        "regression",
        "bpm",
        64.0,
        80.0,
    )
    assert got["s1", "future_finding"]["unit"] == "au"  # a finding this version does not know is kept

    old = got["s2", "mitral_regurgitation"]
    assert old["decision"] is False and old["probability"] == 0.3
    new = (
        "calibrated_probability",
        "calibration",
        "grade",
        "grade_label",
        "interval_low",
        "agrees_with_report",
    )
    assert all(r[k] is None for (sid, _), r in got.items() if sid == "s2" for k in new)
    assert finding_rows("s", {}) == []
    with pytest.raises(ValueError, match="kind must be one of .*'findings'.*got 'finding'"):
        out.read("finding")
    out.close()
