"""Fit the anatomical attention (multiple-instance learning over a study's videos, per section).

Embeds every clip of the train and val splits (or, with ``mil.stream_studies``, of that many
rendered synthetic studies instead of the train split) with the pretrained video encoder and the
trained view classifier (Ray Data, an actor pool), embeds each study's report section by section with
the text tower, then trains a gated attention module so that each section's attention-pooled
study embedding retrieves that section's own text. The learned module is also exported as the
release's 15 x 11 section x view table, and compared with the synthetic generator's visibility
table when the shards carry synthetic studies.

Writes BUNDLE/mil/{mil.safetensors, mil_table.csv, metrics.json, component.json}.

Example:
  echoprime fit-mil --shards shards --bundle bundle --config configs/tiny-cpu.yaml
  echoprime fit-mil ... mil.mode=table     # skip learning: keep only the table form
  echoprime fit-mil ... mil.stream_studies=2000   # fit on 2000 rendered studies
"""

from __future__ import annotations

import argparse

from echoprime.commands import add_config_arguments, default_config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", required=True, help="ingest output (train and val splits)")
    p.add_argument(
        "--bundle", required=True, help="the bundle folder being built (pretrained/ and views/ done)"
    )
    add_config_arguments(p, default=default_config_path())
