"""Retrieval-augmented report generation (the release's ``generate_report``).

For each of the 15 sections in ``taxonomy.MIL_SECTIONS`` order: rank the bank's candidates by
similarity (dot product) to that section's embedding and take the best candidate whose report
HAS that section; the generated section is that candidate's section text,
``"<Section>: p1 p2 [SEP]"``. The report is the sections' texts joined by single spaces, so it
reads like a decoded report (``"A: p1 [SEP] B: p2 [SEP]"``).

Two defects of the published code are fixed here:

* A section is "had" when the candidate's triples hold a phrase of it (the bank's
  precomputed presence matrix), not when the decoded text contains the header string (a
  pericardium phrase that mentions the IVC is not an IVC section).
* The search terminates. The first ``top`` neighbours are checked (the search shared with
  ``predict_metrics``); if none has the section the search widens to ``K = N``: with an
  approximate index ``K`` first doubles (``2 top, 4 top, ...``, each a cheap search) up to
  ``widen_limit``; then (and at once with the exact index, where every doubling would rescan
  the whole bank) one exact pass scores all ``N`` candidates and takes the best that has the
  section. A section that no candidate has is known from the presence matrix without any
  search and reads ``NOT_ASSESSED.format(section=...)``: ``"<Section>: not assessed [SEP]"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echoprime import taxonomy
from echoprime.reports import StructuredReport, Vocabulary, decode_triples
from echoprime.retrieval.bank import CandidateBank, Neighbours, as_section_batch
from echoprime.retrieval.index import ExactIndex, check_k
from echoprime.retrieval.knn import MetricPrediction, predict_metrics

NOT_ASSESSED = "{section}: not assessed [SEP]"


@dataclass(frozen=True)
class SectionChoice:
    """The candidate chosen for one section.

    Attributes:
        section: the section name.
        text: ``"<Section>: ... [SEP]"`` (or the not-assessed text).
        candidate: bank row of the chosen candidate (None when not assessed).
        study_id: that candidate's study id.
        similarity: its dot product with the section embedding.
        rank: its position in the section's ranking of all candidates (0 = best; ties: lower
            row first), i.e. how many better candidates lacked the section; None when not assessed.
        triples: the section's phrase-id triples (empty when not assessed).
    """

    section: str
    text: str
    candidate: int | None
    study_id: str | None
    similarity: float | None
    rank: int | None
    triples: tuple[tuple[int, int, Any], ...] = ()

    @property
    def assessed(self) -> bool:
        return self.candidate is not None


@dataclass(frozen=True)
class GeneratedReport:
    """A generated report: one :class:`SectionChoice` per MIL section, in MIL order."""

    sections: tuple[SectionChoice, ...]
    vocab: Vocabulary = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        """The sections' texts joined with single spaces."""
        return " ".join(s.text for s in self.sections)

    def __iter__(self) -> Iterator[SectionChoice]:
        return iter(self.sections)

    def section(self, name: str) -> SectionChoice:
        """The choice for section ``name``.

        Raises:
            KeyError: not a generated section.
        """
        for s in self.sections:
            if s.section == name:
                return s
        raise KeyError(
            f"section {name!r} is not in the generated report ({[s.section for s in self.sections]})"
        )

    def to_structured(self) -> StructuredReport:
        """The assessed sections as a :class:`StructuredReport` (not-assessed ones are left out:
        "not assessed" is not a phrase of the vocabulary)."""
        triples = [t for s in self.sections for t in s.triples]
        return StructuredReport.from_triples(triples, self.vocab)


def generate_report(
    section_emb: Any,
    bank: CandidateBank,
    *,
    top: int = 50,
    widen_limit: int = 4096,
    neighbours: Neighbours | None = None,
) -> GeneratedReport:
    """Assemble a report for one study from its ``S x D`` section embeddings.

    Args:
        section_emb: ``S x D`` (``taxonomy.MIL_SECTIONS`` order).
        bank: the candidate bank.
        top: candidates checked first per section (``1 <= top``; capped at the bank size).
        widen_limit: largest ``K`` an approximate index tries by doubling before the exact pass.
        neighbours: a search already done with ``bank.neighbours`` (e.g. shared with
            ``predict_metrics``); its first ``top`` candidates are checked.

    Raises:
        ValueError: bad shapes or ``top``.
    """
    emb, _ = as_section_batch(section_emb, bank.dim)
    if emb.shape[0] != 1:
        raise ValueError(
            f"generate_report takes one study's S x D embeddings, got {emb.shape}; use generate_report_batch"
        )
    return generate_report_batch(emb, bank, top=top, widen_limit=widen_limit, neighbours=neighbours)[0]


