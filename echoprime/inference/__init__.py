"""Interpretation of a study, one path for every caller (docs/architecture.md).

* :mod:`~echoprime.inference.parts`: :class:`InterpreterParts`, a bundle's parts loaded.
* :mod:`~echoprime.inference.study`: a study's files -> uint8 clips (one reader).
* :mod:`~echoprime.inference.towers`: the towers' forward (the only copy), the attention, the text tower.
* :mod:`~echoprime.inference.result`: :class:`StudyResult` and the retrieval half that builds it.
* :mod:`~echoprime.inference.interpreter`: :class:`StudyInterpreter`, the facade.
"""

from __future__ import annotations

from echoprime.inference.interpreter import StudyInterpreter
from echoprime.inference.parts import COMPONENTS, InterpreterParts, load_bundle_parts
from echoprime.inference.result import ResultBuilder, StudyEncoding, StudyResult, json_ready, search_bank
from echoprime.inference.study import StudyClips, StudyInput, read_study
from echoprime.inference.towers import CPU_ONE_CLIP_PARAMS, PRECISIONS, Towers, attend, embed_reports

__all__ = [
    "COMPONENTS",
    "CPU_ONE_CLIP_PARAMS",
    "PRECISIONS",
    "InterpreterParts",
    "ResultBuilder",
    "StudyClips",
    "StudyEncoding",
    "StudyInput",
    "StudyInterpreter",
    "StudyResult",
    "Towers",
    "attend",
    "embed_reports",
    "json_ready",
    "load_bundle_parts",
    "read_study",
    "search_bank",
]
