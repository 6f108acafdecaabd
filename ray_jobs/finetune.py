"""``echoprime finetune``: a supervised head on a bundle's video tower, on labelled shards.

  echoprime finetune --task ef --bundle BUNDLE --shards SHARDS --out NEW_BUNDLE
  echoprime finetune --task aortic_stenosis:grade --unfreeze 2 ...   # the tower's last 2 layers too
  echoprime finetune --task views ...                                 # each video's view

The shards may be label-only (``echoprime synth --label-only``, or an archive ingested with a
labels table and no reports): a task reads the shards' ``labels`` (and ``view``) columns only.
Training is the pretraining run's (ray_jobs.pretrain: the same Ray Data -> Ray Train path,
``_train_fn``, checkpoints, failure handling and ``--resume``) with a task model and loss in
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
import math
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


def parse_unfreeze(value: str | int | None) -> int | None:
    """``--unfreeze``: ``all`` -> None (everything trains), ``N`` -> N.

    Raises:
        ValueError: neither ``all`` nor a non-negative integer.
    """
    if value is None or str(value).strip().lower() == "all":
        return None
    try:
        n = int(str(value))
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"--unfreeze takes a number of layers (0, 1, 2, ...) or 'all', got {value!r}")
    return n


# ------------------------------------------------------------------------------------ data side
def _task_columns(batch: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """Ray Data map: shard rows -> ``clip``, ``study_idx`` and the task's target as ``labels``
    (``N x 1``); rows that say nothing about the task are dropped."""
    import numpy as np

    from echoprime.training.heads import Task, task_targets
    from echoprime.training.setup import study_index

    t = Task.from_dict(task)
    y = task_targets(t, list(batch["labels"]), list(batch["view"]), list(batch["report"]))
    keep = np.isfinite(y[:, 0])
    idx = np.array([study_index(str(s)) for s in batch["study_id"]], dtype=np.int64)
    return {"clip": batch["clip"][keep], "study_idx": idx[keep], "labels": y[keep]}


def _labelled(files: list[str], task: Any) -> tuple[int, int, dict[str, int]]:
    """(rows with a target, studies with one, class counts) of a split, read without its clips."""
    import numpy as np
    import pyarrow.parquet as pq

    from echoprime import storage
    from echoprime.training.heads import task_targets

    rows, studies, counts = 0, set(), {}
    for f in files:
        loc = storage.locate(f)
        t = pq.read_table(loc.path, filesystem=loc.fs, columns=["study_id", "labels", "view", "report"])
        y = task_targets(task, *(t.column(c).to_pylist() for c in ("labels", "view", "report")))[:, 0]
        keep = np.isfinite(y)
        rows += int(keep.sum())
        studies.update(s for s, k in zip(t.column("study_id").to_pylist(), keep, strict=True) if k)
        if task.kind != "regression":
            for v in y[keep]:
                name = task.classes[int(v)] if task.classes else str(int(v))
                counts[name] = counts.get(name, 0) + 1
    if task.classes:  # in the scale's (or the views') order
        counts = {c: counts[c] for c in task.classes if c in counts}
    return rows, len(studies), counts


# ------------------------------------------------------------------------------- the driver
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

    from echoprime import storage
    from echoprime.bundle import fetch, read_manifest
    from echoprime.data.shards import read_manifest as read_shard_manifest
    from echoprime.data.shards import validate_split
    from echoprime.inference import load_bundle_parts
    from echoprime.training.checkpoint import load_checkpoint
    from echoprime.training.finetune import check_spec
    from echoprime.training.heads import TaskModel, resolve_task, write_bundle_with_head
    from ray_jobs.common import configure_ray_data, ray_session, require_resources
    from ray_jobs.pretrain import _finished_checkpoint, _local_copy, _read_split, fit

    t0 = time.perf_counter()
    task = resolve_task(task_name)
    if storage.locate(out).uri.rstrip("/") == storage.locate(bundle).uri.rstrip("/"):
        raise ValueError(
            f"--out {out} is the bundle it starts from; a committed bundle never changes: name a new one"
        )
    tc = cfg.train.model_copy(
        update={
            "video_trainable_layers": unfreeze,
            "run_name": run_name or f"finetune-{task.folder}",
            "early_stop_metric": "val_score",
        }
    )
    cfg = cfg.model_copy(update={"train": tc})
    # Everything that can be wrong is checked before a worker starts.
    manifest = read_shard_manifest(shards)
    train_files, val_files = validate_split(shards, "train"), validate_split(shards, "val")
    spec = dict(manifest.spec)
    root = fetch(bundle)
    bman = read_manifest(root, verify=True)
    check_spec(bundle, bman, spec)
    n_train, train_studies, train_classes = _labelled(train_files, task)
    n_val, val_studies, val_classes = _labelled(val_files, task)
    for split, n, classes in (("train", n_train, train_classes), ("val", n_val, val_classes)):
        if n == 0:
            raise ValueError(
                f"the {split} split of {shards} has no row labelled for task {task.name!r} "
                f"({'the view column' if task.kind == 'views' else 'labels key ' + repr(task.target if task.kind != 'graded' else task.target + '_grade')})"
            )
        if task.kind == "binary" and len(classes) < 2:
            raise ValueError(
                f"the {split} split of {shards} holds only {classes} for {task.name!r}: a binary head needs both classes"
            )
    steps_per_epoch = n_train // tc.num_workers // tc.batch_size
    if steps_per_epoch < 1:
        raise ValueError(
            f"the train split has {n_train} clips labelled for {task.name!r}: too few for {tc.num_workers} "
            f"workers x batch {tc.batch_size} (lower train.batch_size or train.num_workers)"
        )
    total_steps = (
        steps_per_epoch * tc.epochs
        if tc.max_steps is None
        else min(steps_per_epoch * tc.epochs, tc.max_steps)
    )
    warmup_steps = min(tc.warmup_steps, total_steps // 4)
    storage_uri = tc.storage_path if storage.is_s3(tc.storage_path) else str(Path(tc.storage_path).resolve())
    storage.ensure_dir(storage_uri)
    run_dir = storage.locate(storage_uri).join(tc.run_name)
    if storage.exists(run_dir.uri) and not resume:
        raise ValueError(
            f"a run named {tc.run_name!r} already exists at {storage_uri}; pass --resume to continue it, "
            f"or --run-name <new name>"
        )

    parts = load_bundle_parts(str(root), verify=False, components=["video_encoder"])
    encoder, normalize = parts.video_encoder, parts.normalize_embeddings
    embed_dim = int(getattr(encoder, "embed_dim", 0) or 512)  # the towers' default width
    work = Path(tempfile.mkdtemp(prefix="echoprime-finetune-"))
    try:
        finished = _finished_checkpoint(run_dir.uri, tc.epochs, total_steps) if resume else None
        if finished is None:
            with ray_session(cfg.ray):
                configure_ray_data()
                require_resources(
                    tc.num_workers * tc.cpus_per_worker,
                    tc.num_workers * (1 if tc.use_gpu else 0),
                    cfg.ray.resource_wait_s,
                    f"fine-tuning ({tc.num_workers} workers)",
                )
                columns = ["clip", "study_id", "report", "labels", "view"]
                kw = {"fn_kwargs": {"task": task.to_dict()}, "batch_size": 64}
                train_ds = _read_split(train_files, columns).map_batches(_task_columns, **kw)
                val_ds = _read_split(val_files, columns).map_batches(_task_columns, **kw).materialize()
                # Held in the object store as pretraining does (train.materialize): when it fits.
                store = ray.available_resources().get("object_store_memory", 0)
                bytes_est = n_train * math.prod(manifest.clip_shape)
                if tc.materialize == "always" or (tc.materialize == "auto" and bytes_est < store / 3):
                    train_ds = train_ds.materialize()
                result = fit(
                    cfg,
                    {
                        "spec": spec,
                        "steps_per_epoch": steps_per_epoch,
                        "total_steps": total_steps,
                        "warmup_steps": warmup_steps,
                        "run_uri": run_dir.uri,
                        "fault": fault,
                        "init": None,
                        "task": {
                            "task": task.to_dict(),
                            "encoder": ray.put(encoder),
                            "embed_dim": embed_dim,
                            "normalize": normalize,
                            "source": bundle,
                        },
                    },
                    train_ds,
                    val_ds,
                    storage_uri,
                    f"finetune {task.name}",
                )
            if result.checkpoint is None:
                raise RuntimeError(f"fine-tuning produced no checkpoint (error: {result.error})")
            ckpt_ctx: Any = result.checkpoint.as_directory()
        else:
            print(f"finetune: run {tc.run_name!r} has finished ({finished}); exporting its last checkpoint")
            import contextlib

            ckpt_ctx = contextlib.nullcontext(_local_copy(finished, work / "finished"))
        model = TaskModel(encoder, task, embed_dim, normalize)
        with ckpt_ctx as d:
            st = load_checkpoint(d, model)
        history = st["extra"].get("history", [])
        epochs = [h for h in history if h.get("kind") == "epoch"]
        started = next((h for h in history if h.get("kind") == "init"), {})
        last = epochs[-1] if epochs else {}
        metrics = {k[4:]: v for k, v in last.items() if k.startswith("val_")}

        trained = unfreeze != 0
        out_uri = write_bundle_with_head(
            root,
            out,
            model,
            encoder_trained=trained,
            metrics={**metrics, "history": history},
            note={"shards": shards, "steps": st["step"], **metrics},
        )
        return {
            "task": task.name,
            "kind": task.kind,
            "out": out_uri,
            "run": run_dir.uri,
            "already_finished": finished is not None,
            "encoder": "tuned" if trained else "frozen",
            "unfreeze": "all" if unfreeze is None else unfreeze,
            "steps": st["step"],
            "planned_steps": total_steps,
            "epochs": len(epochs),
            "stopped_early": bool(st["extra"].get("stopped_early", False)),
            "train_clips": n_train,
            "train_studies": train_studies,
            "val_clips": n_val,
            "val_studies": val_studies,
            "classes_train": train_classes,
            "init_val": {k[4:]: v for k, v in started.items() if k.startswith("val_")},
            "val": metrics,
            "loss_first": epochs[0].get("loss") if epochs else None,
            "loss_last": last.get("loss"),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _describe(m: dict[str, Any], kind: str, unit: str = "") -> str:
    if not m:
        return "n/a"
    if kind == "regression":
        return f"MAE {m.get('mae', math.nan):.2f}{' ' + unit if unit else ''}"
    if kind == "binary":
        return f"AUC {m.get('auc', math.nan):.3f}"
    kappa = f", kappa {m['kappa']:.2f}" if "kappa" in m else ""
    return f"accuracy {m.get('accuracy', math.nan):.3f}{kappa}"


def run(args: argparse.Namespace) -> int:
    from echoprime.training.heads import resolve_task
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
    task = resolve_task(args.task)
    print(
        f"finetune {res['task']}: {res['steps']}/{res['planned_steps']} steps in {res['epochs']} epochs "
        f"(tower {res['encoder']}); val {res['val_studies']} studies: "
        f"{_describe(res['init_val'], task.kind, task.unit)} before -> {_describe(res['val'], task.kind, task.unit)} "
        f"after; bundle with the head in {res['out']}"
    )
    print(json.dumps(res, indent=2, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.commands import command_main

    return command_main("finetune", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
