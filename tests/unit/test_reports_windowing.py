"""Section-aware windowing of tokenised reports, checked with a fake word-level tokenisation."""

from __future__ import annotations

import numpy as np
import pytest

from echoprime.reports import window_token_ids
from echoprime.synth.report import compose_report
from echoprime.synth.state import sample_state

CLS, SEP = 1, 2


def _tokenise(text: str, vocab: dict[str, int]) -> list[int]:
    """[CLS] + one id per word ("[SEP]" -> SEP) + the tokenizer's own final [SEP]."""
    ids = [CLS]
    for word in text.split():
        ids.append(SEP if word == "[SEP]" else vocab.setdefault(word, len(vocab) + 10))
    return ids + [SEP]


def _sections(ids: list[int]) -> list[tuple[int, ...]]:
    """The sections of an id list (each up to and including its [SEP]); a bare [SEP] (the
    tokenizer's own) counts as part of the section before it."""
    out: list[tuple[int, ...]] = []
    cur: list[int] = []
    for t in ids[1:] if ids and ids[0] == CLS else ids:
        cur.append(t)
        if t == SEP:
            if len(cur) == 1 and out:
                out[-1] += (SEP,)
            else:
                out.append(tuple(cur))
            cur = []
    return out


@pytest.fixture(scope="module")
def reports() -> list[list[int]]:
    vocab: dict[str, int] = {}
    out = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        out.append(_tokenise(compose_report(sample_state(rng, "p", "s"), rng).to_text(), vocab))
    return out


@pytest.mark.parametrize("max_len", [40, 64, 100, 512])
def test_windows_hold_whole_consecutive_sections(reports, max_len):
    rng = np.random.default_rng(0)
    for ids in reports:
        full = _sections(ids)
        for r in (None, rng, rng, rng):
            out = window_token_ids(ids, SEP, max_len, r, cls_id=CLS)
            assert all(type(t) is int for t in out)
            assert len(out) <= max_len and out[0] == CLS and out[-1] == SEP
            if len(ids) <= max_len:
                assert out == ids
                continue
            got = _sections(out)
            assert got, "at least one section fits these lengths"
            # a contiguous run of the original sections, never a cut one
            start = full.index(got[0])
            assert full[start : start + len(got)] == got
            if r is None:
                assert start == 0
            # maximal: neither neighbouring section would have fitted as well
            if start + len(got) < len(full):
                assert len(out) + len(full[start + len(got)]) > max_len
            if start > 0:
                assert len(out) + len(full[start - 1]) > max_len


def test_random_windows_vary_and_first_window_is_fixed(reports):
    ids = max(reports, key=len)
    rng = np.random.default_rng(1)
    starts = {tuple(window_token_ids(ids, SEP, 60, rng, cls_id=CLS))[:8] for _ in range(50)}
    assert len(starts) > 3
    first = window_token_ids(ids, SEP, 60, None, cls_id=CLS)
    assert first == window_token_ids(ids, SEP, 60, None, cls_id=CLS)
    assert first[: len(_sections(ids)[0]) + 1] == [CLS, *_sections(ids)[0]]
    # same generator state, same window
    assert window_token_ids(ids, SEP, 60, np.random.default_rng(5), cls_id=CLS) == window_token_ids(
        ids, SEP, 60, np.random.default_rng(5), cls_id=CLS
    )


def test_overlong_section_is_truncated_as_last_resort():
    ids = [CLS, *range(10, 30), SEP, 40, 41, SEP]  # a 21-token section, then a 3-token one
    assert window_token_ids(ids, SEP, 8, None, cls_id=CLS) == [CLS, 10, 11, 12, 13, 14, 15, SEP]
    # a random start on the short section keeps it whole
    outs = {tuple(window_token_ids(ids, SEP, 8, np.random.default_rng(s), cls_id=CLS)) for s in range(20)}
    assert outs == {(CLS, 10, 11, 12, 13, 14, 15, SEP), (CLS, 40, 41, SEP)}


def test_no_cls_unterminated_tail_and_bad_max_len():
    ids = [5, 6, SEP, 7, 8, SEP, 9, 9, 9]  # no [CLS], last section not closed
    assert window_token_ids(ids, SEP, 20) == ids  # fits: unchanged
    assert window_token_ids(ids, SEP, 6) == [5, 6, SEP, 7, 8, SEP]
    assert window_token_ids(ids, SEP, 4, np.random.default_rng(0)) in (
        [5, 6, SEP],
        [7, 8, SEP],
        [9, 9, 9, SEP],
    )
    assert window_token_ids(np.array(ids), SEP, 4, None) == [5, 6, SEP]
    with pytest.raises(ValueError, match="max_len=2 is too small"):
        window_token_ids([CLS, 5, 6, SEP], SEP, 2, cls_id=CLS)
