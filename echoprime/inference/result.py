"""A study's answer: :class:`StudyResult`, and :class:`ResultBuilder`, the retrieval half.

The retrieval half takes what the towers and the attention computed for a batch of studies
(section embeddings, weights, view probabilities, heads' logits) and the per-file reports, searches
the bank once for all of them, and assembles each study's typed result: views, report sections
with their source studies, findings (kNN values, probabilities, decisions, intervals, grades),
the evidence (each video's weight per section), neighbour studies and the heads' answers. The
in-process interpreter and Serve's retrieval replica both call it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from echoprime.io import FileReport
from echoprime.reports import grades_from_sections
from echoprime.retrieval import generate_report_batch
from echoprime.retrieval.findings import findings_batch
from echoprime.taxonomy import MIL_SECTIONS, VIEWS
from echoprime.training.heads import Task, head_tasks, study_answer


@dataclass
class StudyResult:
    """A study's interpretation; ``to_dict()`` is JSON-serialisable (NaN written as None)."""

    status: str
    """``ok``, or ``no_usable_video`` when no file of the study could be used."""
    files: list[dict[str, Any]]
    videos: list[dict[str, Any]]
    report: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    evidence: dict[str, list[dict[str, Any]]]
    neighbours: dict[str, list[dict[str, Any]]]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The bundle's fine-tuned heads' answers (``echoprime finetune``), by task name."""

    @property
    def report_text(self) -> str:
        return " ".join(s["text"] for s in self.report)

    def to_dict(self) -> dict[str, Any]:
        return json_ready(asdict(self) | {"report_text": self.report_text})


def json_ready(x: Any) -> Any:
    """``x`` with numpy scalars as Python numbers and non-finite floats as None (JSON has no NaN)."""
    if isinstance(x, dict):
        return {k: json_ready(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_ready(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


@dataclass
class StudyEncoding:
    """What the towers and the attention made of one study with at least one usable video.

    Attributes:
        sections: section embeddings ``15 x D``.
        weights: each video's weight per section ``15 x N``.
        probs: view probabilities ``N x V``.
        task_logits: the heads' logits ``N x H`` (None: the bundle has no heads).
    """

    sections: np.ndarray
    weights: np.ndarray
    probs: np.ndarray
    task_logits: np.ndarray | None = None


class ResultBuilder:
    """The retrieval half: bank search, findings, report, and the typed result of each study.

    Args:
        bank: the candidate bank (:class:`echoprime.retrieval.CandidateBank`).
        k: default neighbours for the findings (clipped to the bank's size).
        thresholds: decision threshold per binary phenotype.
        calibration: the bundle's calibration (None: no calibrated probabilities or grades).
        tasks: the heads' tasks in logit order (their names and widths).
    """

    def __init__(
        self,
        bank: Any,
        k: int = 50,
        *,
        thresholds: Mapping[str, float] | None = None,
        calibration: Any = None,
        tasks: Sequence[Task] = (),
    ) -> None:
        self.bank, self.calibration = bank, calibration
        # kept as given: a Thresholds mapping also says where each value came from
        self.thresholds = thresholds if thresholds is not None else {}
        self.k = min(k, len(bank)) if bank is not None else k
        self.tasks = list(tasks)

    @classmethod
    def of(cls, parts: Any, k: int = 50) -> ResultBuilder:
        """From :class:`~echoprime.inference.InterpreterParts` (heads' tasks from the loaded heads,
        else from the manifest: a replica that holds the bank but not the heads)."""
        tasks = [h.task for h in parts.heads] or head_tasks(parts.manifest)
        return cls(parts.bank, k, thresholds=parts.thresholds, calibration=parts.calibration, tasks=tasks)

    def build(
        self,
        encodings: Sequence[StudyEncoding | None],
        files: Sequence[Sequence[FileReport]],
        *,
        k: int | None = None,
        n_neighbours: int = 5,
    ) -> list[StudyResult]:
        """One result per study (``None``: no usable video; its files still listed).

        Args:
            encodings: per study, its :class:`StudyEncoding` or None.
            files: per study, one :class:`FileReport` per file.
            k: neighbours for the findings (default: the builder's).
            n_neighbours: neighbour studies listed per section.
        """
        k = self.k if k is None else k
        results = [
            StudyResult("no_usable_video", [asdict(r) for r in fs], [], [], {}, {}, {}) for fs in files
        ]
        usable = [i for i, e in enumerate(encodings) if e is not None]
        if not usable:
            return results
        bank = self.bank
        batch = np.stack([encodings[i].sections for i in usable])  # B x 15 x D
        neigh = bank.neighbours(batch, max(k, n_neighbours, min(self.k, len(bank))))
        gen = generate_report_batch(batch, bank, top=max(self.k, 1), neighbours=neigh)
        said = [grades_from_sections({c.section: c.text for c in g.sections}) for g in gen]
        metrics = findings_batch(
            batch, bank, k, thresholds=self.thresholds, calibration=self.calibration, neighbours=neigh,
            report_grades=said,
        )  # fmt: skip
        for b, i in enumerate(usable):
            enc = encodings[i]
            videos = self._videos(enc.probs, files[i])
            results[i] = StudyResult(
                "ok",
                [asdict(f) for f in files[i]],
                videos,
                [
                    {
                        "section": c.section,
                        "text": c.text,
                        "source_study": c.study_id,
                        "similarity": c.similarity,
                    }
                    for c in gen[b].sections
                ],
                metrics[b],
                self._evidence(enc.weights, videos),
                self._neighbours(neigh, b, n_neighbours),
                self._task_answers(enc.task_logits, enc.weights, videos)
                if enc.task_logits is not None
                else {},
            )
        return results

    @staticmethod
    def _videos(probs: np.ndarray, files: Sequence[FileReport]) -> list[dict[str, Any]]:
        used = [f for f in files if f.status == "used"]
        return [
            {
                "file": used[j].path if j < len(used) else f"clip[{j}]",
                "view": VIEWS[int(p.argmax())],
                "confidence": float(p.max()),
            }
            for j, p in enumerate(probs)
        ]

    @staticmethod
    def _evidence(weights: np.ndarray, videos: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        evidence = {}
        for s, name in enumerate(MIL_SECTIONS):
            order = np.argsort(-weights[s], kind="stable")
            evidence[name] = [
                {"video": int(j), "file": videos[j]["file"], "weight": float(weights[s][j])} for j in order
            ]
        return evidence

    def _neighbours(self, neigh: Any, b: int, n: int) -> dict[str, list[dict[str, Any]]]:
        return {
            MIL_SECTIONS[row]: [
                {"study_id": self.bank.study_id(int(j)), "similarity": float(sc)}
                for j, sc in zip(neigh.ids[b, r, :n], neigh.scores[b, r, :n], strict=True)
            ]
            for r, row in enumerate(neigh.rows)
        }

    def _task_answers(
        self, logits: np.ndarray, weights: np.ndarray | None, videos: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Each head's answer for one study from its clips' logits (echoprime.training.heads)."""
        if logits.shape[1] != sum(t.outputs for t in self.tasks):
            raise ValueError(
                f"task logits have {logits.shape[1]} columns; this bundle's heads "
                f"{[t.name for t in self.tasks]} have {sum(t.outputs for t in self.tasks)}"
            )
        out, col = {}, 0
        files = [v["file"] for v in videos]
        for t in self.tasks:
            out[t.name] = study_answer(t, logits[:, col : col + t.outputs], weights, files)
            col += t.outputs
        return out


def search_bank(bank: Any, query: np.ndarray, k: int) -> list[dict[str, Any]]:
    """The ``k`` bank reports nearest a ``1 x D`` query embedding: study id, similarity, text.

    Raises:
        ValueError: a query of another width than the bank's, or ``k`` < 1.
    """
    if query.shape[1] != bank.dim:
        raise ValueError(f"query embedding has width {query.shape[1]}, the bank has {bank.dim}")
    k = min(int(k), len(bank))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    scores, ids = bank.search(query, k)
    return [
        {"study_id": bank.study_id(int(j)), "similarity": float(s), "report": bank.report_text(int(j))}
        for s, j in zip(scores[0], ids[0], strict=True)
    ]
