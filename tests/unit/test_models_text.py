"""Text encoders: [CLS] projection, section token types, release state dict, offline loading."""

from __future__ import annotations

import time

import pytest
import torch
from transformers import BertForMaskedLM

from echoprime.models import create_model
from echoprime.models.factory import create_text_encoder
from echoprime.models.state_dict import load_release_state_dict
from echoprime.models.text import (
    BIOMEDBERT_NAME,
    SECTION_TYPE_VOCAB,
    TextEncoder,
    TextModelNotFoundError,
    biomedbert_config,
    load_pretrained_tokenizer,
    tiny_bert_config,
    trim_padding,
)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


def _tokens(b=2, n=12, vocab=100):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (b, n), generator=g)
    am = torch.ones(b, n, dtype=torch.long)
    am[1, 8:] = 0
    return ids, am


def test_embedding_is_projection_of_cls_last_hidden_state():
    enc = create_model("tiny_bert", vocab_size=100).eval()
    ids, am = _tokens()
    tt = torch.zeros_like(ids)
    with torch.no_grad():
        out = enc(ids, am, tt)
        hs = enc.backbone(
            input_ids=ids, attention_mask=am, token_type_ids=tt, output_hidden_states=True
        ).hidden_states[-1]
    assert out.shape == (2, 512)
    assert torch.allclose(out, enc.text_projection(hs[:, 0]), atol=1e-5)


def test_section_type_ids_matter_only_when_enabled():
    ids, am = _tokens()
    sections = torch.randint(0, SECTION_TYPE_VOCAB, ids.shape, generator=torch.Generator().manual_seed(2))
    on = create_model("tiny_bert", vocab_size=100, section_type_ids=True).eval()
    assert on.backbone.config.type_vocab_size == 17
    with torch.no_grad():
        assert not torch.allclose(on(ids, am, sections), on(ids, am, torch.zeros_like(ids)))
    with pytest.raises(ValueError, match=r"token_type_ids must lie in \[0, 17\)"):
        on(ids, am, torch.full_like(ids, 17))
    off = create_model("tiny_bert", vocab_size=100, section_type_ids=False).eval()
    with torch.no_grad():
        assert torch.allclose(off(ids, am, sections), off(ids, am, None))  # ignored, as BiomedBERT sees them


def test_section_type_ids_need_a_large_type_table():
    with pytest.raises(ValueError, match="type_vocab_size >= 17"):
        TextEncoder(
            BertForMaskedLM(tiny_bert_config(vocab_size=50, section_type_ids=False)), section_type_ids=True
        )


def test_biomedbert_config_is_bert_base_uncased_with_two_types():
    c = biomedbert_config()
    assert (c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads) == (30522, 768, 12, 12)
    assert (c.intermediate_size, c.max_position_embeddings, c.type_vocab_size) == (3072, 512, 2)


def test_release_text_state_dict_loads_strictly_into_biomedbert():
    release = create_model("biomedbert")  # stands in for the trained release module: same class layout
    sd = {k: v.clone() for k, v in release.state_dict().items()}
    assert {k.split(".")[0] for k in sd} == {"backbone", "text_projection"}
    assert sd["text_projection.weight"].shape == (512, 768)
    # a file written by an older transformers also carries the non-learned position_ids buffer
    sd["backbone.bert.embeddings.position_ids"] = torch.arange(512)[None]
    fresh = release  # one BERT-base build keeps the test fast: wipe it, then load the file back
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    load_release_state_dict(fresh, sd, source="echo_prime_text_encoder.pt")
    assert fresh.text_projection.weight.abs().sum() > 0
    own = fresh.state_dict()
    assert all(torch.equal(own[k], v) for k, v in sd.items() if k in own)
    bad = dict(sd)
    bad["text_projection.weight"] = torch.zeros(256, 768)
    with pytest.raises(ValueError, match=r"text_projection.weight: file \(256, 768\) vs model \(512, 768\)"):
        load_release_state_dict(fresh, bad, source="echo_prime_text_encoder.pt")


