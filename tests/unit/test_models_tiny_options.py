"""Options of the tiny towers: spatial pooling and dropout (echoprime_tiny), token dropout and
per-section pooling (tiny_bag)."""

from __future__ import annotations

import pytest
import torch

from echoprime.models import create_model


def test_spatial_pool_keeps_where_a_feature_is():
    torch.manual_seed(0)
    enc = create_model("echoprime_tiny", frames=4, size=32, width=4, pool="spatial").eval()
    assert enc.num_features == 6 * 4 * 16
    x = torch.zeros(2, 3, 4, 32, 32)  # zero input, no biases at init: only the blob responds
    x[0, :, :, 2:8, 2:8] = 1.0  # the same blob, top left ...
    x[1, :, :, 24:30, 24:30] = 1.0  # ... and bottom right
    with torch.no_grad():
        f = enc.forward_features(x)
        blocks = enc.blocks(x)  # B x 6w x T' x 4 x 4
    assert f.shape == (2, 6 * 4 * 16) and enc(x).shape == (2, 512)
    assert torch.allclose(f, blocks.mean(dim=2).flatten(1), atol=1e-6)  # time averaged, grid kept
    cells = f.view(2, 24, 4, 4).norm(dim=1)  # B x 4 x 4: how much responds in each grid cell
    assert cells[0, :2, :2].sum() > 3 * cells[0, 2:, 2:].sum()
    assert cells[1, 2:, 2:].sum() > 3 * cells[1, :2, :2].sum()


def test_motion_pool_adds_how_much_each_cell_changes_over_time():
    torch.manual_seed(0)
    enc = create_model("echoprime_tiny", frames=16, size=32, width=4, pool="spatial_motion").eval()
    n = 6 * 4 * 16
    assert enc.num_features == 2 * n
    x = torch.zeros(2, 3, 16, 32, 32)
    x[:, :, :, 2:10, 2:10] = 1.0  # a blob top left in both clips ...
    x[1, :, 8:, 2:10, 2:10] = 0.0  # ... which goes half way through the second
    with torch.no_grad():
        f = enc.forward_features(x)
        blocks = enc.blocks(x)
    assert f.shape == (2, 2 * n) and enc(x).shape == (2, 512)
    assert torch.allclose(f[:, :n], blocks.mean(dim=2).flatten(1), atol=1e-6)  # the spatial grid first
    diff = (blocks[:, :, 1:] - blocks[:, :, :-1]).abs().mean(dim=2).flatten(1)
    assert torch.allclose(f[:, n:], diff, atol=1e-6)
    # The clips differ only in the blob's motion: so do their motion features, and where it moves.
    change = (f[1, n:] - f[0, n:]).view(24, 4, 4).abs().sum(dim=0)
    assert change[:2, :2].sum() > 3 * change[2:, 2:].sum()


def test_video_dropout_only_in_training():
    enc = create_model("echoprime_tiny", frames=4, size=32, width=4, dropout=0.5)
    x = torch.randn(3, 3, 4, 32, 32)
    enc.eval()
    with torch.no_grad():
        assert torch.equal(enc(x), enc(x))
    enc.train()
    torch.manual_seed(0)
    a = enc(x)
    torch.manual_seed(1)
    assert not torch.equal(a, enc(x))


def test_tiny_video_option_errors():
    with pytest.raises(ValueError, match="pool"):
        create_model("echoprime_tiny", pool="max")
    with pytest.raises(ValueError, match="dropout"):
        create_model("echoprime_tiny", dropout=1.0)


def _report(n: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[2, 10, 11, 12, 13, 14, 15, 3, 0, 0]] * n)
    types = torch.tensor([[0, 1, 1, 1, 1, 1, 2, 0, 0, 0]] * n)
    mask = (ids != 0).long()
    return ids, mask, types


def test_section_pool_weighs_sections_not_tokens():
    torch.manual_seed(0)
    enc = create_model("tiny_bag", vocab_size=20, pool="sections").eval()
    ids, mask, types = _report(1)
    e = enc.pairs(ids * enc.n_types + types)[0]  # L x hidden
    # sections present: 0 ([CLS], [SEP]), 1 (five tokens), 2 (one token); each section's mean counts once
    expected = (e[[0, 7]].mean(0) + e[1:6].mean(0) + e[6]) / 3
    with torch.no_grad():
        assert torch.allclose(enc.forward_features(ids, mask, types)[0], enc.mlp(expected), atol=1e-5)
    with pytest.raises(ValueError, match="pool"):
        create_model("tiny_bag", vocab_size=20, pool="cls")


