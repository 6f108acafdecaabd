"""batch-interpret on the session's local Ray: a mixed DICOM/MP4 archive with bad files, local and S3,
results equal to StudyInterpreter.interpret, studies and files named by keys (no archive identifier
in the output), resume after a lost part, empty input, GPU config on no GPUs."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from echoprime import storage
from echoprime.batch_interpret import BatchOutput, probe_study_uid, safe_name
from echoprime.locks import OutputBusy, OutputLock
from echoprime.retrieval.pseudonyms import read_id_map
from ray_jobs.batch_interpret import run_batch_interpret
from tests.leaks import files_under, leaks

pytestmark = pytest.mark.usefixtures("ray_cluster")
SITE = (b"batch-interpret-test-site-secret", "site")
"""The site secret of these tests' runs: a resumed run must key studies as the first did."""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    import torch

    from tests.fixtures_bundle import make_random_bundle

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bi")
    return make_random_bundle(root / "bundle", n_bank=80, id_map=root / "id-map.json")


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> tuple[Path, dict[str, set[str]]]:
    """4 synthetic studies (DICOM and MP4 mixed), a moved DICOM, a corrupt MP4, a folder of junk.

    Returns the archive and the expected grouping: study id -> file names.
    """
    from echoprime.synth.cohort import make_study, write_study

    root = tmp_path_factory.mktemp("bi") / "archive"
    for i in range(4):
        write_study(make_study(7, i, min_videos=3, max_videos=5, frames=32, size=64), root, fmt="both")
    videos = root / "videos"
    # A DICOM filed in another folder still belongs to its StudyInstanceUID's study.
    moved = sorted(videos.glob("s7_000001/*.dcm"))[0]
    (root / "moved").mkdir()
    shutil.move(moved, root / "moved" / moved.name)
    (videos / "s7_000000" / "corrupt.mp4").write_bytes(
        np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    )
    (root / "junk").mkdir()
    (root / "junk" / "notes.txt").write_text("not an echo file\n")
    expected: dict[str, set[str]] = {"junk": {"notes.txt"}}
    for folder in sorted(videos.iterdir()):
        uid = probe_study_uid(str(next(folder.glob("*.dcm"))))
        expected[uid] = {p.name for p in folder.iterdir()}
    expected[probe_study_uid(str(root / "moved" / moved.name))].add(moved.name)
    return root, expected