def generate_report_batch(
    section_embs: Any,
    bank: CandidateBank,
    *,
    top: int = 50,
    widen_limit: int = 4096,
    neighbours: Neighbours | None = None,
) -> list[GeneratedReport]:
    """:func:`generate_report` for ``B x S x D`` embeddings (one search for every section of every study)."""
    emb, _ = as_section_batch(section_embs, bank.dim)
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top <= 0:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    top = min(int(top), len(bank))
    n_rows = len(taxonomy.MIL_SECTIONS)
    if neighbours is None:
        neighbours = bank.neighbours(emb, top)
    elif neighbours.k < top or neighbours.ids.shape[0] != emb.shape[0]:
        raise ValueError(
            f"neighbours hold {neighbours.ids.shape[0]} studies x {neighbours.k} candidates; "
            f"need {emb.shape[0]} studies x >= {top}"
        )
    cols = [bank.section_column(s) for s in taxonomy.MIL_SECTIONS]
    # B x S x top: does each listed neighbour have the section it was retrieved for?
    pos = [neighbours.position(r) for r in range(n_rows)]
    ids = neighbours.ids[:, pos, :top]
    safe_cols = np.array([c if c is not None else 0 for c in cols], dtype=np.int64)
    has = (
        np.asarray(bank.presence[ids, safe_cols[None, :, None]])
        & np.array([c is not None for c in cols])[None, :, None]
    )
    first = np.where(has.any(axis=-1), has.argmax(axis=-1), -1)  # B x S: first neighbour with the section
    reports = []
    for b in range(emb.shape[0]):
        choices = []
        for s, section in enumerate(taxonomy.MIL_SECTIONS):
            col = cols[s]
            if first[b, s] >= 0:
                j = int(first[b, s])
                cand, score, rank = int(ids[b, s, j]), float(neighbours.scores[b, pos[s], j]), j
            elif col is None or bank.rows_with_section(col).size == 0:
                choices.append(
                    SectionChoice(section, NOT_ASSESSED.format(section=section), None, None, None, None)
                )
                continue
            else:
                cand, score, rank = _widen(bank, emb[b, s], col, top, widen_limit)
            triples = tuple(bank.section_triples(cand, section))
            text = decode_triples(triples, bank.vocab)
            choices.append(SectionChoice(section, text, cand, bank.study_id(cand), score, rank, triples))
        reports.append(GeneratedReport(tuple(choices), bank.vocab))
    return reports


def _widen(
    bank: CandidateBank, query: np.ndarray, col: int, top: int, widen_limit: int
) -> tuple[int, float, int]:
    """Best candidate having presence column ``col`` when the first ``top`` neighbours lack it.

    Returns:
        ``(row, score, rank)``; rank = position in the ranking of all candidates (ties: lower row first).
    """
    n = len(bank)
    index = bank.index
    if not getattr(index, "is_exact", False):
        # An approximate index: doubling searches are cheap and usually enough.
        k = top
        while k < min(n, widen_limit):
            k = min(2 * k, n)
            scores, ids = bank.search(query[None], k)  # 1 x k
            valid = ids[0] >= 0
            has = np.zeros(k, dtype=bool)
            has[valid] = bank.presence[ids[0][valid], col]
            if has.any():
                j = int(has.argmax())
                return int(ids[0, j]), float(scores[0, j]), j
        index = ExactIndex(bank.embeddings)
    # One exact pass over all N scores: what doubling K up to N ends with, in one scan
    # (with an exact index each doubling would rescan the whole bank anyway).
    scores = index.scores(query[None])[0]  # N
    masked = np.where(np.asarray(bank.presence[:, col]), scores, -np.inf)
    j = int(masked.argmax())  # first maximum: ties go to the lowest row
    best = scores[j]
    rank = int((scores > best).sum() + (scores[:j] == best).sum())
    return j, float(best), rank


def interpret_sections(
    section_emb: Any,
    bank: CandidateBank,
    k: int = 50,
    *,
    top: int | None = None,
    thresholds: Mapping[str, float] | None = None,
    compat_positional: bool = False,
) -> tuple[dict[str, MetricPrediction], GeneratedReport]:
    """``predict_metrics`` and ``generate_report`` for one study from ONE search (half the cost
    of calling them apart): ``(metrics, report)``.

    Args:
        section_emb: ``S x D`` section embeddings.
        bank: the candidate bank.
        k: neighbours for the metrics.
        top: candidates checked first per report section (default ``k``).
        thresholds: decision thresholds of binary phenotypes (see ``predict_metrics``).
        compat_positional: the release's positional section pairing for the metrics.
    """
    top = k if top is None else top
    check_k(k, len(bank))
    neighbours = bank.neighbours(section_emb, max(k, min(top, len(bank))))
    metrics = predict_metrics(
        section_emb,
        bank,
        k,
        thresholds=thresholds,
        compat_positional=compat_positional,
        neighbours=neighbours,
    )
    return metrics, generate_report(section_emb, bank, top=top, neighbours=neighbours)
