"""The policy of a training run (echoprime.training.run, objective, faults), without Ray: the plan's step
arithmetic, when a checkpoint is written, when the run stops, what a checkpoint keeps, the
fault hooks, and a whole run on one process with the job's callables replaced by lists."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from echoprime.config import TrainCfg
from echoprime.taxonomy import RELEASE_MEAN, RELEASE_STD
from echoprime.training.batch import Augmentation
from echoprime.training.checkpoint import save_checkpoint
from echoprime.training.faults import FaultHooks
from echoprime.training.objective import Objective, build_model
from echoprime.training.resume import newest_checkpoint
from echoprime.training.run import (
    RunIO,
    RunPlan,
    RunState,
    batch_dtypes,
    epoch_record,
    restore,
    run_epochs,
    shuffle_seed,
)

SPEC = {"mean": list(RELEASE_MEAN), "std": list(RELEASE_STD), "frames": 4, "size": 16}


def _plan(**kw) -> RunPlan:
    base = {
        "steps_per_epoch": 5,
        "total_steps": 12,
        "warmup_steps": 1,
        "epochs": 3,
        "checkpoint_every_steps": 2,
    }
    return RunPlan(**{**base, **kw})


def test_plan_splits_rows_between_workers_and_caps_steps_and_warmup():
    tc = TrainCfg(num_workers=2, batch_size=4, epochs=3, warmup_steps=20)
    plan = RunPlan.for_rows(100, tc)  # 100 // 2 // 4
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (12, 36, 9)  # warm-up <= a quarter
    capped = RunPlan.for_rows(100, tc.model_copy(update={"max_steps": 10}))
    assert (capped.total_steps, capped.warmup_steps) == (10, 2)
    assert RunPlan.for_rows(7, tc).steps_per_epoch == 0  # less than one batch per worker: the job refuses it
    assert plan.epochs == 3 and plan.checkpoint_every_steps == tc.checkpoint_every_steps


def test_an_epoch_cut_short_by_the_run_and_a_resumed_epoch():
    plan = _plan()
    assert plan.steps_left_in_epoch(RunState()) == 5
    assert plan.steps_left_in_epoch(RunState(step=8, epoch=1, step_in_epoch=3)) == 2  # the epoch's rest
    assert plan.steps_left_in_epoch(RunState(step=10, epoch=2)) == 2  # max_steps ends the last epoch early
    assert plan.running(RunState(step=11, epoch=2)) and not plan.running(RunState(step=12, epoch=2))
    assert not plan.running(RunState(step=3, epoch=3))


def test_a_checkpoint_inside_an_epoch_but_never_on_its_last_step():
    plan = _plan()  # every 2 steps, 5 steps an epoch, 12 in all
    kept = []
    state = RunState()
    while plan.running(state):
        for _ in range(plan.steps_left_in_epoch(state)):
            state.count_step()
            if plan.checkpoint_after_step(state):
                kept.append(state.step)
        state.end_epoch()
    # step 10 ends the second epoch and step 12 the run: their epoch-end checkpoints follow
    assert kept == [2, 4, 6, 8]
    assert state.step == 12 and state.epoch == 3


def test_the_time_budget_and_early_stopping_end_the_run_at_an_epoch_end():
    plan = _plan(time_budget_s=60.0, early_stop_metric="val_score", early_stop_patience=2)
    assert not plan.over_budget(59.9) and plan.over_budget(60.0)
    assert not _plan().over_budget(1e9)  # no budget
    hist = [{"kind": "epoch", "val_score": v} for v in (0.5, 0.7, 0.6, 0.65)]
    assert plan.no_progress(hist) and not plan.no_progress(hist[:3])
    state = RunState(epoch=1)
    state.stop(budget=False, early=False, epochs=3)
    assert state.epoch == 1 and not state.stopped_on_budget
    state.stop(budget=True, early=True, epochs=3)  # the budget is what is recorded
    assert state.epoch == 3 and state.stopped_on_budget and not state.stopped_early


def test_a_checkpoint_keeps_the_state_and_gives_it_back():
    state = RunState(step=7, epoch=1, step_in_epoch=2, history=[{"kind": "epoch"}], elapsed=3.5)
    extra = state.extra()
    assert list(extra) == ["epoch", "step_in_epoch", "history", "elapsed"]  # no stop until one is made
    assert RunState.from_checkpoint(7, json.loads(json.dumps(extra))) == state
    state.stopped_early = True
    assert state.extra()["stopped_early"] is True
    assert RunState.from_checkpoint(7, state.extra()).stopped_early


def test_history_numbers_are_floats_and_text_stays():
    rec = epoch_record({"epoch": 2, "loss": np.float32(0.5), "kind": "epoch", "confusion": [1]})
    assert rec == {"epoch": 2.0, "loss": 0.5, "kind": "epoch", "confusion": [1]}
    assert type(rec["epoch"]) is float and type(rec["loss"]) is float


def test_shuffle_seed_and_dtypes():
    assert shuffle_seed(3, 2, 1) == 3 + 2 * 97 + 1
    assert set(batch_dtypes(text=False)) == {"clip", "study_idx", "labels"}
    assert batch_dtypes(text=True)["input_ids"] == torch.long


def test_fault_hooks_pause_once_per_rank_and_log_batches(tmp_path):
    hooks = FaultHooks.from_dict(
        {"pause_at_step": 3, "pause_dir": str(tmp_path), "pause_s": 0.0}, node_id="n1"
    )
    assert not hooks.pauses_after(2) and hooks.pauses_after(3)
    hooks.after_step(rank=1, step=2)
    assert not (tmp_path / "paused-rank1.json").exists()
    hooks.after_step(rank=1, step=3)
    mark = json.loads((tmp_path / "paused-rank1.json").read_text())
    assert mark["rank"] == 1 and mark["step"] == 3 and mark["node_id"] == "n1"
    t0 = time.monotonic()
    FaultHooks.from_dict({"pause_at_step": 3, "pause_dir": str(tmp_path), "pause_s": 30.0}).after_step(1, 3)
    assert time.monotonic() - t0 < 5  # the restarted group does not wait again
    assert FaultHooks.from_dict(None) == FaultHooks()
    batches = [{"clip": torch.zeros(2, 1, dtype=torch.uint8)}]
    assert FaultHooks().log_batches(batches, 0, RunState(), None) is batches  # no probe: untouched


# ------------------------------------------------------------------------------- a whole run
def _config(tmp_path: Path, **train) -> dict:
    tc = TrainCfg(
        batch_size=4,
        epochs=2,
        lr=1e-3,
        warmup_steps=1,
        checkpoint_every_steps=2,
        storage_path=str(tmp_path),
        **train,
    )
    model = {
        "video_encoder": "echoprime_tiny",
        "text_encoder": "tiny_bag",
        "embed_dim": 16,
        "init_logit_scale": 2.6593,
        "max_logit_scale": 4.6052,
        "max_tokens": 16,
        "video_options": {"frames": 4, "size": 16},
    }
    return {
        "train": tc.model_dump(),
        "augmentation": Augmentation.from_train(tc),
        "model": model,
        "spec": SPEC,
        "vocab_size": 50,
        "seed": 0,
        "config_dict": {"seed": 0},
    }


def _batches(n: int, seed: int) -> list[dict]:
    g = np.random.default_rng(seed)
    out = []
    for i in range(n):
        study = torch.arange(4) + 4 * i
        out.append(
            {
                "clip": torch.from_numpy(g.integers(0, 255, (4, 4, 16, 16, 3), dtype=np.uint8)),
                "input_ids": torch.from_numpy(g.integers(1, 50, (4, 16))),
                "attention_mask": torch.ones(4, 16, dtype=torch.long),
                "token_type_ids": torch.zeros(4, 16, dtype=torch.long),
                "study_idx": study,
            }
        )
    return out


def test_a_run_checkpoints_validates_and_resumes_where_it_stopped(tmp_path):
    torch.manual_seed(0)
    config = _config(tmp_path)
    plan = _plan(steps_per_epoch=3, total_steps=6, epochs=2, checkpoint_every_steps=2)
    obj = Objective.create(build_model(config), config, plan, 0, 1, torch.device("cpu"))
    run_uri = tmp_path / "run"
    reports: list[tuple[dict, bool]] = []
    shown: list[tuple[int, str]] = []
    n_ckpt = [0]

    def report(metrics, folder):
        reports.append((metrics, folder is not None))
        if folder is not None:  # as Ray Train keeps it: a copy under the run's folder
            n_ckpt[0] += 1
            target = run_uri / f"checkpoint_{n_ckpt[0]:03d}"
            shutil.copytree(folder, target)

    io = RunIO(
        train_batches=lambda epoch: iter(_batches(3, epoch)),
        val_batches=lambda: iter(_batches(2, 99)),
        report=report,
        progress=lambda step, total, text: shown.append((step, text)),
    )
    state = run_epochs(obj, plan, RunState(), io, rank=0, world=1, seed=0, config_dict={"seed": 0})
    kinds = [m["kind"] for m, _ in reports]
    # step 2 inside epoch 1; epoch 1 ends at 3; step 4 inside epoch 2; epoch 2 (the run) ends at 6
    assert kinds == ["step", "epoch", "step", "epoch"]
    assert [m["step"] for m, _ in reports] == [2, 3, 4, 6]
    assert all(has for _, has in reports)  # rank 0 saves each one
    assert "val_v2t_r@10" in reports[1][0] and "temperature" in reports[1][0]
    assert state.step == 6 and state.epoch == 2 and [h["kind"] for h in state.history] == ["epoch", "epoch"]
    assert [s for s, _ in shown] == [2, 3, 4, 6, 6]
    # a restarted worker goes on from the newest complete checkpoint: the run's end
    uri, st = newest_checkpoint(str(run_uri))
    assert st["step"] == 6
    obj2 = Objective.create(build_model(config), config, plan, 0, 1, torch.device("cpu"))
    resumed, came_from = restore(obj2, str(run_uri), 0, 1, FaultHooks())
    assert came_from == uri and resumed.step == 6 and resumed.history[-1]["kind"] == "resume"
    assert not plan.running(resumed)


def test_a_run_resumed_inside_an_epoch_passes_over_the_batches_it_took(tmp_path):
    config = _config(tmp_path)
    plan = _plan(steps_per_epoch=3, total_steps=6, epochs=2, checkpoint_every_steps=100)
    obj = Objective.create(build_model(config), config, plan, 0, 1, torch.device("cpu"))
    run_uri = tmp_path / "run"
    state = RunState(step=1, step_in_epoch=1)
    save_checkpoint(
        run_uri / "checkpoint_001", obj.model, obj.optimizer, obj.scheduler, 1, 0, {}, extra=state.extra()
    )
    resumed, _ = restore(obj, str(run_uri), 0, 1, FaultHooks(probe=tmp_path))
    assert (resumed.step, resumed.epoch, resumed.step_in_epoch) == (1, 0, 1)
    assert resumed.history[-1]["skipped_batches"] == 1
    assert (tmp_path / "restored-rank0.pt").is_file()
    taken: list[int] = []

    def batches(epoch):
        for i, b in enumerate(_batches(3, epoch)):
            taken.append((epoch, i))
            yield b

    io = RunIO(train_batches=batches, val_batches=lambda: iter(_batches(2, 99)), report=lambda m, f: None)
    end = run_epochs(
        obj, plan, resumed, io, rank=0, world=1, seed=0, config_dict={}, faults=FaultHooks(probe=tmp_path)
    )
    assert end.step == 6
    # the first batch of epoch 0 was read and passed over; the rest trained
    lines = [json.loads(x) for x in (tmp_path / "batches-rank0.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 3, 4, 5, 6]
    assert [r["epoch"] for r in lines] == [0, 0, 1, 1, 1]


def test_a_time_budget_stops_after_the_first_epoch(tmp_path):
    config = _config(tmp_path)
    plan = _plan(steps_per_epoch=2, total_steps=6, epochs=3, checkpoint_every_steps=100, time_budget_s=1e-9)
    obj = Objective.create(build_model(config), config, plan, 0, 1, torch.device("cpu"))
    io = RunIO(
        train_batches=lambda e: iter(_batches(2, e)),
        val_batches=lambda: iter(_batches(2, 9)),
        report=lambda m, f: None,
    )
    end = run_epochs(obj, plan, RunState(), io, rank=0, world=1, seed=0, config_dict={})
    assert end.step == 2 and end.stopped_on_budget and end.epoch == 3
    assert end.extra()["stopped_on_budget"] is True


def test_the_label_loss_joins_clip_when_asked(tmp_path):
    from echoprime.losses import ClipLabelLoss, ClipLoss

    config = _config(tmp_path)
    plan = _plan()
    plain = Objective.create(build_model(config), config, plan, 0, 1, torch.device("cpu"))
    assert isinstance(plain.loss_fn, ClipLoss) and plain.task is None
    config["train"]["label_weight_video"] = 1.0
    assert isinstance(
        Objective.create(build_model(config), config, plan, 0, 1, torch.device("cpu")).loss_fn, ClipLabelLoss
    )
