"""Embedded clips grouped into studies, first-frame clips, and the clip embedding of evaluation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from echoprime.eval.studies import StudySet, embed_clip_batch, first_frame_clips
from echoprime.taxonomy import PHENOTYPE_NAMES, VIEW_INDEX


def _cols():
    emb = np.eye(5, 4, dtype=np.float32)
    emb[4] = [0.6, 0.8, 0, 0]
    return {
        "study_id": np.array(["b", "a", "b", "a", "c"], dtype=object),
        "view": np.array(["A4C", "SSN", None, "Subcostal", "A2C"], dtype=object),
        "labels": np.array([json.dumps({"ejection_fraction": 40.0, "tavr": None})] * 5, dtype=object),
        "hidden_labels": np.array([json.dumps({"amyloidosis": 1.0, "stemi": 0.0})] * 5, dtype=object),
        "report": np.array(["rb", "ra", "rb", "ra", "rc"], dtype=object),
        "emb": emb,
        "emb_static": -emb,
        "view_probs": np.eye(5, 11, k=1, dtype=np.float32),
    }


def test_studies_group_in_first_appearance_order():
    s = StudySet.from_columns(_cols())
    assert s.study_ids == ["b", "a", "c"] and s.clip_study.tolist() == [0, 1, 0, 1, 2]
    assert s.reports == ["rb", "ra", "rc"]
    assert s.true_views.tolist() == [
        VIEW_INDEX["A4C"],
        VIEW_INDEX["SSN"],
        -1,
        VIEW_INDEX["Subcostal"],
        VIEW_INDEX["A2C"],
    ]
    assert s.pred_views.tolist() == [1, 2, 3, 4, 5]
    ef = s.label("ejection_fraction")
    assert ef.tolist() == [40.0, 40.0, 40.0] and np.isnan(s.label("tavr")).all()  # null -> NaN
    assert s.labels.shape == (3, len(PHENOTYPE_NAMES)) and s.label("amyloidosis").tolist() == [1.0] * 3
    with pytest.raises(KeyError, match="no labels named 'nope'"):
        s.label("nope")


def test_padded_and_study_mean():
    s = StudySet.from_columns(_cols())
    emb, views, mask = s.padded()
    assert emb.shape == (3, 2, 4) and mask.tolist() == [[True, True], [True, True], [True, False]]
    assert torch.equal(emb[0, 1], torch.tensor([0.0, 0, 1, 0])) and views[0].tolist() == [1, 3]
    assert torch.equal(s.padded(static=True)[0], -emb)
    mean = s.study_mean()
    assert mean[0] == pytest.approx(np.array([1, 0, 1, 0]) / np.sqrt(2))
    assert mean[2] == pytest.approx([0.6, 0.8, 0, 0])


def test_real_archive_has_no_hidden_labels_and_bad_columns_are_named():
    cols = _cols()
    cols.pop("hidden_labels")
    s = StudySet.from_columns(cols)
    assert s.hidden is None and s.hidden_names == ()
    with pytest.raises(ValueError, match=r"lack \['emb'\]"):
        StudySet.from_columns({k: v for k, v in cols.items() if k != "emb"})
    with pytest.raises(ValueError, match="'report' has 2 rows, study_id has 5"):
        StudySet.from_columns({**cols, "report": cols["report"][:2]})
    with pytest.raises(ValueError, match="without first-frame"):
        StudySet.from_columns({**cols, "emb_static": None}).padded(static=True)


def test_first_frame_clips_repeat_frame_zero():
    clips = np.random.default_rng(0).integers(0, 255, size=(2, 4, 3, 3, 3), dtype=np.uint8)
    s = first_frame_clips(clips)
    assert s.shape == clips.shape and all((s[:, t] == clips[:, 0]).all() for t in range(4))
    with pytest.raises(ValueError, match="B x T x H x W x 3"):
        first_frame_clips(clips[0])


class _Flat(torch.nn.Module):
    """A video "encoder" that sees every pixel of every frame (so motion changes its output)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(d_in, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(1))  # B x 3 x T x S x S -> B x (3 T S S)


def test_embed_clip_batch_is_the_interpreters_embedding():
    from echoprime.preprocess import PreprocessSpec, normalise

    torch.manual_seed(0)
    spec = PreprocessSpec(size=8, frames=4)
    enc, views = _Flat(3 * 4 * 8 * 8, 6).eval(), _Flat(3 * 4 * 8 * 8, 11).eval()
    clips = np.random.default_rng(1).integers(0, 255, size=(3, 4, 8, 8, 3), dtype=np.uint8)
    from echoprime.inference import Towers

    out = embed_clip_batch(Towers(spec, enc, views, device="cpu"), clips, [4, 4, 3])
    with torch.no_grad():
        x = normalise(torch.from_numpy(clips), spec.mean, spec.std, n_valid=[4, 4, 3])
        xs = normalise(
            torch.from_numpy(np.repeat(clips[:, :1], 4, 1)), spec.mean, spec.std, n_valid=[4, 4, 3]
        )
        want = torch.nn.functional.normalize(enc(x), dim=-1).numpy()
        want_static = torch.nn.functional.normalize(enc(xs), dim=-1).numpy()
        want_views = torch.softmax(views(x), -1).numpy()
    assert out["emb"] == pytest.approx(want, abs=1e-5) and out["emb_static"] == pytest.approx(
        want_static, abs=1e-5
    )
    assert out["view_probs"] == pytest.approx(want_views, abs=1e-6)
    assert not np.allclose(out["emb"], out["emb_static"])  # the first-frame clip is a different input
    assert embed_clip_batch(Towers(spec, enc, None, device="cpu"), clips, static=False).keys() == {
        "emb",
        "view_probs",
    }
