"""``echoprime evaluate`` on Ray: every clip of the three splits (and of ``stream.probe_studies``
rendered studies) embedded by an actor pool of the bundle's video encoder and view classifier.

The command's arguments are :mod:`echoprime.commands.evaluate`; a batch's embeddings are
:func:`echoprime.eval.studies.embed_clip_batch`, and everything after the embedding (checks,
metrics, plots, report.md) is :mod:`echoprime.eval.evaluation`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoprime.commands import command_main, config_of
from echoprime.commands.evaluate import add_arguments
from echoprime.config import EchoPrimeConfig
from echoprime.data.stream import STREAM_COLUMNS, check_stream_seed
from echoprime.eval.evaluation import SPLITS, check_inputs, evaluate_embedded, summary_lines
from echoprime.eval.studies import embed_clip_batch
from echoprime.inference import Towers, load_bundle_parts
from echoprime.runlog import ensure_writable_dir
from echoprime.staging import spec_of
from ray_jobs._datasets import stream_dataset
from ray_jobs._embed import ACTOR_BATCH, by_split, embed_dataset, read_splits
from ray_jobs.common import configure_ray_data, ray_session

PASS_THROUGH = ("study_id", "video_id", "view", "labels", "hidden_labels", "report")


class EmbedForEval:
    """Ray Data UDF: shard (or stream) rows -> clip embedding, first-frame embedding (``static``),
    view probabilities."""

    def __init__(self, bundle: str, columns: tuple[str, ...], static: bool = True) -> None:
        torch.set_num_threads(1)  # one intra-op thread per actor: several actors share the cores
        parts = load_bundle_parts(bundle, verify=False, components={"video_encoder", "view_classifier"})
        self.towers = Towers.of(parts, device="cpu", batch_size=ACTOR_BATCH)
        self.columns, self.static = columns, static

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n_valid = batch.get("n_valid")  # absent on stream rows: every frame is real
        out = embed_clip_batch(self.towers, batch["clip"], n_valid, static=self.static)
        return {**{c: batch[c] for c in self.columns}, **out}


def embed_for_eval(
    cfg: EchoPrimeConfig, shards: str, bundle: str, with_hidden: bool
) -> dict[str, dict[str, Any]]:
    """Every clip of the three splits through one Ray Data pipeline: ``{split: numpy columns}``."""
    columns = tuple(c for c in PASS_THROUGH if with_hidden or c != "hidden_labels")
    n_actors = max(1, min(cfg.ingest.decode_actors, 2))
    # One read block per file (V1 datasource, configure_ray_data); a shard set of only a few files
    # would leave actors idle, so ask for at least four blocks per actor.
    ds, owner = read_splits(shards, SPLITS, ["clip", "n_valid", *columns, "path"], min_blocks=4 * n_actors)
    allc = embed_dataset(
        cfg, ds, bundle, with_views=True, udf=EmbedForEval, udf_args=(bundle, (*columns, "path"))
    )
    return by_split(allc, owner, SPLITS)


def probe_columns(cfg: EchoPrimeConfig, bundle_dir: str, train: dict[str, Any], n: int) -> dict[str, Any]:
    """The columns of the probes' fitting set: the train split's clips and those of ``n`` stream
    studies (``stream.seed``, rendered at the bundle's spec, embedded as the shards' clips are).

    Only the columns both have are kept (no first-frame embeddings for the stream: the ablation
    reads the train split)."""
    columns = tuple(c for c in STREAM_COLUMNS if c != "clip" and c in train)
    stream = embed_dataset(
        cfg,
        stream_dataset(cfg, spec_of(bundle_dir).to_dict(), n),
        bundle_dir,
        with_views=True,
        udf=EmbedForEval,
        udf_args=(bundle_dir, columns, False),
    )
    return {k: np.concatenate([v, stream[k]]) for k, v in train.items() if k in stream}


def run_evaluate(
    cfg: EchoPrimeConfig, bundle: str, shards: str, out: str | Path, *, n_boot: int = 1000, draws: int = 5
) -> dict[str, Any]:
    """Evaluate ``bundle`` on ``shards``; writes OUT/metrics.json, plots and report.md
    (echoprime.eval.evaluation does all but the embedding).

    Returns:
        The headline numbers (:func:`echoprime.eval.document.headline`) plus ``wall_s``,
        ``embed_s`` and ``out``.

    Raises:
        echoprime.eval.suite.EvaluationInputError: different preprocessing or label sets.
        echoprime.bundle.BundleError, echoprime.data.shards.ShardError: unusable inputs.
    """
    t0 = time.perf_counter()
    out = Path(out)
    ensure_writable_dir(out)
    root, manifest, with_hidden = check_inputs(bundle, shards)  # everything, before Ray starts
    n_probe = cfg.stream.probe_studies
    if n_probe:
        check_stream_seed(cfg, shards)
    with ray_session(cfg.ray):
        configure_ray_data()
        cols = embed_for_eval(cfg, shards, str(root), with_hidden)
        if n_probe:
            cols["probe"] = probe_columns(cfg, str(root), cols["train"], n_probe)
    embed_s = time.perf_counter() - t0
    return evaluate_embedded(
        cfg,
        bundle,
        shards,
        root,
        manifest,
        cols,
        out,
        n_boot=n_boot,
        draws=draws,
        started=t0,
        embed_s=embed_s,
    )


def run(args: argparse.Namespace) -> int:
    res = run_evaluate(
        config_of(args), args.bundle, args.shards, args.out, n_boot=args.boot, draws=args.draws
    )
    print("\n".join(summary_lines(res)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("evaluate", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
