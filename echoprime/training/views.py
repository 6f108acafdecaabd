"""Training and evaluating the view classifier (plain loops; the Ray job only wires them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from echoprime.taxonomy import VIEWS
from echoprime.training.batch import normalize_clip


def view_ids(names: Iterable[Any]) -> np.ndarray:
    """View names -> indices into ``VIEWS`` (-1 for a missing or unknown view)."""
    index = {v: i for i, v in enumerate(VIEWS)}
    return np.array([index.get(str(n), -1) if n is not None else -1 for n in names], dtype=np.int64)


def _inputs(
    batch: Mapping[str, Any], spec: Mapping[str, Any], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    clip = torch.as_tensor(batch["clip"])
    x = (
        normalize_clip(clip, spec["mean"], spec["std"], device)
        if clip.dtype == torch.uint8
        else clip.to(device)
    )
    return x, torch.as_tensor(batch["view_idx"]).long().to(device)


def train_views_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    spec: Mapping[str, Any],
    *,
    max_steps: int | None = None,
) -> dict[str, float]:
    """One pass of cross-entropy training; rows with view index -1 (unknown) are ignored.

    Returns:
        ``loss`` (mean), ``accuracy`` (training, running), ``steps``, ``clips``.
    """
    device = torch.device(device)
    model.train()
    loss_sum = correct = seen = steps = 0
    for batch in batches:
        if max_steps is not None and steps >= max_steps:
            break
        x, y = _inputs(batch, spec, device)
        logits = model(x)
        loss = F.cross_entropy(logits, y, ignore_index=-1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        keep = y >= 0
        correct += int((logits.argmax(1)[keep] == y[keep]).sum())
        seen += int(keep.sum())
        loss_sum += float(loss.detach())
        steps += 1
    return {
        "loss": loss_sum / max(steps, 1),
        "accuracy": correct / max(seen, 1),
        "steps": steps,
        "clips": seen,
    }


@torch.no_grad()
def evaluate_views(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    device: torch.device | str,
    spec: Mapping[str, Any],
) -> dict[str, Any]:
    """Accuracy and the ``V x V`` confusion matrix (rows: true view, columns: predicted)."""
    device = torch.device(device)
    was = model.training
    model.eval()
    conf = np.zeros((len(VIEWS), len(VIEWS)), dtype=np.int64)
    for batch in batches:
        x, y = _inputs(batch, spec, device)
        pred = model(x).argmax(1)
        for t, p in zip(y.cpu().tolist(), pred.cpu().tolist(), strict=True):
            if t >= 0:
                conf[t, p] += 1
    model.train(was)
    n = int(conf.sum())
    per_view = {
        v: (float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None) for i, v in enumerate(VIEWS)
    }
    return {
        "accuracy": float(np.trace(conf) / n) if n else float("nan"),
        "n": n,
        "confusion": conf.tolist(),
        "per_view_accuracy": per_view,
        "views": list(VIEWS),
    }
