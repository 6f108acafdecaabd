"""``echoprime fit-mil`` on Ray: the train and val clips (or rendered stream studies) embedded by
an actor pool of the staged video encoder and view classifier.

The command's arguments are :mod:`echoprime.commands.fit_mil`; the attention's fit, its table
and its metrics are :func:`echoprime.bundle_build.mil.fit_attention`.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from echoprime.bundle_build.mil import fit_attention, summary_line
from echoprime.commands import command_main, config_of
from echoprime.commands.fit_mil import add_arguments
from echoprime.config import EchoPrimeConfig
from echoprime.data.shards import validate_split
from echoprime.data.stream import check_stream_seed
from echoprime.staging import spec_of
from ray_jobs._datasets import stream_dataset
from ray_jobs._embed import embed_dataset, embed_splits
from ray_jobs.common import configure_ray_data, ray_session


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
    print(summary_line(run_fit_mil(config_of(args), args.shards, args.bundle)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("fit-mil", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
