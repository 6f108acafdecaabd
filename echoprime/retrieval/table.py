"""Phrase-id reports of a candidate bank, column-wise in memory and lazily from Parquet.

A bank holds one report per candidate as ``(section_index, phrase_index, value)`` triples
(see :mod:`echoprime.reports.structured`). Python lists of tuples cost ~100 bytes a triple and
seconds to decode for a whole bank, so a bank keeps them as flat columns with per-candidate
offsets (:class:`ReportTable`) and on disk as one Parquet column ``triples`` of type
``list<struct<section: int16, phrase: int32, kind: int8, num: float64, text: string>>``,
read a row group at a time only for the candidates that are shown (:class:`ParquetReports`).

A slot value must come back so that ``str(value)`` (what the release decoder prints) is
unchanged, and ``61`` prints differently from ``61.0``; ``kind`` records which it was:

=====  =====================  ==================================
kind   value                  stored in
=====  =====================  ==================================
0      ``None``               -
1      ``float("nan")``       - (the "no slot value" marker)
2      an integer             ``num`` (exact below 2**53)
3      a float                ``num`` (``str(float(v)) == str(v)``)
4      anything else          ``text`` = ``str(v)`` (strings, numpy float32, bools)
=====  =====================  ==================================
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from echoprime.reports import Vocabulary

KIND_NONE, KIND_NAN, KIND_INT, KIND_FLOAT, KIND_TEXT = 0, 1, 2, 3, 4

TRIPLE_TYPE = pa.struct(
    [
        ("section", pa.int16()),
        ("phrase", pa.int32()),
        ("kind", pa.int8()),
        ("num", pa.float64()),
        ("text", pa.string()),
    ]
)
ROW_GROUP_ROWS = 128  # candidates per Parquet row group: one lazy read decodes this many (~0.5 ms)


class BankFormatError(ValueError):
    """Candidate-bank content or files do not have the expected shape."""


def encode_value(value: Any) -> tuple[int, float, str | None]:
    """``(kind, num, text)`` for a slot value (see the module table).

    Raises:
        BankFormatError: an integer too large to store exactly.
    """
    if value is None:
        return KIND_NONE, math.nan, None
    if isinstance(value, (bool, np.bool_)) or isinstance(value, str):
        return KIND_TEXT, math.nan, str(value)
    if isinstance(value, numbers.Integral):
        if abs(int(value)) >= 2**53:
            raise BankFormatError(f"slot value {value!r} is too large to store exactly (|v| >= 2**53)")
        return KIND_INT, float(value), None
    if isinstance(value, numbers.Real):
        f = float(value)
        if math.isnan(f):
            return KIND_NAN, math.nan, None
        if str(f) == str(value):
            return KIND_FLOAT, f, None
    return KIND_TEXT, math.nan, str(value)  # e.g. numpy float32 prints shorter than its float64


def decode_value(kind: int, num: float, text: str | None) -> Any:
    """Inverse of :func:`encode_value` (as far as ``str(value)`` is concerned)."""
    if kind == KIND_NONE:
        return None
    if kind == KIND_NAN:
        return math.nan
    if kind == KIND_INT:
        return int(num)
    if kind == KIND_FLOAT:
        return float(num)
    return text


@dataclass(frozen=True)
class ReportTable:
    """All reports of a bank as flat columns.

    Attributes:
        offsets: ``N + 1`` int64; candidate ``i`` owns triples ``offsets[i]:offsets[i + 1]``.
        section: ``T`` int16 section indices (into the bank's vocabulary).
        phrase: ``T`` int32 phrase indices.
        kind: ``T`` int8 value kinds (module table).
        num: ``T`` float64 numeric values (NaN where unused).
        text: ``T`` pyarrow strings (null where unused).
    """

    offsets: np.ndarray
    section: np.ndarray
    phrase: np.ndarray
    kind: np.ndarray
    num: np.ndarray
    text: pa.Array

    def __post_init__(self) -> None:
        t = int(self.offsets[-1]) if len(self.offsets) else -1
        if len(self.offsets) == 0 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 0):
            raise BankFormatError("report offsets must start at 0 and never decrease")
        for name in ("section", "phrase", "kind", "num", "text"):
            if len(getattr(self, name)) != t:
                raise BankFormatError(
                    f"report column {name!r} has {len(getattr(self, name))} rows, offsets say {t}"
                )

    @classmethod
    def from_triples(cls, reports: Sequence[Sequence[Sequence[Any]]]) -> ReportTable:
        """Columns from one triple list per candidate (one pass in Python; done once per bank).

        Raises:
            BankFormatError: a triple is not ``(int, int, value)``, naming candidate and position.
        """
        offsets = np.zeros(len(reports) + 1, dtype=np.int64)
        section: list[int] = []
        phrase: list[int] = []
        kind: list[int] = []
        num: list[float] = []
        text: list[str | None] = []
        for i, report in enumerate(reports):
            for j, triple in enumerate(report):
                try:
                    s_idx, p_idx, value = triple
                    s_idx, p_idx = _index(s_idx), _index(p_idx)
                except (TypeError, ValueError):
                    raise BankFormatError(
                        f"candidate {i}, triple {j}: {triple!r} is not (section_index, phrase_index, value)"
                    ) from None
                k, f, t = encode_value(value)
                section.append(s_idx)
                phrase.append(p_idx)
                kind.append(k)
                num.append(f)
                text.append(t)
            offsets[i + 1] = len(section)
        return cls(
            offsets=offsets,
            section=np.asarray(section, dtype=np.int16),
            phrase=np.asarray(phrase, dtype=np.int32),
            kind=np.asarray(kind, dtype=np.int8),
            num=np.asarray(num, dtype=np.float64),
            text=pa.array(text, type=pa.string()),
        )

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def validate(self, vocab: Vocabulary) -> None:
        """Check every index against ``vocab`` (vectorised).

        Raises:
            BankFormatError: naming the first bad candidate, triple and index.
        """
        n_phrases = np.array([len(vocab.phrases(s)) for s in vocab.sections], dtype=np.int64)
        sec = self.section.astype(np.int64)
        bad = (sec < 0) | (sec >= len(n_phrases))
        bad |= ~bad & ((self.phrase < 0) | (self.phrase >= n_phrases[np.clip(sec, 0, len(n_phrases) - 1)]))
        if bad.any():
            t = int(np.flatnonzero(bad)[0])
            i = int(np.searchsorted(self.offsets, t, side="right") - 1)
            raise BankFormatError(
                f"candidate {i}, triple {t - int(self.offsets[i])}: (section {int(self.section[t])}, "
                f"phrase {int(self.phrase[t])}) is not in vocabulary {vocab.source} "
                f"({len(n_phrases)} sections)"
            )

    def presence(self, n_sections: int) -> np.ndarray:
        """``N x n_sections`` bool: does candidate ``i`` have at least one triple of section ``s``."""
        out = np.zeros((len(self), n_sections), dtype=bool)
        rows = np.repeat(np.arange(len(self)), np.diff(self.offsets))  # T: candidate of each triple
        out[rows, self.section.astype(np.int64)] = True
        return out

    def triples(self, i: int) -> list[tuple[int, int, Any]]:
        """Candidate ``i``'s triples with their values restored."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        texts = self.text.slice(a, b - a).to_pylist()
        return [
            (int(s), int(p), decode_value(int(k), float(f), t))
            for s, p, k, f, t in zip(
                self.section[a:b], self.phrase[a:b], self.kind[a:b], self.num[a:b], texts, strict=True
            )
        ]

    def to_arrow(self) -> pa.ListArray:
        """The reports as one ``list<struct>`` array (one list per candidate)."""
        struct = pa.StructArray.from_arrays(
            [
                pa.array(self.section, type=pa.int16()),
                pa.array(self.phrase, type=pa.int32()),
                pa.array(self.kind, type=pa.int8()),
                pa.array(self.num, type=pa.float64()),
                self.text,
            ],
            fields=list(TRIPLE_TYPE),
        )
        if self.offsets[-1] >= 2**31:
            raise BankFormatError(
                f"{int(self.offsets[-1])} triples exceed a Parquet list column's 2**31 limit"
            )
        return pa.ListArray.from_arrays(pa.array(self.offsets.astype(np.int32)), struct)


def _index(x: Any) -> int:
    if isinstance(x, (bool, np.bool_)):
        raise ValueError(x)
    if isinstance(x, numbers.Integral):
        return int(x)
    if isinstance(x, float) and x.is_integer():
        return int(x)  # banks that went through pandas hold integral floats
    raise ValueError(x)


def write_reports(path: str | PathLike[str], table: ReportTable, study_ids: np.ndarray) -> None:
    """Write the reports (and, for readers of the file alone, the study ids) as Parquet."""
    arrays = pa.table({"study_id": pa.array(np.asarray(study_ids).astype(str)), "triples": table.to_arrow()})
    pq.write_table(arrays, str(path), row_group_size=ROW_GROUP_ROWS, compression="snappy")


class ParquetReports:
    """Read candidates' triples from a bank's ``reports.parquet`` one row group at a time.

    Opening reads only the footer; a candidate's row group is read and kept in a small LRU
    cache the first time one of its candidates is shown.

    Args:
        path: the Parquet file.
        n: the number of candidates the bank expects.
        cache_groups: row groups kept decoded.

    Raises:
        BankFormatError: the file is unreadable, lacks the ``triples`` column or has a
            different number of rows.
    """

    def __init__(self, path: str | PathLike[str], n: int, cache_groups: int = 64) -> None:
        self.path = Path(path)
        try:
            self._file = pq.ParquetFile(str(self.path))
        except (OSError, pa.ArrowInvalid) as err:
            raise BankFormatError(f"cannot read bank reports {str(self.path)!r}: {err}") from err
        schema = self._file.schema_arrow
        if "triples" not in schema.names or schema.field("triples").type != pa.list_(TRIPLE_TYPE):
            raise BankFormatError(
                f"{str(self.path)!r}: expected a column 'triples' of type {pa.list_(TRIPLE_TYPE)}, "
                f"got schema {schema}"
            )
        meta = self._file.metadata
        if meta.num_rows != n:
            raise BankFormatError(
                f"{str(self.path)!r} holds {meta.num_rows} reports, the bank has {n} candidates"
            )
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self._cache: OrderedDict[int, pa.ListArray] = OrderedDict()
        self._cache_groups = cache_groups

    def __len__(self) -> int:
        return int(self._starts[-1])

    def triples(self, i: int) -> list[tuple[int, int, Any]]:
        """Candidate ``i``'s triples with their values restored."""
        g = int(np.searchsorted(self._starts, i, side="right") - 1)
        group = self._group(g)
        rows = group[i - int(self._starts[g])].as_py() or []
        return [(r["section"], r["phrase"], decode_value(r["kind"], r["num"], r["text"])) for r in rows]

    def _group(self, g: int) -> pa.ListArray:
        if g in self._cache:
            self._cache.move_to_end(g)
            return self._cache[g]
        column = self._file.read_row_group(g, columns=["triples"]).column("triples").combine_chunks()
        self._cache[g] = column
        if len(self._cache) > self._cache_groups:
            self._cache.popitem(last=False)
        return column
