"""Bad release copies: each missing file named, pickles refused without trust, corrupt or
malformed files named with what was expected; the command line reports them in one line."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from echoprime.release import RELEASE_FILES, ReleaseFormatError, UntrustedPickleError, load_release_parts
from tests.fixtures_release import cached_fake_release, mirror_release


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    torch.set_num_threads(1)
    return cached_fake_release(tmp_path_factory)


def _pickled(obj) -> bytes:
    return pickle.dumps(obj)


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("missing", [f.display for f in RELEASE_FILES if f.required])
def test_each_missing_file_is_named(release, tmp_path, missing):
    md, assets = mirror_release(release, tmp_path, drop=(missing,))
    with pytest.raises(ReleaseFormatError, match="missing") as e:
        load_release_parts(md, assets, trust_pickles=True)
    assert missing in str(e.value) and str(tmp_path) in str(e.value)


def test_all_missing_files_named_at_once_and_wrong_folder(release, tmp_path):
    drop = ("model_data/weights/view_classifier.pt", "assets/roc_thresholds.csv")
    md, assets = mirror_release(release, tmp_path, drop=drop)
    with pytest.raises(ReleaseFormatError) as e:
        load_release_parts(md, assets, trust_pickles=True)
    assert all(d in str(e.value) for d in drop)
    with pytest.raises(ReleaseFormatError, match="does not exist"):
        load_release_parts(tmp_path / "nope", assets)
    # the folder above model_data: a hint names the right one
    with pytest.raises(ReleaseFormatError, match="Did you mean --model-data"):
        load_release_parts(tmp_path, assets)


def test_pickles_refused_without_trust(release):
    with pytest.raises(UntrustedPickleError) as e:
        load_release_parts(release.model_data, release.assets)
    msg = str(e.value)
    assert (
        "candidate_reports.pkl" in msg
        and "candidate_labels.pkl" in msg
        and "section_to_phenotypes.pkl" in msg
    )
    assert "trust_pickles=True" in msg and "--trust-pickles" in msg and "from_bundle" in msg


def test_release_without_text_encoder_still_loads_its_tables(release, tmp_path):
    from echoprime.release.files import locate
    from echoprime.release.load import load_release_text, read_release_tables

    md, assets = mirror_release(release, tmp_path, drop=("model_data/weights/echo_prime_text_encoder.pt",))
    paths = locate(md, assets)  # optional: no error
    tables = read_release_tables(paths, trust_pickles=True)
    assert len(tables["bank"]) == len(release.study_ids)
    assert list(tables["bank"].study_ids[:3]) == [str(s) for s in release.study_ids[:3]]
    text, tok, reason = load_release_text(paths, None)
    assert text is None and "echo_prime_text_encoder.pt is not in this copy" in reason


@pytest.mark.parametrize(
    ("name", "content", "expect"),
    [
        ("model_data/weights/echo_prime_encoder.pt", b"\x00garbage, not a torch file", "echo_prime_encoder.pt.*cannot be read"),
        ("model_data/candidates_data/candidate_embeddings_p2.pt", b"PK\x03\x04truncated", "candidate_embeddings_p2.pt.*cannot be read"),
        ("model_data/candidates_data/candidate_embeddings_p1.pt", _torch_bytes(torch.zeros(3, 4, 5)), "p1.pt: expected a 2-D float tensor"),
        ("model_data/candidates_data/candidate_embeddings_p1.pt", _torch_bytes(torch.zeros(10, 256)), "different widths"),
        ("model_data/candidates_data/candidate_reports.pkl", b"not a pickle at all", "candidate_reports.pkl.*not a readable pickle"),
        ("model_data/candidates_data/candidate_reports.pkl", _pickled([[(0, 0, float("nan"))]] * 5), "holds 5 reports"),
        ("model_data/candidates_data/candidate_reports.pkl", _pickled({"a": 1}), "candidate_reports.pkl: expected a list"),
        ("model_data/candidates_data/candidate_labels.pkl", _pickled({"ejection_fraction": {}}), "no labels for the phenotypes"),
        ("model_data/candidates_data/candidate_studies.csv", b"Patient\n1\n", "column 'Study'"),
        ("model_data/candidates_data/candidate_studies.csv", b"Study\n1\n2\n", "lists 2 studies but the embeddings"),
        ("assets/section_to_phenotypes.pkl", _pickled({"Left Ventricle": ["pacemaker"]}), "'pacemaker' is under 'Left Ventricle'"),
        ("assets/MIL_weights.csv", b"Section,A2C\nLeft Ventricle,1\n", "MIL_weights.csv.*header must be"),
        ("assets/roc_thresholds.csv", b",feature,cutoff\n0,impella,0.3\n", "roc_thresholds.csv.*columns 'feature' and 'threshold'"),
        ("assets/roc_thresholds.csv", b",feature,threshold\n0,impella,high\n", "roc_thresholds.csv.*line 2: expected a feature and a numeric threshold"),
        ("assets/all_phr.json", b"{not json", "all_phr.json.*not valid JSON"),
        ("assets/all_phr.json", b'{"Left Ventricle": {"Size": ["Normal."]}}', "all_phr.json lacks the report sections"),
    ],
)  # fmt: skip
def test_malformed_file_is_named(release, tmp_path, name, content, expect):
    md, assets = mirror_release(release, tmp_path, replace={name: content})
    with pytest.raises(ReleaseFormatError, match=expect):
        load_release_parts(md, assets, trust_pickles=True)


def test_state_dict_of_wrong_architecture_is_named(release, tmp_path):
    sd = torch.load(release.model_data / "weights/echo_prime_encoder.pt")
    sd["head.1.weight"] = torch.zeros(11, 768)  # a classifier head instead of the 512-d projection
    del sd["head.1.bias"]
    md, assets = mirror_release(
        release, tmp_path, replace={"model_data/weights/echo_prime_encoder.pt": _torch_bytes(sd)}
    )
    with pytest.raises(ReleaseFormatError, match=r"echo_prime_encoder.pt.*does not match.*head.1.bias"):
        load_release_parts(md, assets, trust_pickles=True)


def test_phrase_ids_outside_the_vocabulary_are_named(release, tmp_path):
    with open(release.model_data / "candidates_data/candidate_reports.pkl", "rb") as f:
        reports = pickle.load(f)
    reports[17] = [*reports[17], (0, 999, float("nan"))]
    md, assets = mirror_release(
        release, tmp_path, replace={"model_data/candidates_data/candidate_reports.pkl": _pickled(reports)}
    )
    with pytest.raises(ReleaseFormatError, match=r"candidate_reports.pkl.*candidate 17.*phrase 999"):
        load_release_parts(md, assets, trust_pickles=True)


def test_import_release_command_errors_are_one_line(release, tmp_path, capsys):
    from echoprime.cli import main

    base = ["import-release", "--model-data", str(release.model_data), "--assets", str(release.assets)]
    assert main([*base, "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("echoprime import-release: error:") and "--trust-pickles" in err
    assert not (tmp_path / "b").exists()
    occupied = tmp_path / "mine"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("a user's file")
    assert main([*base, "--out", str(occupied), "--trust-pickles"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    assert (occupied / "keep.txt").read_text() == "a user's file"
    md, assets = mirror_release(release, tmp_path / "partial", drop=("assets/MIL_weights.csv",))
    argv = ["import-release", "--model-data", str(md), "--assets", str(assets), "--out", str(tmp_path / "c")]
    assert main([*argv, "--trust-pickles"]) == 2
    assert "assets/MIL_weights.csv" in capsys.readouterr().err
