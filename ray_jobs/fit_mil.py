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
import time
from typing import Any

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", required=True, help="ingest output (train and val splits)")
    p.add_argument(
        "--bundle", required=True, help="the bundle folder being built (pretrained/ and views/ done)"
    )
    from echoprime.commands import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def run_fit_mil(
    cfg: EchoPrimeConfig, shards: str, bundle: str, *, keep_embeddings: dict | None = None
) -> dict[str, Any]:
    """Embed the clips, then fit the attention (echoprime.bundle_build.mil.fit_attention); returns
    per-section retrieval numbers and the alignment with the visibility table.

    Args:
        keep_embeddings: a dict that receives the embedded clips (``{"train": cols, "val": cols}``;
            "train" holds the rendered studies' clips with ``mil.stream_studies``) so that a
            following build-bank in the same process need not embed the val clips again.
    """
    from echoprime.bundle_build.mil import fit_attention
    from echoprime.data.shards import validate_split
    from echoprime.data.stream import check_stream_seed
    from echoprime.staging import spec_of
    from ray_jobs._datasets import stream_dataset
    from ray_jobs._embed import embed_dataset, embed_splits
    from ray_jobs.common import configure_ray_data, ray_session

    t0 = time.perf_counter()
    validate_split(shards, "train"), validate_split(shards, "val")  # before Ray starts: fail fast
    n_stream = cfg.mil.stream_studies
    if n_stream:
        check_stream_seed(cfg, shards)
    with ray_session(cfg.ray):
        configure_ray_data()
        emb = embed_splits(cfg, shards, ("val",) if n_stream else ("train", "val"), bundle, with_views=True)
        if n_stream:
            # The attention is a small model on frozen embeddings, but 243 stored studies leave
            # each section x view weight to a handful of examples: fit it on rendered studies.
            stream = stream_dataset(cfg, spec_of(bundle).to_dict(), n_stream)
            emb["train"] = embed_dataset(cfg, stream, bundle, with_views=True)
    if keep_embeddings is not None:
        keep_embeddings.update(emb)
    return fit_attention(cfg, bundle, emb["train"], emb["val"], started=t0)


def run(args: argparse.Namespace) -> int:
    from echoprime.bundle_build.mil import summary_line
    from ray_jobs.common import resolve_config

    print(summary_line(run_fit_mil(resolve_config(args), args.shards, args.bundle)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.commands import command_main

    return command_main("fit-mil", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
