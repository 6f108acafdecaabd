"""Recall@k and ranks, full and chunked, against a brute-force oracle on seeded features."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from echoprime.metrics import (
    median_rank,
    median_rank_chunked,
    ranks,
    ranks_chunked,
    recall_at_k,
    recall_at_k_chunked,
)


def _oracle_ranks(sim: torch.Tensor, pos: torch.Tensor) -> list[int]:
    """Sort each row; the rank is the 1-based position of the first positive (no ties in seeded floats)."""
    out = []
    for i in range(sim.shape[0]):
        order = sorted(range(sim.shape[1]), key=lambda j: -float(sim[i, j]))
        out.append(next(r for r, j in enumerate(order, start=1) if pos[i, j]))
    return out


def _seeded(q=37, c=53, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    qe = F.normalize(torch.randn(q, d, generator=g), dim=-1)
    ce = F.normalize(torch.randn(c, d, generator=g), dim=-1)
    idx = torch.randint(0, c, (q,), generator=g)
    multi = torch.rand(q, c, generator=g) < 0.05
    multi[torch.arange(q), idx] = True
    return qe, ce, idx, multi


@pytest.mark.parametrize("multi_positive", [False, True])
def test_full_and_chunked_match_oracle(multi_positive):
    qe, ce, idx, multi = _seeded()
    targets = multi if multi_positive else idx
    pos = multi if multi_positive else F.one_hot(idx, ce.shape[0]).bool()
    sim = qe @ ce.T
    oracle = torch.tensor(_oracle_ranks(sim, pos))
    assert torch.equal(ranks(sim, targets), oracle)
    for chunk in (1, 7, 53, 1000):
        assert torch.equal(ranks_chunked(qe, ce, targets, chunk=chunk), oracle)
    ks = (1, 5, 10, 100)
    expected = {k: float((oracle <= k).float().mean()) for k in ks}
    assert recall_at_k(sim, targets, ks) == pytest.approx(expected)
    assert recall_at_k_chunked(qe, ce, targets, ks, chunk=7) == pytest.approx(expected)
    assert recall_at_k(sim, targets, ks)[100] == 1.0
    assert median_rank(sim, targets) == float(oracle.median())
    assert median_rank_chunked(qe, ce, targets, chunk=7) == float(oracle.median())


def test_multi_positive_hit_if_any_positive_in_top_k():
    sim = torch.tensor([[0.9, 0.8, 0.1, 0.5]])
    assert (
        ranks(sim, torch.tensor([[False, False, True, True]])).item() == 3
    )  # best positive 0.5 is beaten by 0.9, 0.8
    assert recall_at_k(sim, torch.tensor([[False, True, True, False]]), ks=(1, 2)) == {1: 0.0, 2: 1.0}


def test_ties_count_against_the_query():
    sim = torch.zeros(3, 5)  # a collapsed model
    assert torch.equal(ranks(sim, torch.tensor([0, 2, 4])), torch.tensor([5, 5, 5]))
    assert recall_at_k(sim, torch.tensor([0, 2, 4]), ks=(1,)) == {1: 0.0}


def test_bad_targets_are_rejected():
    sim = torch.randn(2, 3)
    with pytest.raises(ValueError, match=r"queries \[1\] have no positive"):
        ranks(sim, torch.tensor([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match=r"target indices must lie in \[0, 3\)"):
        ranks(sim, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="must share D"):
        ranks_chunked(torch.randn(2, 4), torch.randn(3, 5), torch.tensor([0, 1]))
