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

from echoprime.commands import add_config_arguments, config_of, default_config_path
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
    add_config_arguments(p, default=default_config_path())


def pretrain_config(args: argparse.Namespace) -> EchoPrimeConfig:
    """The config of ``--config`` and the overrides, with ``--init`` (when given) as ``train.init``."""
    cfg = config_of(args)
    if args.init is not None:
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"init": args.init})})
    return cfg
