"""echoprime.training: the plain training loop, LR schedule, batch preparation and checkpoints."""

from __future__ import annotations

from echoprime.training.batch import Augmentation, normalize_clip, prepare_batch
from echoprime.training.checkpoint import load_checkpoint, save_checkpoint, unwrap
from echoprime.training.loop import (
    EpochStats,
    StepInfo,
    embed_for_retrieval,
    evaluate_retrieval,
    retrieval_metrics,
    train_one_epoch,
)
from echoprime.training.schedule import cosine_scheduler, lr_at

__all__ = [
    "Augmentation",
    "EpochStats",
    "StepInfo",
    "cosine_scheduler",
    "embed_for_retrieval",
    "evaluate_retrieval",
    "load_checkpoint",
    "lr_at",
    "normalize_clip",
    "prepare_batch",
    "retrieval_metrics",
    "save_checkpoint",
    "train_one_epoch",
    "unwrap",
]
