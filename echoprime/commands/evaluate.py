"""Evaluate a committed bundle on the held-out studies of ingested shards.

Ray Data embeds every clip of the train, val and test splits with an actor pool (each actor
loads the bundle's video encoder and view classifier once; it embeds each clip and a copy of
the clip made of its first frame only, for the ablation). The driver then computes, without
Ray (echoprime.eval.suite):

  retrieval      video->text and text->video recall@1/5/10 and median rank, video and study level
  clinical       the 21 phenotypes: kNN through the bank and a linear probe; AUC with a bootstrap
                 95 % interval, sensitivity/specificity at fitted thresholds, calibration; MAE
  hidden         diagnoses never written in a report (synthetic cohorts): kNN and linear probes
  ablation       one frame / one video / mean / section x view table / attention module (/ oracle)
  views          accuracy, confusion matrix; learned attention next to the visibility table
  zero-shot      phenotypes from report-text prompts, next to kNN

Writes OUT/metrics.json, OUT/*.png and OUT/report.md, and prints the headline table.

Example:
  echoprime evaluate --bundle quickstart-out/bundle --shards quickstart-out/shards --out quickstart-out/eval
"""

from __future__ import annotations

import argparse

from echoprime.commands import add_config_arguments, default_config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="a committed model bundle (folder or s3://)")
    p.add_argument("--shards", required=True, help="ingest output with train, val and test splits")
    p.add_argument("--out", default="evaluation", help="output folder (default: ./evaluation)")
    p.add_argument(
        "--boot", type=int, default=1000, help="bootstrap resamples of each interval (default 1000)"
    )
    p.add_argument(
        "--draws", type=int, default=5, help="single-video draws averaged in the ablation (default 5)"
    )
    add_config_arguments(p, default=default_config_path())
