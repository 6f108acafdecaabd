from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from echoprime.config import ConfigError, EchoPrimeConfig, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["tiny-cpu.yaml", "a6000x2.yaml"])
def test_shipped_configs_validate(name):
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.data.frames >= 1 and cfg.model.embed_dim == 512


def test_paper_setting():
    cfg = load_config(ROOT / "configs" / "a6000x2.yaml")
    assert (cfg.data.size, cfg.data.frames, cfg.data.stride) == (224, 16, 2)
    assert cfg.model.video_encoder == "echoprime_mvit_v2_s"
    assert cfg.model.text_encoder == "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
    assert cfg.model.max_tokens == 512
    assert (cfg.train.num_workers, cfg.train.use_gpu, cfg.train.precision) == (2, True, "bf16")


def test_overrides_apply_and_parse_types():
    cfg = load_config(
        ROOT / "configs" / "tiny-cpu.yaml",
        ["train.epochs=3", "seed=7", "data.mean=[1,2,3]", "train.use_gpu=false"],
    )
    assert cfg.train.epochs == 3 and cfg.seed == 7 and cfg.data.mean == (1.0, 2.0, 3.0)


def test_unknown_key_names_key_file_and_allowed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    msg = str(e.value)
    assert "train.epoch" in msg and str(f) in msg and "epochs" in msg


def test_unknown_section(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("trian:\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'trian'.*allowed here: .*train"):
        load_config(f)


def test_wrong_type_and_impossible_values():
    with pytest.raises(ConfigError, match=r"data\.size: .*integer.*'big'"):
        load_config(None, ["data.size=big"])
    with pytest.raises(ConfigError, match=r"train\.epochs: .*greater than or equal to 1"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(ConfigError, match=r"split_fractions.*sum to 1"):
        load_config(None, ["ingest.split_fractions=[0.5,0.5,0.5]"])
    with pytest.raises(ConfigError, match=r"min_videos \(9\) must be <= max_videos \(3\)"):
        load_config(None, ["synth.min_videos=9", "synth.max_videos=3"])
    with pytest.raises(ConfigError, match=r"train\.precision"):
        load_config(None, ["train.precision=fp8"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read YAML"):
        load_config(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(lst)


def test_malformed_override():
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match=r"seed: Input should be a valid integer"):
        load_config(None, ["seed.x=1"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(None, ["seed=1", "seed.x=1"])


def test_save_round_trip(tmp_path):
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml", ["seed=3"])
    path = cfg.save(tmp_path)
    assert load_config(path) == cfg


def test_frozen():
    cfg = EchoPrimeConfig()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.seed = 3  # type: ignore[misc]
