"""``echoprime probe``: how well a bundle's frozen embeddings predict a dataset's labels.

  echoprime probe --bundle quickstart-out/bundle --shards dynamic-shards --dataset echonet-dynamic --out probe-dynamic
  echoprime probe --bundle B --shards S --targets ejection_fraction,IVSd --head-out B-with-ef --head-target ejection_fraction

Every clip of the shards' train, val and test splits is embedded on Ray Data by an actor pool
that runs the bundle's video tower as interpretation does (and returns its last tokens, for the
attentive probe); then, per target, the frozen attentive probe, a linear and a kNN probe are
fitted on train, tuned on val and scored on test with bootstrap intervals, beside the train-mean
floor (echoprime.eval.dataset_probe, echoprime.eval.attentive_probe). Writes ``OUT/metrics.json``,
``OUT/report.md`` (with the figures published on the dataset, when ``--dataset`` names one) and
predicted-vs-true / Bland-Altman plots. ``--head-out`` also writes a new bundle whose head is the
linear probe of ``--head-target``: interpretation and Serve then answer with it (``tasks``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from echoprime.commands import add_config_arguments, default_config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle", required=True, help="the bundle whose video tower embeds the dataset (folder or s3://)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="ingest output with train, val and test splits (labels only is fine)")
    src.add_argument(
        "--input",
        help="a public dataset's folder as published (with --dataset): ingested first into OUT/shards at "
        "the bundle's preprocessing (echoprime ingest --dataset, docs/datasets/), then probed",
    )
    p.add_argument("--out", required=True, help="folder for metrics.json, report.md and the plots")
    p.add_argument(
        "--dataset",
        default=None,
        help="the public dataset the shards (or --input) hold (echonet-dynamic, echonet-pediatric, ...): "
        "names the report and puts the figures published on it beside ours",
    )
    p.add_argument(
        "--dataset-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of --dataset for --input, as for echoprime ingest (e.g. fold=3)",
    )
    p.add_argument(
        "--targets",
        default="auto",
        help="comma-separated label keys to probe (default auto: every numeric label with >= 10 labelled "
        "train studies, and ef_below_40 when ejection_fraction is there)",
    )
    p.add_argument(
        "--fit-shards",
        default=None,
        help="transfer protocol: fit and tune the probes on these shards' train and val splits, score on "
        "--shards' test split (e.g. fit on EchoNet-Dynamic, score on EchoNet-Pediatric)",
    )
    p.add_argument(
        "--head-out", default=None, help="also write this bundle: --bundle plus the linear probe as a head"
    )
    p.add_argument(
        "--head-target", default="ejection_fraction", help="the target whose linear probe --head-out stores"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples of the test split (default 1000)"
    )
    p.add_argument(
        "--no-attentive",
        dest="attentive",
        action="store_false",
        help="skip the frozen attentive probe over the tower's last tokens (it stores every clip's "
        "tokens while it runs: float16, ~0.6 MB a clip for MViT v2 S, under OUT, removed at the end)",
    )
    p.add_argument(
        "--attentive-epochs",
        type=int,
        default=None,
        help="epochs of each attentive probe fit (default 20; the best on val is kept)",
    )
    add_config_arguments(p, default=default_config_path())


def probe_shards(args: argparse.Namespace) -> str:
    """The shards to probe: ``--shards``, or with ``--input`` the folder it is ingested into
    (``OUT/shards``).

    Raises:
        ValueError: ``--input`` without ``--dataset``.
    """
    if args.input is None:
        return str(args.shards)
    if not args.dataset:
        raise ValueError(
            "--input names a public dataset's folder: give --dataset NAME with it (docs/datasets/)"
        )
    return str(Path(args.out) / "shards")
