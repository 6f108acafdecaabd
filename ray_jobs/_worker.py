"""The Ray Train worker of pretraining and of the fine-tuning heads (run by ray_jobs/_train.py).

Each worker takes Ray's context, device, data shard and report calls and hands them to the plain
run of echoprime.training.run, where the policy lives (resuming, when to checkpoint or stop, the
epoch loop).
"""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

import ray
import ray.train
import ray.train.torch
import torch

from echoprime.training.faults import FaultHooks
from echoprime.training.objective import Objective, build_model
from echoprime.training.run import RunIO, batch_dtypes, restore, run_epochs, shuffle_seed
from echoprime.training.setup import set_threads


def train_fn(config: dict[str, Any]) -> None:
    """One Ray Train worker: the model prepared for DDP, then :func:`run_epochs` on its shard."""
    tc, head, init = config["train"], config.get("task"), config.get("init")
    set_threads(tc["cpus_per_worker"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"] + rank)
    device = ray.train.torch.get_device()
    model = build_model(
        config,
        init_state=ray.get(init["state"]) if init is not None else None,
        encoder=ray.get(head["encoder"]) if head is not None else None,
    )
    if tc["channels_last"] and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    obj = Objective.create(ray.train.torch.prepare_model(model), config, config["plan"], rank, world, device)
    faults = FaultHooks.from_dict(config.get("fault"), node_id=ray.get_runtime_context().get_node_id())
    state, resumed = restore(obj, config["run_uri"], rank, world, faults)
    registered = ray.train.get_checkpoint()
    known = registered is not None and posixpath.basename(registered.path) == posixpath.basename(
        resumed or ""
    )
    if resumed and rank == 0 and not known:
        print(
            f"pretrain: resuming from {resumed} (step {state.step}); Ray Train had registered "
            f"{registered.path if registered else 'no checkpoint'}"
        )
    dtypes, buffer, progress = batch_dtypes(text=head is None), tc["shuffle_buffer"], config.get("progress")
    shard = ray.train.get_dataset_shard("train")

    def report(metrics: dict[str, Any], folder: Path | None) -> None:
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)

    io = RunIO(
        train_batches=lambda epoch: shard.iter_torch_batches(
            batch_size=tc["batch_size"],
            dtypes=dtypes,
            drop_last=True,
            local_shuffle_buffer_size=buffer or None,
            local_shuffle_seed=shuffle_seed(config["seed"], epoch, rank) if buffer else None,
        ),
        val_batches=lambda: ray.train.get_dataset_shard("val").iter_torch_batches(
            batch_size=128, dtypes=dtypes
        ),
        report=report,
        progress=None
        if progress is None
        else lambda step, total, postfix: progress.set.remote(step=step, total=total, postfix=postfix),
    )
    start_from = init if init is not None else head
    run_epochs(
        obj,
        config["plan"],
        state,
        io,
        rank=rank,
        world=world,
        seed=config["seed"],
        config_dict=config["config_dict"],
        faults=faults,
        init_source=start_from["source"] if start_from is not None else None,
    )
