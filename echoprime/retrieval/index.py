"""Inner-product search over a candidate bank: exact (matrix) or approximate (faiss IVF/PQ).

Every caller asks one question: the ``k`` best candidates of each of ``Q`` queries, by dot
product. :func:`search` answers it in ONE batched call for all queries (all sections of all
studies), whatever the index:

* :class:`ExactIndex` (the default up to ``ivf_threshold`` candidates) is a plain
  ``queries @ embeddings.T`` in row blocks with ``np.argpartition`` per row. On a 2-core CPU it
  beat ``faiss.IndexFlatIP`` 3.5-6x for 15 queries against 230 676 x 512 (0.11 s row-major,
  0.06 s column-major, vs 0.39 s: for fewer than 20 queries faiss scans the bank once per
  query, where one BLAS call scans it once for all), and it searches the bank's memory-mapped
  ``.npy`` in place, so nothing is copied at start-up. It needs no faiss import and no index file.
* faiss indexes: ``IndexFlatIP`` on request or on a GPU, and ``IndexIVFPQ`` above the
  threshold. PQ scores are approximate, so :func:`search` can re-rank an over-fetched
  candidate list with exact dot products (``exact=embeddings``).

faiss is imported lazily, only when a faiss index is built or read.
"""

from __future__ import annotations

import math
import sys
from os import PathLike
from pathlib import Path
from typing import Any, Literal

import numpy as np

IndexKind = Literal["auto", "flat", "ivfpq"]

# Scores of one row block are Q x block float32; keep that block near this many bytes so a
# batch of many studies against a million candidates never materialises Q x N at once.
_BLOCK_BYTES = 256 * 2**20
_QUERY_PAD = 16  # pad query rows to a multiple of this (see ExactIndex)


class SearchIndexError(ValueError):
    """An index cannot be built, read or searched with the given arguments."""