@pytest.fixture(scope="module")
def local_run(tiny_cfg, bundle, archive, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bi")
    out = tmp / "out"
    res = run_batch_interpret(
        tiny_cfg,
        str(bundle),
        str(archive[0]),
        str(out),
        write_json=True,
        actors=2,
        chunk=2,
        id_map=str(tmp / "private" / "ids.json"),
        secret=SITE,
    )
    return out, res


@pytest.fixture(scope="module")
def id_map(local_run) -> dict[str, str]:
    """The operator's map of the local run: study and file keys -> archive ids and relative paths."""
    return read_id_map(local_run[0].parent / "private" / "ids.json")


def _rows(out: str) -> dict[str, dict]:
    return {r["study_id"]: r for r in BatchOutput(out).read().to_pylist()}


def test_local_archive(tiny_cfg, bundle, archive, local_run, id_map):
    from echoprime.inference import StudyInterpreter

    root, expected = archive
    out, res = local_run
    assert res["studies"] == res["interpreted"] == 5 and res["skipped"] == 0
    assert (res["ok"], res["no_usable_video"], res["error"]) == (4, 1, 0)
    assert res["rejected_files"] == 2 and res["ids"] == "site"
    rows = _rows(str(out))
    # studies and files go by keys; the operator's map gives back the archive's grouping
    assert all(s.startswith("s-") for s in rows)
    assert all(f["path"].startswith("f-") for r in rows.values() for f in json.loads(r["files"]))
    named = {
        id_map[s]: {Path(id_map[f["path"]]).name for f in json.loads(r["files"])} for s, r in rows.items()
    }
    assert named == expected
    assert (out.parent / "private" / "ids.json").stat().st_mode & 0o777 == 0o600

    # Each row is what StudyInterpreter.interpret says about the same files.
    ref = StudyInterpreter.from_bundle(bundle, device="cpu", k=tiny_cfg.interpret.k)
    for sid, row in rows.items():
        keys = [f["path"] for f in json.loads(row["files"])]
        want = ref.interpret([(k, root / id_map[k]) for k in keys]).to_dict()
        assert row["status"] == want["status"], sid
        assert row["n_files"] == len(keys) and row["n_used"] == len(want["videos"])
        assert row["report_text"] == want["report_text"]
        report = json.loads(row["report"])
        drop = lambda sections: [{k: v for k, v in c.items() if k != "similarity"} for c in sections]  # noqa: E731
        assert drop(report) == drop(want["report"])
        assert [c["similarity"] for c in report] == pytest.approx(
            [c["similarity"] for c in want["report"]], abs=1e-5
        )
        got_n = json.loads(row["neighbours"])
        assert _ids(got_n) == _ids(want["neighbours"])
        assert _sims(got_n) == pytest.approx(_sims(want["neighbours"]), abs=1e-5)
        views = json.loads(row["views"])
        assert [(v["file"], v["view"]) for v in views] == [(v["file"], v["view"]) for v in want["videos"]]
        assert [v["confidence"] for v in views] == pytest.approx(
            [v["confidence"] for v in want["videos"]], abs=1e-5
        )
        got_m = json.loads(row["metrics"])
        assert got_m.keys() == want["metrics"].keys()
        for ph, m in want["metrics"].items():
            assert got_m[ph]["decision"] == m["decision"], (sid, ph)
            assert got_m[ph]["value"] == pytest.approx(m["value"], abs=1e-5, nan_ok=True), (sid, ph)
        assert json.loads(row["evidence"]).keys() == want["evidence"].keys()
        assert row["error"] is None
        doc = json.loads((out / "json" / f"{safe_name(sid)}.json").read_text())
        assert doc["study_id"] == sid and doc["report_text"] == row["report_text"]

    by_id = {id_map[s]: r for s, r in rows.items()}
    assert by_id["junk"]["status"] == "no_usable_video" and by_id["junk"]["report_text"] == ""
    rejects = {Path(id_map[r["file"]]).name: r for r in BatchOutput(str(out)).read("rejects").to_pylist()}
    assert rejects.keys() == {"corrupt.mp4", "notes.txt"}
    assert id_map[rejects["notes.txt"]["study_id"]] == "junk"
    assert id_map[rejects["corrupt.mp4"]["study_id"]] == next(
        s for s, f in expected.items() if "corrupt.mp4" in f
    )
    assert all(r["reason"] and r["code"] for r in rejects.values())


def test_output_holds_no_identifier_of_the_archive(archive, local_run, id_map):
    """No file of the output holds a StudyInstanceUID, folder or file name of the archive, nor an
    identifying attribute the synthetic DICOMs carry (as a scanner's do): only the map does."""
    import pydicom

    from echoprime.synth.writers import patient_attributes

    root, expected = archive
    out, _ = local_run
    originals = set(expected) | {n for names in expected.values() for n in names}
    originals |= {p.name for p in (root / "videos").iterdir()} | {"moved"}  # the archive's folders
    dicoms = sorted(root.rglob("*.dcm"))
    assert dicoms
    for f in dicoms:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        originals |= {str(ds.StudyInstanceUID), str(ds.PatientID), str(ds.PatientName)}
        attrs = patient_attributes(str(ds.PatientID))
        originals |= {v for k, v in attrs.items() if k not in ("PatientSex", "SeriesDescription")}
    assert set(id_map.values()) >= set(expected)  # the map is where they are
    assert leaks(files_under(out), originals) == {}


def test_output_names_bank_studies_by_pseudonym_only(bundle, local_run):
    """The bank's studies are other patients': the output names them by the pseudonyms the bank
    holds (docs/privacy.md), and the operator's map gives back the bank's own ids."""
    from echoprime.retrieval.pseudonyms import read_id_map
    from tests.fixtures_bundle import original_ids

    out, _ = local_run
    id_map = read_id_map(bundle.parent / "id-map.json")
    named = set()
    for row in _rows(str(out)).values():
        named |= {c["source_study"] for c in json.loads(row["report"] or "[]")} - {None}
        named |= {n for ids in _ids(json.loads(row["neighbours"] or "{}")).values() for n in ids}
    assert named and named <= set(id_map)
    assert {id_map[n] for n in named} <= set(original_ids(80))
    written = [json.dumps(BatchOutput(str(out)).read().to_pylist())]
    written += [p.read_text() for p in (out / "json").glob("*.json")]
    assert not [s for s in original_ids(80) for w in written if s in w]


def _ids(neighbours: dict) -> dict:
    return {s: [n["study_id"] for n in v] for s, v in neighbours.items()}


def _sims(neighbours: dict) -> list[float]:
    return [n["similarity"] for s in sorted(neighbours) for n in neighbours[s]]


def test_resume_redoes_only_a_lost_part(tiny_cfg, bundle, archive, local_run):
    out, _ = local_run
    before = _rows(str(out))
    part = sorted((out / "results").glob("part-*.parquet"))[0]
    lost = set(json.loads((out / "_done" / f"{part.stem}.json").read_text())["studies"])
    part.unlink()
    res = run_batch_interpret(
        tiny_cfg, str(bundle), str(archive[0]), str(out), write_json=True, actors=1, chunk=2, secret=SITE
    )
    assert res["interpreted"] == len(lost) and res["skipped"] == 5 - len(lost)
    after = _rows(str(out))
    assert len(BatchOutput(str(out)).read()) == 5  # no duplicate rows
    assert {s: r["report_text"] for s, r in after.items()} == {s: r["report_text"] for s, r in before.items()}

    res = run_batch_interpret(
        tiny_cfg, str(bundle), str(archive[0]), str(out), actors=1, chunk=2, secret=SITE
    )
    assert (res["interpreted"], res["skipped"]) == (0, 5) and res["lock_taken_over"] is None

    # Keys of another secret (a one-off one when none is set), or the originals, would redo and
    # duplicate every study: refused, saying how to resume, and nothing is touched.
    files = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "_job.json")
    other = (b"another-site-secret-0123456789", "site")
    for kw, words in (
        ({"secret": other}, "keys of another site secret, and this run would name them by keys of the site"),
        ({}, "this run would name them by keys from a one-off secret"),
        ({"deidentify": False}, "this run would name them by the archive's own ids"),
    ):
        with pytest.raises(ValueError, match=f"{words}.*ECHOPRIME_SITE_SECRET.*--force"):
            run_batch_interpret(tiny_cfg, str(bundle), str(archive[0]), str(out), actors=1, **kw)
        assert (
            sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file() and p.name != "_job.json")
            == files
        )


