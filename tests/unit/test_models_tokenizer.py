"""WordPiece training and section-aware report tokenisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from echoprime.models.tokenizer import (
    ReportTokenizer,
    report_chunks,
    train_wordpiece_tokenizer,
    wordpiece_vocab,
)
from echoprime.taxonomy import SECTION_INDEX

REPORTS = [
    "Left Ventricle: normal size. ejection fraction 55 % [SEP] Right Ventricle: mildly dilated [SEP]",
    "Left Ventricle: severely reduced function [SEP] Pericardium: moderate effusion [SEP] IVC: dilated [SEP]",
    "Mitral Valve: moderate regurgitation [SEP] Aortic Valve: trace regurgitation [SEP]",
]


@pytest.fixture(scope="module")
def tok():
    return train_wordpiece_tokenizer(REPORTS * 5, vocab_size=300)


def test_trained_tokenizer_is_bert_style(tok):
    assert tok.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]) == [0, 1, 2, 3, 4]
    pieces = tok.convert_ids_to_tokens(tok("Left VENTRICLE: Moderate. [SEP] x")["input_ids"])
    assert pieces[:6] == [
        "[CLS]",
        "left",
        "ventricle",
        ":",
        "moderate",
        ".",
    ]  # lower-cased, punctuation split
    assert pieces[6] == "[SEP]"  # a literal [SEP] is the special token
    assert "sep" not in tok.get_vocab()  # and it was not learned as text


def test_report_tokens_carry_their_section(tok):
    rt = ReportTokenizer(tok, max_len=40)
    enc = rt(REPORTS[1])
    ids, types, am = enc["input_ids"][0], enc["token_type_ids"][0], enc["attention_mask"][0]
    n = int(am.sum())
    assert (
        ids[0] == tok.cls_token_id and ids[n - 1] == tok.sep_token_id and (ids[n:] == tok.pad_token_id).all()
    )
    toks = tok.convert_ids_to_tokens(ids[:n].tolist())
    for t, ty in zip(toks, types[:n].tolist(), strict=True):
        if t in ("[CLS]", "[SEP]"):
            assert ty == 0
    words = {t: ty for t, ty in zip(toks, types[:n].tolist(), strict=True)}
    assert words["severely"] == SECTION_INDEX["Left Ventricle"] + 1
    assert words["effusion"] == SECTION_INDEX["Pericardium"] + 1
    assert words["dilated"] == SECTION_INDEX["IVC"] + 1
    assert (types[n:] == 0).all()
    assert rt.decode(ids).startswith("[CLS] left ventricle : severely reduced function [SEP] pericardium")


def test_same_word_in_two_sections_gets_two_types(tok):
    enc = ReportTokenizer(tok, max_len=40)(REPORTS[2])
    toks = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())
    types = [
        ty for t, ty in zip(toks, enc["token_type_ids"][0].tolist(), strict=True) if t == "regurgitation"
    ]
    assert types == [SECTION_INDEX["Mitral Valve"] + 1, SECTION_INDEX["Aortic Valve"] + 1]


def test_section_types_off_gives_zeros(tok):
    enc = ReportTokenizer(tok, max_len=40, section_type_ids=False)(REPORTS)
    assert enc["input_ids"].shape == (3, 40) and (enc["token_type_ids"] == 0).all()


def test_long_report_is_cut_at_section_boundaries(tok):
    rt = ReportTokenizer(tok, max_len=14)
    full = ReportTokenizer(tok, max_len=100).encode(REPORTS[1])[0]
    ids, types = rt.encode(REPORTS[1])
    assert len(ids) <= 14 and ids[-1] == tok.sep_token_id
    assert ids == full[: len(ids)]  # deterministic: whole sections from the first
    text = rt.decode(ids)
    assert text.count("[SEP]") == 2 and "ivc" not in text


def test_random_window_keeps_whole_sections_with_their_types(tok):
    rt = ReportTokenizer(tok, max_len=10)
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(20):
        ids, types = rt.encode(REPORTS[1], rng=rng)
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id and len(ids) <= 10
        text = rt.decode(ids)
        seen.add(text.split(" ")[1])
        header = text.split(" ")[1]
        sec = {"left": "Left Ventricle", "pericardium": "Pericardium", "ivc": "IVC"}[header]
        assert types[1] == SECTION_INDEX[sec] + 1
    assert len(seen) >= 2  # different sections show up over the epochs


def test_single_section_longer_than_budget_is_cut_and_closed(tok):
    enc = ReportTokenizer(tok, max_len=5)(REPORTS[0])
    assert enc["input_ids"][0, -1] == tok.sep_token_id
    assert enc["token_type_ids"][0].tolist()[:4] == [0, 1, 1, 1] and enc["token_type_ids"][0, -1] == 0


def test_pluggable_window_function(tok):
    def last_section(token_ids, sep_id, max_len, rng):
        seps = [i for i, t in enumerate(token_ids) if t == sep_id]
        return token_ids[:1] + token_ids[seps[-2] + 1 :]

    rt = ReportTokenizer(tok, max_len=12, window_fn=last_section)
    ids, types = rt.encode(REPORTS[1])
    assert rt.decode(ids) == "[CLS] ivc : dilated [SEP]"
    assert types == [0] + [SECTION_INDEX["IVC"] + 1] * 3 + [0]

    rt_bad = ReportTokenizer(tok, max_len=12, window_fn=lambda ids, sep, n, rng: ids[:1] + ids[-3:-1][::-1])
    with pytest.raises(ValueError, match="not \\[CLS\\] \\+ a contiguous run"):
        rt_bad.encode(REPORTS[1])


def test_section_aliases_are_recognised():
    assert report_chunks("Inferior vena cava: dilated [SEP]") == [
        (SECTION_INDEX["IVC"], "Inferior vena cava: dilated")
    ]


def test_unknown_section_header_is_an_error_unless_lenient(tok):
    with pytest.raises(ValueError, match="known section header"):
        report_chunks("Heart: fine [SEP]")
    assert report_chunks("free text without sections", strict=False) == [(-1, "free text without sections")]
    enc = ReportTokenizer(tok, max_len=20, strict_sections=False)("moderate effusion")
    assert (enc["token_type_ids"] == 0).all() and int(enc["attention_mask"].sum()) == 4


def test_save_and_load_round_trip(tok, tmp_path):
    rt = ReportTokenizer(tok, max_len=33, section_type_ids=True)
    rt.save_pretrained(tmp_path / "tok")
    back = ReportTokenizer.from_pretrained(tmp_path / "tok")
    assert back.max_len == 33 and back.section_type_ids
    a, b = rt(REPORTS), back(REPORTS)
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="unknown ReportTokenizer settings"):
        ReportTokenizer.from_pretrained(tmp_path / "tok", maxlen=3)


def test_empty_corpus_rejected():
    with pytest.raises(ValueError, match="corpus is empty"):
        train_wordpiece_tokenizer(["[SEP]", ""], vocab_size=50)


def test_training_is_deterministic():
    # The tokenizers library's own trainer broke ties between equally frequent pairs in hash
    # order: the same corpus gave a different vocabulary on each call (and in each process).
    from echoprime.synth.report import compose_report
    from echoprime.synth.state import sample_state

    rng = np.random.default_rng(0)
    texts = [compose_report(sample_state(rng, f"p{i}", f"s{i:04d}"), rng).to_text() for i in range(150)]
    a, b = (train_wordpiece_tokenizer(texts, vocab_size=500) for _ in range(2))
    assert a.get_vocab() == b.get_vocab() and len(a.get_vocab()) > 100
    assert a(texts[:5])["input_ids"] == b(texts[:5])["input_ids"]
    assert a.unk_token_id not in sum(a(texts)["input_ids"], [])  # the training text is fully covered


def test_wordpiece_merges_most_frequent_pair_first_and_breaks_ties_alphabetically():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    alphabet = ["##b", "##d", "a", "c"]
    words = {"ab": 2, "cd": 2, "abd": 1}
    # (a, ##b) is seen 3 times; then (ab, ##d) once and (c, ##d) twice; stop at the size asked
    assert wordpiece_vocab(words, 10) == specials + alphabet + ["ab"]
    assert wordpiece_vocab(words, 11) == specials + alphabet + ["ab", "cd"]
    assert wordpiece_vocab(words, 100) == specials + alphabet + ["ab", "cd", "abd"]
    assert wordpiece_vocab({"ab": 2, "cd": 2}, 10) == specials + alphabet + ["ab"]  # a tie: "a" < "c"
    assert wordpiece_vocab(words, 100, min_frequency=3) == specials + alphabet + ["ab"]
    assert wordpiece_vocab({}, 100) == specials


def test_number_step_quantises_what_the_text_tower_reads(tmp_path):
    """EF 57 % and 54 % read alike at step 5; the setting survives save/load; 0 leaves text alone."""
    from echoprime.models.tokenizer import ReportTokenizer, quantise_numbers, train_wordpiece_tokenizer

    assert quantise_numbers("Left Ventricle: EF of 57%. Rate 86 bpm, 12.4 cm, A4C. [SEP]", 5) == (
        "Left Ventricle: EF of 55%. Rate 85 bpm, 10 cm, A4C. [SEP]"
    )
    assert quantise_numbers("EF 57%", 0) == "EF 57%" and quantise_numbers("x 1.26", 0.5) == "x 1.5"
    texts = [f"Left Ventricle: Ejection fraction of {v}%. [SEP]" for v in (54, 57, 61, 35)]
    hf = train_wordpiece_tokenizer(texts, vocab_size=120)
    tok = ReportTokenizer(hf, max_len=24, number_step=5)
    ids = tok(texts)["input_ids"]
    assert torch.equal(ids[0], ids[1]) and not torch.equal(ids[0], ids[2]) and not torch.equal(ids[0], ids[3])
    again = ReportTokenizer.from_pretrained(tok.save_pretrained(tmp_path / "tok"))
    assert again.number_step == 5 and torch.equal(again(texts)["input_ids"], ids)
    plain = ReportTokenizer(hf, max_len=24)
    assert not torch.equal(plain(texts[:1])["input_ids"], plain(texts[1:2])["input_ids"])
    with pytest.raises(ValueError, match="number_step"):
        ReportTokenizer(hf, number_step=-1)
