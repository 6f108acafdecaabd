"""Ablation pieces: drawn videos, single-video section embeddings, view-limited findings, summaries."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoprime.eval.ablation import (
    PHENOTYPE_FIELD,
    draw_videos,
    single_video_sections,
    summarise_variant,
    view_limited_phenotypes,
)
from echoprime.synth.state import VISIBILITY
from echoprime.taxonomy import BINARY_PHENOTYPES, MIL_SECTIONS, PHENOTYPE_NAMES


def test_drawn_videos_are_valid_and_cover_every_slot():
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    picks = np.stack([draw_videos(mask, np.random.default_rng(s)) for s in range(200)])
    assert set(picks[:, 0]) == {0, 1, 2} and set(picks[:, 1]) == {0}
    emb = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    secs = single_video_sections(emb, mask, np.array([2, 0]))
    assert secs.shape == (2, len(MIL_SECTIONS), 3)
    assert (secs[0] == emb[0, 2].numpy()).all() and (secs[1] == emb[1, 0].numpy()).all()
    with pytest.raises(ValueError, match="padding"):
        single_video_sections(emb, mask, np.array([3, 0]))


def test_view_limited_findings_follow_the_visibility_table():
    assert set(PHENOTYPE_FIELD) == set(PHENOTYPE_NAMES)
    limited = view_limited_phenotypes(2)
    assert "pericardial_effusion" not in limited  # drawn in 4 views
    assert {"aortic_regurgitation", "mitral_regurgitation", "dilated_ivc", "bicuspid_aov_morphology"} <= set(
        limited
    )
    assert all(len(VISIBILITY[PHENOTYPE_FIELD[p]]) <= 2 for p in limited) and set(limited) <= set(
        BINARY_PHENOTYPES
    )
    assert len(view_limited_phenotypes(11)) == len(BINARY_PHENOTYPES)


def test_variant_summary_means_over_phenotypes_scored_by_both_methods():
    phenos = {p: {"knn": 0.6, "linear": 0.7} for p in BINARY_PHENOTYPES}
    phenos["tavr"] = {"knn": 0.9, "linear": None}  # not scored by the probe: left out of both means
    phenos["impella"] = {"knn": 1.0, "linear": 1.0}
    phenos.update(
        {
            p: {"knn": 5.0, "linear": 4.0}
            for p in ("ejection_fraction", "pulmonary_artery_pressure_continuous")
        }
    )
    s = summarise_variant(phenos, ["impella", "tavr", "pacemaker"])
    n = len(BINARY_PHENOTYPES) - 1
    assert s["n_all"] == n and s["mean_auc_knn_all"] == pytest.approx((0.6 * (n - 1) + 1.0) / n)
    assert s["n_view_limited"] == 2 and s["mean_auc_linear_view_limited"] == pytest.approx(0.85)
    assert s["ejection_fraction_mae_linear"] == 4.0
