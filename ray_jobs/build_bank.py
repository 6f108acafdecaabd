"""Build the candidate-report bank, fit decision thresholds, and commit the bundle.

Every training study's report (and, with ``stream.bank_studies``, the reports of that many
synthetic stream studies) is embedded by the pretrained text tower (Ray Data, an actor pool
of encoders) and stored with its study id, its structured form (phrase-id triples) and its labels;
exact inner-product search by default, an IVF/PQ faiss index above bank.ivf_threshold reports.
The validation studies are then interpreted through the staged models (video encoder, view
classifier, attention) to fit one decision threshold per binary phenotype (Youden's J), a
calibration map per binary and an 80 % interval per measurement (echoprime.retrieval.calibration),
and the bundle's manifest is written last, with the sha256 of every file. Besides the stored
labels, the bank keeps what each report's text states beyond them: every graded phenotype's grade
and the heart rate (echoprime.reports.extract_findings).

The bank stores keyed pseudonyms of the study ids, never the ids themselves (HMAC-SHA256 with
the site secret in ECHOPRIME_SITE_SECRET, or a one-off secret when it is unset: docs/privacy.md);
--id-map writes the operator-only map back to the originals, outside the bundle.

Writes BUNDLE/bank/, BUNDLE/thresholds.json, BUNDLE/calibration.json, BUNDLE/manifest.json
(the commit).

Example:
  echoprime build-bank --shards shards --bundle bundle --config configs/tiny-cpu.yaml
  echoprime build-bank ... --publish s3://models/echoprime/v1   # also upload the committed bundle
  ECHOPRIME_SITE_SECRET=... echoprime build-bank ... --id-map /secure/ids.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards",
        required=True,
        help="ingest output (the train split becomes the bank; val fits thresholds)",
    )
    p.add_argument(
        "--bundle", required=True, help="the bundle folder being built (pretrained/, views/, mil/ done)"
    )
    p.add_argument(
        "--publish", default=None, help="also copy the committed bundle to this folder or s3:// URI"
    )
    p.add_argument(
        "--id-map",
        default=None,
        metavar="PATH",
        help="also write the operator-only map from the bank's pseudonyms to the original study ids "
        "(JSON, owner-readable only; refused inside the bundle)",
    )
    from echoprime.commands import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


class EmbedReports:
    """Ray Data UDF: report texts -> unit-norm text embeddings with the staged text tower."""

    def __init__(self, bundle: str) -> None:
        import torch

        from echoprime.models.tokenizer import ReportTokenizer
        from echoprime.staging import load_component, staged_components

        torch.set_num_threads(1)
        self.text = load_component(bundle, "text_encoder").eval()
        self.tok = ReportTokenizer.from_pretrained(
            Path(bundle) / staged_components(bundle)["text_encoder"]["tokenizer"]
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from echoprime.inference import embed_reports

        return {
            "study_id": batch["study_id"],
            "emb": embed_reports(self.text, self.tok, [str(r) for r in batch["report"]]),
        }


def embed_bank_reports(cfg: EchoPrimeConfig, bundle: str, reports: dict[str, str]) -> dict[str, np.ndarray]:
    """``{study_id: text embedding}`` of ``reports`` (study id -> text), by an actor pool."""
    import ray

    from ray_jobs.common import POOL_RETRIES

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
    from echoprime.bundle_build import bank
    from echoprime.data.stream import check_stream_seed, stream_reports
    from echoprime.reports import default_vocabulary
    from echoprime.retrieval.pseudonyms import check_map_outside, site_secret
    from ray_jobs._embed import embed_split
    from ray_jobs.common import configure_ray_data, ray_session

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
    from echoprime.bundle_build.bank import summary_lines
    from ray_jobs.common import resolve_config

    res = run_build_bank(resolve_config(args), args.shards, args.bundle, args.publish, id_map=args.id_map)
    print("\n".join(summary_lines(res, args.bundle)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.commands import command_main

    return command_main("build-bank", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
