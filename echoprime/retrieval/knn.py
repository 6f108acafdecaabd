"""Phenotype prediction from the labels of retrieved neighbours (the release's ``predict_metrics``).

For a phenotype of section *X* (``taxonomy.PHENOTYPES``), take the ``k`` candidates nearest to
the study's *X* section embedding; the prediction is the mean of that phenotype's labels over
the neighbours that have one (NaN when none does). For a regression (EF %, PA pressure mmHg)
that is the value in its unit; for a binary it is the fraction of labelled neighbours that are
positive, reported as ``probability`` with a ``decision`` against a threshold.

Pairing phenotypes with section rows. A phenotype's neighbours come from the section-embedding
row of ITS OWN section, matched by name against ``taxonomy.MIL_SECTIONS`` (the row order of
the section x view table). The published code instead pairs the ``i``-th key of its
``section_to_phenotypes`` dict (11 sections) with the ``i``-th embedding row (15 MIL rows), so
only Left Ventricle lines up: Right Ventricle phenotypes are predicted from the Resting
Segmental Wall Motion row, Left Atrium from Right Ventricle, ..., Pulmonary Artery from
Pericardium. Those predictions answer a different question (what do studies whose wall-motion
text resembles this one say about the RV?), so they are not the default;
``compat_positional=True`` reproduces them, only to match the release's numbers exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from echoprime import taxonomy
from echoprime.retrieval.bank import CandidateBank, Neighbours, as_section_batch
from echoprime.retrieval.index import check_k

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class MetricPrediction:
    """One phenotype's kNN prediction.

    Attributes:
        value: mean label of the labelled neighbours (NaN when none has a label): the value in
            its unit for a regression, the positive fraction for a binary (the release's number).
        probability: binaries: the positive fraction (== ``value``); None for regressions.
        decision: binaries: ``probability >= threshold``; None for regressions or a NaN value.
        spread: standard deviation (ddof 0) of the labelled neighbours' labels (NaN when none).
        n_labelled: how many of the ``k`` neighbours have a label.
    """

    value: float
    probability: float | None
    decision: bool | None
    spread: float
    n_labelled: int


def default_phenotype_sections(bank: CandidateBank) -> dict[str, str]:
    """``{phenotype: section}`` for the taxonomy phenotypes the bank has labels for, in taxonomy order.

    Bank labels outside the taxonomy (e.g. hidden diagnoses) have no section and are not predicted.
    """
    return {p.name: p.section for p in taxonomy.PHENOTYPES if p.name in bank.phenotypes}


def phenotype_rows(
    phenotype_sections: Mapping[str, str], *, compat_positional: bool = False
) -> dict[str, int]:
    """The section-embedding row (index into ``taxonomy.MIL_SECTIONS``) each phenotype reads from.

    Args:
        phenotype_sections: ``{phenotype: section name}``; in positional mode the order in which
            sections first appear is the release's ``section_to_phenotypes`` key order.
        compat_positional: pair the ``i``-th section key with row ``i`` (the release defect,
            see the module docstring) instead of matching names.

    Raises:
        ValueError: a section is not one of the MIL sections, or there are more section keys
            than rows.
    """
    for pheno, section in phenotype_sections.items():
        if section not in taxonomy.MIL_SECTIONS:
            raise ValueError(
                f"phenotype {pheno!r} maps to section {section!r}, which has no section embedding; "
                f"expected one of {list(taxonomy.MIL_SECTIONS)}"
            )
    if not compat_positional:
        return {p: taxonomy.MIL_SECTIONS.index(s) for p, s in phenotype_sections.items()}
    keys = list(dict.fromkeys(phenotype_sections.values()))  # first-appearance order of sections
    if len(keys) > len(taxonomy.MIL_SECTIONS):
        raise ValueError(f"{len(keys)} phenotype sections cannot pair with {len(taxonomy.MIL_SECTIONS)} rows")
    return {p: keys.index(s) for p, s in phenotype_sections.items()}


def label_stats(
    neighbours: Neighbours, bank: CandidateBank, phenotypes: Sequence[str], rows: Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, spread and count of neighbour labels, vectorised over studies and phenotypes.

    Args:
        neighbours: at least ``k`` neighbours of (at least) the listed rows.
        bank: the bank whose labels are averaged.
        phenotypes: the ``P`` phenotypes.
        rows: each phenotype's section row.
        k: neighbours used (the first ``k``, best first).

    Returns:
        ``(mean, spread, n)``, each ``B x P`` (float64, float64, int64); NaN mean/spread where n = 0.
    """
    cols = np.array([bank.phenotype_column(p) for p in phenotypes], dtype=np.int64)
    pos = np.array([neighbours.position(r) for r in rows], dtype=np.int64)
    ids = neighbours.ids[:, pos, :k]  # B x P x k: each phenotype's own section's neighbours
    vals = np.asarray(bank.labels[ids, cols[None, :, None]], dtype=np.float64)  # B x P x k labels
    have = ~np.isnan(vals)
    n = have.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(have, vals, 0.0).sum(axis=-1) / n  # NaN where n == 0 (0 / 0)
        dev = np.where(have, vals - mean[..., None], 0.0)
        spread = np.sqrt((dev * dev).sum(axis=-1) / n)
    return mean, spread, n


def predict_metrics(
    section_emb: Any,
    bank: CandidateBank,
    k: int = 50,
    *,
    phenotype_sections: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    compat_positional: bool = False,
    neighbours: Neighbours | None = None,
) -> dict[str, MetricPrediction]:
    """kNN prediction of every phenotype for one study.

    Args:
        section_emb: ``S x D`` section embeddings (``taxonomy.MIL_SECTIONS`` row order).
        bank: the candidate bank (its labels are averaged).
        k: neighbours per section, ``1 <= k <= len(bank)``.
        phenotype_sections: ``{phenotype: section}``; default :func:`default_phenotype_sections`.
        thresholds: decision threshold per binary phenotype (e.g. :func:`fit_thresholds`);
            None means 0.5 for all.
        compat_positional: reproduce the release's positional section pairing (module docstring).
        neighbours: a search already done with ``bank.neighbours`` (shared with
            ``generate_report``); searched here when None.

    Returns:
        ``{phenotype: MetricPrediction}`` in ``phenotype_sections`` order.

    Raises:
        ValueError: bad ``k``, embedding shape, section, or a binary phenotype missing from
            ``thresholds``; KeyError: a phenotype the bank has no labels for.
    """
    emb, _ = as_section_batch(section_emb, bank.dim)
    if emb.shape[0] != 1:
        raise ValueError(
            f"predict_metrics takes one study's S x D embeddings, got {emb.shape}; use predict_metrics_batch"
        )
    return predict_metrics_batch(emb, bank, k, phenotype_sections=phenotype_sections, thresholds=thresholds,
                                 compat_positional=compat_positional, neighbours=neighbours)[0]  # fmt: skip


def predict_metrics_batch(
    section_embs: Any,
    bank: CandidateBank,
    k: int = 50,
    *,
    phenotype_sections: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
    compat_positional: bool = False,
    neighbours: Neighbours | None = None,
) -> list[dict[str, MetricPrediction]]:
    """:func:`predict_metrics` for ``B x S x D`` embeddings, one search for all studies and sections."""
    emb, _ = as_section_batch(section_embs, bank.dim)
    check_k(k, len(bank))
    sections = (
        dict(phenotype_sections) if phenotype_sections is not None else default_phenotype_sections(bank)
    )
    for p in sections:
        bank.phenotype_column(p)  # KeyError naming the phenotype before any search
    row_of = phenotype_rows(sections, compat_positional=compat_positional)
    names = list(sections)
    rows = [row_of[p] for p in names]
    binary = [
        taxonomy.PHENOTYPE_BY_NAME.get(p) is not None and taxonomy.PHENOTYPE_BY_NAME[p].kind == "binary"
        for p in names
    ]
    thr = _thresholds(names, binary, thresholds)
    if neighbours is None:
        neighbours = bank.neighbours(emb, k, rows=sorted(set(rows)))
    elif neighbours.k < k or neighbours.ids.shape[0] != emb.shape[0]:
        raise ValueError(
            f"neighbours hold {neighbours.ids.shape[0]} studies x {neighbours.k} candidates; "
            f"need {emb.shape[0]} studies x >= {k}"
        )
    mean, spread, n = label_stats(neighbours, bank, names, rows, k)
    out: list[dict[str, MetricPrediction]] = []
    for b in range(emb.shape[0]):
        preds = {}
        for j, name in enumerate(names):
            value = float(mean[b, j])
            is_nan = np.isnan(value)
            preds[name] = MetricPrediction(
                value=value,
                probability=value if binary[j] else None,
                decision=(None if is_nan else bool(value >= thr[j])) if binary[j] else None,
                spread=float(spread[b, j]),
                n_labelled=int(n[b, j]),
            )
        out.append(preds)
    return out


def release_values(predictions: Mapping[str, MetricPrediction]) -> dict[str, float]:
    """``{phenotype: value}``, the release's ``predict_metrics`` output shape."""
    return {p: m.value for p, m in predictions.items()}


def _thresholds(
    names: Sequence[str], binary: Sequence[bool], thresholds: Mapping[str, float] | None
) -> list[float]:
    out = []
    for name, is_binary in zip(names, binary, strict=True):
        if not is_binary:
            out.append(float("nan"))
        elif thresholds is None:
            out.append(DEFAULT_THRESHOLD)
        elif name in thresholds:
            out.append(float(thresholds[name]))
        else:
            raise ValueError(
                f"no decision threshold for binary phenotype {name!r}; thresholds cover {sorted(thresholds)}"
            )
    return out
