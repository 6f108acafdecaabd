"""Random but realistically shaped candidate banks, for tests and benchmarks (vectorised).

Each candidate report has ``min_sections..max_sections`` of the vocabulary's sections (in
vocabulary order, each section's triples contiguous, as a bank's are), ``1..max_phrases``
phrases per section, slot values of the right kind (integers for ``<numerical>``, words for
``<string>``), random unit embeddings, and labels with a given missing fraction. No meaning
links embeddings to reports: these banks measure speed and check algorithms, not models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from echoprime import taxonomy
from echoprime.reports import NUMERICAL_SLOT, STRING_SLOT, Vocabulary
from echoprime.retrieval.table import KIND_INT, KIND_NAN, KIND_TEXT, ReportTable

_WORDS = ("basal inferior", "mid anterior", "apical", "mitral valve repair", "CABG", "AVR")


def random_unit_embeddings(n: int, dim: int, rng: np.random.Generator, *, chunk: int = 65_536,
                           out: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """``n x dim`` float32 rows uniform on the unit sphere (written into ``out`` when given, in chunks)."""
    out = np.empty((n, dim), dtype=np.float32) if out is None else out
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start : start + len(block)] = block
    return out


def random_report_table(
    n: int,
    vocab: Vocabulary,
    rng: np.random.Generator,
    *,
    min_sections: int = 8,
    max_sections: int = 15,
    max_phrases: int = 4,
    absent_sections: Sequence[str] = (),
) -> ReportTable:
    """``n`` random phrase-id reports as a :class:`ReportTable`.

    Args:
        n: candidates.
        vocab: the vocabulary to draw from.
        rng: randomness.
        min_sections, max_sections: sections per report (uniform, inclusive).
        max_phrases: phrases per present section, uniform in ``1..max_phrases``.
        absent_sections: sections no report ever has (to test "not assessed").
    """
    v = len(vocab.sections)
    allowed = np.array([s not in absent_sections for s in vocab.sections])
    max_sections = min(max_sections, int(allowed.sum()))
    min_sections = min(min_sections, max_sections)
    n_sec = rng.integers(min_sections, max_sections + 1, size=n)
    # A random rank per (candidate, section); disallowed sections rank last; keep the n_sec best.
    keys = rng.random((n, v)) + np.where(allowed, 0.0, 2.0)[None, :]
    ranks = np.argsort(np.argsort(keys, axis=1), axis=1)  # n x v: rank of each section
    present = ranks < n_sec[:, None]
    counts = np.where(present, rng.integers(1, max_phrases + 1, size=(n, v)), 0)  # n x v phrases
    per_cand = counts.sum(axis=1)
    offsets = np.concatenate([[0], np.cumsum(per_cand)]).astype(np.int64)
    # Row-major over (candidate, section): sections come out in vocabulary order per report.
    section = np.repeat(np.tile(np.arange(v, dtype=np.int16), n), counts.ravel())
    n_phr = np.array([len(vocab.phrases(s)) for s in vocab.sections])
    phrase = (rng.random(len(section)) * n_phr[section]).astype(np.int32)
    # Slot kind of every vocabulary phrase: 0 none, 1 numerical, 2 string.
    slot = [np.array([2 if STRING_SLOT in p else 1 if NUMERICAL_SLOT in p else 0 for p in vocab.phrases(s)])
            for s in vocab.sections]  # fmt: skip
    width = max(len(a) for a in slot)
    slot_table = np.zeros((v, width), dtype=np.int8)
    for i, a in enumerate(slot):
        slot_table[i, : len(a)] = a
    t_slot = slot_table[section, phrase]
    kind = np.full(len(section), KIND_NAN, dtype=np.int8)
    kind[t_slot == 1] = KIND_INT
    kind[t_slot == 2] = KIND_TEXT
    num = np.where(t_slot == 1, rng.integers(15, 90, size=len(section)), np.nan).astype(np.float64)
    word = rng.integers(0, len(_WORDS), size=len(section))
    text = pa.DictionaryArray.from_arrays(pa.array(word, mask=t_slot != 2), pa.array(_WORDS)).cast(
        pa.string()
    )
    return ReportTable(offsets=offsets, section=section, phrase=phrase, kind=kind, num=num, text=text)


def random_labels(
    n: int,
    rng: np.random.Generator,
    *,
    phenotypes: Sequence[str] = taxonomy.PHENOTYPE_NAMES,
    missing: float = 0.3,
) -> np.ndarray:
    """``n x P`` float32 labels: binaries 0/1 (~25 % positive), EF in [10, 80] %, PA pressure
    in [15, 90] mmHg, each missing (NaN) with probability ``missing``."""
    out = np.empty((n, len(phenotypes)), dtype=np.float32)
    for j, name in enumerate(phenotypes):
        pheno = taxonomy.PHENOTYPE_BY_NAME.get(name)
        if pheno is not None and pheno.kind == "regression":
            lo, hi = (10.0, 80.0) if name == "ejection_fraction" else (15.0, 90.0)
            out[:, j] = np.round(rng.uniform(lo, hi, size=n), 1)
        else:
            out[:, j] = rng.random(n) < 0.25
    out[rng.random(out.shape) < missing] = np.nan
    return out
