"""Shard rows into training columns, and what a split holds for a run, without Ray.

The ``*_columns`` functions map a batch of shard rows (a dict of columns, as Ray Data's
``map_batches`` hands them) to the columns a run's batches carry
(:data:`echoprime.training.run.BATCH_DTYPES`); the jobs pass them to ``map_batches`` as they
are. The scans read a split's small columns (never its clips) so the driver can refuse a run
before a worker starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow.parquet as pq

from echoprime import storage
from echoprime.training.setup import study_index

if TYPE_CHECKING:
    from echoprime.training.heads import Task

SHARD_COLUMNS: list[str] = ["clip", "study_id", "report", "labels"]
"""The shard columns pretraining reads (:func:`token_columns` turns them into model inputs)."""

TASK_COLUMNS: list[str] = ["clip", "study_id", "report", "labels", "view"]
"""The shard columns a fine-tuning head reads (:func:`task_columns`)."""


def token_columns(
    batch: dict[str, Any], tokenizer: Any, seed: int, grades: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Shard rows -> ``clip``, the report's tokens, the study index and the label row.

    A plain function (Ray tasks, not an actor pool): tokenising is cheap, and tasks need no
    start-up of their own. Long reports get a random window of whole sections per batch, drawn
    from ``seed`` and the batch's first study.
    """
    from echoprime.training.labels import label_matrix

    idx = np.array([study_index(str(s)) for s in batch["study_id"]], dtype=np.int64)
    rng = np.random.default_rng([seed, int(idx[0]) % (2**32)]) if len(idx) else None
    enc = tokenizer(list(batch["report"]), rng=rng)
    return {
        "clip": batch["clip"],
        "input_ids": enc["input_ids"].numpy(),
        "attention_mask": enc["attention_mask"].numpy(),
        "token_type_ids": enc["token_type_ids"].numpy(),
        "study_idx": idx,
        "labels": label_matrix(list(batch["labels"]), list(batch["report"]), grades),
    }


def task_columns(batch: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """Shard rows -> ``clip``, ``study_idx`` and the task's target as ``labels`` (``N x 1``);
    rows that say nothing about the task are dropped. ``task`` is ``Task.to_dict()``."""
    from echoprime.training.heads import Task, task_targets

    t = Task.from_dict(task)
    y = task_targets(t, list(batch["labels"]), list(batch["view"]), list(batch["report"]))
    keep = np.isfinite(y[:, 0])
    idx = np.array([study_index(str(s)) for s in batch["study_id"]], dtype=np.int64)
    return {"clip": batch["clip"][keep], "study_idx": idx[keep], "labels": y[keep]}


def view_columns(batch: dict[str, Any]) -> dict[str, Any]:
    """Shard rows -> ``clip`` and ``view_idx`` (-1 for no view), for the view classifier."""
    from echoprime.training.view_classifier import view_ids

    return {"clip": batch["clip"], "view_idx": view_ids(batch["view"])}


def split_reports(files: list[str]) -> dict[str, str]:
    """Each study's report in a split's files (study id -> report), read without the clips."""
    reports: dict[str, str] = {}
    for f in files:
        loc = storage.locate(f)
        t = pq.read_table(loc.path, filesystem=loc.fs, columns=["study_id", "report"])
        reports.update(zip(t.column("study_id").to_pylist(), t.column("report").to_pylist(), strict=True))
    return reports


def labelled(files: list[str], task: Task) -> tuple[int, int, dict[str, int]]:
    """(rows with a target, studies with one, class counts) of a split for ``task``, read
    without its clips; the counts are in the task's class order."""
    from echoprime.training.heads import task_targets

    rows, studies, counts = 0, set(), {}
    for f in files:
        loc = storage.locate(f)
        t = pq.read_table(loc.path, filesystem=loc.fs, columns=["study_id", "labels", "view", "report"])
        y = task_targets(task, *(t.column(c).to_pylist() for c in ("labels", "view", "report")))[:, 0]
        keep = np.isfinite(y)
        rows += int(keep.sum())
        studies.update(s for s, k in zip(t.column("study_id").to_pylist(), keep, strict=True) if k)
        if task.kind != "regression":
            for v in y[keep]:
                name = task.classes[int(v)] if task.classes else str(int(v))
                counts[name] = counts.get(name, 0) + 1
    if task.classes:  # in the scale's (or the views') order
        counts = {c: counts[c] for c in task.classes if c in counts}
    return rows, len(studies), counts


def training_reports(shards: str, files: list[str]) -> list[str]:
    """The reports of a train split (one per study), the corpus a tokenizer learns from.

    Raises:
        ShardError: the split holds no report (label-only shards: a head's job, not pretraining's).
    """
    from echoprime.data.shards import ShardError

    reports = split_reports(files)
    if not any(r.strip() for r in reports.values()):
        raise ShardError(
            f"the train split of {shards} holds no report (label-only shards): pretraining learns from "
            "reports; fit a supervised head on these with `echoprime finetune --task NAME` instead"
        )
    return list(reports.values())


def check_labelled(shards: str, task: Task, splits: dict[str, tuple[int, dict[str, int]]]) -> None:
    """Refuse a head whose splits cannot train or score it.

    Args:
        shards: the shards' location (for the message).
        task: the head's task.
        splits: split name -> (rows labelled for the task, class counts), from :func:`labelled`.

    Raises:
        ValueError: a split with no labelled row, or a binary task with one class only.
    """
    for split, (n, classes) in splits.items():
        if n == 0:
            raise ValueError(
                f"the {split} split of {shards} has no row labelled for task {task.name!r} "
                f"({'the view column' if task.kind == 'views' else 'labels key ' + repr(task.target if task.kind != 'graded' else task.target + '_grade')})"
            )
        if task.kind == "binary" and len(classes) < 2:
            raise ValueError(
                f"the {split} split of {shards} holds only {classes} for {task.name!r}: a binary head needs both classes"
            )
