"""Search over a bank: exact paths against brute force, IVF/PQ recall, index files, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from echoprime.retrieval import index as index_mod
from echoprime.retrieval.index import (
    ExactIndex,
    SearchIndexError,
    build_index,
    read_index,
    search,
    write_index,
)
from echoprime.retrieval.synthetic import random_unit_embeddings


def _brute_topk(emb: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Oracle: float64 scores, one query at a time, full sort."""
    ids, scores = [], []
    for q in queries.astype(np.float64):
        s = emb.astype(np.float64) @ q
        order = sorted(range(len(s)), key=lambda i: -s[i])[:k]
        ids.append(order)
        scores.append(s[order])
    return np.array(scores), np.array(ids)


@pytest.fixture(scope="module")
def bank_and_queries() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return random_unit_embeddings(3000, 32, rng), random_unit_embeddings(45, 32, rng)


@pytest.mark.parametrize("k", [1, 7, 50])
def test_exact_search_equals_brute_force(bank_and_queries, k):
    emb, queries = bank_and_queries
    want_s, want_i = _brute_topk(emb, queries, k)
    for target in (emb, ExactIndex(emb), build_index(emb, "flat")):
        s, i = search(target, queries, k)
        assert s.shape == i.shape == (45, k)
        np.testing.assert_array_equal(i, want_i)
        np.testing.assert_allclose(s, want_s, atol=1e-5)
        assert (np.diff(s, axis=1) <= 0).all()  # best first


def test_blocked_search_merges_blocks_exactly(bank_and_queries, monkeypatch):
    emb, queries = bank_and_queries
    want_s, want_i = _brute_topk(emb, queries, 20)
    # Force blocks of ~100 rows so the per-block top-k merge is exercised.
    monkeypatch.setattr(index_mod, "_BLOCK_BYTES", 4 * 45 * 100)
    s, i = ExactIndex(emb).search(queries, 20)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_allclose(s, want_s, atol=1e-5)


def test_faiss_flat_equals_exact(bank_and_queries):
    emb, queries = bank_and_queries
    flat = build_index(emb, "flat", flat_backend="faiss", use_gpu=False)
    s, i = search(flat, queries, 10)
    s2, i2 = search(emb, queries, 10)
    np.testing.assert_array_equal(i, i2)
    np.testing.assert_allclose(s, s2, atol=1e-5)


def test_ties_go_to_the_lower_row():
    emb = np.zeros((10, 4), dtype=np.float32)
    emb[:, 0] = [0.5, 1, 1, 0.2, 1, 0, 0, 0, 0, 1]
    _, ids = search(emb, np.array([[1, 0, 0, 0]], dtype=np.float32), 3)
    assert ids.tolist() == [[1, 2, 4]]


def test_ivfpq_has_high_recall_on_clustered_data(tmp_path):
    rng = np.random.default_rng(1)
    d, n_clusters = 32, 40
    centres = random_unit_embeddings(n_clusters, d, rng)
    assign = rng.integers(0, n_clusters, size=8000)
    emb = centres[assign] + 0.06 * rng.standard_normal((8000, d)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    queries = emb[rng.choice(8000, 30, replace=False)] + 0.05 * rng.standard_normal((30, d)).astype(
        np.float32
    )
    index = build_index(
        emb, "auto", ivf_threshold=5000, nlist=40, nprobe=8, pq_m=32, pq_bits=4, use_gpu=False, rng=rng
    )
    assert type(index).__name__ == "IndexIVFPQ" and index.nprobe == 8 and index.ntotal == 8000
    _, exact = search(emb, queries, 10)
    _, approx = search(index, queries, 10, exact=emb)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert recall >= 0.9, recall
    # Re-ranked scores are the exact dot products of the returned rows.
    s, i = search(index, queries, 5, exact=emb)
    np.testing.assert_allclose(s, np.einsum("qkd,qd->qk", emb[i], queries), atol=1e-5)
    # File round trip gives the same answers.
    path = write_index(index, tmp_path / "bank.faiss")
    again = read_index(path, use_gpu=False)
    np.testing.assert_array_equal(search(again, queries, 5, exact=emb)[1], i)


@pytest.mark.parametrize("k", [0, -3, 3001])
def test_bad_k_is_rejected(bank_and_queries, k):
    emb, queries = bank_and_queries
    with pytest.raises(ValueError, match="k"):
        search(emb, queries, k)


def test_wrong_query_dimension_names_both(bank_and_queries):
    emb, _ = bank_and_queries
    with pytest.raises(ValueError, match=r"Q x 32.*\(4, 16\)"):
        search(emb, np.zeros((4, 16), dtype=np.float32), 3)


def test_bad_build_arguments():
    emb = np.zeros((10, 8), dtype=np.float32)
    with pytest.raises(SearchIndexError, match="float32"):
        build_index(emb.astype(np.float64))
    with pytest.raises(SearchIndexError, match="unknown index kind"):
        build_index(emb, "hnsw")  # type: ignore[arg-type]
    with pytest.raises(SearchIndexError, match="rng"):
        build_index(emb, "ivfpq", use_gpu=False)
    with pytest.raises(SearchIndexError, match="training rows"):
        build_index(emb, "ivfpq", use_gpu=False, rng=np.random.default_rng(0))
    with pytest.raises(SearchIndexError, match="no GPU"):
        build_index(emb, "flat", use_gpu=True)
    with pytest.raises(SearchIndexError, match="embeddings matrix"):
        write_index(ExactIndex(emb), "x.faiss")
    with pytest.raises(SearchIndexError, match="does not exist"):
        read_index("/nonexistent/bank.faiss")


@pytest.mark.parametrize("torch_loaded", [True, False], ids=["torch-topk", "argpartition"])
@pytest.mark.parametrize("seed", range(6))
def test_topk_rows_is_a_full_sort_ties_lowest_column_first(seed, torch_loaded, monkeypatch):
    """The k-th-value selection (torch loaded) and argpartition (not) both equal sorting each row
    by (score desc, column asc), with heavy ties (scores from 5 values) and without; with NaN
    scores both keep argpartition's order (NaN above every number)."""
    import sys

    from echoprime.retrieval.index import _argpartition_topk, _sorted_topk, _topk_rows

    if not torch_loaded:
        monkeypatch.delitem(sys.modules, "torch", raising=False)
    else:
        import torch  # noqa: F401

    rng = np.random.default_rng(seed)
    q, m, k = 7, 500, 20
    scores = (rng.integers(0, 5, (q, m)) if seed % 2 else rng.standard_normal((q, m))).astype(np.float32)
    s, i = _topk_rows(scores, k)
    for r in range(q):
        order = np.lexsort((np.arange(m), -scores[r]))[:k]
        np.testing.assert_array_equal(i[r], order)
        np.testing.assert_array_equal(s[r], scores[r, order])
    scores[2, [3, 40]] = np.nan
    s, i = _topk_rows(scores, k)
    ref_s, ref_i = _sorted_topk(scores, _argpartition_topk(scores, k))
    np.testing.assert_array_equal(i, ref_i)
    np.testing.assert_array_equal(s, ref_s)
    assert {3, 40} <= set(i[2].tolist())  # NaN counts as the largest, as numpy orders it
