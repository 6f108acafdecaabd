"""``echoprime batch-interpret --dicomweb``: the studies of a real DICOMweb archive (Orthanc) that
a QIDO-RS query finds, interpreted by Ray Data actors that stream each study's instances; keys
for studies and instances, the operator's map back to UIDs, resume."""

from __future__ import annotations

import json

import pydicom
import pytest

from echoprime.batch_interpret import BatchOutput
from echoprime.retrieval.pseudonyms import read_id_map
from ray_jobs.batch_interpret import run_batch_interpret
from tests.hospital.conftest import REAL_DICOM
from tests.leaks import files_under, leaks

pytestmark = pytest.mark.usefixtures("ray_cluster")
SITE = (b"batch-dicomweb-test-site-secret", "site")


def test_batch_over_the_archive(tiny_cfg, bundle, study, archive, real_echo_dir, tmp_path):
    from echoprime.inference import StudyInterpreter

    uid, files = study
    real = str(pydicom.dcmread(real_echo_dir / REAL_DICOM[0], stop_before_pixels=True).StudyInstanceUID)
    out, ids = tmp_path / "out", tmp_path / "private" / "ids.json"
    kw = dict(
        dicomweb=archive.url, query={"modality": None, "uids": [uid, real]}, actors=1, chunk=1, secret=SITE
    )
    res = run_batch_interpret(tiny_cfg, str(bundle), None, str(out), id_map=str(ids), write_json=True, **kw)
    assert (res["studies"], res["interpreted"], res["ok"], res["error"]) == (2, 2, 2, 0)
    id_map = read_id_map(ids)
    rows = {id_map[r["study_id"]]: r for r in BatchOutput(str(out)).read().to_pylist()}
    assert set(rows) == {uid, real}
    # Instances are named by keys of their SOPInstanceUIDs; the same result as the files on disk.
    sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    used = {id_map[v["file"]] for v in json.loads(rows[uid]["views"])}
    assert used == sops  # (the study may also hold the SR and PDF an earlier test stored back)
    assert all(f["path"].startswith("f-") for f in json.loads(rows[uid]["files"]))
    want = (
        StudyInterpreter.from_bundle(bundle, device="cpu", k=tiny_cfg.interpret.k).interpret(files).to_dict()
    )
    assert rows[uid]["report_text"] == want["report_text"]
    # No UID of the archive in the output (the map holds them).
    assert leaks(files_under(out), sops | {uid, real}) == {}
    # Resume: nothing left to do; a lost part is done again.
    again = run_batch_interpret(tiny_cfg, str(bundle), None, str(out), **kw)
    assert (again["interpreted"], again["skipped"]) == (0, 2)
    with pytest.raises(ValueError, match="found no study"):
        run_batch_interpret(
            tiny_cfg, str(bundle), None, str(tmp_path / "none"), dicomweb=archive.url,
            query={"modality": None, "uids": ["1.2.3.4.5.6.7"]}, secret=SITE,
        )  # fmt: skip
