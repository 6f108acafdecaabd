"""Contrastive video-report pretraining on Ray Train (the EchoPrime joint space).

Ray Data streams (or, when small, holds) the ingest shards' training split into TorchTrainer
workers (DDP: gloo on CPU, NCCL on GPU), or, with stream.studies > 0, synthetic studies rendered
on the fly into the same rows; each clip is pulled towards its study's report and pushed away
from every other report in the global batch (and, with model.label_heads and
train.label_weight_*, both towers also predict the report's findings: docs/training.md).
Each epoch ends with video<->report recall@1/5/10 on the validation split. Checkpoints (model, optimizer, scheduler, step, config,
tokenizer) go to train.storage_path (local or s3://) every train.checkpoint_every_steps steps and
at each epoch end; a run survives train.max_failures worker failures by resuming from the last.

Writes the first stage of the bundle being built, BUNDLE/pretrained/: clip.safetensors,
tokenizer/, config.yaml, preprocess.json, metrics.json (see docs/training.md). The later stages
(train-views, fit-mil, build-bank) add to the same BUNDLE folder.

Examples:
  echoprime pretrain --shards shards --bundle bundle --config configs/tiny-cpu.yaml
  echoprime pretrain --shards s3://b/shards --bundle /shared/bundles/v1 --config configs/a6000x2.yaml
  echoprime pretrain ... --resume          # continue the run named train.run_name
  echoprime pretrain --shards mine --bundle ft --init quickstart-out/bundle train.text_trainable_layers=0
                                           # fine-tune an existing bundle's towers (docs/training.md)
  echoprime pretrain ... stream.studies=2000 model.label_heads=separate train.label_weight_text=20
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import posixpath
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards", required=True, help="ingest output (folder or s3://) with train and val splits"
    )
    p.add_argument(
        "--bundle", required=True, help="the bundle folder being built; the model goes to BUNDLE/pretrained"
    )
    p.add_argument(
        "--resume", action="store_true", help="continue the run train.run_name from its last checkpoint"
    )
    p.add_argument(
        "--init",
        metavar="BUNDLE",
        default=None,
        help="start from this bundle's towers and tokenizer (ours, or a converted published release) "
        "instead of random weights: a fine-tune (train.init; docs/training.md)",
    )
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


# ------------------------------------------------------------------------------------ data side
def _tokenize(
    batch: dict[str, Any], tokenizer: Any, seed: int, grades: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Ray Data map: shard rows -> model-ready columns (clip, tokens, study index, label row).

    A plain function (Ray tasks), not an actor pool: tokenising is cheap, and tasks need no
    start-up of their own. Long reports get a random window of whole sections per batch.
    """
    import numpy as np

    from echoprime.training.labels import label_matrix
    from echoprime.training.setup import study_index

    idx = np.array([study_index(str(s)) for s in batch["study_id"]], dtype=np.int64)
    rng = np.random.default_rng([seed, int(idx[0]) % (2**32)]) if len(idx) else None
    enc = tokenizer(list(batch["report"]), rng=rng)
    return {
        "clip": batch["clip"],
        "input_ids": enc["input_ids"].numpy(),
        "attention_mask": enc["attention_mask"].numpy(),
        "token_type_ids": enc["token_type_ids"].numpy(),
        "study_idx": idx,
        "labels": label_matrix(list(batch["labels"]), list(batch["report"]), grades),
    }


def _read_split(files: list[str], columns: list[str] | None = None):
    import ray

    from echoprime import storage

    locs = [storage.locate(f) for f in files]
    return ray.data.read_parquet([loc.path for loc in locs], filesystem=locs[0].fs).select_columns(
        columns or ["clip", "study_id", "report", "labels"]
    )


