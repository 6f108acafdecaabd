"""A training run on one worker, without Ray: the model and its objective, resuming, the epoch
loop and its policy (when to checkpoint, when to stop, what the history records).

Pretraining (CLIP, optionally with label heads) and a fine-tuning head (``echoprime.training.heads``)
run the same loop. The Ray job (``ray_jobs/_worker.py``) prepares the model for DDP and passes in,
as a :class:`RunIO`, what only it can do: hand out the data shard's batches, report metrics
with a checkpoint folder to Ray Train, and move the driver's progress bar. Everything else here
is plain code, unit-tested on one process (``tests/unit/test_training_run.py``).

The checkpoint of a run is ours (:mod:`echoprime.training.checkpoint`); its ``extra`` holds the
:class:`RunState` minus the step, so a restarted group goes on from the exact step, inside an
epoch if need be (docs/training.md, "Resuming").
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn as nn

from echoprime.training.batch import Augmentation
from echoprime.training.checkpoint import load_checkpoint, save_checkpoint, unwrap
from echoprime.training.finetune import apply_init, freeze_layers, freeze_text, param_groups, should_stop
from echoprime.training.resume import local_copy, newest_checkpoint

if TYPE_CHECKING:
    from echoprime.config import TrainCfg
    from echoprime.training.heads import Task

PROGRESS_EVERY = 2
"""Steps between two updates of the driver's progress bar (rank 0 only)."""


@dataclass(frozen=True)
class RunPlan:
    """How long a run is and when it checkpoints and stops, fixed by the driver before a worker
    starts (``train.*`` and the number of training rows).

    Attributes:
        steps_per_epoch: optimizer steps of one epoch on each worker.
        total_steps: steps of the whole run (``train.max_steps`` can end it inside an epoch).
        warmup_steps: the learning rate's warm-up, at most a quarter of the run.
        epochs: ``train.epochs``.
        checkpoint_every_steps: a checkpoint inside an epoch every this many steps.
        time_budget_s: stop at the first epoch end after this many seconds (None: no budget).
        early_stop_metric: the validation number early stopping watches.
        early_stop_patience: epochs without a better one before stopping (None: never).
    """

    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    epochs: int
    checkpoint_every_steps: int
    time_budget_s: float | None = None
    early_stop_metric: str = "val_v2t_r@10"
    early_stop_patience: int | None = None

    @classmethod
    def for_rows(cls, n_train: int, train: TrainCfg) -> RunPlan:
        """The plan of ``train`` over ``n_train`` training rows split equally between the workers.

        ``steps_per_epoch`` is 0 when the rows do not fill one batch per worker: the caller
        refuses that with its own words for what was too small.
        """
        steps_per_epoch = n_train // train.num_workers // train.batch_size
        total = steps_per_epoch * train.epochs
        if train.max_steps is not None:
            total = min(total, train.max_steps)
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            # A short run warms up for at most a quarter of its steps (a warm-up longer than the
            # run would never reach the base learning rate).
            warmup_steps=min(train.warmup_steps, total // 4),
            epochs=train.epochs,
            checkpoint_every_steps=train.checkpoint_every_steps,
            time_budget_s=train.time_budget_s,
            early_stop_metric=train.early_stop_metric,
            early_stop_patience=train.early_stop_patience,
        )

    def running(self, state: RunState) -> bool:
        """Another epoch starts (or a resumed one goes on)."""
        return state.epoch < self.epochs and state.step < self.total_steps

    def steps_left_in_epoch(self, state: RunState) -> int:
        """Steps the current epoch still takes; ``total_steps`` can make it the last, cut short."""
        return min(self.steps_per_epoch - state.step_in_epoch, self.total_steps - state.step)

    def checkpoint_after_step(self, state: RunState) -> bool:
        """A checkpoint inside an epoch after the step ``state`` has just counted: every
        ``checkpoint_every_steps`` steps, except on the epoch's or the run's last step, whose
        epoch-end checkpoint follows right after."""
        return (
            state.step % self.checkpoint_every_steps == 0
            and state.step_in_epoch < self.steps_per_epoch
            and state.step < self.total_steps
        )

    def over_budget(self, elapsed_s: float) -> bool:
        """The run's time budget is spent (checked at epoch ends)."""
        return self.time_budget_s is not None and elapsed_s >= self.time_budget_s

    def no_progress(self, history: list[Mapping[str, Any]]) -> bool:
        """Early stopping: the watched number has not improved for ``early_stop_patience`` epochs."""
        return should_stop(history, self.early_stop_metric, self.early_stop_patience)


