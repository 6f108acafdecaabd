"""Starting from a bundle (issue 26): compatibility errors naming both sides, the towers loaded
exactly (step-0 embeddings equal the bundle's), freezing, layer-wise decay, early stopping."""

from __future__ import annotations

import json

import pytest
import torch

from echoprime.inference import load_bundle_parts
from echoprime.models import create_clip
from echoprime.training.finetune import (
    InitError,
    apply_init,
    check_compatible,
    freeze_text,
    layer_of,
    load_init,
    param_groups,
    should_stop,
)
from echoprime.training.schedule import cosine_scheduler
from echoprime.training.setup import build_clip
from tests.fixtures_bundle import make_random_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("init") / "bundle", n_bank=40)


def _model_cfg(bundle) -> dict:
    comps = json.loads((bundle / "manifest.json").read_text())["components"]
    return {
        "video_encoder": comps["video_encoder"]["model"],
        "text_encoder": comps["text_encoder"]["model"],
        "embed_dim": 512,
        "init_logit_scale": 2.0,
        "max_logit_scale": 4.6,
        "video_options": {},
        "text_options": {},
        "label_heads": "separate",
    }


def _spec(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())["spec"]


def test_step_zero_embeddings_are_the_bundles(bundle):
    init = load_init(str(bundle), _model_cfg(bundle), _spec(bundle))
    assert init.towers == ("video_encoder", "text_encoder") and init.tokenizer_dir.is_dir()
    model = build_clip(_model_cfg(bundle), _spec(bundle), init.vocab_size).eval()
    apply_init(model, init.state, init.towers)
    parts = load_bundle_parts(str(bundle))
    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.video_encoder(x), parts.video_encoder(x))
        enc = parts.tokenizer(
            ["Left Ventricle: LVEF is 55%. [SEP]", "Pericardium: No pericardial effusion. [SEP]"]
        )
        args = (enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        assert torch.equal(model.text_encoder(*args), parts.text_encoder(*args))


def test_an_incompatible_config_or_spec_is_refused_naming_both_sides(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    cfg, spec = _model_cfg(bundle), _spec(bundle)
    check_compatible("B", manifest, cfg, spec)  # the bundle's own settings pass
    with pytest.raises(InitError, match=r"preprocessing size: bundle 32, shards 64"):
        check_compatible("B", manifest, cfg, spec | {"size": 64})
    with pytest.raises(
        InitError, match=r"model.video_encoder: bundle 'echoprime_tiny', config 'echoprime_mvit_v2_s'"
    ):
        check_compatible("B", manifest, cfg | {"video_encoder": "echoprime_mvit_v2_s"}, spec)
    with pytest.raises(InitError, match=r"embed_dim.*bundle 512, config 256"):
        manifest["components"]["video_encoder"].setdefault("overrides", {})["embed_dim"] = 512
        check_compatible("B", manifest, cfg | {"embed_dim": 256}, spec)
    model = create_clip("echoprime_tiny", "tiny_bag", embed_dim=256, video_overrides={"frames": 16, "size": 32},
                        text_overrides={"vocab_size": 100})  # fmt: skip
    init = load_init(str(bundle), cfg, spec)
    with pytest.raises(InitError, match="other shapes"):
        apply_init(model, init.state, init.towers)


def test_freezing_the_text_tower_and_its_last_layers():
    model = create_clip("echoprime_tiny", "tiny_bert", embed_dim=64, video_overrides={"frames": 4, "size": 16},
                        text_overrides={"vocab_size": 120})  # fmt: skip
    names = [n for n, _ in model.text_encoder.named_parameters()]
    layers = sorted({x for n in names if (x := layer_of("." + n)) is not None})
    assert len(layers) >= 2
    assert freeze_text(model, 0) == 0 and not any(p.requires_grad for p in model.text_encoder.parameters())
    kept = freeze_text(model, 1)
    for n, p in model.text_encoder.named_parameters():
        if (i := layer_of("." + n)) is not None:
            assert p.requires_grad == (i == layers[-1]), n
        if "word_embeddings" in n:
            assert not p.requires_grad
    assert 0 < kept < sum(p.numel() for p in model.text_encoder.parameters())
    assert all(p.requires_grad for p in model.video_encoder.parameters())
    freeze_text(model, None)
    assert all(p.requires_grad for p in model.text_encoder.parameters())


def test_layer_wise_decay_reaches_the_optimizer_through_the_schedule():
    model = create_clip("echoprime_tiny", "tiny_bert", embed_dim=64, video_overrides={"frames": 4, "size": 16},
                        text_overrides={"vocab_size": 120})  # fmt: skip
    groups = param_groups(model, 0.5)
    scales = [g["lr_scale"] for g in groups]
    assert scales[0] == 1.0 and min(scales) < 0.5 and scales == sorted(scales, reverse=True)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    opt = torch.optim.AdamW(groups, lr=1e-3)
    sched = cosine_scheduler(opt, 1e-3, warmup=0, total=10)
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs == pytest.approx([1e-3 * s for s in scales])
    opt.step()
    sched.step()
    assert [g["lr"] / g["initial_lr"] for g in opt.param_groups] == pytest.approx(
        [opt.param_groups[0]["lr"] / 1e-3] * len(lrs)
    )
    assert len(param_groups(model, 1.0)) == 1


def test_early_stopping_counts_epochs_without_a_better_validation():
    h = [
        {"kind": "init", "m": 0.5},
        {"kind": "epoch", "m": 0.6},
        {"kind": "step"},
        {"kind": "epoch", "m": 0.55},
    ]
    assert not should_stop(h, "m", 2) and should_stop(h, "m", 1) and not should_stop(h, "m", None)
    h.append({"kind": "epoch", "m": 0.58})
    assert should_stop(h, "m", 2)
    h.append({"kind": "epoch", "m": 0.61})
    assert not should_stop(h, "m", 2)