# ---------------------------------------------------------------------------- the worker side
def _train_fn(config: dict[str, Any]) -> None:
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from echoprime.losses import ClipLabelLoss, ClipLoss, LabelLoss
    from echoprime.training.checkpoint import load_checkpoint, save_checkpoint, unwrap
    from echoprime.training.finetune import apply_init, freeze_text, param_groups, should_stop
    from echoprime.training.labels import column_weights, regression_columns
    from echoprime.training.loop import embed_for_retrieval, retrieval_metrics, train_one_epoch
    from echoprime.training.schedule import cosine_scheduler
    from echoprime.training.setup import build_clip, set_threads

    tc, spec = config["train"], config["spec"]
    set_threads(tc["cpus_per_worker"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.manual_seed(config["seed"] + rank)
    device = ray.train.torch.get_device()
    init = config.get("init")
    head = config.get("task")  # echoprime finetune: a supervised head on the bundle's video tower
    if head is not None:
        from echoprime.training.finetune import freeze_layers
        from echoprime.training.heads import Task, TaskLoss, TaskModel

        task = Task.from_dict(head["task"])
        model = TaskModel(ray.get(head["encoder"]), task, head["embed_dim"], head["normalize"])
        freeze_layers(model.video_encoder, tc["video_trainable_layers"])
    else:
        model = build_clip(config["model"], spec, config["vocab_size"])
        if init is not None:  # --init: the bundle's towers (a checkpoint below still takes precedence)
            apply_init(model, ray.get(init["state"]), init["towers"])
        freeze_text(model, tc["text_trainable_layers"])
    if tc["channels_last"] and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)
    model = ray.train.torch.prepare_model(model)
    opt = torch.optim.AdamW(
        param_groups(unwrap(model), tc["layer_decay"]), lr=tc["lr"], weight_decay=tc["weight_decay"]
    )
    steps_per_epoch, total = config["steps_per_epoch"], config["total_steps"]
    sched = cosine_scheduler(opt, tc["lr"], config["warmup_steps"], total, tc["min_lr"])
    loss_fn: Any = ClipLoss(rank=rank, world_size=world, gather_with_grad=True)
    if head is not None:
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
    autocast = torch.bfloat16 if tc["precision"] == "bf16" else None

    state = {"step": 0, "epoch": 0, "step_in_epoch": 0, "history": [], "elapsed": 0.0}
    fault = config.get("fault") or {}
    probe = Path(fault["probe"]) if fault.get("probe") else None
    skip = 0  # batches of the first epoch run here that the checkpoint's model has already taken
    # Every rank restores the checkpoint rank 0 found (_newest_checkpoint says why not Ray's own).
    box = [_newest_checkpoint(config["run_uri"]) if rank == 0 else None]
    if world > 1:
        torch.distributed.broadcast_object_list(box, src=0)
    if box[0] is not None:
        uri = box[0][0]
        with tempfile.TemporaryDirectory() as tmp:
            st = load_checkpoint(_local_copy(uri, Path(tmp)), unwrap(model), opt, sched, map_location=device)
        state.update(st["extra"])
        state["step"] = st["step"]
        skip = state["step_in_epoch"]
        state["history"].append(
            {
                "kind": "resume",
                "step": state["step"],
                "epoch": state["epoch"],
                "skipped_batches": skip,
                "lr": float(opt.param_groups[0]["lr"]),
                "checkpoint": posixpath.basename(uri),
            }
        )
        registered = ray.train.get_checkpoint()
        if rank == 0 and (
            registered is None or posixpath.basename(registered.path) != posixpath.basename(uri)
        ):
            print(
                f"pretrain: resuming from {uri} (step {st['step']}); Ray Train had registered "
                f"{registered.path if registered else 'no checkpoint'}"
            )
        if probe is not None:  # test hook: the optimizer and scheduler state as restored on this rank
            torch.save(
                {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()},
                probe / f"restored-rank{rank}.pt",
            )
    start = time.monotonic() - state["elapsed"]
    progress = config.get("progress")

    def save_and_report(metrics: dict[str, Any]) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                save_checkpoint(
                    tmp,
                    model,
                    opt,
                    sched,
                    state["step"],
                    state["epoch"],
                    config["config_dict"],
                    extra={k: v for k, v in state.items() if k != "step"},
                )
                checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint)

    dtypes = {
        "clip": torch.uint8,
        "input_ids": torch.long,
        "attention_mask": torch.long,
        "token_type_ids": torch.long,
        "study_idx": torch.long,
        "labels": torch.float32,
    }
    if head is not None:  # label-only rows: no text
        dtypes = {k: dtypes[k] for k in ("clip", "study_idx", "labels")}
    shard = ray.train.get_dataset_shard("train")

    def validate() -> dict[str, Any]:
        if head is not None:
            from echoprime.training.heads import predict, task_metrics

            out = predict(
                model,
                ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=128, dtypes=dtypes),
                device,
                spec=spec,
                autocast_dtype=autocast,
            )
            return {f"val_{k}": v for k, v in task_metrics(task, *out).items()}
        emb = embed_for_retrieval(
            model,
            ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=128, dtypes=dtypes),
            device,
            spec=spec,
            autocast_dtype=autocast,
        )
        return {f"val_{k}": v for k, v in retrieval_metrics(**emb).items()}

    start_from = init if init is not None else head
    if start_from is not None and state["step"] == 0 and rank == 0:
        # The starting model's numbers, so the fine-tune's gain is visible (and step 0 is its weights).
        state["history"].append({"kind": "init", "step": 0, "bundle": start_from["source"], **validate()})
    gen = torch.Generator().manual_seed(config["seed"] * 1000 + rank)
    while state["epoch"] < tc["epochs"] and state["step"] < total:
        # train.max_steps can end the run inside an epoch; that epoch is then the last.
        remaining = min(steps_per_epoch - state["step_in_epoch"], total - state["step"])

        def on_step(info: Any) -> bool:
            state["step"] += 1
            state["step_in_epoch"] += 1
            if rank == 0 and progress is not None and state["step"] % 2 == 0:
                progress.set.remote(
                    step=state["step"],
                    total=total,
                    postfix=f"epoch {state['epoch'] + 1}/{tc['epochs']} loss {info.loss:.3f}",
                )
            if fault.get("pause_at_step") == state["step"]:
                _pause(Path(fault["pause_dir"]), rank, state["step"], fault.get("pause_s", 240.0))
            if (
                state["step"] % tc["checkpoint_every_steps"] == 0
                and state["step_in_epoch"] < steps_per_epoch
                and state["step"] < total  # the epoch-end report right after saves this one
            ):
                state["elapsed"] = time.monotonic() - start
                save_and_report(
                    {"step": state["step"], "epoch": state["epoch"], "loss": info.loss, "kind": "step"}
                )
            return False

        batches = shard.iter_torch_batches(
            batch_size=tc["batch_size"],
            dtypes=dtypes,
            drop_last=True,
            local_shuffle_buffer_size=tc["shuffle_buffer"] or None,
            local_shuffle_seed=config["seed"] + state["epoch"] * 97 + rank if tc["shuffle_buffer"] else None,
        )
        if skip:
            # Resumed inside this epoch: its first `skip` batches went into the checkpoint's model.
            # The same split and shuffle seed give the same order (docs/training.md, "Resuming"),
            # so passing over them continues the epoch instead of replaying its start.
            batches = itertools.islice(batches, skip, None)
            skip = 0
        if probe is not None:
            batches = _logged(batches, probe / f"batches-rank{rank}.jsonl", state, opt)
        stats = train_one_epoch(
            model,
            loss_fn,
            opt,
            sched,
            batches,
            device,
            spec=spec,
            autocast_dtype=autocast,
            grad_clip=tc["grad_clip"],
            on_step=on_step,
            max_steps=remaining,
            augmentation=config["augmentation"],
            generator=gen,
        )
        state["epoch"] += 1
        state["step_in_epoch"] = 0
        metrics: dict[str, Any] = {
            "epoch": state["epoch"],
            "step": state["step"],
            "loss": stats.loss,
            "steps": stats.steps,
            "clips_per_s": stats.clips_per_s * world,
            "data_wait_frac": stats.data_wait_frac,
            "lr": stats.lr,
            "kind": "epoch",
        }
        if head is None:
            clip = unwrap(model)
            metrics["temperature"] = float(
                1.0 / clip.logit_scale.detach().exp().clamp(max=math.exp(clip.max_logit_scale))
            )
        if rank == 0:
            metrics.update(validate())
        state["elapsed"] = time.monotonic() - start
        metrics["elapsed_s"] = state["elapsed"]
        state["history"].append(
            {k: (float(v) if isinstance(v, (int, float, np.floating)) else v) for k, v in metrics.items()}
        )
        # Stop on the time budget or early (no better val retrieval for a while) at an epoch end,
        # on every rank together (rank 0's clock and validation decide).
        budget = tc["time_budget_s"] is not None and state["elapsed"] >= tc["time_budget_s"]
        early = rank == 0 and should_stop(
            state["history"], tc["early_stop_metric"], tc["early_stop_patience"]
        )
        flags = torch.tensor([float(budget), float(early)])
        if world > 1:
            torch.distributed.broadcast(flags, src=0)
        if flags[0] or flags[1]:
            state["stopped_on_budget" if flags[0] else "stopped_early"] = True
            state["epoch"] = tc["epochs"]
        save_and_report(metrics)
        if rank == 0 and progress is not None:
            shown = (
                f"val R@10 {metrics['val_v2t_r@10']:.2f}"
                if "val_v2t_r@10" in metrics
                else f"val score {metrics.get('val_score', float('nan')):.3f}"
            )
            progress.set.remote(
                step=state["step"],
                total=total,
                postfix=f"epoch {state['epoch']} loss {stats.loss:.3f} {shown}",
            )


