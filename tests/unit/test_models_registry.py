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


def test_a_bundle_component_is_built_without_random_init_and_keeps_its_ties(tmp_path):
    """load_module builds on the meta device and takes the file's tensors (no random
    initialisation to throw away); BERT's tied decoder stays tied; weights stored in another
    dtype come back in the module's; a wrong file is still refused."""
    from safetensors.torch import load_file, save_file

    from echoprime.bundle import BundleError, BundleWriter, load_module
    from echoprime.models.factory import create_text_encoder

    w = BundleWriter(tmp_path)
    video = create_model("echoprime_mvit_tiny").eval()
    text = create_text_encoder("tiny_bert").eval()
    w.save_module("video", video, model="echoprime_mvit_tiny")
    w.save_module("text", text, model="tiny_bert")
    for name, want in (("video", video), ("text", text)):
        got = load_module(tmp_path, w.components[name])
        assert got.state_dict().keys() == want.state_dict().keys()
        assert all(
            torch.equal(a, b)
            for a, b in zip(got.state_dict().values(), want.state_dict().values(), strict=True)
        )
        assert not any(t.is_meta for t in (*got.parameters(), *got.buffers()))
        assert all(p.requires_grad and isinstance(p, nn.Parameter) for p in got.parameters())

        def shared(m):
            seen: dict[int, int] = {}
            for _, p in m.named_parameters(remove_duplicate=False):
                seen[id(p)] = seen.get(id(p), 0) + 1
            return sorted(v for v in seen.values() if v > 1)

        assert shared(got) == shared(want)
    assert shared(text) == [2, 2]  # the decoder's weight and bias: tied in the loaded one too
    half = {k: v.half() for k, v in load_file(str(tmp_path / "video.safetensors")).items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    got = load_module(tmp_path, {"model": "echoprime_mvit_tiny", "file": "half.safetensors"})
    assert {p.dtype for p in got.parameters()} == {torch.float32}
    with pytest.raises(BundleError, match="does not fit model 'echoprime_tiny'"):
        load_module(tmp_path, {"model": "echoprime_tiny", "file": "video.safetensors"})
