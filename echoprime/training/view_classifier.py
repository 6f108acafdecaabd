"""Training and evaluating the view classifier (plain loops; the Ray job only wires them)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
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


WEIGHTS_FILE = "view_classifier.safetensors"
"""The view classifier's weights, in a run's checkpoint and in ``BUNDLE/views/``."""


def view_model_overrides(name: str) -> dict[str, Any]:
    """Builder options of view classifier ``name``: the first frame only where the builder takes
    a frame count, as the release classifies views."""
    from echoprime.training.setup import _builder_takes

    return {"frames": 1} if _builder_takes(name, "frames") else {}


def run_view_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    train_batches: Callable[[int], Iterable[Mapping[str, Any]]],
    val_batches: Callable[[], Iterable[Mapping[str, Any]]],
    report: Callable[[dict[str, Any], Path | None], None],
    device: torch.device | str,
    spec: Mapping[str, Any],
    rank: int,
) -> None:
    """Train the view classifier for ``epochs`` epochs of at most ``steps_per_epoch`` steps.

    After each epoch every rank calls ``report(metrics, folder)``: the training loss and
    accuracy and, on rank 0, the validation accuracy; after the last, rank 0 adds the confusion
    matrix and per-view accuracy (as JSON text) and a folder holding the weights
    (:data:`WEIGHTS_FILE`, existing only during the call; None otherwise).
    """
    from safetensors.torch import save_model

    from echoprime.training.checkpoint import unwrap

    for epoch in range(epochs):
        tr = train_views_epoch(
            model, optimizer, train_batches(epoch), device, spec, max_steps=steps_per_epoch
        )
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": tr["loss"],
            "train_accuracy": tr["accuracy"],
        }
        with tempfile.TemporaryDirectory() as tmp:
            folder = None
            if rank == 0:
                ev = evaluate_views(unwrap(model), val_batches(), device, spec)
                metrics.update(val_accuracy=ev["accuracy"], val_n=ev["n"])
                if epoch == epochs - 1:
                    metrics["confusion"] = json.dumps(ev["confusion"])
                    metrics["per_view_accuracy"] = json.dumps(ev["per_view_accuracy"])
                    save_model(unwrap(model), str(Path(tmp) / WEIGHTS_FILE))
                    folder = Path(tmp)
            report(metrics, folder)


def write_views_stage(
    out: str | os.PathLike, weights: bytes, last: Mapping[str, Any], name: str, overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Write ``BUNDLE/views/`` (``out``): the weights, ``metrics.json`` from the last epoch's
    report ``last`` (:func:`run_view_epochs`) and the component record; returns the metrics."""
    from echoprime.staging import write_component

    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    (d / WEIGHTS_FILE).write_bytes(weights)
    metrics = {
        "val_accuracy": last["val_accuracy"],
        "val_clips": last["val_n"],
        "train_accuracy": last["train_accuracy"],
        "epochs": last["epoch"],
        "confusion": json.loads(last["confusion"]),
        "per_view_accuracy": json.loads(last["per_view_accuracy"]),
    }
    (d / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_component(
        d, "view_classifier", {"model": name, "overrides": dict(overrides), "file": f"views/{WEIGHTS_FILE}"}
    )
    return metrics


def views_summary(
    metrics: Mapping[str, Any], *, train_clips: int, stream_studies: int, t0: float
) -> dict[str, Any]:
    """The headline numbers of a view classifier run (``metrics``: :func:`write_views_stage`'s;
    ``t0``: the job's ``time.perf_counter()`` start)."""
    return {
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "train_accuracy": round(metrics["train_accuracy"], 4),
        "val_clips": metrics["val_clips"],
        "epochs": metrics["epochs"],
        "train_clips": train_clips,  # a stream's exact clip count
        "stream_studies": stream_studies,
        "chance": round(1 / len(VIEWS), 4),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
