"""``echoprime finetune`` on Ray: a task's labelled shard columns through Ray Data into the
pretraining's Ray Train run (ray_jobs/_train.py) with a task model; the head is exported into a
new bundle.

The command's arguments and description are :mod:`echoprime.commands.finetune`; the task, its
model and loss are :mod:`echoprime.training.heads`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from echoprime.commands import command_main, config_of
from echoprime.commands.finetune import add_arguments
from echoprime.config import EchoPrimeConfig
from echoprime.training.checkpoint import load_checkpoint
from echoprime.training.finish import describe_finetune, export_head, finetune_summary
from echoprime.training.heads import TaskModel, resolve_task
from echoprime.training.prepare import bundle_tower, finetune_config, parse_unfreeze, prepare_finetune
from echoprime.training.rows import TASK_COLUMNS, task_columns
from ray_jobs._datasets import held, read_split
from ray_jobs._train import trained


def run_finetune(
    cfg: EchoPrimeConfig,
    task_name: str,
    bundle: str,
    shards: str,
    out: str,
    *,
    unfreeze: int | None = 0,
    run_name: str | None = None,
    resume: bool = False,
    fault: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a head for ``task_name`` on ``shards`` over ``bundle``'s video tower; write the bundle
    with the head to ``out`` and return headline numbers.

    Args:
        cfg: the resolved config (``train.*`` and ``ray.*`` are used; the model comes from the bundle).
        task_name: see echoprime.training.heads.resolve_task.
        bundle: the starting bundle.
        shards: ingest output with committed train and val splits.
        out: where the new bundle goes (not the starting bundle: a committed bundle never changes).
        unfreeze: layers of the video tower that train (0: frozen; None: all).
        run_name: the run's name under ``train.storage_path`` (default ``finetune-<task>``).
        resume: continue that run from its last checkpoint.
        fault: pretraining's test hooks (ray_jobs.pretrain.run_pretrain).

    Raises:
        ValueError: an unknown task, ``out`` equal to ``bundle``, a split with no labelled row (or
            one class only), shards whose preprocessing differs from the bundle's, a run of that
            name without ``resume``.
    """
    t0, task = time.perf_counter(), resolve_task(task_name)
    cfg = finetune_config(cfg, task, unfreeze, run_name)
    p = prepare_finetune(cfg, task, bundle, shards, out, resume=resume)  # fails before a worker starts
    encoder, embed_dim, normalize = bundle_tower(p.bundle_root)
    work = Path(tempfile.mkdtemp(prefix="echoprime-finetune-"))
    try:

        def inputs() -> tuple[Any, Any, dict[str, Any]]:
            kw = {"fn_kwargs": {"task": task.to_dict()}, "batch_size": 64}
            train_ds = read_split(p.train_files, TASK_COLUMNS).map_batches(task_columns, **kw)
            val_ds = read_split(p.val_files, TASK_COLUMNS).map_batches(task_columns, **kw).materialize()
            head = {"task": task.to_dict(), "encoder": ray.put(encoder), "embed_dim": embed_dim}
            loop = {
                "spec": p.spec,
                "fault": fault,
                "init": None,
                "task": {**head, "normalize": normalize, "source": bundle},
            }
            # Held in the object store as pretraining does (train.materialize): when it fits.
            return held(train_ds, p.n_train, p.clip_shape, cfg.train.materialize), val_ds, loop

        how = {"job": "finetune", "doing": "fine-tuning", "work": work, "label": f"finetune {task.name}"}
        with trained(cfg, p, inputs, resume=resume, **how) as (d, done):
            model = TaskModel(encoder, task, embed_dim, normalize)
            st = load_checkpoint(d, model)
        out_uri = export_head(p.bundle_root, out, model, st, shards=shards, encoder_trained=unfreeze != 0)
        return finetune_summary(st, p, task, out=out_uri, unfreeze=unfreeze, finished=done, t0=t0)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    res = run_finetune(
        cfg,
        args.task,
        args.bundle,
        args.shards,
        args.out,
        unfreeze=parse_unfreeze(args.unfreeze),
        run_name=args.run_name,
        resume=args.resume,
    )
    print(describe_finetune(res))
    print(json.dumps(res, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("finetune", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
