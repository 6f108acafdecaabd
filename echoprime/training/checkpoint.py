"""Training checkpoints: one directory per checkpoint.

Layout::

    model.safetensors   the model's weights (safetensors; shared/tied tensors stored once)
    optimizer.pt        optimizer state (torch.save of a state dict of tensors and numbers)
    scheduler.pt        LR scheduler state (when there is a scheduler)
    config.yaml         the resolved run configuration (what built the model, the data spec)
    state.json          {"step", "epoch", "extra", "files"}: written last; "files" holds the
                        size of every other file, so a copy cut short is known (:func:`is_complete`)

``optimizer.pt``/``scheduler.pt`` are our own training state, not a shipped artifact: they are
read back with ``torch.load(weights_only=True)``, which refuses anything but tensors and plain
containers. A checkpoint is written to a temporary sibling directory and renamed into place, so
a crash mid-save never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import yaml
from safetensors.torch import load_model, save_model

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP/FSDP-style wrappers (``.module``) or ``torch.compile`` (``._orig_mod``)."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            return model


def save_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    step: int,
    epoch: int,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory (replacing one of the same name).

    Args:
        directory: where the checkpoint goes (created; its parent must be writable).
        model: the model (DDP wrappers are unwrapped).
        optimizer: optimizer whose state to keep, or None.
        scheduler: LR scheduler with ``state_dict()``, or None.
        step: optimizer steps taken.
        epoch: epochs completed.
        config: the resolved run config (plain, YAML-serialisable).
        extra: more JSON-serialisable state (metrics, data position).

    Returns:
        The checkpoint directory.
    """
    final = Path(directory)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        save_model(unwrap(model), str(tmp / MODEL_FILE))
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        if scheduler is not None:
            torch.save(scheduler.state_dict(), tmp / SCHEDULER_FILE)
        (tmp / CONFIG_FILE).write_text(yaml.safe_dump(config, sort_keys=False))
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        try:
            state = json.dumps(
                {"step": int(step), "epoch": int(epoch), "extra": extra or {}, "files": files}, indent=2
            )
        except TypeError as e:
            raise ValueError(f"checkpoint extra must be JSON-serialisable: {e}") from None
        (tmp / STATE_FILE).write_text(state)
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def is_complete(state: Mapping[str, Any], sizes: Mapping[str, int]) -> bool:
    """Whether a checkpoint folder is whole: ``state`` is its ``state.json`` and ``sizes`` the
    files the folder holds (name -> bytes).

    Every file ``state.json`` lists must be there at the size it was written with; a checkpoint
    copied only in part (an upload cut off by a dying worker) is not complete. A checkpoint
    written before ``state.json`` listed its files counts when it has its weights.
    """
    files = state.get("files")
    if not isinstance(files, Mapping):
        return MODEL_FILE in sizes
    return all(sizes.get(name) == size for name, size in files.items())


def load_checkpoint(
    directory: str | os.PathLike,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    map_location: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Restore a checkpoint written by :func:`save_checkpoint` into the given objects.

    Args:
        directory: the checkpoint directory.
        model: receives the weights (strictly: every key must match).
        optimizer: receives the optimizer state when given.
        scheduler: receives the scheduler state when given.
        map_location: where optimizer tensors are loaded.

    Returns:
        ``{"step", "epoch", "extra", "files", "config"}``.

    Raises:
        FileNotFoundError: not a checkpoint directory, or a requested part is missing.
        ValueError: the weights do not match the model.
    """
    d = Path(directory)
    if not (d / MODEL_FILE).is_file() or not (d / STATE_FILE).is_file():
        raise FileNotFoundError(f"{d} is not a checkpoint: expected {MODEL_FILE} and {STATE_FILE} in it")
    try:
        missing, unexpected = load_model(unwrap(model), str(d / MODEL_FILE), strict=False)
    except RuntimeError as e:  # shape mismatches
        raise ValueError(f"{d / MODEL_FILE} does not fit {type(unwrap(model)).__name__}: {e}") from None
    if missing or unexpected:
        raise ValueError(
            f"{d / MODEL_FILE} does not fit {type(unwrap(model)).__name__}: missing {sorted(missing)[:10]}, unexpected {sorted(unexpected)[:10]}"
        )
    for obj, name in ((optimizer, OPTIMIZER_FILE), (scheduler, SCHEDULER_FILE)):
        if obj is None:
            continue
        if not (d / name).is_file():
            raise FileNotFoundError(f"{d / name} is missing: the checkpoint was saved without it")
        obj.load_state_dict(torch.load(d / name, map_location=map_location, weights_only=True))
    state = json.loads((d / STATE_FILE).read_text())
    cfg_path = d / CONFIG_FILE
    state["config"] = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
    return state
