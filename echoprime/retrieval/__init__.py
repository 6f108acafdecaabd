"""echoprime.retrieval: the candidate-report bank, its search, kNN metrics and report assembly.

See docs/retrieval.md. faiss is imported only when a faiss index is built or read.
"""

from __future__ import annotations

from echoprime.retrieval.bank import CandidateBank, Neighbours, as_section_batch
from echoprime.retrieval.index import (
    ExactIndex,
    SearchIndexError,
    build_index,
    read_index,
    search,
    write_index,
)
from echoprime.retrieval.knn import (
    MetricPrediction,
    default_phenotype_sections,
    phenotype_rows,
    predict_metrics,
    predict_metrics_batch,
    release_values,
)
from echoprime.retrieval.rai import (
    NOT_ASSESSED,
    GeneratedReport,
    SectionChoice,
    generate_report,
    generate_report_batch,
)
from echoprime.retrieval.table import BankFormatError, ReportTable
from echoprime.retrieval.thresholds import (
    ThresholdFit,
    Thresholds,
    fit_thresholds,
    read_release_thresholds,
    youden_threshold,
)

__all__ = [
    "NOT_ASSESSED",
    "BankFormatError",
    "CandidateBank",
    "ExactIndex",
    "GeneratedReport",
    "MetricPrediction",
    "Neighbours",
    "ReportTable",
    "SearchIndexError",
    "SectionChoice",
    "ThresholdFit",
    "Thresholds",
    "as_section_batch",
    "build_index",
    "default_phenotype_sections",
    "fit_thresholds",
    "generate_report",
    "generate_report_batch",
    "interpret_sections",
    "phenotype_rows",
    "predict_metrics",
    "predict_metrics_batch",
    "read_index",
    "read_release_thresholds",
    "release_values",
    "search",
    "write_index",
    "youden_threshold",
]
