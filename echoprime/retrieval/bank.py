"""The candidate-report bank: embeddings, phrase-id reports, section presence and labels.

A bank directory (no pickles anywhere; every ``.npy`` is read with ``allow_pickle=False``):

==================  ==============================================================
``manifest.json``   format, version, sizes, phenotype names, index kind (written last)
``embeddings.npy``  ``N x D`` float32, memory-mapped on load (instant start-up; replicas
                    on one host share the page cache); column-major for an exact bank
                    (its scan reads ``D x N`` contiguously), row-major with a faiss index
``study_ids.npy``   ``N`` fixed-width unicode study ids (memory-mapped); build-bank stores
                    keyed pseudonyms here, never the studies' own ids (pseudonyms.py)
``presence.npy``    ``N x V`` bool: candidate ``i`` has section ``s`` of the vocabulary
``labels.npy``      ``N x P`` float32, NaN = no label (memory-mapped)
``reports.parquet`` ``study_id`` and ``triples`` (``list<struct>``), decoded lazily
``vocabulary.json`` the phrase vocabulary the triples index into
``index.faiss``     only for an approximate (IVF/PQ) index; the exact index is the .npy
==================  ==============================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from echoprime import taxonomy
from echoprime.reports import StructuredReport, Vocabulary, decode_triples, default_vocabulary
from echoprime.retrieval.index import ExactIndex, read_index, search, write_index
from echoprime.retrieval.labels import LabelInput, label_matrix
from echoprime.retrieval.table import BankFormatError, ParquetReports, ReportTable, write_reports

FORMAT = "echoprime-candidate-bank"
FORMAT_VERSION = 1
FILES = {
    "manifest": "manifest.json",
    "embeddings": "embeddings.npy",
    "study_ids": "study_ids.npy",
    "presence": "presence.npy",
    "labels": "labels.npy",
    "reports": "reports.parquet",
    "vocabulary": "vocabulary.json",
    "index": "index.faiss",
}


@dataclass(frozen=True)
class Neighbours:
    """The ``K`` best candidates of each searched section of each study.

    Attributes:
        scores: ``B x R x K`` float32 similarities (dot products), best first.
        ids: ``B x R x K`` int64 candidate rows.
        rows: the ``R`` section rows (indices into ``taxonomy.MIL_SECTIONS``) along axis 1.
    """

    scores: np.ndarray
    ids: np.ndarray
    rows: tuple[int, ...]

    @property
    def k(self) -> int:
        return int(self.ids.shape[2])

    def position(self, row: int) -> int:
        """Axis-1 position of MIL section row ``row``.

        Raises:
            ValueError: that row was not searched.
        """
        try:
            return self.rows.index(row)
        except ValueError:
            raise ValueError(
                f"section row {row} ({taxonomy.MIL_SECTIONS[row]!r}) was not searched; rows searched: {self.rows}"
            ) from None


def as_section_batch(section_emb: Any, dim: int) -> tuple[np.ndarray, bool]:
    """Validate section embeddings; return them as ``B x S x D`` float32 and whether a batch was given.

    Args:
        section_emb: ``S x D`` (one study) or ``B x S x D``, numpy or a CPU torch tensor,
            ``S = len(taxonomy.MIL_SECTIONS)``.
        dim: the bank's embedding dimension ``D``.

    Raises:
        ValueError: wrong rank, section count or dimension (naming both shapes), or non-finite values.
    """
    if hasattr(section_emb, "detach"):  # a torch tensor, without importing torch here
        section_emb = section_emb.detach().cpu().numpy()
    emb = np.asarray(section_emb, dtype=np.float32)
    batched = emb.ndim == 3
    if emb.ndim == 2:
        emb = emb[None]  # 1 x S x D
    s = len(taxonomy.MIL_SECTIONS)
    if emb.ndim != 3 or emb.shape[1] != s or emb.shape[2] != dim:
        raise ValueError(
            f"section embeddings must be {s} x {dim} or B x {s} x {dim} (sections x the bank's dimension), "
            f"got shape {np.shape(section_emb)}"
        )
    if not np.isfinite(emb).all():
        raise ValueError("section embeddings hold NaN or infinite values")
    return emb, batched


class CandidateBank:
    """A searchable bank of candidate reports with their labels.

    Build one with :meth:`build` or :meth:`load`; the constructor takes already-validated parts.

    Attributes:
        embeddings: ``N x D`` float32 (a read-only memmap after :meth:`load`).
        study_ids: ``N`` unicode study ids.
        presence: ``N x V`` bool section presence (``V`` = vocabulary sections).
        labels: ``N x P`` float32, NaN = no label.
        phenotypes: the ``P`` label names, in column order.
        vocab: the phrase vocabulary of the reports.
    """

    def __init__(
        self,
        *,
        embeddings: np.ndarray,
        study_ids: np.ndarray,
        reports: ReportTable | ParquetReports,
        presence: np.ndarray,
        labels: np.ndarray,
        phenotypes: Sequence[str],
        vocab: Vocabulary,
        index: Any = None,
        index_path: Path | None = None,
    ) -> None:
        self.embeddings = embeddings
        self.study_ids = study_ids
        self._reports = reports
        self.presence = presence
        self.labels = labels
        self.phenotypes = tuple(phenotypes)
        self.vocab = vocab
        self._index = index
        self._index_path = index_path
        self._phenotype_index = {p: j for j, p in enumerate(self.phenotypes)}
        self._rows_by_section: dict[int, np.ndarray] = {}

    # -- construction ----------------------------------------------------------------
    @classmethod
    def build(
        cls,
        embeddings: np.ndarray,
        study_ids: Sequence[Any] | np.ndarray,
        reports: Sequence[Sequence[Sequence[Any]]] | ReportTable,
        labels: LabelInput = None,
        vocab: Vocabulary | None = None,
        *,
        phenotypes: Sequence[str] | None = None,
    ) -> CandidateBank:
        """Assemble and validate a bank in memory.

        Args:
            embeddings: ``N x D`` float32 report embeddings (a memmap is kept as one).
            study_ids: ``N`` study ids (stored as strings).
            reports: one ``(section_index, phrase_index, value)`` list per candidate, or a
                :class:`ReportTable`.
            labels: ``{phenotype: {study_id: value}}`` (ids compared as strings; a study
                missing from a phenotype's dict has no label; every candidate of a study gets
                its label), or an ``N x P`` matrix with NaN for missing (then ``phenotypes``
                names the columns), or None.
            vocab: the vocabulary the triples index into (default: the project's).
            phenotypes: column names of a label matrix.

        Raises:
            BankFormatError: inconsistent sizes, bad indices or bad label values, named.
        """
        vocab = vocab or default_vocabulary()
        if not isinstance(embeddings, np.ndarray) or embeddings.ndim != 2 or embeddings.shape[0] == 0:
            raise BankFormatError(
                f"embeddings must be a non-empty N x D array, got shape {np.shape(embeddings)}"
            )
        if embeddings.dtype != np.float32:
            embeddings = embeddings.astype(np.float32)
        n = embeddings.shape[0]
        for start in range(0, n, 65_536):  # chunked: a memmapped bank is not pulled into RAM at once
            if not np.isfinite(embeddings[start : start + 65_536]).all():
                raise BankFormatError(
                    f"embeddings rows {start}..{min(n, start + 65_536) - 1} hold NaN or inf"
                )
        ids = (
            np.asarray([str(s) for s in study_ids])
            if not isinstance(study_ids, np.ndarray)
            else study_ids.astype(str)
        )
        if ids.shape != (n,):
            raise BankFormatError(f"{ids.shape[0] if ids.ndim else 0} study ids for {n} embeddings")
        table = reports if isinstance(reports, ReportTable) else ReportTable.from_triples(reports)
        if len(table) != n:
            raise BankFormatError(f"{len(table)} reports for {n} embeddings")
        table.validate(vocab)
        matrix, names = label_matrix(labels, ids, phenotypes)
        return cls(
            embeddings=embeddings,
            study_ids=ids,
            reports=table,
            presence=table.presence(len(vocab.sections)),
            labels=matrix,
            phenotypes=names,
            vocab=vocab,
        )

    def save(self, directory: str | PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the bank as a directory (manifest last, so a half-written bank never loads).

        Raises:
            FileExistsError: a bank is already there and ``overwrite`` is False.
        """
        root = Path(directory)
        if (root / FILES["manifest"]).exists() and not overwrite:
            raise FileExistsError(f"a candidate bank already exists at {str(root)!r} (pass overwrite=True)")
        root.mkdir(parents=True, exist_ok=True)
        (root / FILES["manifest"]).unlink(missing_ok=True)
        exact = self._index_path is None and (self._index is None or isinstance(self._index, ExactIndex))
        _save_embeddings(self.embeddings, root / FILES["embeddings"], fortran=exact)
        np.save(root / FILES["study_ids"], self.study_ids, allow_pickle=False)
        np.save(root / FILES["presence"], np.ascontiguousarray(self.presence), allow_pickle=False)
        np.save(
            root / FILES["labels"], np.ascontiguousarray(self.labels, dtype=np.float32), allow_pickle=False
        )
        if isinstance(self._reports, ReportTable):
            write_reports(root / FILES["reports"], self._reports, self.study_ids)
        elif not _same_file(self._reports.path, root / FILES["reports"]):
            write_reports(root / FILES["reports"], self._all_reports(), self.study_ids)
        (root / FILES["vocabulary"]).write_text(json.dumps(self.vocab.to_dict(), ensure_ascii=False), "utf-8")
        index_kind = "exact"
        if self._index is not None and not isinstance(self._index, ExactIndex):
            write_index(self._index, root / FILES["index"])
            index_kind = "faiss"
        elif self._index is None and self._index_path is not None:
            if not _same_file(self._index_path, root / FILES["index"]):
                write_index(read_index(self._index_path, use_gpu=False), root / FILES["index"])
            index_kind = "faiss"
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "n": len(self),
            "dim": self.dim,
            "phenotypes": list(self.phenotypes),
            "sections": list(self.vocab.sections),
            "index": index_kind,
            "embeddings_order": "F" if exact else "C",
        }
        (root / FILES["manifest"]).write_text(json.dumps(manifest, indent=2), "utf-8")
        return root

    @classmethod
    def load(cls, directory: str | PathLike[str]) -> CandidateBank:
        """Open a saved bank: arrays memory-mapped, reports and any faiss index read on first use.

        Raises:
            BankFormatError: missing files, another format or version, or inconsistent shapes.
        """
        root = Path(directory)
        try:
            manifest = json.loads((root / FILES["manifest"]).read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise BankFormatError(
                f"{str(root)!r} is not a candidate bank: cannot read {FILES['manifest']}: {err}"
            ) from err
        if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
            raise BankFormatError(
                f"{str(root / FILES['manifest'])!r}: expected format {FORMAT!r} version {FORMAT_VERSION}, "
                f"got {manifest.get('format')!r} version {manifest.get('version')!r}"
            )
        n, dim = int(manifest["n"]), int(manifest["dim"])
        vocab = Vocabulary.from_json(root / FILES["vocabulary"])
        phenotypes = list(manifest["phenotypes"])
        expect = {
            "embeddings": ((n, dim), np.float32),
            "study_ids": ((n,), None),
            "presence": ((n, len(vocab.sections)), np.bool_),
            "labels": ((n, len(phenotypes)), np.float32),
        }
        arrays = {}
        for key, (shape, dtype) in expect.items():
            path = root / FILES[key]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as err:
                raise BankFormatError(f"cannot read {str(path)!r}: {err}") from err
            if arr.shape != shape or (dtype is not None and arr.dtype != dtype):
                raise BankFormatError(
                    f"{str(path)!r}: expected shape {shape} {np.dtype(dtype) if dtype else 'unicode'}, "
                    f"got {arr.shape} {arr.dtype}"
                )
            arrays[key] = arr
        index_path = root / FILES["index"] if manifest.get("index") == "faiss" else None
        return cls(
            embeddings=arrays["embeddings"],
            study_ids=arrays["study_ids"],
            reports=ParquetReports(root / FILES["reports"], n),
            presence=arrays["presence"],
            labels=arrays["labels"],
            phenotypes=phenotypes,
            vocab=vocab,
            index_path=index_path,
        )

    # -- sizes and search ------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def index(self) -> Any:
        """The search index: the exact matrix index unless an approximate one was set or saved."""
        if self._index is None:
            self._index = read_index(self._index_path) if self._index_path else ExactIndex(self.embeddings)
        return self._index

    def set_index(self, index: Any) -> None:
        """Use another index (e.g. ``build_index(bank.embeddings, "ivfpq", ...)``) over the same rows.

        Raises:
            BankFormatError: the index has another size or dimension than the bank.
        """
        if int(index.ntotal) != len(self) or int(index.d) != self.dim:
            raise BankFormatError(
                f"index holds {index.ntotal} x {index.d} vectors, the bank is {len(self)} x {self.dim}"
            )
        self._index = index

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` candidates of ``Q x D`` queries (approximate indexes re-ranked exactly)."""
        index = self.index
        exact = None if getattr(index, "is_exact", False) else self.embeddings
        return search(index, queries, k, exact=exact)

    def neighbours(self, section_emb: Any, k: int, rows: Sequence[int] | None = None) -> Neighbours:
        """Search every section row of every study in one batched call.

        Args:
            section_emb: ``S x D`` or ``B x S x D`` section embeddings (MIL row order).
            k: neighbours per section.
            rows: which section rows to search (default all ``S``).
        """
        emb, _ = as_section_batch(section_emb, self.dim)
        b, s, d = emb.shape
        rows = tuple(range(s)) if rows is None else tuple(int(r) for r in rows)
        queries = emb[:, rows, :].reshape(b * len(rows), d)  # (B*R) x D: one query per (study, section)
        scores, ids = self.search(queries, k)
        # (B*R) x K -> B x R x K
        return Neighbours(scores.reshape(b, len(rows), k), ids.reshape(b, len(rows), k), rows)

    # -- reports -----------------------------------------------------------------------
    def section_column(self, section: str) -> int | None:
        """Column of ``section`` in :attr:`presence` (None when the vocabulary lacks it)."""
        return self.vocab.section_index(section) if section in self.vocab else None

    def rows_with_section(self, column: int) -> np.ndarray:
        """Candidate rows whose report has presence column ``column`` (cached per column)."""
        cache = self._rows_by_section
        if column not in cache:
            cache[column] = np.flatnonzero(self.presence[:, column])
        return cache[column]

    def study_id(self, i: int) -> str:
        return str(self.study_ids[self._check_row(i)])

    def triples(self, i: int) -> list[tuple[int, int, Any]]:
        """Candidate ``i``'s phrase-id triples (decoded from storage on demand)."""
        return self._reports.triples(self._check_row(i))

    def report_text(self, i: int) -> str:
        """Candidate ``i``'s report in the release's text form."""
        return decode_triples(self.triples(i), self.vocab)

    def section_triples(self, i: int, section: str) -> list[tuple[int, int, Any]]:
        """The first contiguous run of ``section``'s triples in candidate ``i``'s report.

        The first run is what a reader of the decoded text finds first; bank reports keep a
        section's triples together, so it is normally the whole section.

        Raises:
            KeyError: the report has no such section.
        """
        col = self.section_column(section)
        triples = self.triples(i)
        start = next((j for j, t in enumerate(triples) if t[0] == col), None) if col is not None else None
        if start is None:
            raise KeyError(f"candidate {i} ({self.study_id(i)}) has no section {section!r}")
        stop = start
        while stop < len(triples) and triples[stop][0] == col:
            stop += 1
        return triples[start:stop]

    def section_text(self, i: int, section: str) -> str:
        """``"<Section>: p1 p2 [SEP]"`` for candidate ``i`` (as the decoded report spells it)."""
        return decode_triples(self.section_triples(i, section), self.vocab)

    def structured(self, i: int) -> StructuredReport:
        return StructuredReport.from_triples(self.triples(i), self.vocab)

    def phenotype_column(self, phenotype: str) -> int:
        """Label column of ``phenotype``.

        Raises:
            KeyError: the bank has no labels for it.
        """
        try:
            return self._phenotype_index[phenotype]
        except KeyError:
            raise KeyError(
                f"the bank has no labels for phenotype {phenotype!r}; it has {list(self.phenotypes)}"
            ) from None

    def __repr__(self) -> str:
        return f"CandidateBank({len(self)} x {self.dim}, {len(self.phenotypes)} phenotypes)"

    def _check_row(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"candidate {i} out of range for a bank of {len(self)}")
        return i

    def _all_reports(self) -> ReportTable:
        return ReportTable.from_triples([self.triples(i) for i in range(len(self))])


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _save_embeddings(embeddings: np.ndarray, path: Path, *, fortran: bool) -> None:
    """Write ``N x D`` float32 as .npy, column-major when ``fortran`` (fast exact scans, see
    ExactIndex) or row-major (fast row gathers, for re-ranking an approximate index)."""
    if (
        isinstance(embeddings, np.memmap)
        and embeddings.filename
        and _same_file(Path(embeddings.filename), path)
    ):
        on_disk = np.load(path, mmap_mode="r", allow_pickle=False)
        if on_disk.shape != embeddings.shape or on_disk.offset != embeddings.offset:
            raise BankFormatError(f"cannot overwrite {str(path)!r} with a view of itself")
        if bool(on_disk.flags.f_contiguous and not on_disk.flags.c_contiguous) == fortran:
            return  # already this bank's file in the wanted layout (e.g. written in place by the builder)
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float32, shape=embeddings.shape, fortran_order=fortran
    )
    for start in range(0, embeddings.shape[0], 65_536):  # chunked copy: bounded memory for big banks
        out[start : start + 65_536] = embeddings[start : start + 65_536]
    out.flush()
    del out
    os.replace(tmp, path)  # a memmap of the old file stays valid: it holds the old inode
