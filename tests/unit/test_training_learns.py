"""A tiny CLIP learns paired toy data in a few seconds: the loss falls and retrieval recall rises.

Each of 16 studies has 4 binary findings. The clip shows bits 0-2 as a bright colour channel and
bit 3 as flicker over time (properties that survive global pooling); the report states each
bit with a word in its own section. Noise is redrawn at every step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoprime.losses import ClipLoss
from echoprime.models import create_clip
from echoprime.models.tokenizer import ReportTokenizer, train_wordpiece_tokenizer
from echoprime.training import cosine_scheduler, evaluate_retrieval, train_one_epoch

N_STUDIES = 16
WORDS = [("normal", "dilated"), ("mild", "severe"), ("trace", "moderate"), ("small", "large")]
SECTIONS = ["Left Ventricle", "Right Ventricle", "Mitral Valve", "Pericardium"]
SPEC = {"mean": (50.0, 50.0, 50.0), "std": (60.0, 60.0, 60.0)}


def _report(study: int) -> str:
    return " ".join(f"{SECTIONS[b]}: {WORDS[b][(study >> b) & 1]} [SEP]" for b in range(4))


def _batches(rng: np.random.Generator, steps: int, enc: dict[str, torch.Tensor]):
    for _ in range(steps):
        ids = np.arange(N_STUDIES)
        x = rng.integers(0, 60, (N_STUDIES, 4, 16, 16, 3)).astype(np.float32)  # B x T x H x W x 3
        for i, s in enumerate(ids):
            for b in range(3):
                if (s >> b) & 1:
                    x[i, ..., b] += 120
            if (s >> 3) & 1:
                x[i, ::2] += 120
        study = torch.from_numpy(ids)
        yield {
            "clip": torch.from_numpy(x.clip(0, 255).astype(np.uint8)),
            "study_idx": study,
            **{k: v[study] for k, v in enc.items()},
        }


TEXT_TOWERS = {
    "tiny_bert": {"hidden": 32, "layers": 1, "heads": 2, "max_positions": 24},
    "tiny_bag": {"hidden": 32},
}
# (learning rate, steps) per tower. The attention tower needs a gentler, longer run: at 2e-3 for
# 150 steps its recall@1 ranged 0.06-0.41 over seeds and fell under the bound on CI's CPU, while
# 1e-3 for 300 steps gave recall@5 1.0 and recall@1 0.25-0.63 on seeds 0-5. The bag learns the
# task exactly (recall@1 1.0) at 2e-3 in 150 steps on every seed tried.
SCHEDULES = {"tiny_bert": (1e-3, 300), "tiny_bag": (2e-3, 150)}


@pytest.mark.parametrize("text_encoder", sorted(TEXT_TOWERS))
def test_tiny_clip_learns_paired_toy_data(text_encoder):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    reports = [_report(s) for s in range(N_STUDIES)]
    tok = ReportTokenizer(train_wordpiece_tokenizer(reports, vocab_size=100), max_len=24)
    enc = tok(reports)
    model = create_clip(
        "echoprime_tiny",
        text_encoder,
        embed_dim=32,
        video_overrides={"frames": 4, "size": 16, "width": 8},
        text_overrides={"vocab_size": len(tok), **TEXT_TOWERS[text_encoder]},
    )
    before = evaluate_retrieval(model, _batches(np.random.default_rng(1), 2, enc), "cpu", spec=SPEC)
    lr, steps = SCHEDULES[text_encoder]
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = cosine_scheduler(opt, lr, warmup=10, total=steps, min_lr=1e-4)
    losses: list[float] = []
    stats = train_one_epoch(
        model,
        ClipLoss(),
        opt,
        sched,
        _batches(np.random.default_rng(0), steps, enc),
        "cpu",
        spec=SPEC,
        on_step=lambda info: losses.append(info.loss),
    )
    after = evaluate_retrieval(model, _batches(np.random.default_rng(1), 2, enc), "cpu", spec=SPEC)

    assert stats.steps == steps and stats.clips == steps * N_STUDIES
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 0.8
    assert before["v2t_r@5"] <= 0.5 and after["v2t_r@5"] >= 0.75
    # chance recall@1 is 1/16; demand at least three times chance and a clear gain
    assert after["v2t_r@1"] >= 0.2 and after["v2t_r@1"] > before["v2t_r@1"] + 0.12
    assert after["t2v_r@5"] > before["t2v_r@5"] + 0.3
    assert after["v2t_median_rank"] <= 3