def _logged(batches: Iterable[dict[str, Any]], path: Path, state: dict[str, Any], opt: Any) -> Iterator[Any]:
    """Test hook (``fault["probe"]``): before each step, one JSON line with the step it feeds, the
    learning rate it will use and a CRC32 of each of its clips, so a test can see what a resumed
    run took."""
    for b in batches:
        rec = {
            "epoch": state["epoch"],
            "step": state["step"] + 1,
            "lr": float(opt.param_groups[0]["lr"]),
            "clips": [zlib.crc32(c.numpy().tobytes()) for c in b["clip"]],
        }
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        yield b


def _pause(folder: Path, rank: int, step: int, limit_s: float) -> None:
    """Test hook (``fault["pause_at_step"]``): once per rank (the first time it reaches the step),
    write ``folder/paused-rank{rank}.json`` (rank, step, Ray node id, pid) and wait there, for at
    most ``limit_s`` seconds, while the test removes a node of the cluster (tests/ray/_multinode.py).
    Every rank stops after the same optimizer step, so the test knows what the run had done."""
    import ray

    mark = folder / f"paused-rank{rank}.json"
    if mark.exists():
        return  # the restarted group goes on
    tmp = mark.with_suffix(".tmp")
    node = ray.get_runtime_context().get_node_id()
    tmp.write_text(json.dumps({"rank": rank, "step": step, "node_id": node, "pid": os.getpid()}))
    tmp.rename(mark)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.2)


