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

from echoprime.commands import add_config_arguments, default_config_path


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
    add_config_arguments(p, default=default_config_path())
