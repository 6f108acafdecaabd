"""A training run on one worker, without Ray: its plan and state, resuming, the epoch loop and
its policy (when to checkpoint, when to stop, what the history records).

Pretraining (CLIP, optionally with label heads) and a fine-tuning head (``echoprime.training.heads``)
run the same loop, each with its :class:`echoprime.training.objective.Objective` (the model, its
optimizer and loss) and the test hooks of :mod:`echoprime.training.faults`. The Ray job
(``ray_jobs/_worker.py``) prepares the model for DDP and passes in,
as a :class:`RunIO`, what only it can do: hand out the data shard's batches, report metrics
with a checkpoint folder to Ray Train, and move the driver's progress bar. Everything else here
is plain code, unit-tested on one process (``tests/unit/test_training_run.py``).

The checkpoint of a run is ours (:mod:`echoprime.training.checkpoint`); its ``extra`` holds the
:class:`RunState` minus the step, so a restarted group goes on from the exact step, inside an
epoch if need be (docs/training.md, "Resuming").
"""

from __future__ import annotations

import posixpath
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from echoprime.training.checkpoint import load_checkpoint, save_checkpoint, unwrap
from echoprime.training.faults import FaultHooks
from echoprime.training.finetune import should_stop
from echoprime.training.objective import Objective
from echoprime.training.resume import local_copy, newest_checkpoint

if TYPE_CHECKING:
    from echoprime.config import TrainCfg

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
