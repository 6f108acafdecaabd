"""Registry and factory: names, kinds, overrides, and clear errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from echoprime.models import create_model, list_models, register_model
from echoprime.models.registry import get_entry


def test_builtin_models_are_listed_by_kind():
    assert list_models("video") == ["echoprime_mvit_tiny", "echoprime_mvit_v2_s", "echoprime_tiny"]
    assert list_models("text") == ["biomedbert", "tiny_bag", "tiny_bert"]
    assert list_models("views") == ["echoprime_convnext_base_views", "tiny_views"]
    assert list_models("mil") == ["section_attention_mil", "view_table_mil"]
    assert list_models(pattern="*tiny*") == [
        "echoprime_mvit_tiny",
        "echoprime_tiny",
        "tiny_bag",
        "tiny_bert",
        "tiny_views",
    ]


def test_unknown_name_suggests_close_matches_and_lists_known():
    with pytest.raises(ValueError) as e:
        create_model("echoprime_tiy")
    msg = str(e.value)
    assert "'echoprime_tiny'" in msg and "Did you mean" in msg
    assert "echoprime_mvit_v2_s" in msg  # the full list of known names


def test_unknown_override_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"does not take \['depth'\].*'frames'"):
        create_model("echoprime_tiny", depth=3)


def test_unknown_kind_rejected():
    with pytest.raises(ValueError, match="unknown model kind"):
        list_models("audio")  # type: ignore[arg-type]


def test_overrides_reach_the_builder():
    torch.manual_seed(0)
    m = create_model("echoprime_tiny", embed_dim=64, frames=8, size=32, width=8)
    assert m(torch.randn(2, 3, 8, 32, 32)).shape == (2, 64)


def test_register_custom_model_and_reject_conflicting_name():
    @register_model("video", name="_test_identity_encoder")
    def _builder(embed_dim: int = 4) -> nn.Module:
        """An identity for the test."""
        return nn.Linear(embed_dim, embed_dim)

    assert "_test_identity_encoder" in list_models("video")
    assert get_entry("_test_identity_encoder").doc == "An identity for the test."
    assert create_model("_test_identity_encoder", embed_dim=3).out_features == 3

    with pytest.raises(ValueError, match="already registered"):

        @register_model("video", name="_test_identity_encoder")
        def _other() -> nn.Module:
            return nn.Identity()