@dataclass
class RunState:
    """Where a run is; saved in every checkpoint (the step as the checkpoint's own, the rest in
    its ``extra``) and restored from it.

    Attributes:
        step: optimizer steps taken by the run.
        epoch: epochs finished.
        step_in_epoch: steps taken in the current epoch (0 at an epoch's start).
        history: one entry per event (``init``, ``resume``, ``epoch``), as metrics.json keeps them.
        elapsed: training seconds so far, over restarts (the time budget counts these).
        stopped_on_budget: the run ended at an epoch end on its time budget.
        stopped_early: the run ended on early stopping.
    """

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    stopped_on_budget: bool = False
    stopped_early: bool = False

    def extra(self) -> dict[str, Any]:
        """The checkpoint's ``extra``: everything but the step (a stop is recorded only once made)."""
        out: dict[str, Any] = {
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "history": self.history,
            "elapsed": self.elapsed,
        }
        if self.stopped_on_budget:
            out["stopped_on_budget"] = True
        if self.stopped_early:
            out["stopped_early"] = True
        return out

    @classmethod
    def from_checkpoint(cls, step: int, extra: Mapping[str, Any]) -> RunState:
        """The state a checkpoint of ``step`` with ``extra`` (:meth:`extra`) recorded."""
        return cls(
            step=int(step),
            epoch=int(extra.get("epoch", 0)),
            step_in_epoch=int(extra.get("step_in_epoch", 0)),
            history=list(extra.get("history", [])),
            elapsed=float(extra.get("elapsed", 0.0)),
            stopped_on_budget=bool(extra.get("stopped_on_budget", False)),
            stopped_early=bool(extra.get("stopped_early", False)),
        )

    def count_step(self) -> None:
        """One more optimizer step."""
        self.step += 1
        self.step_in_epoch += 1

    def end_epoch(self) -> None:
        """An epoch finished: the next one starts at its first batch."""
        self.epoch += 1
        self.step_in_epoch = 0

    def stop(self, *, budget: bool, early: bool, epochs: int) -> None:
        """End the run at this epoch end (the budget wins when both say stop)."""
        if budget or early:
            if budget:
                self.stopped_on_budget = True
            else:
                self.stopped_early = True
            self.epoch = epochs


@dataclass(frozen=True)
class FaultHooks:
    """Test hooks of a run (``run_pretrain(fault=...)``); all off by default.

    Attributes:
        probe: a folder where each rank writes the optimizer and scheduler state it restored
            (:meth:`record_restored`) and, per step, the clips it took (:meth:`log_batches`).
        pause_at_step: every rank waits once after this step (:meth:`after_step`) while a test
            removes a node (tests/ray/_multinode.py).
        pause_dir: where a pausing rank writes ``paused-rank{rank}.json``.
        pause_s: the longest wait.
        node_id: the worker's node, written into the pause mark (the job knows it).
    """

    probe: Path | None = None
    pause_at_step: int | None = None
    pause_dir: Path | None = None
    pause_s: float = 240.0
    node_id: str = ""

    @classmethod
    def from_dict(cls, fault: Mapping[str, Any] | None, node_id: str = "") -> FaultHooks:
        """The hooks of ``run_pretrain``'s ``fault`` dict (``probe``, ``pause_at_step``,
        ``pause_dir``, ``pause_s``)."""
        f = fault or {}
        return cls(
            probe=Path(f["probe"]) if f.get("probe") else None,
            pause_at_step=f.get("pause_at_step"),
            pause_dir=Path(f["pause_dir"]) if f.get("pause_dir") else None,
            pause_s=float(f.get("pause_s", 240.0)),
            node_id=node_id,
        )

    def pauses_after(self, step: int) -> bool:
        """This step is the one every rank waits after."""
        return self.pause_at_step is not None and self.pause_at_step == step

    def after_step(self, rank: int, step: int) -> None:
        """Once per rank (the first time it reaches ``pause_at_step``), write
        ``pause_dir/paused-rank{rank}.json`` (rank, step, node id, pid) and wait there for at most
        ``pause_s`` seconds while the test removes a node. Every rank stops after the same
        optimizer step, so the test knows what the run had done; the restarted group goes on."""
        if not self.pauses_after(step) or self.pause_dir is None:
            return
        mark = self.pause_dir / f"paused-rank{rank}.json"
        if mark.exists():
            return
        tmp = mark.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rank": rank, "step": step, "node_id": self.node_id, "pid": os.getpid()}))
        tmp.rename(mark)
        deadline = time.monotonic() + self.pause_s
        while time.monotonic() < deadline:
            time.sleep(0.2)

    def record_restored(self, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int) -> None:
        """The optimizer and scheduler state as restored on this rank, to ``probe``."""
        if self.probe is not None:
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                self.probe / f"restored-rank{rank}.pt",
            )

    def log_batches(
        self,
        batches: Iterable[Mapping[str, Any]],
        rank: int,
        state: RunState,
        optimizer: torch.optim.Optimizer,
    ) -> Iterable[Mapping[str, Any]]:
        """With a ``probe``: before each step, one JSON line with the step it feeds, the learning
        rate it will use and a CRC32 of each of its clips, so a test can see what a resumed run
        took; without one, ``batches`` unchanged."""
        if self.probe is None:
            return batches
        return _logged(batches, self.probe / f"batches-rank{rank}.jsonl", state, optimizer)


