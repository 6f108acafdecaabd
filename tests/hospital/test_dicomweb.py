"""A study in from a real DICOMweb archive (Orthanc), its SR, PDF and FHIR report out, and back in.

Loads a synthetic DICOM study and real scanner files into Orthanc with STOW-RS, interprets the
synthetic study by StudyInstanceUID through ``echoprime interpret --dicomweb``, writes the SR
(checked with dciodvfy, pydicom and highdicom), the PDF (rendered with pdftoppm and looked at),
the FHIR bundle (validated with fhir.resources) and stores the SR and PDF back, read again with
QIDO-RS and WADO-RS. Bad input: an unknown UID, a server that is down, wrong credentials, an
unreadable instance, a study without video."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pydicom
import pytest

from echoprime.cli import main
from echoprime.hospital.dicomweb import Archive, DicomwebError, StudyNotFound
from echoprime.hospital.sr import findings_of
from tests.conftest import free_port
from tests.hospital.conftest import REAL_DICOM, REAL_STILL


@pytest.fixture()
def env(orthanc, monkeypatch):
    for k, v in orthanc.env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("ECHOPRIME_DICOMWEB_TOKEN", raising=False)


def _broken_pixels(ds: pydicom.Dataset) -> bytes:
    """Pixel data that parses but does not decode: JPEG fragments of noise, or native data cut
    to a third."""
    from pydicom.encaps import encapsulate, generate_frames

    if not ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return bytes(ds.PixelData)[: len(ds.PixelData) // 3 // 2 * 2]
    n = int(ds.get("NumberOfFrames", 1))
    frames = [b"\xff\xd8" + bytes(len(f) - 2) for f in generate_frames(ds.PixelData, number_of_frames=n)]
    return encapsulate(frames)


def _errors(path: Path, source: pydicom.Dataset | None = None) -> list[str]:
    """dciodvfy's error lines for a DICOM file (warnings are not errors). With ``source``, errors
    about the source's own UIDs are left out: an SR must reference its study, series and
    instances by the UIDs they have, legal or not (a real file here has the root ``999.999``)."""
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    if source is not None:
        uids = {str(source.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
        errors = [e for e in errors if not any(f'"{u}"' in e for u in uids - {""})]
    return errors


def test_interpret_by_uid_writes_sr_pdf_fhir_and_stores_them_back(
    bundle, study, archive, env, tmp_path, capsys
):
    import highdicom as hd
    from fhir.resources.R4B.bundle import Bundle

    from echoprime.inference import StudyInterpreter

    uid, files = study
    o = tmp_path
    rc = main(
        [
            "interpret", "--bundle", str(bundle), "--dicomweb", archive.url, "--study", uid,
            "--json", str(o / "r.json"), "--sr", str(o / "sr.dcm"), "--pdf", str(o / "r.pdf"),
            "--fhir", str(o / "fhir.json"), "--store",
        ]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "stored in" in printed and "2 instances" in printed
    result = json.loads((o / "r.json").read_text())

    # The same interpretation as of the files on disk; files are named by SOPInstanceUID.
    local = StudyInterpreter.from_bundle(bundle, device="cpu").interpret(files).to_dict()
    sops = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert {v["file"] for v in result["videos"]} == sops <= {f["path"] for f in result["files"]}
    assert result["report_text"] == local["report_text"]
    assert {n: m["decision"] for n, m in result["metrics"].items()} == {
        n: m["decision"] for n, m in local["metrics"].items()
    }

    # SR: valid (dciodvfy), read by pydicom and highdicom, says what the result says.
    assert _errors(o / "sr.dcm") == []
    sr = pydicom.dcmread(o / "sr.dcm")
    assert sr.StudyInstanceUID == uid and sr.Modality == "SR"
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    hd.sr.ComprehensiveSR.from_dataset(sr)
    said = findings_of(sr)
    ef = result["metrics"]["ejection_fraction"]["value"]
    assert said["findings"]["Left Ventricular Ejection Fraction by US"] == pytest.approx(ef)
    assert said["findings"]["Aortic valve stenosis (disorder)"] == (
        "Present" if result["metrics"]["aortic_stenosis"]["decision"] else "Absent"
    )
    p = result["metrics"]["aortic_stenosis"]["probability"]
    assert said["properties"][("Aortic valve stenosis (disorder)", "Probability")] == pytest.approx(p)
    assert said["sections"]["Left Ventricle"] and "[SEP]" not in json.dumps(said["sections"])
    assert {s for refs in said["images"].values() for s in refs} <= sops and said["images"]
    device = [it for it in sr.ContentSequence if it.ValueType == "UIDREF"]
    assert device  # the algorithm as device observer

    # PDF: renders, a page of text and a page of key frames; its DICOM wrapper is valid.
    subprocess.run(["pdftoppm", "-png", "-r", "40", str(o / "r.pdf"), str(o / "page")], check=True)
    pages = sorted(o.glob("page-*.png"))
    assert len(pages) >= 3
    import cv2

    for page in pages:
        img = cv2.imread(str(page))
        assert img is not None and img.std() > 5  # not blank
    assert cv2.imread(str(pages[-1]))[..., 0].std() > cv2.imread(str(pages[0]))[..., 0].std()  # frames
    assert _errors(o / "r.pdf.dcm") == []
    enc = pydicom.dcmread(o / "r.pdf.dcm")
    assert enc.EncapsulatedDocument[: len((o / "r.pdf").read_bytes())] == (o / "r.pdf").read_bytes()

    # FHIR: validates; a preliminary report with the EF observation.
    doc = json.loads((o / "fhir.json").read_text())
    Bundle.model_validate(doc)
    report = doc["entry"][0]["resource"]
    assert report["resourceType"] == "DiagnosticReport" and report["status"] == "preliminary"
    efs = [
        e["resource"]
        for e in doc["entry"]
        if e["resource"]["resourceType"] == "Observation"
        and e["resource"]["code"]["coding"][0]["code"] == "18043-0"
    ]
    assert efs and efs[0]["valueQuantity"]["value"] == pytest.approx(ef, abs=1e-3)
    assert efs[0]["valueQuantity"]["code"] == "%"

    # Back in the archive: QIDO finds the SR and PDF series in the study; WADO returns the SR.
    series = archive.client.search_for_series(study_instance_uid=uid)
    modalities = {s["00080060"]["Value"][0] for s in series}
    assert {"SR", "DOC", "US"} <= modalities
    back = pydicom.dcmread(
        __import__("io").BytesIO(archive.retrieve_instance(uid, sr.SeriesInstanceUID, sr.SOPInstanceUID))
    )
    assert findings_of(back) == said


def test_real_scanner_files_through_the_archive(bundle, archive, real_echo_dir, tmp_path):
    """Real scanner files interpreted by UID and their SR built (valid despite the sources' quirks);
    a real still image is reported as not a video."""
    from echoprime.hospital.outputs import algorithm_for, hospital_outputs, interpret_archive_study
    from echoprime.inference import StudyInterpreter

    interp = StudyInterpreter.from_bundle(bundle, device="cpu")
    for name in REAL_DICOM:
        ds = pydicom.dcmread(real_echo_dir / name, stop_before_pixels=True)
        result, headers = interpret_archive_study(interp, archive, str(ds.StudyInstanceUID))
        assert result["status"] == "ok" and str(ds.SOPInstanceUID) in {v["file"] for v in result["videos"]}
        out = hospital_outputs(result, headers, algorithm_for(str(bundle)), sr=True, fhir=True)
        out.sr.save_as(tmp_path / f"{name}.sr.dcm", enforce_file_format=True)
        assert _errors(tmp_path / f"{name}.sr.dcm", ds) == [], name
    still = pydicom.dcmread(real_echo_dir / REAL_STILL, stop_before_pixels=True)
    result, _ = interpret_archive_study(interp, archive, str(still.StudyInstanceUID))
    (f,) = [f for f in result["files"] if f["path"] == str(still.SOPInstanceUID)]
    assert f["status"] == "skipped" and f["code"] == "not_a_video"


def test_bad_requests_get_clear_errors(bundle, archive, orthanc, env, monkeypatch, capsys):
    def run(*argv: str) -> tuple[int, str]:
        rc = main(["interpret", "--bundle", str(bundle), *argv])
        out = capsys.readouterr()
        assert "Traceback" not in out.err + out.out
        return rc, out.err + out.out

    rc, text = run("--dicomweb", archive.url, "--study", "1.2.3.4.5")
    assert rc == 2 and f"{archive.url} holds no study 1.2.3.4.5" in text
    down = f"http://127.0.0.1:{free_port()}/dicom-web"
    rc, text = run("--dicomweb", down, "--study", "1.2.3")
    assert rc == 2 and f"cannot reach {down}" in text
    monkeypatch.setenv("ECHOPRIME_DICOMWEB_PASSWORD", "wrong-password")
    rc, text = run("--dicomweb", archive.url, "--study", "1.2.3")
    assert rc == 2 and "HTTP 401" in text and "check the credentials" in text and "wrong-password" not in text
    rc, text = run("--dicomweb", archive.url.replace("http://", "http://echo:pw@"), "--study", "1.2.3")
    assert rc == 2 and "must not hold credentials" in text
    rc, text = run("--dicomweb", archive.url)
    assert rc == 2 and "--dicomweb URL and --study UID go together" in text
    rc, text = run(str(Path.cwd()), "--store")
    assert rc == 2 and "--store" in text and "needs --dicomweb" in text

    with pytest.raises(StudyNotFound):
        next(Archive(orthanc.dicomweb, environ=orthanc.env).iter_instances("1.2.3.4.5"))
    with pytest.raises(DicomwebError, match="HTTP 401"):
        Archive(orthanc.dicomweb, environ={}).search_studies()


def test_an_unreadable_instance_is_reported_and_a_study_without_video_says_so(
    bundle, study, orthanc, env, tmp_path, capsys
):
    from pydicom.uid import generate_uid

    from echoprime.hospital.outputs import interpret_archive_study
    from echoprime.inference import StudyInterpreter

    arc = Archive(orthanc.dicomweb, environ=orthanc.env)
    uid, files = study
    # A new study: two good instances and one whose pixel data is cut short.
    new_uid = generate_uid()
    sent = []
    for i, f in enumerate(files[:3]):
        ds = pydicom.dcmread(f)
        ds.StudyInstanceUID, ds.SOPInstanceUID = new_uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        if i == 2:  # still a well-formed DICOM file (an archive refuses others), its pixels broken
            ds.PixelData = _broken_pixels(ds)
        sent.append(ds)
    arc.store(sent)
    interp = StudyInterpreter.from_bundle(bundle, device="cpu")
    result, _ = interpret_archive_study(interp, arc, new_uid)
    by = {f["path"]: f for f in result["files"]}
    bad = by[str(sent[2].SOPInstanceUID)]
    assert result["status"] == "ok" and len(result["videos"]) == 2
    assert bad["status"] == "skipped" and bad["reason"] and bad["code"]

    # A study holding no video (a document only): the command says so and writes nothing.
    from echoprime.hospital.pdf import encapsulated_pdf
    from echoprime.hospital.sr import Algorithm

    lone = generate_uid()
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    header.StudyInstanceUID = lone
    doc = encapsulated_pdf(b"%PDF-1.4\n%%EOF\n", header, Algorithm("echoprime", "0", "0" * 64))
    arc.store([doc])
    rc = main(
        [
            "interpret",
            "--bundle",
            str(bundle),
            "--dicomweb",
            arc.url,
            "--study",
            lone,
            "--sr",
            str(tmp_path / "x.dcm"),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "no usable echo video" in out and not (tmp_path / "x.dcm").exists()