class ExactIndex:
    """Exact inner-product search over an ``N x D`` float32 matrix (kept as given: a memmap stays one).

    Either memory order works; column-major (Fortran order, what :meth:`CandidateBank.save`
    writes for an exact bank) is faster: ``queries @ embeddings.T`` then reads a contiguous
    ``D x N`` operand, and with the query rows padded to a multiple of 16 (the BLAS kernel's
    width) one study's 15 sections took 0.060 s instead of 0.110 s against 230 676 x 512 on
    2 cores: close to one pass over the bank at memory bandwidth.

    Args:
        embeddings: ``N x D`` float32 candidate embeddings.

    Raises:
        SearchIndexError: the matrix is not 2-D float32 or is empty.
    """

    is_exact = True

    def __init__(self, embeddings: np.ndarray) -> None:
        if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.dtype != np.float32:
            raise SearchIndexError(
                "ExactIndex needs an N x D float32 numpy array, got "
                f"{type(embeddings).__name__} {getattr(embeddings, 'shape', None)} {getattr(embeddings, 'dtype', None)}"
            )
        if embeddings.shape[0] == 0:
            raise SearchIndexError("ExactIndex needs at least one candidate, got 0 rows")
        self.embeddings = embeddings
        self._t = embeddings.T  # D x N view (C-contiguous when the bank is column-major)

    @property
    def ntotal(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def d(self) -> int:
        return int(self.embeddings.shape[1])

    def scores(self, queries: np.ndarray, start: int = 0, stop: int | None = None) -> np.ndarray:
        """``Q x (stop - start)`` float32 dot products of the queries with candidates ``start:stop``."""
        q = queries.shape[0]
        padded = -(-q // _QUERY_PAD) * _QUERY_PAD
        if q > 1 and padded != q:  # (one query is a matrix-vector product: nothing to pad)
            # Q x D -> padded x D with zero rows: a full-width BLAS kernel beats the remainder path.
            queries = np.concatenate([queries, np.zeros((padded - q, queries.shape[1]), dtype=np.float32)])
        return (queries @ self._t[:, start:stop])[:q]  # one BLAS pass over the block

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` candidates per query, best first (ties: lower row first).

        Args:
            queries: ``Q x D`` float32.
            k: how many neighbours, ``1 <= k <= N``.

        Returns:
            ``(scores, ids)``, both ``Q x k`` (float32, int64), sorted by decreasing score.
        """
        n = self.ntotal
        q = queries.shape[0]
        block = max(k, min(n, _BLOCK_BYTES // (4 * max(q, 1))))
        best_s: list[np.ndarray] = []
        best_i: list[np.ndarray] = []
        for start in range(0, n, block):
            stop = min(n, start + block)
            s, i = _topk_rows(self.scores(queries, start, stop), min(k, stop - start))
            best_s.append(s)
            best_i.append(i + start)
        if len(best_s) == 1:
            return best_s[0], best_i[0]
        # Merge the per-block winners: Q x (k * blocks) -> Q x k.
        s_all = np.concatenate(best_s, axis=1)
        i_all = np.concatenate(best_i, axis=1)
        s, pos = _topk_rows(s_all, k)
        return s, np.take_along_axis(i_all, pos, axis=1)


def _kth_largest(scores: np.ndarray, k: int) -> np.ndarray | None:
    """The ``k``-th largest value of each row (``Q``) by torch's top-k, multi-threaded and about 6x
    numpy's ``argpartition`` over 15 x 1.23 M scores (0.03 s against 0.16 s on 2 cores); ``None``
    when torch is not loaded in this process (a bank tool need not pay its ~1.5 s import)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    t = torch.from_numpy(np.ascontiguousarray(scores))
    return torch.topk(t, k, dim=1, sorted=False).values.min(dim=1).values.numpy()


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Largest ``k`` of each row of a ``Q x M`` matrix, sorted descending: ``(Q x k, Q x k)``.

    The set is every entry above the row's ``k``-th largest value plus, among entries equal to
    it, the lowest columns: found from the ``k``-th value (:func:`_kth_largest`) with one
    comparison pass, or by ``argpartition`` where torch is not loaded; the same set either way.
    Rows the comparison cannot settle (NaN scores) take the ``argpartition`` path.
    """
    m = scores.shape[1]
    if k < m:
        part = _select_above_kth(scores, k)
    else:
        part = np.broadcast_to(np.arange(m), scores.shape).copy()
    return _sorted_topk(scores, part)


def _select_above_kth(scores: np.ndarray, k: int) -> np.ndarray:
    """``Q x k`` columns: above each row's k-th largest value, then the lowest tied ones."""
    q = scores.shape[0]
    kth = _kth_largest(scores, k)
    if kth is None:
        return _argpartition_topk(scores, k)
    rows, cols = np.nonzero(scores >= kth[:, None])  # row-major: each row's columns ascending
    counts = np.bincount(rows, minlength=q)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    part = np.empty((q, k), np.int64)
    for r in range(q):
        if counts[r] == k:  # no tie at the k-th value beyond those kept: the usual case
            part[r] = cols[starts[r] : starts[r] + k]
        elif counts[r] > k:  # ties at the k-th value: all above it, then the lowest tied columns
            mine = cols[starts[r] : starts[r] + counts[r]]
            above = mine[scores[r, mine] > kth[r]]
            tied = mine[scores[r, mine] == kth[r]][: k - len(above)]
            part[r] = np.sort(np.concatenate([above, tied]))
        else:  # NaN among the scores: comparisons cannot find k entries
            part[r] = _argpartition_topk(scores[r : r + 1], k)[0]
    return part


def _argpartition_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """``Q x k`` top columns by ``argpartition``, ties at the k-th value made the lowest columns."""
    m = scores.shape[1]
    part = np.argpartition(scores, m - k, axis=1)[:, m - k :]  # Q x k, unordered
    # argpartition picks arbitrary rows among ties at the k-th score; make it the lowest rows.
    kth = np.take_along_axis(scores, part, axis=1).min(axis=1)  # Q
    n_tied = (scores == kth[:, None]).sum(axis=1)
    n_tied_kept = (np.take_along_axis(scores, part, axis=1) == kth[:, None]).sum(axis=1)
    for r in np.flatnonzero(n_tied > n_tied_kept):
        above = np.flatnonzero(scores[r] > kth[r])
        tied = np.flatnonzero(scores[r] == kth[r])[: k - len(above)]
        part[r] = np.concatenate([above, tied])
    return part


def _sorted_topk(scores: np.ndarray, part: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores and columns of ``part`` sorted by decreasing score, ties by increasing column."""
    part_scores = np.take_along_axis(scores, part, axis=1)
    # Sort descending; ties keep the lower candidate id first (stable sort on ids pre-ordered).
    order_ids = np.argsort(part, axis=1, kind="stable")
    part = np.take_along_axis(part, order_ids, axis=1)
    part_scores = np.take_along_axis(part_scores, order_ids, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part_scores, order, axis=1), np.take_along_axis(part, order, axis=1).astype(
        np.int64
    )


def _faiss() -> Any:
    import faiss  # lazy: ~0.3 s import, only needed for faiss indexes

    return faiss


def gpu_count() -> int:
    """Number of GPUs faiss can use (0 with faiss-cpu)."""
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def build_index(
    embeddings: np.ndarray,
    kind: IndexKind = "auto",
    *,
    ivf_threshold: int = 500_000,
    use_gpu: bool | Literal["auto"] = "auto",
    flat_backend: Literal["auto", "numpy", "faiss"] = "auto",
    nlist: int | None = None,
    pq_m: int | None = None,
    pq_bits: int = 8,
    nprobe: int = 32,
    train_size: int = 100_000,
    rng: np.random.Generator | None = None,
) -> Any:
    """Build a search index over ``N x D`` float32 embeddings (inner product).

    Args:
        embeddings: candidate embeddings, ``N x D`` float32.
        kind: ``"flat"`` (exact), ``"ivfpq"`` (approximate), or ``"auto"``: flat below
            ``ivf_threshold`` candidates, IVF/PQ from there on.
        ivf_threshold: bank size from which ``"auto"`` chooses IVF/PQ.
        use_gpu: put a faiss index on the GPU; ``"auto"`` does so when faiss sees one.
        flat_backend: exact search by :class:`ExactIndex` (``"numpy"``) or ``faiss.IndexFlatIP``;
            ``"auto"`` picks numpy on CPU (measured faster, see the module docstring) and faiss
            on a GPU.
        nlist: IVF lists; default ``4 * sqrt(N)``, capped so each list has >= 39 training points.
        pq_m: PQ sub-quantizers; default the largest divisor of ``D`` that is ``<= D / 8``
            (64 bytes per vector at D = 512).
        pq_bits: bits per PQ code (8 = 256 centroids per sub-space).
        nprobe: IVF lists visited per query (recall vs speed, see docs/retrieval.md).
        train_size: at most this many rows (sampled with ``rng``) train the IVF/PQ quantizers.
        rng: sampling generator for the training rows; required for ``ivfpq``.

    Returns:
        An :class:`ExactIndex` or a faiss index (on the GPU when requested).

    Raises:
        SearchIndexError: bad shape, dtype or parameters.
    """
    if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2:
        raise SearchIndexError(
            f"embeddings must be an N x D array, got shape {getattr(embeddings, 'shape', None)}"
        )
    if embeddings.dtype != np.float32:
        raise SearchIndexError(f"embeddings must be float32, got {embeddings.dtype}")
    n, d = embeddings.shape
    if n == 0:
        raise SearchIndexError("cannot build an index over 0 candidates")
    if kind not in ("auto", "flat", "ivfpq"):
        raise SearchIndexError(f"unknown index kind {kind!r}: expected 'auto', 'flat' or 'ivfpq'")
    if kind == "auto":
        kind = "ivfpq" if n >= ivf_threshold else "flat"
    gpu = _want_gpu(use_gpu)
    if kind == "flat":
        backend = flat_backend if flat_backend != "auto" else ("faiss" if gpu else "numpy")
        if backend == "numpy":
            return ExactIndex(embeddings)
        if backend != "faiss":
            raise SearchIndexError(
                f"unknown flat_backend {flat_backend!r}: expected 'auto', 'numpy' or 'faiss'"
            )
        faiss = _faiss()
        index = faiss.IndexFlatIP(d)
        _add_in_chunks(index, embeddings)
        return _to_gpu(index) if gpu else index
    return _build_ivfpq(embeddings, nlist=nlist, pq_m=pq_m, pq_bits=pq_bits, nprobe=nprobe,
                        train_size=train_size, rng=rng, gpu=gpu)  # fmt: skip


def _build_ivfpq(
    embeddings: np.ndarray,
    *,
    nlist: int | None,
    pq_m: int | None,
    pq_bits: int,
    nprobe: int,
    train_size: int,
    rng: np.random.Generator | None,
    gpu: bool,
) -> Any:
    if rng is None:
        raise SearchIndexError(
            "an ivfpq index samples its training rows: pass rng=np.random.default_rng(seed)"
        )
    n, d = embeddings.shape
    n_train = min(n, train_size)
    if nlist is None:
        nlist = max(1, min(int(4 * math.sqrt(n)), n_train // 39))
    if pq_m is None:
        pq_m = max(m for m in range(1, max(1, d // 8) + 1) if d % m == 0)
    if d % pq_m:
        raise SearchIndexError(f"pq_m={pq_m} must divide the embedding dimension {d}")
    if not 1 <= nlist <= n_train:
        raise SearchIndexError(f"nlist={nlist} must be in [1, {n_train}] (the training rows)")
    if n_train < 2**pq_bits:
        raise SearchIndexError(
            f"ivfpq with pq_bits={pq_bits} needs >= {2**pq_bits} training rows, the bank has {n}; use kind='flat'"
        )
    faiss = _faiss()
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, pq_bits, faiss.METRIC_INNER_PRODUCT)
    rows = np.sort(rng.choice(n, size=n_train, replace=False))
    index.train(np.ascontiguousarray(embeddings[rows]))
    _add_in_chunks(index, embeddings)
    index.nprobe = nprobe
    return _to_gpu(index) if gpu else index


def _add_in_chunks(index: Any, embeddings: np.ndarray, chunk: int = 65_536) -> None:
    # Chunks keep a memmapped bank from being copied into RAM all at once.
    for start in range(0, embeddings.shape[0], chunk):
        index.add(np.ascontiguousarray(embeddings[start : start + chunk]))


def _want_gpu(use_gpu: bool | Literal["auto"]) -> bool:
    if use_gpu == "auto":
        return gpu_count() > 0
    if use_gpu and gpu_count() == 0:
        raise SearchIndexError("use_gpu=True but faiss sees no GPU (faiss-cpu build or no device)")
    return bool(use_gpu)


def _to_gpu(index: Any) -> Any:
    faiss = _faiss()
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_resources = resources  # keep the resources alive with the index
    return gpu_index


def search(
    index_or_matrix: Any,
    queries: np.ndarray,
    k: int,
    *,
    exact: np.ndarray | None = None,
    rerank: int = 4,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` inner-product neighbours of every query, in one batched call.

    Args:
        index_or_matrix: an :class:`ExactIndex`, a faiss index, or an ``N x D`` float32 matrix
            (searched exactly).
        queries: ``Q x D`` float32 (all sections of all studies stacked).
        k: neighbours per query, ``1 <= k <= N``.
        exact: the bank's ``N x D`` embeddings; with an approximate faiss index, the index
            returns ``rerank * k`` candidates whose scores are then recomputed exactly and
            re-sorted (PQ scores are only estimates).
        rerank: over-fetch factor for the exact re-ranking.

    Returns:
        ``(scores, ids)``, each ``Q x k``, best first. A faiss IVF index may return fewer than
        ``k`` real hits; missing ones have id ``-1`` and score ``-inf``.

    Raises:
        ValueError: ``k`` out of range, or query dimension different from the index's.
    """
    index = ExactIndex(index_or_matrix) if isinstance(index_or_matrix, np.ndarray) else index_or_matrix
    n, d = int(index.ntotal), int(index.d)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if queries.ndim != 2 or queries.shape[1] != d:
        raise ValueError(f"queries must be Q x {d} (the index's dimension), got shape {queries.shape}")
    check_k(k, n)
    if isinstance(index, ExactIndex):
        return index.search(queries, k)
    approximate = not _is_flat_faiss(index)
    fetch = min(n, k * rerank) if (approximate and exact is not None) else k
    scores, ids = index.search(queries, fetch)
    ids = ids.astype(np.int64)
    scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
    if fetch == k:
        return scores, ids
    # Exact re-ranking: Q x fetch x D gathered rows dotted with their query.
    safe = np.where(ids < 0, 0, ids)
    exact_scores = np.einsum("qfd,qd->qf", exact[safe.ravel()].reshape(*safe.shape, d), queries)
    exact_scores = np.where(ids < 0, -np.inf, exact_scores).astype(np.float32)
    order = np.argsort(-exact_scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(exact_scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def check_k(k: int, n: int) -> None:
    """Raise ValueError unless ``1 <= k <= n`` (``n`` = candidates in the bank)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise ValueError(f"k must be >= 1, got k={k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of candidates in the bank ({n})")


def _is_flat_faiss(index: Any) -> bool:
    faiss = _faiss()
    if hasattr(faiss, "GpuIndexFlat") and isinstance(index, faiss.GpuIndexFlat):
        return True
    return isinstance(index, faiss.IndexFlat)


def write_index(index: Any, path: str | PathLike[str]) -> Path:
    """Write a faiss index with ``faiss.write_index`` (a GPU index is copied to the CPU first).

    An :class:`ExactIndex` has no file of its own: its embeddings ``.npy`` is the index.

    Raises:
        SearchIndexError: the index is an :class:`ExactIndex`.
    """
    if isinstance(index, ExactIndex):
        raise SearchIndexError(
            "an ExactIndex is its embeddings matrix; save that .npy instead of an index file"
        )
    faiss = _faiss()
    if hasattr(faiss, "index_gpu_to_cpu") and type(index).__name__.startswith("Gpu"):
        index = faiss.index_gpu_to_cpu(index)
    path = Path(path)
    faiss.write_index(index, str(path))
    return path


def read_index(path: str | PathLike[str], *, use_gpu: bool | Literal["auto"] = "auto") -> Any:
    """Read a faiss index written by :func:`write_index` (onto the GPU where requested).

    Raises:
        SearchIndexError: the file is missing or is not a faiss index.
    """
    path = Path(path)
    if not path.is_file():
        raise SearchIndexError(f"faiss index file {str(path)!r} does not exist")
    faiss = _faiss()
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise SearchIndexError(f"{str(path)!r} is not a readable faiss index: {err}") from err
    return _to_gpu(index) if _want_gpu(use_gpu) else index
