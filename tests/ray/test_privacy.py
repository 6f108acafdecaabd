"""Identifiers in what build-bank writes and interpretation returns, on the session cohort: the bank
holds keyed pseudonyms of its studies, never their ids; the operator's map leads back row for row;
the build's log lines name no study and quote no report (docs/privacy.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from echoprime.data.shards import read_split
from echoprime.data.stream import stream_reports
from echoprime.inference import StudyInterpreter
from echoprime.reports import StructuredReport
from echoprime.retrieval.pseudonyms import PREFIX, read_id_map
from tests.leaks import files_under, leaks


@pytest.fixture(scope="module")
def cohort(cohort_dir):
    """Every study and patient id of the cohort, and each study's files."""
    studies = pq.read_table(cohort_dir / "studies.parquet").to_pylist()
    videos = pq.read_table(cohort_dir / "manifest.parquet").to_pylist()
    files = {
        s["study_id"]: [cohort_dir / v["path"] for v in videos if v["study_id"] == s["study_id"]]
        for s in studies
    }
    return studies, files


@pytest.fixture(scope="module")
def id_map(bundle_dir):
    return read_id_map(bundle_dir.parent / "id-map.json")


def _identifiers(studies) -> list[str]:
    return sorted({s["study_id"] for s in studies} | {s["patient_id"] for s in studies})


def test_build_bank_output_holds_no_original_id(bundle_dir, cohort, id_map):
    studies, _ = cohort
    originals = [*_identifiers(studies), *id_map.values()]  # the cohort's and the stream's bank studies
    written = [
        *sorted((bundle_dir / "bank").iterdir()),
        bundle_dir / "thresholds.json",
        bundle_dir / "manifest.json",
    ]
    assert {p.name for p in written} >= {"study_ids.npy", "reports.parquet", "labels.npy", "manifest.json"}
    for p in written:
        data = p.read_bytes()
        if p.suffix == ".parquet":  # compressed: search what it decodes to
            data += json.dumps(pq.read_table(p).to_pylist()).encode()
        # .npy stores unicode as UTF-32: search that spelling too.
        hits = [s for s in originals if s.encode() in data or s.encode("utf-32-le") in data]
        assert not hits, f"{p.relative_to(bundle_dir)} holds {hits[:3]}"
    assert json.loads((bundle_dir / "manifest.json").read_text())["extra"]["study_ids"]["scheme"].startswith(
        "hmac-sha256"
    )


def test_the_id_map_leads_back_row_for_row(bundle_dir, shards_dir, test_cfg, id_map):
    interp = StudyInterpreter.from_bundle(bundle_dir, device="cpu")
    bank = interp.parts.bank
    assert not (bundle_dir / "id-map.json").exists()  # the map is never part of the bundle
    assert len(id_map) == len(bank) and all(p.startswith(PREFIX) for p in id_map)
    train = {
        r["study_id"]: r["report"]
        for r in read_split(str(shards_dir), "train", ["study_id", "report"]).to_pylist()
    }
    train |= {
        s: rep
        for s, (rep, _) in stream_reports(
            range(test_cfg.stream.bank_studies), seed=test_cfg.stream.seed
        ).items()
    }
    assert set(id_map.values()) == set(train)
    for i in range(len(bank)):  # each row's original study wrote exactly that row's report
        original = id_map[bank.study_id(i)]
        assert StructuredReport.from_text(train[original], bank.vocab).to_triples(bank.vocab) == bank.triples(
            i
        )


def test_an_interpretation_names_no_other_study(bundle_dir, cohort, id_map):
    studies, files = cohort
    own = next(s for s in studies if s["split"] == "test")
    r = StudyInterpreter.from_bundle(bundle_dir, device="cpu").interpret(files[own["study_id"]]).to_dict()
    assert r["status"] == "ok"
    named = {s["source_study"] for s in r["report"]} | {
        n["study_id"] for ns in r["neighbours"].values() for n in ns
    }
    assert named - {None} <= set(id_map)
    text = json.dumps(r)
    others = [
        s for s in [*_identifiers(studies), *id_map.values()] if s not in (own["study_id"], own["patient_id"])
    ]
    assert not [s for s in others if s in text]


def test_build_bank_logs_no_id_and_no_report(bundle_dir, cohort, id_map, shards_dir):
    studies, _ = cohort
    logged = (bundle_dir.parent / "build-bank.log").read_text()
    assert not [s for s in [*_identifiers(studies), *id_map, *id_map.values()] if s in logged]
    reports = read_split(str(shards_dir), "train", ["report"]).column("report").to_pylist()
    sections = {part.strip() for rep in reports for part in rep.split("[SEP]") if len(part.strip()) > 20}
    assert not [s for s in sections if s in logged]


def test_nothing_the_pipeline_writes_or_logs_holds_an_original_id(
    ray_cluster, test_cfg, cohort, cohort_dir, shards_dir, pretrained, bundle_dir, evaluation, tmp_path
):
    """The session cohort through ingest (de-identified, as by default), pretraining, views,
    attention, build-bank, evaluate and batch-interpret (of three test studies, copied as an
    archive): no file any stage wrote (shards, training runs and checkpoints, the bundle, the
    bank's id map, evaluation and batch output) and no log line of this Ray session (driver,
    workers, raylet) holds a study id, a patient id or a file name of the cohort, and no log
    quotes a report. The ingest and batch maps are the one place the ids are (kept apart)."""
    import shutil

    from ray_jobs.batch_interpret import run_batch_interpret

    studies, files = cohort
    needles = _identifiers(studies) + sorted({f.stem for fs in files.values() for f in fs})
    assert len(needles) > 2 * len(studies)
    archive = tmp_path / "archive"
    for s in [s for s in studies if s["split"] == "test"][:3]:
        for f in files[s["study_id"]]:
            dest = archive / f.relative_to(cohort_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, dest)
    batch = tmp_path / "batch"
    res = run_batch_interpret(
        test_cfg,
        str(bundle_dir),
        str(archive),
        str(batch),
        write_json=True,
        actors=1,
        id_map=str(tmp_path / "ids.json"),
    )
    assert res["ok"] == 3 and res["ids"] != "originals"
    assert set(read_id_map(tmp_path / "ids.json").values()) >= {
        p.name for p in (archive / "videos").iterdir()
    }
    stages = pretrained[0].parent.parent  # pretraining runs, the bundle and the bank's id map
    written = files_under(shards_dir, stages, evaluation[2], batch)
    assert len(written) > 50 and any(p.suffix == ".pt" for p in written)
    assert leaks(written, needles) == {}
    # Every log of this Ray session, and the build's own INFO+ lines.
    logs_dir = ray_cluster._private.worker._global_node.get_logs_dir_path()
    logs = [*files_under(Path(logs_dir)), bundle_dir.parent / "build-bank.log"]
    assert len(logs) > 5
    # ... nor does any of them quote a report: each report's sections, as written
    reports = {part.strip() for s in studies for part in s["report"].split("[SEP]") if len(part.strip()) > 40}
    assert len(reports) > 50
    assert leaks(logs, [*needles, *reports]) == {}
