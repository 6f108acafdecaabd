"""ClipLoss on one process: standard CLIP, the multi-positive rule, input checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from echoprime.losses import ClipLoss, multi_positive_targets


def _features(b=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    t = F.normalize(torch.randn(b, d, generator=g), dim=-1)
    return v, t


def test_unique_studies_reduce_to_standard_clip():
    v, t = _features()
    scale = torch.tensor(10.0)
    logits = scale * v @ t.T
    target = torch.arange(6)
    expected = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    loss = ClipLoss()
    assert torch.allclose(loss(v, t, scale)["contrastive_loss"], expected)
    assert torch.allclose(loss(v, t, scale, study_ids=torch.arange(6) * 7)["contrastive_loss"], expected)


def test_same_study_rows_are_positives_of_each_other():
    v, t = _features()
    ids = torch.tensor([4, 4, 9, 1, 9, 9])
    scale = torch.tensor(5.0)
    logits = (scale * v @ t.T).double()
    # brute force: row i's target is uniform over rows of its study
    v2t = t2v = 0.0
    for i in range(6):
        pos = [j for j in range(6) if ids[j] == ids[i]]
        v2t -= sum(torch.log_softmax(logits[i], 0)[j] for j in pos) / len(pos)
        t2v -= sum(torch.log_softmax(logits[:, i], 0)[j] for j in pos) / len(pos)
    expected = 0.5 * (v2t + t2v) / 6
    got = ClipLoss()(v, t, scale, study_ids=ids)["contrastive_loss"]
    assert math.isclose(float(got), float(expected), rel_tol=1e-5)


def test_targets_rows_sum_to_one():
    tgt = multi_positive_targets(torch.tensor([0, 0, 1]))
    assert torch.allclose(tgt, torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))


def test_loss_gradient_reaches_temperature_and_features():
    v, t = _features()
    v.requires_grad_(True)
    scale = torch.tensor(math.log(10.0), requires_grad=True)
    ClipLoss()(v, t, scale.exp(), study_ids=torch.tensor([0, 0, 1, 2, 3, 4]))["contrastive_loss"].backward()
    assert v.grad is not None and v.grad.abs().sum() > 0 and scale.grad is not None


def test_shape_errors_name_both_shapes():
    v, t = _features()
    with pytest.raises(ValueError, match=r"\(6, 8\).*\(5, 8\)"):
        ClipLoss()(v, t[:5], torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"study_ids must have shape \(6,\)"):
        ClipLoss()(v, t, torch.tensor(1.0), study_ids=torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="rank < world_size"):
        ClipLoss(rank=2, world_size=2)


def test_loss_stays_fp32_inside_autocast():
    v, t = _features(b=32, d=16)
    ref = ClipLoss()(v, t, torch.tensor(50.0))["contrastive_loss"]
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = ClipLoss()(v.bfloat16(), t.bfloat16(), torch.tensor(50.0))["contrastive_loss"]
    assert got.dtype == torch.float32
    # only the bf16 rounding of the inputs differs, not a bf16 matmul/softmax
    expected = ClipLoss()(v.bfloat16().float(), t.bfloat16().float(), torch.tensor(50.0))["contrastive_loss"]
    assert torch.allclose(got, expected, atol=1e-6) and torch.allclose(got, ref, atol=0.05)
