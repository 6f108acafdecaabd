"""``POST /v1/interpret/dicomweb`` over real HTTP: the Serve graph reads a study of the server's
DICOMweb archive (Orthanc) by UID and answers JSON, DICOM SR, PDF or FHIR (by ``format`` or the
``Accept`` header), stores SR and PDF back; bad requests get 404 / 422 / 502 naming what is wrong
and never the archive's address."""

from __future__ import annotations

import io

import pydicom
import pytest
import requests

from echoprime.hospital.sr import findings_of


@pytest.fixture(scope="module")
def served(ray_cluster, orthanc, bundle, archive):
    """The graph with ``dicomweb_url`` set; the archive's credentials reach the ingress replica
    through its environment, as an operator would give them."""
    from ray_jobs.serve_query import served_app
    from tests.serve.conftest import LIMITS, TEST_OPTIONS

    opts = dict(TEST_OPTIONS)
    opts["Ingress"] = {"ray_actor_options": {"num_cpus": 0.1, "runtime_env": {"env_vars": orthanc.env}}}
    with served_app(str(bundle), options=opts, args={**LIMITS, "dicomweb_url": orthanc.dicomweb}) as app:
        yield app


def _post(served, body: dict, accept: str | None = None) -> requests.Response:
    headers = served.headers() | ({"Accept": accept} if accept else {})
    return requests.post(f"{served.url}/v1/interpret/dicomweb", json=body, headers=headers, timeout=300)


def test_a_study_by_uid_in_every_format_and_stored_back(served, study, archive, bundle):
    from fhir.resources.R4B.bundle import Bundle

    from echoprime.inference import StudyInterpreter

    uid, files = study
    r = _post(served, {"study_uid": uid})
    assert r.status_code == 200, r.text
    got = r.json()
    want = StudyInterpreter.from_bundle(bundle, device="cpu").interpret(files).to_dict()
    assert got["report_text"] == want["report_text"] and got["status"] == "ok"
    sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    # The study's videos are used; anything else of the study (an SR or PDF stored back by an
    # earlier test) is listed as skipped.
    assert {v["file"] for v in got["videos"]} == sops
    assert all(f["status"] == "skipped" for f in got["files"] if f["path"] not in sops)

    sr = _post(served, {"study_uid": uid}, accept="application/dicom")
    assert sr.status_code == 200 and sr.headers["content-type"] == "application/dicom"
    ds = pydicom.dcmread(io.BytesIO(sr.content))
    assert ds.StudyInstanceUID == uid and ds.VerificationFlag == "UNVERIFIED"
    ef = got["metrics"]["ejection_fraction"]["value"]
    assert findings_of(ds)["findings"]["Left Ventricular Ejection Fraction by US"] == pytest.approx(ef)

    pdf = _post(served, {"study_uid": uid, "format": "pdf"})
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    fhir = _post(served, {"study_uid": uid}, accept="application/fhir+json")
    assert fhir.status_code == 200 and fhir.headers["content-type"].startswith("application/fhir+json")
    Bundle.model_validate(fhir.json())

    before = {s["0020000E"]["Value"][0] for s in archive.client.search_for_series(study_instance_uid=uid)}
    stored = _post(served, {"study_uid": uid, "store": True})
    assert stored.status_code == 200, stored.text
    new = {
        s["0020000E"]["Value"][0] for s in archive.client.search_for_series(study_instance_uid=uid)
    } - before
    assert len(new) == 2  # an SR series and a PDF series
    sop_sr = stored.json()["stored"]["sr"]
    assert archive.client.search_for_instances(
        study_instance_uid=uid, search_filters={"SOPInstanceUID": sop_sr}
    )


def test_bad_requests(served, orthanc):
    r = _post(served, {"study_uid": "1.2.3.4.5.6"})
    assert (
        r.status_code == 404 and r.json()["code"] == "study_not_found" and "1.2.3.4.5.6" in r.json()["reason"]
    )
    r = _post(served, {"study_uid": "not a uid"})
    assert r.status_code == 422 and "study_uid" in r.json()["reason"]
    r = _post(served, {"study_uid": "1.2.3", "format": "xml"})
    assert r.status_code == 422 and "format" in r.json()["reason"]
    r = requests.post(f"{served.url}/v1/interpret/dicomweb", json={"study_uid": "1.2.3"}, timeout=60)
    assert r.status_code == 401
    for resp in (r,):
        assert orthanc.url.split("//")[1] not in resp.text  # the archive's address is the server's