def _checkpoints(run_uri: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's complete checkpoints, oldest first, as (folder URI, its ``state.json``).

    Ray Train names checkpoints ``checkpoint_<timestamp>``, so name order is the order they were
    written in. A folder whose files are not all there at their written size (an upload cut off
    by a dying worker) is left out (:func:`echoprime.training.checkpoint.is_complete`).
    """
    import pyarrow.fs as pafs

    from echoprime import storage
    from echoprime.training.checkpoint import STATE_FILE, is_complete

    run = storage.locate(run_uri)
    if run.fs.get_file_info(run.path).type != pafs.FileType.Directory:
        return []
    folders: dict[str, dict[str, int]] = {}
    for info in run.fs.get_file_info(pafs.FileSelector(run.path, recursive=True)):
        parts = posixpath.relpath(info.path, run.path).split("/")
        if info.type == pafs.FileType.File and len(parts) == 2 and parts[0].startswith("checkpoint_"):
            folders.setdefault(parts[0], {})[parts[1]] = int(info.size or 0)
    out = []
    for name in sorted(folders):
        if STATE_FILE not in folders[name]:
            continue
        try:
            st = json.loads(storage.read_bytes(run.join(name, STATE_FILE).uri))
        except (OSError, ValueError):  # a state.json cut short
            continue
        if is_complete(st, folders[name]):
            out.append((run.join(name).uri, st))
    return out


def _newest_checkpoint(run_uri: str) -> tuple[str, dict[str, Any]] | None:
    """The complete checkpoint a (re)started run goes on from: the highest step, the latest
    written among equals; None for a run with none.

    The run's folder decides, not only Ray Train's latest registered checkpoint: Ray registers a
    reported checkpoint when its controller next polls the workers (every ~2 s), so one written
    just before a worker died may never be registered, and the restarted group would silently
    go back to an older checkpoint, or to step 0 (as it did before this was read from storage).
    """
    cks = _checkpoints(run_uri)
    return max(cks, key=lambda c: (int(c[1].get("step", 0)), c[0])) if cks else None


def _finished_checkpoint(run_uri: str, epochs: int, total_steps: int) -> str | None:
    """The run's latest complete checkpoint (a folder URI) when it has nothing left to train, else None.

    A run is finished when that checkpoint reached ``total_steps`` or its last epoch (a run
    stopped on its time budget records the last epoch).
    """
    cks = _checkpoints(run_uri)
    if not cks:
        return None
    latest, st = cks[-1]
    done = st.get("step", 0) >= total_steps or st.get("epoch", 0) >= epochs
    return latest if done else None


def _local_copy(folder_uri: str, dest: Path) -> Path:
    """A checkpoint folder on local disk (S3 objects are downloaded to ``dest``)."""
    from echoprime import storage

    if not storage.is_s3(folder_uri):
        return Path(folder_uri)
    for f in storage.list_files(folder_uri):
        target = dest / f[len(folder_uri) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(f))
    return dest


# ------------------------------------------------------------------------------- the driver
def fit(
    cfg: EchoPrimeConfig,
    loop_config: dict[str, Any],
    train_ds: Any,
    val_ds: Any,
    storage_uri: str,
    label: str,
) -> Any:
    """Run :func:`_train_fn` on Ray Train (``train.*``: workers, checkpoints, failures) and return
    its ``Result``: the one trainer of pretraining and of the fine-tuning heads (ray_jobs/finetune.py).

    ``loop_config`` holds what the run is made of (model or task, spec, steps, ``run_uri``,
    ``init``, ``task``, ``fault``); the train config, seed and progress bar are added here.
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from echoprime.training.batch import Augmentation
    from ray_jobs.common import driver_progress

    tc = cfg.train
    with driver_progress(label) as progress:
        trainer = TorchTrainer(
            _train_fn,
            train_loop_config={
                "train": tc.model_dump(),
                "augmentation": Augmentation.from_train(tc),
                "seed": cfg.seed,
                "config_dict": cfg.to_dict(),
                "progress": progress,
                **loop_config,
            },
            scaling_config=ScalingConfig(
                num_workers=tc.num_workers,
                use_gpu=tc.use_gpu,
                resources_per_worker={"CPU": tc.cpus_per_worker, **({"GPU": 1} if tc.use_gpu else {})},
            ),
            run_config=RunConfig(
                name=tc.run_name,
                storage_path=storage_uri,
                failure_config=FailureConfig(max_failures=tc.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints),
            ),
            datasets={"train": train_ds, "val": val_ds},
            # Which rows each worker gets must not depend on the nodes the workers landed on: a
            # group restarted after a node was lost is placed elsewhere, and a locality-aware
            # split then gave a rank other rows than before, so its resumed epoch passed over
            # rows it had never trained on (tests/ray/test_multinode.py).
            dataset_config=DataConfig(datasets_to_split=["train"], enable_shard_locality=False),
        )
        return trainer.fit()


def run_pretrain(
    cfg: EchoPrimeConfig, shards: str, out: str, *, resume: bool = False, fault: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Pretrain on ``shards`` and write the pretrained model to ``out``; returns headline numbers.

    Args:
        cfg: the resolved config (model, data, train, ray sections are used).
        shards: ingest output with committed train and val splits.
        out: output folder (local or s3://).
        resume: continue ``train.run_name`` from its last checkpoint instead of refusing to reuse it.
        fault: test hooks: ``"probe": folder``: each rank writes there the optimizer and scheduler state it
            restored and, per step, the clips it took (``_logged``); ``{"pause_at_step": k,
            "pause_dir": folder}``: every rank waits once after step k (``_pause``) while a test
            removes a node.

    Raises:
        ShardError: missing/empty split, missing column or wrong clip shape (before training).
        ValueError: unwritable storage path or output, or a run of that name exists without --resume.
    """
    import pyarrow.parquet as pq
    import ray

    from echoprime import storage
    from echoprime.data.shards import ShardError, read_manifest, validate_split
    from echoprime.training.finetune import load_init
    from echoprime.training.setup import build_tokenizer, export_pretrained, load_pretrained
    from ray_jobs.common import (
        check_stream_seed,
        configure_ray_data,
        ray_session,
        require_resources,
        stream_clips,
        stream_dataset,
    )

    t0 = time.perf_counter()
    tc = cfg.train
    # Everything that can be wrong is checked before a worker starts.
    manifest = read_manifest(shards)
    train_files, val_files = validate_split(shards, "train"), validate_split(shards, "val")
    spec = dict(manifest.spec)
    if spec["size"] != cfg.data.size or spec["frames"] != cfg.data.frames:
        raise ValueError(
            f"shards at {shards} hold {spec['frames']} x {spec['size']} px clips but the config asks for "
            f"data.frames={cfg.data.frames}, data.size={cfg.data.size}; re-ingest or change the config"
        )
    storage_uri = tc.storage_path if storage.is_s3(tc.storage_path) else str(Path(tc.storage_path).resolve())
    storage.ensure_dir(storage_uri)
    out_loc = storage.ensure_dir(out)
    run_dir = storage.locate(storage_uri).join(tc.run_name)
    if storage.exists(run_dir.uri) and not resume:
        raise ValueError(
            f"a run named {tc.run_name!r} already exists at {storage_uri}; pass --resume to continue it, "
            f"or set train.run_name=<new name>"
        )
    stream = cfg.stream.studies > 0
    if stream:
        check_stream_seed(cfg, shards)
        # The rows are split equally between the workers; the count is exact, so an epoch uses
        # every clip it renders (a lower bound from synth.min_videos left ~1/6 of them unused).
        n_train = stream_clips(cfg, spec, cfg.stream.studies)
    else:
        n_train = manifest.rows["train"]
    steps_per_epoch = n_train // tc.num_workers // tc.batch_size
    if steps_per_epoch < 1:
        what = f"{cfg.stream.studies} stream studies hold" if stream else "the train split has"
        raise ValueError(
            f"{what} {n_train} clips: too few for {tc.num_workers} workers x batch {tc.batch_size}"
            + " (lower train.batch_size or train.num_workers, or use more studies)"
        )
    total_steps = steps_per_epoch * tc.epochs
    if tc.max_steps is not None:
        total_steps = min(total_steps, tc.max_steps)
    # A short run warms up for at most a quarter of its steps (a warm-up longer than the run
    # would never reach the base learning rate).
    warmup_steps = min(tc.warmup_steps, total_steps // 4)

    # The tokenizer is trained on (or, for BERT, loaded for) the training reports, once.
    reports: dict[str, str] = {}
    for f in train_files:
        loc = storage.locate(f)
        t = pq.read_table(loc.path, filesystem=loc.fs, columns=["study_id", "report"])
        reports.update(zip(t.column("study_id").to_pylist(), t.column("report").to_pylist(), strict=True))
    if not any(r.strip() for r in reports.values()):
        raise ShardError(
            f"the train split of {shards} holds no report (label-only shards): pretraining learns from "
            "reports; fit a supervised head on these with `echoprime finetune --task NAME` instead"
        )
    from echoprime.models.tokenizer import ReportTokenizer

    # --init: the bundle's towers and tokenizer (checked against the config and shards first).
    init = load_init(tc.init, cfg.model.model_dump(), spec) if tc.init else None
    work = Path(tempfile.mkdtemp(prefix="echoprime-pretrain-"))
    try:
        if init is not None and init.tokenizer_dir is not None:
            tok_dir = Path(shutil.copytree(init.tokenizer_dir, work / "tokenizer"))
        else:
            tok_dir = build_tokenizer(cfg.model.model_dump(), list(reports.values()), work / "tokenizer")
        tokenizer = ReportTokenizer.from_pretrained(tok_dir)

        finished = _finished_checkpoint(run_dir.uri, tc.epochs, total_steps) if resume else None
        if finished is None:
            with ray_session(cfg.ray):
                configure_ray_data()
                require_resources(
                    tc.num_workers * tc.cpus_per_worker,
                    tc.num_workers * (1 if tc.use_gpu else 0),
                    cfg.ray.resource_wait_s,
                    f"pretraining ({tc.num_workers} workers)",
                )
                train_ds = (
                    stream_dataset(cfg, spec, cfg.stream.studies) if stream else _read_split(train_files)
                ).map_batches(
                    _tokenize,
                    fn_kwargs={"tokenizer": tokenizer, "seed": cfg.seed, "grades": tuple(tc.label_grades)},
                    batch_size=64,
                )
                val_ds = _read_split(val_files).map_batches(
                    _tokenize,
                    fn_kwargs={
                        "tokenizer": tokenizer,
                        "seed": cfg.seed + 1,
                        "grades": tuple(tc.label_grades),
                    },
                    batch_size=64,
                )
                bytes_est = n_train * math.prod(manifest.clip_shape)
                store = ray.available_resources().get("object_store_memory", 0)
                if tc.materialize == "always" or (tc.materialize == "auto" and bytes_est < store / 3):
                    # Small sets are held in memory: the pipeline then runs once instead of every epoch,
                    # and nothing competes with the workers for the few CPUs (docs/ray-notes.md).
                    train_ds = train_ds.materialize()
                val_ds = val_ds.materialize()  # evaluated every epoch; small by construction
                result = fit(
                    cfg,
                    {
                        "model": cfg.model.model_dump(),
                        "spec": spec,
                        "vocab_size": tokenizer.vocab_size,
                        "steps_per_epoch": steps_per_epoch,
                        "total_steps": total_steps,
                        "warmup_steps": warmup_steps,
                        "run_uri": run_dir.uri,
                        "fault": fault,
                        "init": None
                        if init is None
                        else {"state": ray.put(init.state), "towers": init.towers, "source": init.source},
                    },
                    train_ds,
                    val_ds,
                    storage_uri,
                    "pretrain",
                )
            if result.checkpoint is None:
                raise RuntimeError(f"pretraining produced no checkpoint (error: {result.error})")
            checkpoint_dir: Any = result.checkpoint.as_directory()
        else:
            # Nothing left to train: export the last checkpoint without starting Ray Train.
            print(f"pretrain: run {tc.run_name!r} has finished ({finished}); exporting its last checkpoint")
            checkpoint_dir = contextlib.nullcontext(_local_copy(finished, work / "finished"))
        from echoprime.training.checkpoint import load_checkpoint
        from echoprime.training.setup import build_clip

        model = build_clip(cfg.model.model_dump(), spec, tokenizer.vocab_size)
        with checkpoint_dir as d:
            st = load_checkpoint(d, model)
        history = st["extra"].get("history", [])
        local_out = Path(out_loc.path) if not storage.is_s3(out_loc.uri) else work / "export"
        export_pretrained(
            model, local_out, tokenizer_dir=tok_dir, config_yaml=cfg.to_yaml(), spec=spec, metrics=history
        )
        load_pretrained(local_out)  # what was written loads back
        if storage.is_s3(out_loc.uri):
            for p in sorted(local_out.rglob("*")):
                if p.is_file():
                    storage.write_bytes(out_loc.join(p.relative_to(local_out).as_posix()).uri, p.read_bytes())
        epochs = [h for h in history if h.get("kind") == "epoch"]
        started = next((h for h in history if h.get("kind") == "init"), {})
        last = epochs[-1] if epochs else {}
        first = epochs[0] if epochs else {}
        n_val_studies = manifest.studies.get("val", 0)
        return {
            "out": out_loc.uri,
            "run": run_dir.uri,
            "already_finished": finished is not None,  # --resume of a finished run: exported only
            "steps": st["step"],
            "planned_steps": total_steps,
            "epochs": len(epochs),
            "stopped_on_budget": bool(st["extra"].get("stopped_on_budget", False)),
            "stopped_early": bool(st["extra"].get("stopped_early", False)),
            "init": tc.init,
            "init_notes": init.notes if init is not None else [],
            "init_val_v2t_r@10": started.get("val_v2t_r@10"),
            "init_val_t2v_r@10": started.get("val_t2v_r@10"),
            "train_clips": n_train,  # a stream's lower bound (its studies' minimum videos)
            "stream_studies": cfg.stream.studies,
            "loss_first": first.get("loss"),
            "loss_last": last.get("loss"),
            "val_v2t_r@1": last.get("val_v2t_r@1"),
            "val_v2t_r@5": last.get("val_v2t_r@5"),
            "val_v2t_r@10": last.get("val_v2t_r@10"),
            "val_t2v_r@10": last.get("val_t2v_r@10"),
            "val_studies": n_val_studies,
            "chance_r@10": min(1.0, 10 / max(n_val_studies, 1)),
            "clips_per_s": last.get("clips_per_s"),
            "data_wait_frac": last.get("data_wait_frac"),
            "temperature": last.get("temperature"),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
    finally:
        # The tokenizer and (for S3) the staged export were copied into the bundle.
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    from ray_jobs.common import resolve_config

    cfg = resolve_config(args)
    if args.init is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"init": args.init})})
    from echoprime import storage

    res = run_pretrain(
        cfg, args.shards, storage.locate(args.bundle).join("pretrained").uri, resume=args.resume
    )
    print(
        f"pretrain: {res['steps']}/{res['planned_steps']} steps in {res['epochs']} epochs, loss {res['loss_first']:.3f} -> "
        f"{res['loss_last']:.3f}; val video->report R@1/5/10 {res['val_v2t_r@1']:.2f}/{res['val_v2t_r@5']:.2f}/"
        f"{res['val_v2t_r@10']:.2f} (chance R@10 {res['chance_r@10']:.2f}, {res['val_studies']} studies); "
        f"{res['clips_per_s']:.0f} clips/s, data wait {100 * res['data_wait_frac']:.1f} %; model in {res['out']}"
    )
    print(json.dumps(res, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["pretrain", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
