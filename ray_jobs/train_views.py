"""Train the view classifier on Ray Train from the shards' view labels.

The classifier sees each clip's first frame (the release's rule; tiny_views can take a few
frames) and predicts one of the 11 coarse views. Rows without a view label are skipped.
Reports accuracy and the confusion matrix on the validation split, and writes the model into
the bundle being built: BUNDLE/views/{view_classifier.safetensors, metrics.json, component.json}.

Example:
  echoprime train-views --shards shards --bundle bundle --config configs/tiny-cpu.yaml
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
        "--shards", required=True, help="ingest output with view labels in the train and val splits"
    )
    p.add_argument("--bundle", required=True, help="the bundle folder being built (holds pretrained/)")
    from echoprime.commands import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def _with_view_idx(batch: dict[str, Any]) -> dict[str, Any]:
    from echoprime.training.views import view_ids

    return {"clip": batch["clip"], "view_idx": view_ids(batch["view"])}


def _train_fn(config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch
    import torch

    from echoprime.models import create_model
    from echoprime.training.checkpoint import unwrap
    from echoprime.training.views import evaluate_views, train_views_epoch

    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])
    ctx = ray.train.get_context()
    device = ray.train.torch.get_device()
    model = ray.train.torch.prepare_model(create_model(config["model"], **config["overrides"]))
    opt = torch.optim.AdamW(unwrap(model).parameters(), lr=config["lr"], weight_decay=0.01)
    dtypes = {"clip": torch.uint8, "view_idx": torch.long}
    steps = config["steps_per_epoch"]
    for epoch in range(config["epochs"]):
        tr = train_views_epoch(
            model,
            opt,
            ray.train.get_dataset_shard("train").iter_torch_batches(
                batch_size=config["batch_size"],
                dtypes=dtypes,
                drop_last=True,
                local_shuffle_buffer_size=512,
                local_shuffle_seed=config["seed"] + epoch,
            ),
            device,
            config["spec"],
            max_steps=steps,
        )
        metrics = {"epoch": epoch + 1, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"]}
        last = epoch == config["epochs"] - 1
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if ctx.get_world_rank() == 0:
                ev = evaluate_views(
                    unwrap(model),
                    ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=256, dtypes=dtypes),
                    device,
                    config["spec"],
                )
                metrics.update(val_accuracy=ev["accuracy"], val_n=ev["n"])
                if last:
                    metrics["confusion"] = json.dumps(ev["confusion"])
                    metrics["per_view_accuracy"] = json.dumps(ev["per_view_accuracy"])
                    from safetensors.torch import save_model

                    save_model(unwrap(model), str(Path(tmp) / "view_classifier.safetensors"))
                    ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=ckpt)


def run_train_views(cfg: EchoPrimeConfig, shards: str, bundle: str) -> dict[str, Any]:
    """Train the view classifier; returns accuracy numbers (and writes BUNDLE/views/)."""
    import ray
    from ray.train import DataConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from echoprime import storage
    from echoprime.data.shards import read_manifest, validate_split
    from echoprime.staging import spec_of, write_component
    from echoprime.training.setup import _builder_takes
    from ray_jobs.common import (
        check_stream_seed,
        configure_ray_data,
        ray_session,
        require_resources,
        stream_clips,
        stream_dataset,
    )

    t0 = time.perf_counter()
    train_files, val_files = validate_split(shards, "train"), validate_split(shards, "val")
    if cfg.views.stream_studies:
        check_stream_seed(cfg, shards)
    spec = spec_of(bundle).to_dict()
    manifest = read_manifest(shards)
    name = cfg.model.view_classifier
    overrides: dict[str, Any] = {}
    if _builder_takes(name, "frames"):
        overrides["frames"] = 1  # the first frame, as the release classifies views
    vc = cfg.views
    n_train = manifest.rows["train"]
    if vc.stream_studies:
        n_train = stream_clips(cfg, spec, vc.stream_studies)
    steps = max(1, n_train // vc.num_workers // vc.batch_size)
    out = Path(bundle) / "views"
    # Ray Train's checkpoints go to scratch; only the weights are kept.
    scratch = tempfile.mkdtemp(prefix="echoprime-views-")
    try:
        with ray_session(cfg.ray):
            configure_ray_data()
            require_resources(
                vc.num_workers,
                1 if cfg.train.use_gpu else 0,
                cfg.ray.resource_wait_s,
                "view classifier training",
            )

            def read(files: list[str]):
                locs = [storage.locate(f) for f in files]
                return views_only(ray.data.read_parquet([loc.path for loc in locs], filesystem=locs[0].fs))

            def views_only(ds: Any):
                return (
                    ds.select_columns(["clip", "view"])
                    .filter(lambda r: r["view"] is not None)
                    .map_batches(_with_view_idx, batch_size=256)
                    .materialize()
                )

            train_ds = (
                views_only(stream_dataset(cfg, spec, vc.stream_studies))
                if vc.stream_studies
                else read(train_files)
            )

            trainer = TorchTrainer(
                _train_fn,
                train_loop_config={
                    "model": name,
                    "overrides": overrides,
                    "lr": vc.lr,
                    "epochs": vc.epochs,
                    "batch_size": vc.batch_size,
                    "spec": spec,
                    "seed": cfg.seed,
                    "steps_per_epoch": steps,
                },
                scaling_config=ScalingConfig(
                    num_workers=vc.num_workers,
                    use_gpu=cfg.train.use_gpu,
                    resources_per_worker={"CPU": 1, **({"GPU": 1} if cfg.train.use_gpu else {})},
                ),
                run_config=RunConfig(name="views", storage_path=scratch),
                datasets={"train": train_ds, "val": read(val_files)},
                dataset_config=DataConfig(datasets_to_split=["train"]),
            )
            result = trainer.fit()
        out.mkdir(parents=True, exist_ok=True)
        with result.checkpoint.as_directory() as d:
            (out / "view_classifier.safetensors").write_bytes(
                (Path(d) / "view_classifier.safetensors").read_bytes()
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    m = result.metrics
    metrics = {
        "val_accuracy": m["val_accuracy"],
        "val_clips": m["val_n"],
        "train_accuracy": m["train_accuracy"],
        "epochs": m["epoch"],
        "confusion": json.loads(m["confusion"]),
        "per_view_accuracy": json.loads(m["per_view_accuracy"]),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_component(
        out,
        "view_classifier",
        {"model": name, "overrides": overrides, "file": "views/view_classifier.safetensors"},
    )
    return {
        "val_accuracy": round(metrics["val_accuracy"], 4),
        "train_accuracy": round(metrics["train_accuracy"], 4),
        "val_clips": metrics["val_clips"],
        "epochs": metrics["epochs"],
        "train_clips": n_train,  # a stream's lower bound (its studies' minimum videos)
        "stream_studies": vc.stream_studies,
        "chance": round(1 / 11, 4),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def run(args: argparse.Namespace) -> int:
    from ray_jobs.common import resolve_config

    res = run_train_views(resolve_config(args), args.shards, args.bundle)
    print(
        f"train-views: val accuracy {res['val_accuracy']:.3f} on {res['val_clips']} clips (chance {res['chance']:.3f}); "
        f"confusion matrix in {Path(args.bundle) / 'views' / 'metrics.json'}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.commands import command_main

    return command_main("train-views", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