def test_one_job_at_a_time_on_an_output(tiny_cfg, bundle, archive, local_run):
    """A second job on a busy --out is refused before it touches anything, naming the first; the
    lock of a job that died holding it is taken over, and the summary says so."""
    from tests.unit.test_locks import _die_holding

    out, _ = local_run
    before = sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    with OutputLock(str(out), "echoprime batch-interpret"):
        with pytest.raises(OutputBusy, match=f"{out} is in use by echoprime batch-interpret \\(pid "):
            run_batch_interpret(tiny_cfg, str(bundle), str(archive[0]), str(out), actors=1, force=True)
    assert sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()) == before  # --force did nothing
    dead = _die_holding(str(out))
    res = run_batch_interpret(tiny_cfg, str(bundle), str(archive[0]), str(out), actors=1, secret=SITE)
    assert (res["interpreted"], res["skipped"]) == (0, 5)
    assert (
        f"(pid {dead} on " in res["lock_taken_over"]
        and f"process {dead} no longer runs" in res["lock_taken_over"]
    )


def test_s3_archive_and_output(tiny_cfg, bundle, archive, local_run, id_map, s3_server, monkeypatch):
    import boto3

    import ray_jobs.batch_interpret as job
    from echoprime.bundle import publish

    monkeypatch.setattr(job, "DRIVER_PROBE_MAX", 0)  # headers read by Ray Data tasks, as for a big archive

    boto3.client("s3").create_bucket(Bucket="bi-test")
    root = archive[0]
    for p in root.rglob("*"):
        if p.is_file():
            storage.write_bytes(f"s3://bi-test/archive/{p.relative_to(root)}", p.read_bytes())
    s3_bundle = publish(bundle, "s3://bi-test/bundle")
    res = run_batch_interpret(
        tiny_cfg, s3_bundle, "s3://bi-test/archive", "s3://bi-test/out", actors=1, chunk=3, secret=SITE
    )
    assert (res["studies"], res["ok"], res["no_usable_video"], res["rejected_files"]) == (5, 4, 1, 2)
    rows = _rows("s3://bi-test/out")
    local = _rows(str(local_run[0]))
    # The same secret names the same studies and files alike, wherever the archive lies.
    assert {s: r["report_text"] for s, r in rows.items()} == {s: r["report_text"] for s, r in local.items()}
    assert {s: r["files"] for s, r in rows.items()} == {s: r["files"] for s, r in local.items()}
    rejects = BatchOutput("s3://bi-test/out").read("rejects").column("file").to_pylist()
    assert sorted(Path(id_map[f]).name for f in rejects) == ["corrupt.mp4", "notes.txt"]
    res = run_batch_interpret(
        tiny_cfg, s3_bundle, "s3://bi-test/archive", "s3://bi-test/out", actors=1, secret=SITE
    )
    assert (res["interpreted"], res["skipped"]) == (0, 5)

    # --original-ids (authorised local use): the archive's own ids and URIs, as it names them
    res = run_batch_interpret(
        tiny_cfg, s3_bundle, "s3://bi-test/archive", "s3://bi-test/plain", actors=1, chunk=5, deidentify=False
    )
    plain = _rows("s3://bi-test/plain")
    assert res["ids"] == "originals" and set(plain) == {id_map[s] for s in local}
    assert all(
        f["path"].startswith("s3://bi-test/archive/") for r in plain.values() for f in json.loads(r["files"])
    )
    with pytest.raises(ValueError, match="--id-map needs keyed names"):
        run_batch_interpret(
            tiny_cfg, s3_bundle, "s3://bi-test/archive", "s3://bi-test/x", deidentify=False, id_map="ids.json"
        )


