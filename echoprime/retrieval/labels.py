"""Candidate labels as a dense ``N x P`` float32 matrix (NaN = no label).

The release stores labels as ``{phenotype: {study_id: value}}``; a dense matrix makes "the
labels of these k neighbours" one gather instead of k dict look-ups per phenotype.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from echoprime import taxonomy
from echoprime.retrieval.table import BankFormatError

LabelInput = Mapping[str, Mapping[Any, Any]] | np.ndarray | None


def label_matrix(
    labels: LabelInput, ids: np.ndarray, phenotypes: Sequence[str] | None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """``N x P`` float32 labels (NaN = missing) and their names, from a dict or a matrix.

    Args:
        labels: ``{phenotype: {study_id: value}}`` (ids compared as strings; all candidates of
            a study share its label), an ``N x P`` matrix, or None (no labels).
        ids: the ``N`` candidates' study ids (strings).
        phenotypes: column names of a matrix.

    Raises:
        BankFormatError: wrong shape, a non-numeric value, an infinite value, or a binary
            taxonomy phenotype with a value other than 0/1 (naming phenotype and study).
    """
    n = ids.shape[0]
    if labels is None:
        return np.zeros((n, 0), dtype=np.float32), ()
    if isinstance(labels, np.ndarray):
        if phenotypes is None or labels.shape != (n, len(phenotypes)):
            raise BankFormatError(
                f"a label matrix must be N x P = {n} x {len(phenotypes) if phenotypes is not None else '?'} "
                f"with phenotypes naming its columns, got shape {labels.shape}"
            )
        matrix = labels.astype(np.float32)
        names = tuple(phenotypes)
        for j, name in enumerate(names):
            _check_labels(name, matrix[:, j], ids)
        return matrix, names
    if not isinstance(labels, Mapping):
        raise BankFormatError(
            f"labels must be {{phenotype: {{study_id: value}}}} or an N x P matrix, got {type(labels).__name__}"
        )
    names = tuple(labels)
    uniq, inverse = np.unique(ids, return_inverse=True)  # every candidate of a study shares its label
    matrix = np.full((n, len(names)), np.nan, dtype=np.float32)
    for j, name in enumerate(names):
        by_id = {str(k): v for k, v in labels[name].items()}
        try:
            values = np.array(
                [np.nan if (v := by_id.get(u)) is None else float(v) for u in uniq], dtype=np.float64
            )
        except (TypeError, ValueError) as err:
            raise BankFormatError(f"labels[{name!r}] holds a value that is not a number: {err}") from err
        matrix[:, j] = values[inverse]
    for j, name in enumerate(names):
        _check_labels(name, matrix[:, j], ids)
    return matrix, names


def _check_labels(name: str, column: np.ndarray, ids: np.ndarray) -> None:
    bad = np.isinf(column)
    pheno = taxonomy.PHENOTYPE_BY_NAME.get(name)
    if pheno is not None and pheno.kind == "binary":
        bad |= ~np.isnan(column) & (column != 0) & (column != 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        expect = (
            "0 or 1 (binary phenotype)" if pheno is not None and pheno.kind == "binary" else "a finite number"
        )
        raise BankFormatError(
            f"label {name!r} of study {str(ids[i])!r} is {float(column[i])!r}; expected {expect} or missing"
        )
