"""The model a training run trains and what each step runs: the optimizer, schedule and loss of
pretraining (CLIP, optionally with the findings' label loss) or of a fine-tuning head, and its
validation numbers."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from echoprime.training.batch import Augmentation
from echoprime.training.checkpoint import unwrap
from echoprime.training.finetune import apply_init, freeze_layers, freeze_text, param_groups

if TYPE_CHECKING:
    from echoprime.training.heads import Task
    from echoprime.training.run import RunPlan


def build_model(
    config: Mapping[str, Any],
    *,
    init_state: Mapping[str, torch.Tensor] | None = None,
    encoder: nn.Module | None = None,
) -> nn.Module:
    """The model a run trains, layers frozen as ``train.*`` asks: a fine-tuning head's
    ``TaskModel`` over ``encoder`` when ``config["task"]`` is set, else the config's EchoClip
    (with ``init_state``'s towers for ``--init``; a checkpoint restored later takes precedence).

    Args:
        config: the run's loop config (``train``, ``model``, ``spec``, ``vocab_size``, ``init``,
            ``task``: ``ray_jobs/_train.py`` builds it).
        init_state: the ``--init`` bundle's tensors (``config["init"]["towers"]`` are taken).
        encoder: the bundle's video tower a head reads.
    """
    tc, head = config["train"], config.get("task")
    if head is not None:
        from echoprime.training.heads import Task, TaskModel

        model: nn.Module = TaskModel(
            encoder, Task.from_dict(head["task"]), head["embed_dim"], head["normalize"]
        )
        freeze_layers(model.video_encoder, tc["video_trainable_layers"])
        return model
    from echoprime.training.setup import build_clip

    model = build_clip(config["model"], config["spec"], config["vocab_size"])
    if init_state is not None:
        apply_init(model, init_state, config["init"]["towers"])
    freeze_text(model, tc["text_trainable_layers"])
    return model


@dataclass
class Objective:
    """What each step runs: the (DDP-prepared) model, its optimizer, schedule and loss, and how
    batches become inputs on the device."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: Callable[..., Mapping[str, torch.Tensor]]
    device: torch.device
    spec: Mapping[str, Any]
    autocast_dtype: torch.dtype | None
    grad_clip: float | None
    augmentation: Augmentation
    task: Task | None = None

    @classmethod
    def create(
        cls,
        model: nn.Module,
        config: Mapping[str, Any],
        plan: RunPlan,
        rank: int,
        world: int,
        device: torch.device,
    ) -> Objective:
        """AdamW over ``model``'s parameter groups (``train.layer_decay``), the cosine schedule of
        ``plan``, and the loss: a head's task loss, CLIP's (global batch over ``world`` ranks),
        or CLIP's with the findings' label loss when ``train.label_weight_*`` asks for it."""
        from echoprime.losses import ClipLabelLoss, ClipLoss, LabelLoss
        from echoprime.training.labels import column_weights, regression_columns
        from echoprime.training.schedule import cosine_scheduler

        tc, head = config["train"], config.get("task")
        opt = torch.optim.AdamW(
            param_groups(unwrap(model), tc["layer_decay"]), lr=tc["lr"], weight_decay=tc["weight_decay"]
        )
        sched = cosine_scheduler(opt, tc["lr"], plan.warmup_steps, plan.total_steps, tc["min_lr"])
        loss_fn: Any = ClipLoss(rank=rank, world_size=world, gather_with_grad=True)
        task = None
        if head is not None:
            from echoprime.training.heads import Task, TaskLoss

            task = Task.from_dict(head["task"])
            loss_fn = TaskLoss(task)
        elif tc["label_weight_video"] > 0 or tc["label_weight_text"] > 0:
            loss_fn = ClipLabelLoss(
                loss_fn,
                LabelLoss(
                    regression_columns(tc["label_grades"]),
                    tc["label_weight_video"],
                    tc["label_weight_text"],
                    video_balance=tc.get("label_balance", 0.0),
                    column_weight=column_weights(tc["label_grades"], tc["label_grade_weight"]),
                ),
                pool_studies=tc["label_pool"] == "study",
            )
        return cls(
            model=model,
            optimizer=opt,
            scheduler=sched,
            loss_fn=loss_fn,
            device=device,
            spec=config["spec"],
            autocast_dtype=torch.bfloat16 if tc["precision"] == "bf16" else None,
            grad_clip=tc["grad_clip"],
            augmentation=config["augmentation"],
            task=task,
        )

    def validate(self, batches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
        """The validation numbers, keyed ``val_*``: a head's task metrics, or CLIP's retrieval."""
        if self.task is not None:
            from echoprime.training.heads import predict, task_metrics

            out = predict(
                self.model, batches, self.device, spec=self.spec, autocast_dtype=self.autocast_dtype
            )
            return {f"val_{k}": v for k, v in task_metrics(self.task, *out).items()}
        from echoprime.training.loop import embed_for_retrieval, retrieval_metrics

        emb = embed_for_retrieval(
            self.model, batches, self.device, spec=self.spec, autocast_dtype=self.autocast_dtype
        )
        return {f"val_{k}": v for k, v in retrieval_metrics(**emb).items()}

    def temperature(self) -> float | None:
        """CLIP's softmax temperature as the loss uses it (clamped); None for a head."""
        if self.task is not None:
            return None
        clip = unwrap(self.model)
        return float(1.0 / clip.logit_scale.detach().exp().clamp(max=math.exp(clip.max_logit_scale)))
