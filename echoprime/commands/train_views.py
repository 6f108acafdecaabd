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

from echoprime.commands import add_config_arguments, default_config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards", required=True, help="ingest output with view labels in the train and val splits"
    )
    p.add_argument("--bundle", required=True, help="the bundle folder being built (holds pretrained/)")
    add_config_arguments(p, default=default_config_path())
