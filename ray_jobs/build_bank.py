"""``echoprime build-bank`` on Ray: the bank's reports embedded by an actor pool of the staged
text tower, and the val clips by one of the video tower (unless fit-mil handed them over).

The command's arguments are :mod:`echoprime.commands.build_bank`; parsing the reports, saving the
bank, fitting the decisions and committing the bundle are :mod:`echoprime.bundle_build.bank`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray
import torch

from echoprime.bundle_build import bank
from echoprime.commands import command_main, config_of
from echoprime.commands.build_bank import add_arguments
from echoprime.config import EchoPrimeConfig
from echoprime.data.stream import check_stream_seed, stream_reports
from echoprime.inference import embed_reports
from echoprime.models.tokenizer import ReportTokenizer
from echoprime.reports import default_vocabulary
from echoprime.retrieval.pseudonyms import check_map_outside, site_secret
from echoprime.staging import load_component, staged_components
from ray_jobs._embed import embed_split
from ray_jobs.common import POOL_RETRIES, configure_ray_data, ray_session


class EmbedReports:
    """Ray Data UDF: report texts -> unit-norm text embeddings with the staged text tower."""

    def __init__(self, bundle: str) -> None:
        torch.set_num_threads(1)
        self.text = load_component(bundle, "text_encoder").eval()
        self.tok = ReportTokenizer.from_pretrained(
            Path(bundle) / staged_components(bundle)["text_encoder"]["tokenizer"]
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {
            "study_id": batch["study_id"],
            "emb": embed_reports(self.text, self.tok, [str(r) for r in batch["report"]]),
        }


def embed_bank_reports(cfg: EchoPrimeConfig, bundle: str, reports: dict[str, str]) -> dict[str, np.ndarray]:
    """``{study_id: text embedding}`` of ``reports`` (study id -> text), by an actor pool."""
    ds = ray.data.from_items([{"study_id": s, "report": r} for s, r in reports.items()])
    ds = ds.map_batches(
        EmbedReports,
        fn_constructor_args=(bundle,),
        batch_size=cfg.bank.batch_size,
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=cfg.bank.encode_actors),
        **POOL_RETRIES,
    )
    got: dict[str, np.ndarray] = {}
    for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
        got.update(zip((str(s) for s in b["study_id"]), b["emb"], strict=True))
    return got


def run_build_bank(
    cfg: EchoPrimeConfig,
    shards: str,
    bundle: str,
    publish: str | None = None,
    *,
    val_embeddings: dict | None = None,
    id_map: str | None = None,
) -> dict[str, Any]:
    """Build the bank, fit thresholds, commit (and optionally publish) the bundle; returns numbers
    (echoprime.bundle_build.bank does all but the embedding).

    Args:
        val_embeddings: the validation split's clip embeddings from ``fit-mil`` in this process
            (same staged encoders), to skip embedding them again.
        id_map: also write the map from the bank's pseudonyms to the original study ids here
            (a local path outside the bundle).

    Raises:
        ValueError: ``id_map`` inside the bundle, or a site secret that is too short.
    """
    t0 = time.perf_counter()
    if id_map is not None:
        check_map_outside(id_map, bundle, "the bundle")
    secret, secret_source = site_secret()  # checked before the minutes of embedding
    vocab = default_vocabulary()
    train = bank.shard_reports(shards, "train")
    if cfg.stream.bank_studies:
        check_stream_seed(cfg, shards)
        train |= stream_reports(range(cfg.stream.bank_studies), seed=cfg.stream.seed)
    parsed = bank.parse_reports(train, vocab, shards)
    with ray_session(cfg.ray):
        configure_ray_data()
        got = embed_bank_reports(cfg, bundle, {s: train[s][0] for s in parsed.keep})
        va = (
            val_embeddings
            if val_embeddings is not None
            else embed_split(cfg, shards, "val", bundle, with_views=True)
        )
    built, pseudo = bank.save_bank(cfg, bundle, got, train, parsed, secret)
    del secret
    decisions = bank.fit_decisions(cfg, bundle, va, built)
    res = bank.commit_bank(
        cfg, bundle, built, parsed, decisions, pseudo, secret_source, publish=publish, id_map=id_map
    )
    return res | {"wall_s": round(time.perf_counter() - t0, 1)}


def run(args: argparse.Namespace) -> int:
    res = run_build_bank(config_of(args), args.shards, args.bundle, args.publish, id_map=args.id_map)
    print("\n".join(bank.summary_lines(res, args.bundle)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("build-bank", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
