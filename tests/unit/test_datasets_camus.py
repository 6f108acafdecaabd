"""CAMUS in both releases: the stand-ins mirror the published folders, the adapter reads them, the
sequence reader turns their volumes into cines, and tidier or broken layouts are refused."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from echoprime.data.ingest import FileDecoder, StudyIndex
from echoprime.datasets import DatasetLayoutError, DatasetOptionError, read_dataset
from echoprime.datasets.camus import parse_cfg
from echoprime.datasets.standins import write_standin
from echoprime.io import FrameTooLargeError, NotAVideoError, VideoDecodeError
from echoprime.io.sequence import metaimage_data_file, read_sequence
from echoprime.preprocess import PreprocessSpec

NIFTI_CFG_KEYS = ["ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "EF", "FrameRate"]
MHD_CFG_KEYS = ["ED", "ES", "NbFrame", "Sex", "Age", "ImageQuality", "LVedv", "LVesv", "LVef"]


@pytest.fixture(scope="module")
def camus(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("camus")
    out = {"nifti": base / "CAMUS_public", "mhd": base / "camus2019"}
    write_standin("camus", out["nifti"], studies=10, seed=2, frames=24, size=64)
    write_standin("camus", out["mhd"], studies=10, seed=2, frames=24, size=64, options={"release": "mhd"})
    return out


def _copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def test_nifti_standin_is_the_published_layout(camus):
    root = camus["nifti"]
    assert sorted(p.name for p in root.iterdir()) == ["database_nifti", "database_split"]
    assert sorted(p.name for p in (root / "database_split").iterdir()) == [
        "subgroup_testing.txt", "subgroup_training.txt", "subgroup_validation.txt",
    ]  # fmt: skip
    files = sorted(p.name for p in (root / "database_nifti" / "patient0001").iterdir())
    expect = ["Info_2CH.cfg", "Info_4CH.cfg"] + [
        f"patient0001_{v}_{k}.nii.gz"
        for v in ("2CH", "4CH")
        for k in ("ED", "ED_gt", "ES", "ES_gt", "half_sequence", "half_sequence_gt")
    ]
    assert files == sorted(expect)
    cfg = (root / "database_nifti" / "patient0001" / "Info_4CH.cfg").read_text().splitlines()
    assert [line.split(": ")[0] for line in cfg] == NIFTI_CFG_KEYS
    listed = [line for f in (root / "database_split").iterdir() for line in f.read_text().split()]
    assert sorted(listed) == [f"patient{i:04d}" for i in range(1, 11)]


def test_mhd_standin_is_the_2019_layout(camus):
    root = camus["mhd"]
    assert sorted(p.name for p in root.iterdir()) == ["testing", "training"]
    train = sorted(p.name for p in (root / "training" / "patient0001").iterdir())
    assert "patient0001_4CH_sequence.mhd" in train and "patient0001_4CH_sequence.raw" in train
    assert "patient0001_4CH_ED_gt.mhd" in train
    test = sorted(p.name for p in (root / "testing" / "patient0001").iterdir())
    assert not any("_gt" in f for f in test)  # the challenge's test patients come without masks
    keys = [
        line.split(": ")[0]
        for line in (root / "training" / "patient0001" / "Info_2CH.cfg").read_text().splitlines()
    ]
    assert keys == MHD_CFG_KEYS
    header = (root / "training" / "patient0001" / "patient0001_4CH_sequence.mhd").read_bytes()
    assert metaimage_data_file(header) == "patient0001_4CH_sequence.raw"


@pytest.mark.parametrize("release", ["nifti", "mhd"])
def test_adapter_reads_both_releases(camus, release):
    t = read_dataset("camus", str(camus[release]))
    assert t.options == {"release": release} and not t.rejects
    assert len(t.studies) == 10 and len(t.videos) == 20
    assert {v["view"] for v in t.videos} == {"A2C", "A4C"}
    assert all(
        v["path"].endswith("_half_sequence.nii.gz" if release == "nifti" else "_sequence.mhd")
        for v in t.videos
    )
    # stills and masks: nifti 10 patients x 2 views x (ED, ES, their masks, the sequence mask); 2019: 9 x 2 x 4 + 1 x 2 x 2
    assert t.notes["skipped_stills_and_masks"] == (100 if release == "nifti" else 76)
    if release == "nifti":
        splits = {}
        for stem, split in (("training", "train"), ("validation", "val"), ("testing", "test")):
            for pid in (camus[release] / "database_split" / f"subgroup_{stem}.txt").read_text().split():
                splits[pid] = split
        assert all(s["split"] == splits[s["study_id"]] for s in t.studies)
        fps = float(next(
            line.split(": ")[1] for line in (camus[release] / "database_nifti" / "patient0001" / "Info_2CH.cfg").read_text().splitlines()
            if line.startswith("FrameRate")
        ))  # fmt: skip
        assert (
            next(v["fps"] for v in t.videos if v["path"].endswith("patient0001_2CH_half_sequence.nii.gz"))
            == fps
        )
        assert set(t.labels_of("patient0001")) == {
            "ejection_fraction",
            "age",
            "sex_female",
            "image_quality_2ch",
            "image_quality_4ch",
        }
    else:
        test = [s for s in t.studies if s["split"] == "test"]
        assert test and all(s["study_id"].startswith("testing/") for s in test)
        assert all(
            "ejection_fraction" not in t.labels_of(s["study_id"]) for s in test
        )  # kept by the challenge
        assert {s["split"] for s in t.studies if s["study_id"].startswith("training/")} <= {"train", "val"}
        assert "edv" in t.labels_of("training/patient0001")
        assert all(v["fps"] is None for v in t.videos)
    spec = PreprocessSpec(size=32, frames=8, stride=2)
    dec = FileDecoder(spec, StudyIndex.from_tables(t.videos, t.studies), t.root)
    out = dec({"uri": [f"{t.root}/{v['path']}" for v in t.videos]})
    assert len(out["study_id"]) == 20 and not dec.rejects
    if release == "nifti":
        assert not np.isnan(out["fps"]).any()


def test_sequence_reader(camus):
    folder = camus["mhd"] / "training" / "patient0002"
    seq = folder / "patient0002_4CH_sequence.mhd"
    vid = read_sequence(seq, fps=25.0)
    assert vid.frames.dtype == np.uint8 and vid.frames.ndim == 4 and vid.frames.shape[-1] == 3
    assert (vid.frames[..., 0] == vid.frames[..., 2]).all() and vid.fps == 25.0
    assert vid.meta["format"] == "metaimage" and vid.meta["n_frames"] == vid.frames.shape[0] >= 2
    # from bytes, with its data file as a companion; the same frames
    raw = (folder / "patient0002_4CH_sequence.raw").read_bytes()
    again = read_sequence(seq.read_bytes(), name=str(seq), companions={"patient0002_4CH_sequence.raw": raw})
    assert np.array_equal(again.frames, vid.frames)
    with pytest.raises(VideoDecodeError, match="was not given with it"):
        read_sequence(seq.read_bytes(), name=str(seq))
    with pytest.raises(NotAVideoError, match="2-D image"):
        read_sequence(folder / "patient0002_4CH_ED.mhd")
    with pytest.raises(FrameTooLargeError):
        read_sequence(seq, max_pixels=100)
    assert read_sequence(seq, max_frames=3).frames.shape[0] == 3
    nii = camus["nifti"] / "database_nifti" / "patient0002" / "patient0002_2CH_half_sequence.nii.gz"
    assert read_sequence(nii).meta["format"] == "nifti"
    assert read_sequence(nii.read_bytes(), name=nii.name).frames.shape == read_sequence(nii).frames.shape
    with pytest.raises(VideoDecodeError, match="not a readable"):
        read_sequence(b"garbage" * 50, name="x.nii.gz")


def test_metaimage_data_file_stays_beside_its_header():
    assert metaimage_data_file(b"NDims = 3\nElementDataFile = LOCAL\n") is None
    for bad in ("../../etc/passwd", "/abs.raw", "sub/x.raw", "LIST 2D", "img%03d.raw 1 10 1"):
        with pytest.raises(VideoDecodeError):
            metaimage_data_file(f"NDims = 3\nElementDataFile = {bad}\n".encode())
    with pytest.raises(VideoDecodeError, match="not a MetaImage header"):
        metaimage_data_file(b"\x00" * 100)


def test_layout_errors_and_rejects(camus, tmp_path):
    root = _copy(camus["nifti"], tmp_path)
    shutil.rmtree(root / "database_split")
    with pytest.raises(DatasetLayoutError, match="subgroup_training.txt is missing"):
        read_dataset("camus", str(root))
    with pytest.raises(DatasetLayoutError, match="neither database_nifti"):
        read_dataset("camus", str(root / "database_nifti" / "patient0001"))
    with pytest.raises(DatasetOptionError, match="release must be one of"):
        read_dataset("camus", str(camus["nifti"]), {"release": "2019"})
    with pytest.raises(DatasetLayoutError, match="release=mhd, but"):
        read_dataset("camus", str(camus["nifti"]), {"release": "mhd"})

    root = _copy(camus["mhd"], tmp_path / "b")
    (root / "training" / "patient0003" / "patient0003_2CH_sequence.raw").unlink()
    (root / "training" / "patient0004" / "patient0004_4CH_sequence.mhd").unlink()
    cfg = root / "training" / "patient0005" / "Info_4CH.cfg"
    cfg.write_text(
        cfg.read_text().replace("ImageQuality: ", "ImageQuality: Excellent-") + "a line without a colon\n"
    )
    t = read_dataset("camus", str(root))
    reasons = {r.source: (r.code, r.reason) for r in t.rejects}
    assert reasons["training/patient0003/patient0003_2CH_sequence.mhd"][0] == "missing_video"
    assert (
        "data file patient0003_2CH_sequence.raw is not beside it"
        in reasons["training/patient0003/patient0003_2CH_sequence.mhd"][1]
    )
    assert reasons["training/patient0004/patient0004_4CH_sequence.mhd"][0] == "missing_video"
    assert "is not one of ['Poor', 'Medium', 'Good']" in reasons["training/patient0005/Info_4CH.cfg"][1]
    assert any("is not 'Key: value'" in r for _, r in reasons.values())
    assert len(t.videos) == 18 and len(t.studies) == 10


def test_parse_cfg():
    info, rejects = parse_cfg("ED: 1\nES: 18\n\nEF: 54.5\nFrameRate: 48.4\n", "Info_2CH.cfg")
    assert info == {"ED": "1", "ES": "18", "EF": "54.5", "FrameRate": "48.4"} and not rejects