def _logged(
    batches: Iterable[Mapping[str, Any]], path: Path, state: RunState, optimizer: torch.optim.Optimizer
) -> Iterator[Mapping[str, Any]]:
    for b in batches:
        rec = {
            "epoch": state.epoch,
            "step": state.step + 1,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "clips": [zlib.crc32(c.numpy().tobytes()) for c in b["clip"]],
        }
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        yield b


# ------------------------------------------------------------------------------- the model
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


# ------------------------------------------------------------------------------- the run
BATCH_DTYPES: dict[str, torch.dtype] = {
    "clip": torch.uint8,
    "input_ids": torch.long,
    "attention_mask": torch.long,
    "token_type_ids": torch.long,
    "study_idx": torch.long,
    "labels": torch.float32,
}
"""The columns a run's batches carry and their tensor types (``iter_torch_batches(dtypes=...)``)."""


def batch_dtypes(text: bool) -> dict[str, torch.dtype]:
    """:data:`BATCH_DTYPES`, without the report's tokens for a head's label-only rows."""
    if text:
        return dict(BATCH_DTYPES)
    return {k: BATCH_DTYPES[k] for k in ("clip", "study_idx", "labels")}


def shuffle_seed(seed: int, epoch: int, rank: int) -> int:
    """The local shuffle seed of a rank's epoch: the same on a resumed run, so an epoch resumed
    inside passes over the very batches its checkpoint had taken."""
    return seed + epoch * 97 + rank


@dataclass(frozen=True)
class RunIO:
    """What only the job can do, as callables (Ray Train in ``ray_jobs/_worker.py``).

    Attributes:
        train_batches: an epoch's batches of this rank's shard (``epoch`` seeds its shuffle).
        val_batches: the validation split's batches (rank 0 validates).
        report: called by every rank after each checkpoint: the metrics, and rank 0's
            checkpoint folder (None on the others), which exists only during the call.
        progress: ``(step, total, postfix)`` for the driver's bar, or None.
    """

    train_batches: Callable[[int], Iterable[Mapping[str, Any]]]
    val_batches: Callable[[], Iterable[Mapping[str, Any]]]
    report: Callable[[dict[str, Any], Path | None], None]
    progress: Callable[[int, int, str], None] | None = None


def _broadcast(obj: Any, world: int) -> Any:
    """Rank 0's ``obj`` on every rank (the process group of DDP)."""
    if world <= 1:
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def restore(
    obj: Objective, run_uri: str, rank: int, world: int, faults: FaultHooks
) -> tuple[RunState, str | None]:
    """The state a (re)started worker goes on from, and the checkpoint it came from (None: a
    fresh run). Every rank restores the checkpoint rank 0 found in the run's folder
    (:func:`echoprime.training.resume.newest_checkpoint` says why not Ray's own registry)."""
    found = _broadcast(newest_checkpoint(run_uri) if rank == 0 else None, world)
    if found is None:
        return RunState(), None
    uri = found[0]
    with tempfile.TemporaryDirectory() as tmp:
        st = load_checkpoint(
            local_copy(uri, Path(tmp)),
            unwrap(obj.model),
            obj.optimizer,
            obj.scheduler,
            map_location=obj.device,
        )
    state = RunState.from_checkpoint(st["step"], st["extra"])
    state.history.append(
        {
            "kind": "resume",
            "step": state.step,
            "epoch": state.epoch,
            "skipped_batches": state.step_in_epoch,
            "lr": float(obj.optimizer.param_groups[0]["lr"]),
            "checkpoint": posixpath.basename(uri),
        }
    )
    faults.record_restored(obj.optimizer, obj.scheduler, rank)
    return state, uri


