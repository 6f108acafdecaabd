"""``echoprime train-views`` on Ray: the shards' labelled clips (or the synthetic stream) through
Ray Data into a Ray Train ``TorchTrainer``; its weights are written as BUNDLE/views.

The command's arguments and description are :mod:`echoprime.commands.train_views`; the epochs,
metrics and the stage written are :mod:`echoprime.training.view_classifier`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
from ray.train import DataConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from echoprime.commands import command_main, config_of
from echoprime.commands.train_views import add_arguments
from echoprime.config import EchoPrimeConfig
from echoprime.data.shards import read_manifest, validate_split
from echoprime.data.stream import check_stream_seed, stream_clips
from echoprime.models import create_model
from echoprime.staging import spec_of
from echoprime.training.checkpoint import unwrap
from echoprime.training.view_classifier import (
    WEIGHTS_FILE,
    run_view_epochs,
    view_model_overrides,
    views_summary,
    write_views_stage,
)
from ray_jobs._datasets import labelled_views, read_split, stream_dataset
from ray_jobs.common import configure_ray_data, ray_session, require_resources


def _train_fn(config: dict[str, Any]) -> None:
    """One Ray Train worker: the classifier prepared for DDP, then the plain epochs on its shard."""
    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    model = ray.train.torch.prepare_model(create_model(config["model"], **config["overrides"]))
    dtypes = {"clip": torch.uint8, "view_idx": torch.long}
    shard = ray.train.get_dataset_shard("train")
    run_view_epochs(
        model,
        torch.optim.AdamW(unwrap(model).parameters(), lr=config["lr"], weight_decay=0.01),
        epochs=config["epochs"],
        steps_per_epoch=config["steps_per_epoch"],
        train_batches=lambda epoch: shard.iter_torch_batches(
            batch_size=config["batch_size"],
            dtypes=dtypes,
            drop_last=True,
            local_shuffle_buffer_size=512,
            local_shuffle_seed=config["seed"] + epoch,
        ),
        val_batches=lambda: ray.train.get_dataset_shard("val").iter_torch_batches(
            batch_size=256, dtypes=dtypes
        ),
        report=lambda m, d: ray.train.report(
            m, checkpoint=ray.train.Checkpoint.from_directory(d) if d else None
        ),
        device=ray.train.torch.get_device(),
        spec=config["spec"],
        rank=ray.train.get_context().get_world_rank(),
    )


def run_train_views(cfg: EchoPrimeConfig, shards: str, bundle: str) -> dict[str, Any]:
    """Train the view classifier; returns accuracy numbers (and writes BUNDLE/views/)."""
    t0, vc, gpu = time.perf_counter(), cfg.views, cfg.train.use_gpu
    train_files, val_files = validate_split(shards, "train"), validate_split(shards, "val")
    if vc.stream_studies:
        check_stream_seed(cfg, shards)
    spec = spec_of(bundle).to_dict()
    name = cfg.model.view_classifier
    overrides = view_model_overrides(name)
    n_train = (
        stream_clips(cfg, spec, vc.stream_studies)
        if vc.stream_studies
        else read_manifest(shards).rows["train"]
    )
    # Ray Train's checkpoints go to scratch; only the weights are kept.
    scratch = tempfile.mkdtemp(prefix="echoprime-views-")
    try:
        with ray_session(cfg.ray):
            configure_ray_data()
            require_resources(
                vc.num_workers, 1 if gpu else 0, cfg.ray.resource_wait_s, "view classifier training"
            )

            n = vc.stream_studies
            train = stream_dataset(cfg, spec, n) if n else read_split(train_files, ["clip", "view"])
            datasets = {
                "train": labelled_views(train),
                "val": labelled_views(read_split(val_files, ["clip", "view"])),
            }
            loop = {"model": name, "overrides": overrides, "lr": vc.lr, "epochs": vc.epochs, "spec": spec}
            loop.update(
                batch_size=vc.batch_size,
                seed=cfg.seed,
                steps_per_epoch=max(1, n_train // vc.num_workers // vc.batch_size),
            )
            result = TorchTrainer(
                _train_fn,
                train_loop_config=loop,
                scaling_config=ScalingConfig(
                    num_workers=vc.num_workers,
                    use_gpu=gpu,
                    resources_per_worker={"CPU": 1, **({"GPU": 1} if gpu else {})},
                ),
                run_config=RunConfig(name="views", storage_path=scratch),
                datasets=datasets,
                dataset_config=DataConfig(datasets_to_split=["train"]),
            ).fit()
        with result.checkpoint.as_directory() as d:
            weights = (Path(d) / WEIGHTS_FILE).read_bytes()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    metrics = write_views_stage(Path(bundle) / "views", weights, result.metrics, name, overrides)
    return views_summary(metrics, train_clips=n_train, stream_studies=vc.stream_studies, t0=t0)


def run(args: argparse.Namespace) -> int:
    res = run_train_views(config_of(args), args.shards, args.bundle)
    print(
        f"train-views: val accuracy {res['val_accuracy']:.3f} on {res['val_clips']} clips (chance {res['chance']:.3f}); "
        f"confusion matrix in {Path(args.bundle) / 'views' / 'metrics.json'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("train-views", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
