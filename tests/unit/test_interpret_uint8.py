"""The uint8 path the Serve graph uses: ``read_study`` + ``normalise_clips`` give exactly the
float clips of ``load_study`` (which is what the one-process interpretation uses)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoprime.inference import StudyInterpreter
from echoprime.io.files import clip_reader, prepare_clip
from echoprime.preprocess import normalise
from tests.fixtures_bundle import make_random_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("u8") / "bundle", n_bank=40)


@pytest.fixture(scope="module")
def interp(bundle):
    return StudyInterpreter.from_bundle(bundle, device="cpu")


@pytest.fixture(scope="module")
def files(real_echo_dir):
    # Real scanners' DICOMs (JPEG, RLE, palette, uncompressed; stills that are skipped) and an MP4:
    # several clips are shorter than the spec's frames, so padding is exercised.
    return sorted(str(p) for p in real_echo_dir.iterdir() if p.suffix in (".dcm", ".mp4"))


def test_uint8_path_equals_the_float_path_bit_for_bit(interp, files):
    u8, n_valid, reports = interp.read_study(files)
    clips, reports_f = interp.load_study(files)
    assert reports == reports_f and sum(r.status == "used" for r in reports) == u8.shape[0] >= 3
    spec = interp.spec
    assert u8.dtype == np.uint8 and u8.shape[1:] == (spec.frames, spec.size, spec.size, 3)
    assert n_valid.dtype == np.int64 and (n_valid < spec.frames).any()  # some clips are padded
    got = interp.normalise_clips(u8, n_valid)
    assert got.dtype == torch.float32 and torch.equal(got, clips)
    # ...and both equal the per-clip preprocessing the library documents.
    used = [f for f, r in zip(files, reports, strict=True) if r.status == "used"]
    read = clip_reader(spec)
    ref = []
    for f in used:
        u8_f, n_valid_f = prepare_clip(read(f), spec)  # only the clip's frames decoded
        ref.append(normalise(u8_f, spec.mean, spec.std, n_valid=n_valid_f))
    np.testing.assert_array_equal(np.stack(ref), clips.numpy())
    assert u8.nbytes * 4 == clips.numel() * clips.element_size()


def test_padding_frames_are_zero_after_normalising(interp, files):
    u8, n_valid, _ = interp.read_study(files)
    x = interp.normalise_clips(u8, n_valid)
    for clip, v in zip(x, n_valid, strict=True):
        assert torch.count_nonzero(clip[:, v:]) == 0 and torch.count_nonzero(clip[:, :v]) > 0


def test_a_study_without_usable_files(interp, tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"not a video")
    u8, n_valid, reports = interp.read_study(tmp_path)
    spec = interp.spec
    assert u8.shape == (0, spec.frames, spec.size, spec.size, 3) and n_valid.shape == (0,)
    assert [r.status for r in reports] == ["skipped"]
    assert interp.normalise_clips(u8, n_valid).shape == (0, 3, spec.frames, spec.size, spec.size)


def test_bad_arguments_are_named(interp, tmp_path):
    spec = interp.spec
    with pytest.raises(TypeError, match="tensor"):
        interp.read_study(torch.zeros(1, 3, spec.frames, spec.size, spec.size))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        interp.read_study(tmp_path / "nowhere")
    wrong = np.zeros((2, spec.frames, spec.size + 1, spec.size, 3), np.uint8)
    with pytest.raises(ValueError, match=r"expected uint8 clips N x .*got uint8 \(2,"):
        interp.normalise_clips(wrong, [1, 1])
    floats = np.zeros((2, spec.frames, spec.size, spec.size, 3), np.float32)  # already normalised?
    with pytest.raises(ValueError, match="got float32"):
        interp.normalise_clips(floats, [1, 1])
    ok = np.zeros((2, spec.frames, spec.size, spec.size, 3), np.uint8)
    with pytest.raises(ValueError, match="n_valid has 1 values for 2 clips"):
        interp.normalise_clips(ok, [1])


def test_studies_from_uint8_clips_get_the_answers_of_the_float_path(bundle, files):
    # A batch size that splits studies across batches: a study's clips share forward passes with
    # the next study's, on both paths alike.
    interp = StudyInterpreter.from_bundle(bundle, device="cpu", batch_size=3)
    studies = [files, files[::-1], files[:2]]
    got = [r.to_dict() for r in interp.interpret_many(studies)]
    # the float path: model clips as tensors (their files then named clip[i])
    floats = [r.to_dict() for r in interp.interpret_many([interp.load_study(s)[0] for s in studies])]
    for g, f in zip(got, floats, strict=True):
        assert {k: v for k, v in g.items() if k not in ("files", "videos", "evidence")} == {
            k: v for k, v in f.items() if k not in ("files", "videos", "evidence")
        }
        assert [v["view"] for v in g["videos"]] == [v["view"] for v in f["videos"]]
    assert got[0]["status"] == "ok"
    stored = [interp.read_study(s) for s in studies]
    assert [r.to_dict() for r in interp.interpret_many(stored)] == got
    # The towers on uint8 clips: the same values as on the float clips.
    u8, n_valid, _ = stored[0]
    emb, probs = interp.towers.encode_uint8(u8, n_valid)
    emb_f, probs_f = interp.embed_and_classify(interp.normalise_clips(u8, n_valid))
    assert torch.equal(emb, emb_f) and torch.equal(probs, probs_f)
    with pytest.raises(ValueError, match="n_valid has 2 values for 5 clips"):
        interp.towers.encode_uint8(u8, n_valid[:2])
    empty = interp.towers.encode_uint8(u8[:0], n_valid[:0])
    assert empty[0].shape == (0, 512) and empty[1].shape[0] == 0


def test_the_video_tower_runs_one_clip_a_forward_on_cpu_only_when_it_is_large(interp, files):
    """A release-size tower on CPU runs one clip per forward (faster there: docs/benchmarks.md);
    the small tower keeps the batch; either way the embeddings are the batched ones."""
    from dataclasses import replace

    from echoprime.inference import CPU_ONE_CLIP_PARAMS
    from echoprime.models.video import echoprime_mvit_v2_s

    assert interp.video_batch == interp.batch_size == 50  # the test bundle's tiny tower
    big = echoprime_mvit_v2_s()
    assert sum(p.numel() for p in big.parameters()) > CPU_ONE_CLIP_PARAMS
    assert StudyInterpreter(replace(interp.parts, video_encoder=big), device="cpu").video_batch == 1
    assert StudyInterpreter(interp.parts, device="cpu", video_batch=2, batch_size=8).video_batch == 2
    clips, n_valid, _ = interp.read_study(files)
    one = StudyInterpreter(interp.parts, device="cpu", video_batch=1)
    torch.testing.assert_close(
        one.towers.encode_uint8(clips, n_valid)[0], interp.towers.encode_uint8(clips, n_valid)[0]
    )
