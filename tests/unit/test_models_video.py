"""Video encoders: shapes, the features/head split, input checks, release state-dict loading."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn as nn
from torchvision.models.video import mvit_v2_s

from echoprime.models import create_model, load_release_state_dict, release_state_dict


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_tiny_encoder_shape_size_and_split():
    m = create_model("echoprime_tiny").eval()
    n_params = sum(p.numel() for p in m.parameters())
    assert 250_000 < n_params < 350_000
    x = torch.randn(3, 3, 16, 32, 32)
    f = m.forward_features(x)
    assert f.shape == (3, m.num_features)
    out = m(x)
    assert out.shape == (3, 512)
    assert torch.allclose(out, m.forward_head(f))


def test_tiny_encoder_group_norm_is_batch_independent():
    m = create_model("echoprime_tiny", norm="group").eval()
    x = torch.randn(4, 3, 16, 32, 32)
    assert torch.allclose(m(x)[:1], m(x[:1]), atol=1e-5)


def test_tiny_encoder_rejects_wrong_layout_and_dtype():
    m = create_model("echoprime_tiny")
    with pytest.raises(ValueError, match=r"B x 3 x 16 x 32 x 32"):
        m(torch.randn(2, 16, 32, 32, 3))  # channels-last, as stored in shards
    with pytest.raises(ValueError, match="float clip"):
        m(torch.zeros(2, 3, 16, 32, 32, dtype=torch.uint8))


def test_mvit_tiny_matches_its_torchvision_forward():
    m = create_model("echoprime_mvit_tiny").eval()
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            m(x), m.backbone(x), atol=1e-6
        )  # our features/head split == torchvision's forward
    assert m(x).shape == (2, 512)


def _release_encoder_state_dict() -> dict[str, torch.Tensor]:
    """The release's format: a torch.save'd state dict of mvit_v2_s with head[-1] = Linear(768, 512)."""
    ref = mvit_v2_s(weights=None)
    ref.head[-1] = nn.Linear(768, 512)
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_release_encoder_state_dict_loads_strictly_and_round_trips():
    sd = _release_encoder_state_dict()
    m = create_model("echoprime_mvit_v2_s")
    load_release_state_dict(m, sd, source="echo_prime_encoder.pt")
    own = m.state_dict()
    assert all(torch.equal(own["backbone." + k], v) for k, v in sd.items())
    back = release_state_dict(m)
    assert list(back) == list(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_release_loader_names_missing_unexpected_and_shape_errors():
    m = create_model("echoprime_mvit_tiny")
    sd = release_state_dict(m)
    bad = dict(sd)
    bad.pop("conv_proj.weight")
    bad["extra.weight"] = torch.zeros(1)
    bad["head.1.weight"] = torch.zeros(10, 64)
    with pytest.raises(ValueError) as e:
        load_release_state_dict(m, bad, source="enc.pt")
    msg = str(e.value)
    assert "enc.pt" in msg and "conv_proj.weight" in msg and "extra.weight" in msg and "head.1.weight" in msg
    with pytest.raises(ValueError, match="expected a state dict"):
        load_release_state_dict(m, [1, 2], source="enc.pt")  # type: ignore[arg-type]


@pytest.mark.slow
def test_release_encoder_forward_matches_torchvision_at_16x224():
    sd = _release_encoder_state_dict()
    ref = mvit_v2_s(weights=None)
    ref.head[-1] = nn.Linear(768, 512)
    ref.load_state_dict(sd)
    m = create_model("echoprime_mvit_v2_s")
    load_release_state_dict(m, sd)
    x = torch.randn(1, 3, 16, 224, 224)
    with torch.no_grad():
        assert torch.allclose(m.eval()(x), ref.eval()(x), atol=1e-5)
