"""``echoprime finetune``: a supervised head on a bundle's video tower, on labelled shards.

  echoprime finetune --task ef --bundle BUNDLE --shards SHARDS --out NEW_BUNDLE
  echoprime finetune --task aortic_stenosis:grade --unfreeze 2 ...   # the tower's last 2 layers too
  echoprime finetune --task views ...                                 # each video's view

The shards may be label-only (``echoprime synth --label-only``, or an archive ingested with a
labels table and no reports): a task reads the shards' ``labels`` (and ``view``) columns only.
Training is the pretraining run's (the same Ray Data -> Ray Train path, echoprime.training.run,
checkpoints, failure handling and ``--resume``) with a task model and loss in
place of CLIP's: echoprime.training.heads. The head's validation numbers (MAE in the task's
unit, AUC or accuracy on the val split) are logged before the first step and after every
epoch, and ``train.early_stop_patience`` watches ``val_score``.

The output is a new bundle: a copy of ``--bundle`` with the head added under ``heads/<task>/``
(a head of the same task is replaced), committed and hashed like any bundle. ``interpret``,
``serve`` and ``batch-interpret`` answer with it (``tasks`` in a study's result). With
``--unfreeze`` the head keeps its own tuned copy of the video tower; the bundle's tower, bank
and attention stay as they were, so retrieval and the report are unchanged.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--task",
        required=True,
        help="what the head predicts: ef, pasp, heart_rate, a binary finding by name (aortic_stenosis), "
        "<graded finding>:grade (mitral_regurgitation:grade) or views",
    )
    p.add_argument(
        "--bundle", required=True, help="the bundle whose video tower the head reads (folder or s3://)"
    )
    p.add_argument(
        "--shards",
        required=True,
        help="ingest output with train and val splits (labels may be all they hold)",
    )
    p.add_argument("--out", required=True, help="the new bundle: --bundle plus the head (folder or s3://)")
    p.add_argument(
        "--unfreeze",
        default="0",
        help="0 (default): the video tower stays frozen and only the head trains (a linear probe); "
        "N: its last N layers train too; all: the whole tower (train.video_trainable_layers)",
    )
    p.add_argument(
        "--run-name", default=None, help="the run's name under train.storage_path (default: finetune-<task>)"
    )
    p.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    from echoprime.commands import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


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
    import ray

    from echoprime.training.checkpoint import load_checkpoint
    from echoprime.training.finish import export_head, finetune_summary
    from echoprime.training.heads import TaskModel, resolve_task
    from echoprime.training.prepare import bundle_tower, finetune_config, prepare_finetune
    from echoprime.training.rows import TASK_COLUMNS, task_columns
    from ray_jobs._datasets import held, read_split
    from ray_jobs._train import trained

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
    from echoprime.training.finish import describe_finetune
    from echoprime.training.prepare import parse_unfreeze
    from ray_jobs.common import resolve_config

    cfg = resolve_config(args)
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
    from echoprime.commands import command_main

    return command_main("finetune", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
