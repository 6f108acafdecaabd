"""echoprime.reports: phrase vocabulary, structured reports, label extraction and
section-aware windowing of tokenised reports. (The synthetic report writer, which describes a
synthetic patient, is :mod:`echoprime.synth.report`.)

See docs/reports.md for the vocabulary layout, the text format and the label rules.
"""

from __future__ import annotations

from echoprime.reports.labels import (
    SECTION_ALIASES,
    extract_findings,
    extract_labels,
    grades_from_sections,
    labels_from_sections,
    split_sections,
)
from echoprime.reports.structured import SEP, Phrase, ReportParseError, StructuredReport, decode_triples
from echoprime.reports.vocabulary import (
    NUMERICAL_SLOT,
    STRING_SLOT,
    Vocabulary,
    VocabularyError,
    default_vocabulary,
    slot_count,
)
from echoprime.reports.windowing import window_token_ids

__all__ = [
    "NUMERICAL_SLOT",
    "SECTION_ALIASES",
    "SEP",
    "STRING_SLOT",
    "Phrase",
    "ReportParseError",
    "StructuredReport",
    "Vocabulary",
    "VocabularyError",
    "decode_triples",
    "default_vocabulary",
    "extract_findings",
    "extract_labels",
    "grades_from_sections",
    "labels_from_sections",
    "slot_count",
    "split_sections",
    "window_token_ids",
]
