"""Learning-rate schedule: linear warm-up then cosine decay, as a pure function of the step.

``lr_at`` is nanoGPT's ``get_lr``: no state, so a resumed run recomputes the same rate from the
step stored in the checkpoint. ``cosine_scheduler`` wraps it in a ``LambdaLR`` for loops that
want a ``scheduler.step()``.
"""

from __future__ import annotations

import math

import torch


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_lr: float = 0.0) -> float:
    """The learning rate for optimizer step ``step`` (0-based).

    Linear warm-up from ``base_lr / warmup`` to ``base_lr`` over ``warmup`` steps, then cosine decay
    to ``min_lr`` at step ``total``; ``min_lr`` after that.

    Args:
        step: optimizer steps taken so far.
        base_lr: peak rate.
        warmup: warm-up steps (0 for none).
        total: step at which the decay reaches ``min_lr`` (>= warmup).
        min_lr: floor.
    """
    if step < 0 or warmup < 0 or total < warmup or base_lr < 0 or min_lr < 0:
        raise ValueError(
            f"invalid schedule: step={step}, base_lr={base_lr}, warmup={warmup}, total={total}, min_lr={min_lr}"
        )
    if step < warmup:
        return base_lr * (step + 1) / warmup
    if step >= total or total == warmup:
        return min_lr
    progress = (step - warmup) / (total - warmup)  # in [0, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def cosine_scheduler(
    optimizer: torch.optim.Optimizer, base_lr: float, warmup: int, total: int, min_lr: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`lr_at`; call ``step()`` after every optimizer step.

    Every param group starts at ``base_lr`` times its ``lr_scale`` (1 when it has none: layer-wise
    decay sets it, echoprime.training.finetune), and LambdaLR scales that by ``lr_at(...) / base_lr``.
    """
    if base_lr <= 0:
        raise ValueError(f"base_lr must be > 0, got {base_lr}")
    for g in optimizer.param_groups:
        g["lr"] = base_lr * float(g.get("lr_scale", 1.0))
        g["initial_lr"] = g["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_at(s, base_lr, warmup, total, min_lr) / base_lr
    )
