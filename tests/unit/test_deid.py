"""De-identification at ingest (echoprime/data/deid.py) through the decoder that writes shard rows."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from echoprime.data.deid import FILE_PREFIX, STUDY_PREFIX, Deidentifier, synthetic_seeds
from echoprime.data.ingest import FileDecoder, StudyIndex
from echoprime.io.writers import dicom_dataset, write_video
from echoprime.preprocess import PreprocessSpec

SECRET = {"ECHOPRIME_SITE_SECRET": "a-site-secret-of-32-characters!!"}
UID = "1.2.826.0.1.3680043.8.498.99887766554433221100"


def _clip() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)


def _identified_dicom() -> bytes:
    """A DICOM with the identifying attributes a scanner writes."""
    ds = dicom_dataset(_clip(), study_uid=UID)
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = "Doe^Jane", "MRN-4711", "19580312"
    ds.AccessionNumber, ds.InstitutionName = "ACC-123456", "Saint Example Hospital"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture()
def archive(tmp_path):
    files = {
        "Doe_Jane/echo1.dcm": _identified_dicom(),
        "Doe_Jane/loop.mp4": write_video(_clip()),
        "Doe_Jane/broken_Doe_Jane.dcm": b"\x00" * 10,
    }
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    return tmp_path, sorted(str(tmp_path / r) for r in files)


def _decode(root, uris, deid, **kw):
    spec = PreprocessSpec(size=32, frames=4, stride=1)
    got: dict[str, str] = {}
    dec = FileDecoder(spec, StudyIndex(), str(root), deid=deid, on_ids=got.update, **kw)
    batch = dec({"uri": np.array(uris, dtype=object)})
    return batch, dec.rejects, got


def test_rows_and_rejects_hold_keys_and_the_map_holds_the_originals(archive):
    root, uris = archive
    deid = Deidentifier.from_env(environ=SECRET)
    batch, rejects, ids = _decode(root, uris, deid)
    assert deid.source == "site" and len(batch["study_id"]) == 2
    for sid, src, vid in zip(batch["study_id"], batch["source_uri"], batch["video_id"], strict=True):
        assert sid.startswith(STUDY_PREFIX) and src.startswith(FILE_PREFIX) and vid == src
    # The DICOM's study is its StudyInstanceUID, the MP4's its folder: both only as pseudonyms.
    assert {ids[s] for s in batch["study_id"]} == {UID, "Doe_Jane"}
    assert {ids[s] for s in batch["source_uri"]} == {"Doe_Jane/echo1.dcm", "Doe_Jane/loop.mp4"}
    (rej,) = rejects
    assert ids[rej["source_uri"]] == "Doe_Jane/broken_Doe_Jane.dcm"
    assert "Doe_Jane" not in rej["reason"] and rej["code"]
    # Nothing of the header or the paths is in any column the shard would get.
    text = repr({k: list(v) for k, v in batch.items() if k != "clip"}) + repr(rejects)
    for needle in (
        UID,
        "Doe",
        "Jane",
        "MRN-4711",
        "19580312",
        "ACC-123456",
        "Saint Example",
        "echo1",
        "loop",
    ):
        assert needle not in text, needle


def test_keys_are_stable_for_a_site_secret_and_differ_across_secrets(archive):
    root, uris = archive
    a, _, _ = _decode(root, uris, Deidentifier.from_env(environ=SECRET))
    b, _, _ = _decode(root, uris, Deidentifier.from_env(environ=SECRET))
    c, _, _ = _decode(root, uris, Deidentifier.from_env(environ={"ECHOPRIME_SITE_SECRET": "x" * 32}))
    assert list(a["study_id"]) == list(b["study_id"]) and list(a["source_uri"]) == list(b["source_uri"])
    assert set(a["study_id"]).isdisjoint(c["study_id"])
    # A study key and a file key never coincide, even for one string (domain-separated HMACs).
    d = Deidentifier.from_env(environ=SECRET)
    assert d.study("x")[2:] != d.file("x")[2:]
    # The ingest fingerprint follows a kept secret (and only its kind for a one-off one), and
    # computing it hands out no key.
    other = Deidentifier.from_env(environ={"ECHOPRIME_SITE_SECRET": "x" * 32})
    assert (
        Deidentifier.from_env(environ=SECRET).fingerprint_tag()
        == d.fingerprint_tag()
        != other.fingerprint_tag()
    )
    assert Deidentifier.from_env(environ={}).fingerprint_tag() == "one-off"
    assert Deidentifier.from_env(False).fingerprint_tag() == "off"
    fresh = Deidentifier.from_env(environ=SECRET)
    fresh.fingerprint_tag()
    assert fresh.originals == {}


def test_off_passes_ids_through_and_splits_do_not_depend_on_the_secret(archive):
    root, uris = archive
    off, _, ids = _decode(root, uris, Deidentifier.from_env(False))
    on, _, _ = _decode(root, uris, Deidentifier.from_env(environ=SECRET))
    assert set(off["study_id"]) == {UID, "Doe_Jane"} and ids == {}
    assert all(str(root) in s for s in off["source_uri"])
    # Splits come from the original patient, in memory: the same with de-identification on or off.
    assert list(off["split"]) == list(on["split"])


def test_the_decoder_sends_each_original_once(archive):
    root, uris = archive
    deid = Deidentifier.from_env(environ=SECRET)
    spec = PreprocessSpec(size=32, frames=4, stride=1)
    sent: list[dict[str, str]] = []
    dec = FileDecoder(spec, StudyIndex(), str(root), deid=deid, on_ids=sent.append)
    dec({"uri": np.array(uris[:1], dtype=object)})
    dec({"uri": np.array(uris, dtype=object)})
    keys = [k for batch in sent for k in batch]
    assert len(keys) == len(set(keys)) == len(deid.originals)


def test_synthetic_seeds_are_read_from_ordinary_synth_ids_only():
    assert synthetic_seeds({"s0_000001", "s0_t000002", "s12_000003", "1.2.3", "s3_12"}) == [0, 12]


def test_the_reader_copies_no_patient_attribute(archive):
    """The header facts a decoded video carries are the ones the readers list: none identifies a
    patient (docs/privacy.md's table rests on this)."""
    from echoprime.io import read_any

    root, uris = archive
    data = (root / "Doe_Jane/echo1.dcm").read_bytes()
    assert pydicom.dcmread(io.BytesIO(data)).PatientName == "Doe^Jane"
    meta = read_any(data, name="echo1.dcm").meta
    assert not {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName"} & set(
        meta
    )
    assert "19580312" not in repr(meta) and "Doe" not in repr(meta)


def test_the_leak_search_finds_ids_as_tokens_in_any_spelling(tmp_path):
    """tests/leaks.py, which the privacy tests rest on: ids in text, Parquet and NumPy unicode
    arrays are found; a digit run inside a hex digest or a weight file's numbers is not an id."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.leaks import files_under, leaks

    (tmp_path / "a.json").write_text('{"path": "videos/s0_000001/s0_000001_v00.mp4"}')
    pq.write_table(pa.table({"study_id": ["s0_000002"] * 50}), tmp_path / "b.parquet")
    np.save(tmp_path / "c.npy", np.array(["x", "s0_000003"]))
    np.save(tmp_path / "d.npy", np.arange(10, dtype=np.float32))
    (tmp_path / "e.txt").write_text("p-a5872178b0 s0_0000045")
    got = leaks(files_under(tmp_path), ["s0_000001", "s0_000002", "s0_000003", "5872178", "s0_000004"])
    assert {k.rsplit("/", 1)[1]: v for k, v in got.items()} == {
        "a.json": ["s0_000001"],
        "b.parquet": ["s0_000002"],
        "c.npy": ["s0_000003"],
    }
