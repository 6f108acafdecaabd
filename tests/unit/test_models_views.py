"""View classifiers: release ConvNeXt state dict, tiny CNN, frame selection."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models import convnext_base

from echoprime.models import create_model, load_release_state_dict, release_state_dict
from echoprime.models.views import first_frames


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def test_release_view_classifier_loads_strictly():
    ref = convnext_base(weights=None)
    ref.classifier[-1] = nn.Linear(1024, 11)
    sd = ref.state_dict()
    m = create_model("echoprime_convnext_base_views")
    load_release_state_dict(m, sd, source="view_classifier.pt")
    back = release_state_dict(m)
    assert back.keys() == sd.keys() and all(torch.equal(back[k], sd[k]) for k in sd)
    # features/head split on a small input equals torchvision's forward (ConvNeXt is size-agnostic)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m.eval()(x), ref.eval()(x), atol=1e-5)
    # the encoder's file is not a view classifier: a clear error, nothing half-loaded
    enc = create_model("echoprime_mvit_tiny")
    with pytest.raises(
        ValueError, match="view_classifier.pt does not match ConvNeXtViewClassifier: .* missing keys"
    ):
        load_release_state_dict(m, release_state_dict(enc), source="view_classifier.pt")
    # a clip is classified from its first frame
    clip = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(clip), m(clip[:, :, 0]), atol=1e-6)


def test_tiny_views_on_first_frames():
    m = create_model("tiny_views", num_classes=27, frames=2).eval()
    clip = torch.randn(3, 3, 16, 32, 32)
    logits = m(clip)
    assert logits.shape == (3, 27)
    changed = clip.clone()
    changed[:, :, 2:] = 0  # frames beyond the first two do not matter
    assert torch.allclose(m(changed), logits)
    with pytest.raises(ValueError, match="needs 2 frames"):
        m(torch.randn(1, 3, 1, 32, 32))


def test_first_frames_layout_is_frame_major():
    clip = torch.arange(2 * 3 * 4 * 1 * 1, dtype=torch.float32).view(2, 3, 4, 1, 1)
    x = first_frames(clip, 2, "t")
    assert x.shape == (2, 6, 1, 1)
    assert torch.equal(x[:, :3], clip[:, :, 0]) and torch.equal(x[:, 3:], clip[:, :, 1])
    with pytest.raises(ValueError, match="expects frames B x 3 x H x W"):
        first_frames(torch.randn(2, 4, 32, 32), 1, "t")