def test_no_studies(tiny_cfg, bundle, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no studies"):
        run_batch_interpret(tiny_cfg, str(bundle), str(tmp_path / "empty"), str(tmp_path / "out"))
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables" / "studies.csv").write_text("study_id,report\n")
    with pytest.raises(ValueError, match="tables.*holds no studies"):
        run_batch_interpret(tiny_cfg, str(bundle), str(tmp_path / "tables"), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        run_batch_interpret(tiny_cfg, str(bundle), str(tmp_path / "nowhere"), str(tmp_path / "out"))


def test_gpu_config_on_a_cluster_without_gpus_fails_fast(tiny_cfg, bundle, archive, tmp_path):
    cfg = tiny_cfg.replace(
        train={**tiny_cfg.train.model_dump(), "use_gpu": True},
        ray={**tiny_cfg.ray.model_dump(), "resource_wait_s": 1},
    )
    t0 = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"batch-interpret asks for .* 2 GPU but the cluster has .* 0 GPU"):
        run_batch_interpret(cfg, str(bundle), str(archive[0]), str(tmp_path / "out"), actors=2)
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "out" / "results").exists()


def test_a_hostile_archive_fails_no_study(tiny_cfg, bundle, tmp_path):
    """The hostile corpus (tests/hostile_corpus.py: ~90 files in ~30 classes) as an archive: no
    study fails, every bad file is a reject with its class's specific reason, and every good file
    is used."""
    import re

    from tests.hostile_corpus import EXPECTED_REASON, GENERIC_REASON, write_hostile_corpus

    root = tmp_path / "archive"
    corpus = write_hostile_corpus(root / "study")
    out = tmp_path / "out"
    ids = tmp_path / "private" / "ids.json"
    res = run_batch_interpret(tiny_cfg, str(bundle), str(root), str(out), actors=1, chunk=4, id_map=str(ids))
    assert res["error"] == 0 and res["studies"] == res["interpreted"] >= 1
    names = read_id_map(ids)  # files are named by keys in the output
    rows = _rows(str(out))
    assert all(r["error"] is None and r["status"] in ("ok", "no_usable_video") for r in rows.values())
    assert sum(r["n_used"] for r in rows.values()) == sum(f.expect_ok for f in corpus)
    rejects = {Path(names[r["file"]]).name: r for r in BatchOutput(str(out)).read("rejects").to_pylist()}
    bad = {Path(f.path).name: f for f in corpus if not f.expect_ok}
    assert rejects.keys() == bad.keys()
    for name, f in bad.items():
        reason = rejects[name]["reason"]
        assert re.search(EXPECTED_REASON[f.cls], reason, re.I), (name, f.cls, reason)
        assert not re.search(GENERIC_REASON, reason, re.I) and str(root) not in reason, (name, reason)