@pytest.mark.parametrize("name", [BIOMEDBERT_NAME, "nobody/no-such-model-xyz"])
def test_missing_pretrained_model_is_a_fast_clear_error(name):
    t0 = time.perf_counter()
    with pytest.raises(TextModelNotFoundError) as e:
        TextEncoder.from_pretrained(name)
    assert time.perf_counter() - t0 < 20  # offline lookup: no network wait
    msg = str(e.value)
    assert (
        name in msg and "not available offline" in msg and "save_pretrained" in msg and "huggingface" in msg
    )
    with pytest.raises(TextModelNotFoundError):
        load_pretrained_tokenizer(name)


def test_missing_local_directory_is_named(tmp_path):
    with pytest.raises(TextModelNotFoundError, match="does not exist"):
        TextEncoder.from_pretrained(tmp_path / "nope")


def test_from_pretrained_local_dir_and_section_expansion(tmp_path):
    bert = BertForMaskedLM(tiny_bert_config(vocab_size=80, section_type_ids=False)).eval()
    bert.save_pretrained(tmp_path / "bert")
    enc = TextEncoder.from_pretrained(tmp_path / "bert", embed_dim=32).eval()
    assert enc.text_projection.out_features == 32
    assert torch.equal(
        enc.backbone.bert.embeddings.word_embeddings.weight, bert.bert.embeddings.word_embeddings.weight
    )
    # section-aware fine-tuning of a 2-type BERT: new type rows start as copies of type 0
    sec = TextEncoder.from_pretrained(tmp_path / "bert", embed_dim=32, section_type_ids=True).eval()
    assert sec.backbone.config.type_vocab_size == SECTION_TYPE_VOCAB
    sec.text_projection.load_state_dict(enc.text_projection.state_dict())
    ids, am = _tokens(vocab=80)
    with torch.no_grad():
        assert torch.allclose(sec(ids, am, torch.full_like(ids, 7)), enc(ids, am), atol=1e-5)


def test_create_text_encoder_routes_names():
    assert isinstance(create_text_encoder("tiny_bert", vocab_size=60, embed_dim=16), TextEncoder)
    with pytest.raises(ValueError, match="not a text encoder"):
        create_text_encoder("echoprime_tiny")
    with pytest.raises(ValueError, match="takes only embed_dim/section_type_ids"):
        create_text_encoder("some/bert", vocab_size=3)


def test_trailing_padding_is_trimmed_without_changing_the_embedding():
    enc = create_model("tiny_bert", vocab_size=100).eval()
    ids, am = _tokens()
    pad = torch.zeros(2, 20, dtype=torch.long)
    with torch.no_grad():
        short = enc(ids, am, torch.zeros_like(ids))
        long = enc(
            torch.cat([ids, pad], 1), torch.cat([am, pad], 1), torch.cat([torch.zeros_like(ids), pad], 1)
        )
    assert torch.allclose(short, long, atol=1e-5)
    a, b, c = trim_padding(torch.cat([ids, pad], 1), torch.cat([am, pad], 1), None)
    assert a.shape == (2, 12) and b.shape == (2, 12) and c is None


def test_section_bag_sees_sections_and_ignores_padding():
    enc = create_model("tiny_bag", vocab_size=100, embed_dim=24).eval()
    ids, am = _tokens()
    types = torch.full_like(ids, 3)
    with torch.no_grad():
        out = enc(ids, am, types)
        assert out.shape == (2, 24)
        assert not torch.allclose(out, enc(ids, am, torch.full_like(ids, 4)))  # same words, other section
        padded = enc(
            torch.cat([ids, torch.zeros_like(ids)], 1),
            torch.cat([am, torch.zeros_like(am)], 1),
            torch.cat([types, types], 1),
        )
        assert torch.allclose(out, padded, atol=1e-6)
        perm = torch.randperm(8)  # order inside row 1's attended tokens does not matter
        ids2 = ids.clone()
        ids2[1, :8] = ids[1, perm]
        assert torch.allclose(enc(ids2, am, types)[1], out[1], atol=1e-5)
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 100\)"):
        enc(torch.full_like(ids, 100), am, types)
    with pytest.raises(ValueError, match="token_type_ids must be B x L in"):
        enc(ids, am, torch.full_like(ids, 17))