def epoch_record(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """An epoch's metrics as the history keeps them: numbers as floats (JSON), text as it is."""
    return {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}


def run_epochs(
    obj: Objective,
    plan: RunPlan,
    state: RunState,
    io: RunIO,
    *,
    rank: int,
    world: int,
    seed: int,
    config_dict: Mapping[str, Any],
    faults: FaultHooks | None = None,
    init_source: str | None = None,
) -> RunState:
    """Train from ``state`` to the end of ``plan``: the run's loop on one rank.

    Each epoch: the batches of ``io.train_batches(epoch)`` (the first ``step_in_epoch`` passed
    over on a resumed epoch: the checkpoint's model took them), a checkpoint every
    ``checkpoint_every_steps`` steps, then validation on rank 0, the history entry, the stop
    decision (time budget or early stopping, rank 0's taken by all) and the epoch's checkpoint.
    Before the first step of a run started from a bundle (``init_source``), the history gets the
    starting model's numbers.

    Args:
        obj: the model and its objective.
        plan: the run's length and policy.
        state: where the run is (:func:`restore`); updated in place and returned.
        io: data, reports and progress from the job.
        rank: this worker's rank; rank 0 validates, saves and decides.
        world: the number of workers.
        seed: the run's seed (augmentation and shuffling draws).
        config_dict: the resolved config, saved in each checkpoint.
        faults: test hooks.
        init_source: the bundle a fine-tune starts from, or None.
    """
    import itertools

    from echoprime.training.loop import train_one_epoch

    faults = faults or FaultHooks()
    start = time.monotonic() - state.elapsed

    def checkpoint_and_report(metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            folder = None
            if rank == 0:
                save_checkpoint(
                    tmp,
                    obj.model,
                    obj.optimizer,
                    obj.scheduler,
                    state.step,
                    state.epoch,
                    dict(config_dict),
                    extra=state.extra(),
                )
                folder = Path(tmp)
            io.report(metrics, folder)

    def progress(postfix: str) -> None:
        if rank == 0 and io.progress is not None:
            io.progress(state.step, plan.total_steps, postfix)

    if init_source is not None and state.step == 0 and rank == 0:
        # The starting model's numbers, so the fine-tune's gain is visible (and step 0 is its weights).
        state.history.append(
            {"kind": "init", "step": 0, "bundle": init_source, **obj.validate(io.val_batches())}
        )
    skip = state.step_in_epoch  # batches of this epoch that the restored model has already taken
    gen = torch.Generator().manual_seed(seed * 1000 + rank)
    while plan.running(state):

        def on_step(info: Any) -> bool:
            state.count_step()
            if state.step % PROGRESS_EVERY == 0:
                progress(f"epoch {state.epoch + 1}/{plan.epochs} loss {info.loss:.3f}")
            faults.after_step(rank, state.step)
            if plan.checkpoint_after_step(state):
                state.elapsed = time.monotonic() - start
                checkpoint_and_report(
                    {"step": state.step, "epoch": state.epoch, "loss": info.loss, "kind": "step"}
                )
            return False

        remaining = plan.steps_left_in_epoch(state)
        batches: Iterable[Mapping[str, Any]] = io.train_batches(state.epoch)
        if skip:
            # Resumed inside this epoch: its first `skip` batches went into the checkpoint's model.
            # The same split and shuffle seed give the same order (docs/training.md, "Resuming"),
            # so passing over them continues the epoch instead of replaying its start.
            batches = itertools.islice(batches, skip, None)
            skip = 0
        stats = train_one_epoch(
            obj.model,
            obj.loss_fn,
            obj.optimizer,
            obj.scheduler,
            faults.log_batches(batches, rank, state, obj.optimizer),
            obj.device,
            spec=obj.spec,
            autocast_dtype=obj.autocast_dtype,
            grad_clip=obj.grad_clip,
            on_step=on_step,
            max_steps=remaining,
            augmentation=obj.augmentation,
            generator=gen,
        )
        state.end_epoch()
        metrics: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.step,
            "loss": stats.loss,
            "steps": stats.steps,
            "clips_per_s": stats.clips_per_s * world,
            "data_wait_frac": stats.data_wait_frac,
            "lr": stats.lr,
            "kind": "epoch",
        }
        temperature = obj.temperature()
        if temperature is not None:
            metrics["temperature"] = temperature
        if rank == 0:
            metrics.update(obj.validate(io.val_batches()))
        state.elapsed = time.monotonic() - start
        metrics["elapsed_s"] = state.elapsed
        state.history.append(epoch_record(metrics))
        # Stop on the time budget or early (no better validation for a while) at an epoch end,
        # on every rank together (rank 0's clock and validation decide).
        flags = torch.tensor(
            [float(plan.over_budget(state.elapsed)), float(rank == 0 and plan.no_progress(state.history))]
        )
        if world > 1:
            torch.distributed.broadcast(flags, src=0)
        state.stop(budget=bool(flags[0]), early=bool(flags[1]), epochs=plan.epochs)
        checkpoint_and_report(metrics)
        shown = (
            f"val R@10 {metrics['val_v2t_r@10']:.2f}"
            if "val_v2t_r@10" in metrics
            else f"val score {metrics.get('val_score', float('nan')):.3f}"
        )
        progress(f"epoch {state.epoch} loss {stats.loss:.3f} {shown}")
    return state