def test_token_dropout_only_in_training_and_changes_the_bag():
    enc = create_model("tiny_bag", vocab_size=20, token_dropout=0.5)
    ids, mask, types = _report(4)
    enc.eval()
    with torch.no_grad():
        ref = enc(ids, mask, types)
        assert torch.allclose(ref[0], ref[1])
        enc.train()
        torch.manual_seed(0)
        out = enc(ids, mask, types)
    assert not torch.allclose(out[0], out[1])  # each row drops different tokens
    with pytest.raises(ValueError, match="token_dropout"):
        create_model("tiny_bag", vocab_size=20, token_dropout=1.0)


def test_config_options_reach_the_towers_and_travel_with_the_weights(tmp_path):
    """model.video_options / text_options go to the builders; a bad one is an error naming it."""
    from echoprime.config import ConfigError, load_config
    from echoprime.training.setup import build_clip

    cfg = load_config(
        "configs/tiny-cpu.yaml",
        [
            "model.video_options={pool: spatial, dropout: 0.3, width: 8}",
            "model.text_options={token_dropout: 0.25}",
        ],
    )
    spec = {"frames": 16, "size": 32}
    clip = build_clip(cfg.model.model_dump(), spec, vocab_size=200)
    assert clip.video_encoder.pool == "spatial" and clip.video_encoder.num_features == 6 * 8 * 16
    assert clip.video_encoder.drop.p == pytest.approx(0.3)
    assert clip.text_encoder.token_dropout == pytest.approx(0.25)
    # the saved config rebuilds the same architecture
    cfg.save(tmp_path)
    again = load_config(tmp_path / "config.yaml")
    assert again.model.video_options == {"pool": "spatial", "dropout": 0.3, "width": 8}
    rebuilt = build_clip(again.model.model_dump(), spec, vocab_size=200)
    rebuilt.load_state_dict(clip.state_dict())
    bad = load_config("configs/tiny-cpu.yaml", ["model.video_options={pooling: spatial}"])
    with pytest.raises(ValueError, match=r"model 'echoprime_tiny' does not take \['pooling'\]"):
        build_clip(bad.model.model_dump(), spec, vocab_size=200)
    with pytest.raises(ConfigError, match="train.shift"):
        load_config("configs/tiny-cpu.yaml", ["train.shift=-1"])


def test_bundle_components_rebuild_the_towers_with_their_options(tmp_path):
    """A bundle's staged towers are rebuilt with the options pretraining used (else the weights do not fit)."""
    from echoprime.config import load_config
    from echoprime.staging import load_component
    from echoprime.synth.report import compose_report
    from echoprime.synth.state import sample_state
    from echoprime.training.setup import build_clip, build_tokenizer, export_pretrained

    cfg = load_config(
        "configs/tiny-cpu.yaml",
        [
            "model.video_options={pool: spatial, dropout: 0.3, width: 8}",
            "model.text_options={token_dropout: 0.25}",
        ],
    )
    rng = __import__("numpy").random.default_rng(0)
    reports = [compose_report(sample_state(rng, f"p{i}", f"s{i}"), rng).to_text() for i in range(20)]
    tok_dir = build_tokenizer(cfg.model.model_dump(), reports, tmp_path / "tok")
    from echoprime.models.tokenizer import ReportTokenizer

    spec = {"frames": 16, "size": 32, "stride": 2, "mean": [0.0] * 3, "std": [1.0] * 3}
    clip = build_clip(cfg.model.model_dump(), spec, ReportTokenizer.from_pretrained(tok_dir).vocab_size)
    export_pretrained(
        clip, tmp_path / "b" / "pretrained", tokenizer_dir=tok_dir, config_yaml=cfg.to_yaml(), spec=spec
    )
    video = load_component(tmp_path / "b", "video_encoder")
    assert video.pool == "spatial" and video.num_features == 6 * 8 * 16
    for k, v in clip.video_encoder.state_dict().items():
        assert torch.equal(video.state_dict()[k], v)
    assert load_component(tmp_path / "b", "text_encoder").token_dropout == pytest.approx(0.25)
