"""EchoClip: normalised features, clamped temperature, factory wiring."""

from __future__ import annotations

import math

import pytest
import torch

from echoprime.models import create_clip
from echoprime.models.clip import EchoClip


@pytest.fixture(autouse=True)
def _seed():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _clip_model() -> EchoClip:
    return create_clip(
        "echoprime_tiny",
        "tiny_bert",
        embed_dim=32,
        video_overrides={"frames": 4},
        text_overrides={"vocab_size": 50},
    )


def test_forward_returns_loss_kwargs():
    m = _clip_model().eval()
    video = torch.randn(3, 3, 4, 32, 32)
    ids = torch.randint(5, 50, (3, 10))
    am = torch.ones_like(ids)
    out = m(video, ids, am, torch.zeros_like(ids))
    assert set(out) == {"video_features", "text_features", "logit_scale"}
    assert out["video_features"].shape == out["text_features"].shape == (3, 32)
    assert torch.allclose(out["video_features"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(out["text_features"].norm(dim=-1), torch.ones(3), atol=1e-5)
    assert math.isclose(float(out["logit_scale"].detach()), 1 / 0.07, rel_tol=1e-5)
    assert torch.allclose(m.encode_video(video), out["video_features"])


def test_logit_scale_is_clamped_at_the_cap():
    m = _clip_model()
    with torch.no_grad():
        m.logit_scale.fill_(10.0)
    assert math.isclose(float(m.scale().detach()), 100.0, rel_tol=1e-5)
    m.scale().backward()
    assert float(m.logit_scale.grad) == 0.0  # past the cap it stays at the cap


def test_mismatched_batch_and_bad_init_rejected():
    m = _clip_model()
    with pytest.raises(ValueError, match="2 clips but 3 reports"):
        m(torch.randn(2, 3, 4, 32, 32), torch.randint(5, 50, (3, 10)))
    with pytest.raises(ValueError, match="exceeds max_logit_scale"):
        EchoClip(m.video_encoder, m.text_encoder, init_logit_scale=5.0, max_logit_scale=4.0)
    with pytest.raises(ValueError, match="not a video encoder"):
        create_clip("tiny_views", "tiny_bert")
