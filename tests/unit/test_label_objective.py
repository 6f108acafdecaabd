"""The report's findings in the objective: label rows, the masked label loss, the heads, one
training step through the production loop, and the config's cross-check."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from echoprime.config import ConfigError, load_config
from echoprime.losses import ClipLabelLoss, ClipLoss, LabelLoss
from echoprime.training.labels import (
    GRADED_COLUMNS,
    LABEL_NAMES,
    REGRESSION,
    column_weights,
    label_matrix,
    label_row,
    regression_columns,
)


def test_label_row_standardises_and_keeps_missing_as_nan():
    row = label_row(
        {"ejection_fraction": 35.0, "pulmonary_artery_pressure_continuous": 50, "tavr": 1, "impella": None}
    )
    j = LABEL_NAMES.index
    assert row.dtype == np.float32 and row.shape == (len(LABEL_NAMES),) == (21,)
    assert row[j("ejection_fraction")] == pytest.approx(-1.0) and row[
        j("pulmonary_artery_pressure_continuous")
    ] == pytest.approx(2.0)
    assert row[j("tavr")] == 1.0 and math.isnan(row[j("impella")]) and math.isnan(row[j("mitral_stenosis")])
    with pytest.raises(ValueError, match="'tavr' is binary"):
        label_row({"tavr": 0.5})
    m = label_matrix([json.dumps({"tavr": 0, "ejection_fraction": None}), None])
    assert m.shape == (2, 21) and m[0, j("tavr")] == 0.0 and np.isnan(m[1]).all()
    assert sum(REGRESSION) == 2


def test_grades_replace_the_named_graded_binaries_as_weighted_squared_error_targets():
    j = LABEL_NAMES.index
    rv, mr = "rv_systolic_function_depressed", "mitral_regurgitation"
    assert sum(GRADED_COLUMNS) == 12 and regression_columns() == REGRESSION
    reg = regression_columns([rv, mr])
    assert sum(reg) == 4 and reg[j(rv)] and reg[j(mr)] and not reg[j("aortic_stenosis")]
    w = column_weights([rv], 4.0)
    assert w[j(rv)] == 4.0 and sum(w) == 21 + 3
    row = label_row({rv: 1.0, "tavr": 1, mr: 0}, {rv: 3.0, mr: 0.0, "aortic_stenosis": float("nan")})
    assert row[j(rv)] == pytest.approx((3 - 1.5) / 1.0)  # 4 grades: centre 1.5, scale 1
    assert row[j(mr)] == pytest.approx((0 - 2.0) / (4 / 3))  # 5 grades: centre 2, scale 4/3
    assert math.isnan(row[j("aortic_stenosis")]) and row[j("tavr")] == 1.0  # no grade stated: no target
    report = (
        "Right Ventricle: Mildly reduced right ventricular systolic function. [SEP] "
        "Mitral Valve: There is moderate mitral regurgitation. [SEP]"
    )
    cells = [json.dumps({rv: 0, mr: 1})] * 2
    m = label_matrix(cells, [report, report], [rv])
    assert m[0, j(rv)] == pytest.approx(-0.5)  # grade 1, where the binary says 0
    assert m[1, j(mr)] == 1.0  # not named: the binary
    assert label_matrix(cells, [report, report])[0, j(rv)] == 0.0
    with pytest.raises(ValueError, match="need the reports"):
        label_matrix(cells, None, [rv])
    # the column weight enters the mean: one weighted column against one plain one
    loss = LabelLoss([True, False], 1.0, 0.0, column_weight=[3.0, 1.0])
    out = loss(torch.tensor([[1.0, 1.0]]), video_label_logits=torch.tensor([[0.0, 0.0]]))
    bce = F.binary_cross_entropy_with_logits(torch.tensor(0.0), torch.tensor(1.0)).item()
    assert out["video_label_loss"].item() == pytest.approx((3 * 1.0 + bce) / 4)
    with pytest.raises(ValueError, match="column_weight"):
        LabelLoss([True, False], 1.0, 0.0, column_weight=[1.0])
    cfg = load_config("configs/tiny-cpu.yaml", ["train.label_grades=[all]"])
    assert len(cfg.train.label_grades) == 12
    with pytest.raises(ConfigError, match="not graded phenotypes"):
        load_config("configs/tiny-cpu.yaml", ["train.label_grades=[tavr]"])


def test_label_loss_masks_missing_and_matches_hand_computation():
    reg = [True, False, False]
    loss = LabelLoss(reg, video_weight=2.0, text_weight=0.0)
    logits = torch.tensor([[0.5, 1.0, -2.0], [1.5, 0.0, 3.0]])
    y = torch.tensor([[1.0, 1.0, float("nan")], [float("nan"), 0.0, 1.0]])
    out = loss(y, video_label_logits=logits, text_label_logits=None)
    assert set(out) == {"video_label_loss"}
    terms = [
        (0.5 - 1.0) ** 2,
        F.binary_cross_entropy_with_logits(torch.tensor(1.0), torch.tensor(1.0)).item(),
        F.binary_cross_entropy_with_logits(torch.tensor(0.0), torch.tensor(0.0)).item(),
        F.binary_cross_entropy_with_logits(torch.tensor(3.0), torch.tensor(1.0)).item(),
    ]
    assert out["video_label_loss"].item() == pytest.approx(2.0 * sum(terms) / 4, rel=1e-6)
    # nothing labelled: zero loss, no NaN
    none = loss(torch.full((2, 3), float("nan")), video_label_logits=logits)
    assert none["video_label_loss"].item() == 0.0
    with pytest.raises(ValueError, match="no label head"):
        LabelLoss(reg, 0.0, 1.0)(y, video_label_logits=logits)
    with pytest.raises(ValueError, match="B x 3"):
        loss(y[:, :2], video_label_logits=logits[:, :2])
    with pytest.raises(ValueError, match=">= 0"):
        LabelLoss(reg, -1.0, 0.0)


def test_balanced_video_loss_weighs_rare_positives_by_the_labels_seen_so_far():
    """``video_balance``: a positive of a binary weighs negatives / positives among every label
    the loss has seen (capped), negatives and regressions 1; the text head stays unweighted."""
    reg = [True, False, False]
    loss = LabelLoss(reg, video_weight=1.0, text_weight=1.0, video_balance=3.0)
    nan = float("nan")
    # column 1: 1 positive in 4 (weight 3); column 2: 1 in 2 known (weight 1)
    y = torch.tensor([[0.2, 1.0, 1.0], [0.1, 0.0, 0.0], [0.3, 0.0, nan], [nan, 0.0, nan]])
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.0, 0.5, -0.5], [0.0, 1.0, 0.0], [0.0, -2.0, 0.0]])
    out = loss(y, video_label_logits=logits, text_label_logits=logits)
    assert loss.positive_weight().tolist() == [1.0, 3.0, 1.0]
    bce = lambda x, t: F.binary_cross_entropy_with_logits(torch.tensor(x), torch.tensor(t)).item()  # noqa: E731
    terms = [(0.5 - 0.2) ** 2, (1.0 - 0.1) ** 2, (0.0 - 0.3) ** 2]  # regression, weight 1
    terms += [3 * bce(-1.0, 1.0), bce(0.5, 0.0), bce(1.0, 0.0), bce(-2.0, 0.0)]  # column 1
    terms += [bce(2.0, 1.0), bce(-0.5, 0.0)]  # column 2
    assert out["video_label_loss"].item() == pytest.approx(sum(terms) / (3 + 6 + 2), rel=1e-6)
    assert out["text_label_loss"].item() == pytest.approx(
        LabelLoss(reg, 0.0, 1.0)(y, text_label_logits=logits)["text_label_loss"].item(), rel=1e-6
    )
    # the counts go on: 10 more negatives of column 1 -> 13 : 1, capped at 3; a rarer one caps too
    loss(
        torch.tensor([[0.0, 0.0, 0.0]] * 10),
        video_label_logits=torch.zeros(10, 3),
        text_label_logits=torch.zeros(10, 3),
    )
    assert loss.positive_weight().tolist() == [1.0, 3.0, 3.0]
    # off (0 or 1): the plain mean, whatever was seen
    plain = LabelLoss(reg, 1.0, 0.0, video_balance=1.0)
    assert plain(y, video_label_logits=logits)["video_label_loss"].item() == pytest.approx(
        LabelLoss(reg, 1.0, 0.0)(y, video_label_logits=logits)["video_label_loss"].item()
    )
    with pytest.raises(ValueError, match=">= 0"):
        LabelLoss(reg, 1.0, 0.0, video_balance=-1.0)


def _tiny_clip(label_heads: str):
    from echoprime.training.setup import build_clip

    off = ["train.label_weight_video=0", "train.label_weight_text=0"] if label_heads == "none" else []
    cfg = load_config("configs/tiny-cpu.yaml", [*off, f"model.label_heads={label_heads}"])
    spec = {"frames": 16, "size": 32}
    return build_clip(cfg.model.model_dump(), spec, 200)


def test_heads_read_the_joint_features_and_are_separate_or_shared():
    torch.manual_seed(0)
    sep, shared, none = _tiny_clip("separate"), _tiny_clip("shared"), _tiny_clip("none")
    assert (
        sep.text_label_head is not sep.video_label_head and shared.text_label_head is shared.video_label_head
    )
    assert none.video_label_head is None
    video = torch.randn(2, 3, 16, 32, 32)
    ids = torch.randint(1, 200, (2, 12))
    out = sep(video, ids, torch.ones_like(ids), torch.zeros_like(ids))
    assert out["video_label_logits"].shape == out["text_label_logits"].shape == (2, 21)
    torch.testing.assert_close(out["video_label_logits"], sep.video_label_head(out["video_features"]))
    assert "video_label_logits" not in none(video, ids, torch.ones_like(ids), torch.zeros_like(ids))


def test_one_step_of_the_production_loop_lowers_the_label_loss():
    """Labels flow from the batch dict through prepare_batch into ClipLabelLoss; a few steps on
    one batch lower the label part (the heads and towers receive its gradient)."""
    from echoprime.training.loop import train_one_epoch

    torch.manual_seed(0)
    model = _tiny_clip("separate")
    loss_fn = ClipLabelLoss(ClipLoss(), LabelLoss(REGRESSION, 5.0, 5.0))
    rng = np.random.default_rng(0)
    labels = np.stack([label_row({"tavr": int(i % 2), "ejection_fraction": 30.0 + 5 * i}) for i in range(8)])
    batch = {
        "clip": torch.from_numpy(rng.integers(0, 255, (8, 16, 32, 32, 3), dtype=np.uint8)),
        "input_ids": torch.randint(1, 200, (8, 12)),
        "attention_mask": torch.ones(8, 12, dtype=torch.long),
        "token_type_ids": torch.zeros(8, 12, dtype=torch.long),
        "study_idx": torch.arange(8),
        "labels": torch.from_numpy(labels),
    }
    seen: list[dict[str, float]] = []
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    spec = {"mean": [30.0] * 3, "std": [48.0] * 3}
    train_one_epoch(
        model,
        loss_fn,
        opt,
        None,
        [batch] * 12,
        "cpu",
        spec=spec,
        on_step=lambda i: seen.append(i.losses) and False,
    )
    assert {"contrastive_loss", "video_label_loss", "text_label_loss"} <= set(seen[0])
    assert seen[-1]["video_label_loss"] < 0.7 * seen[0]["video_label_loss"]
    assert seen[-1]["text_label_loss"] < 0.7 * seen[0]["text_label_loss"]


def test_label_weights_need_heads():
    with pytest.raises(ConfigError, match="train.label_weight_text=2.0 needs label heads"):
        load_config("configs/tiny-cpu.yaml", ["model.label_heads=none", "train.label_weight_text=2"])


def test_study_pooling_takes_the_video_label_loss_on_each_study_mean():
    """pool_studies: the video head's loss is on the mean logits of each study's clips (labels
    are the study's); CLIP and the text head stay per clip."""
    from echoprime.losses import pool_by_study

    ids = torch.tensor([7, 3, 7, 7, 3, 9])
    x = torch.arange(12, dtype=torch.float32).view(6, 2)
    pooled, first = pool_by_study(ids, x)
    torch.testing.assert_close(pooled, torch.stack([x[[1, 4]].mean(0), x[[0, 2, 3]].mean(0), x[5]]))
    assert first.tolist() == [1, 0, 5]

    torch.manual_seed(0)
    v, t = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    vlog, tlog = torch.randn(6, 21), torch.randn(6, 21)
    y = torch.from_numpy(
        np.stack([label_row({"tavr": int(s % 2), "ejection_fraction": 40.0 + s}) for s in ids.tolist()])
    )
    labels = LabelLoss(REGRESSION, 2.0, 3.0)
    got = ClipLabelLoss(ClipLoss(), labels, pool_studies=True)(v, t, torch.tensor(10.0), ids, y, vlog, tlog)
    pv, f = pool_by_study(ids, vlog)
    torch.testing.assert_close(got["video_label_loss"], 2.0 * labels.part(pv, y[f]))
    torch.testing.assert_close(got["text_label_loss"], 3.0 * labels.part(tlog, y))
    torch.testing.assert_close(
        got["contrastive_loss"], ClipLoss()(v, t, torch.tensor(10.0), study_ids=ids)["contrastive_loss"]
    )
    plain = ClipLabelLoss(ClipLoss(), labels)(v, t, torch.tensor(10.0), ids, y, vlog, tlog)
    assert not torch.allclose(plain["video_label_loss"], got["video_label_loss"])
