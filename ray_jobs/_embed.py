"""Shared by the jobs after pretraining: embed a split's clips with Ray Data and an actor pool.

Each actor loads the staged video encoder (and, once trained, the view classifier) from the
bundle folder once, then embeds batches of clips; the driver collects the (small) embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import ray
import torch

from echoprime import storage
from echoprime.data.shards import validate_split
from echoprime.inference import Towers
from echoprime.staging import load_component, spec_of
from ray_jobs.common import POOL_RETRIES

PASS_THROUGH: tuple[str, ...] = ("study_id", "video_id", "view", "labels", "report", "path")
"""Row columns an embedded batch keeps (those the source has: stream rows carry no ``video_id``
or ``path``)."""


ACTOR_BATCH = 64
"""Rows an embedding actor takes at a time: one normalised batch through the towers."""


class EmbedClips:
    """Ray Data UDF: shard or stream rows -> video embeddings (+ view probabilities when available)."""

    def __init__(self, bundle_dir: str, with_views: bool, threads: int = 1) -> None:
        torch.set_num_threads(threads)
        video = load_component(bundle_dir, "video_encoder")
        views = load_component(bundle_dir, "view_classifier") if with_views else None
        self.towers = Towers(spec_of(bundle_dir), video, views, device="cpu", batch_size=ACTOR_BATCH)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        n_valid = batch.get("n_valid")  # absent on stream rows: every rendered frame is real
        emb, probs = self.towers.encode_uint8(np.asarray(batch["clip"]), n_valid, tasks=False)
        out = {k: batch[k] for k in PASS_THROUGH if k in batch}
        out.update(emb=emb.numpy(), view_probs=probs.numpy())
        return out


def embed_split(cfg: Any, shards: str, split: str, bundle_dir: str, *, with_views: bool) -> dict[str, Any]:
    """Embed every clip of ``split``: returns numpy columns (study_id, video_id, view, labels, report, emb, view_probs)."""
    return embed_splits(cfg, shards, (split,), bundle_dir, with_views=with_views)[split]


def embed_splits(
    cfg: Any, shards: str, splits: tuple[str, ...], bundle_dir: str, *, with_views: bool
) -> dict[str, dict[str, Any]]:
    """Embed several splits in ONE pipeline (one actor pool, models loaded once per actor)."""
    ds, owner = read_splits(shards, splits, ["clip", "n_valid", *PASS_THROUGH])
    return by_split(embed_dataset(cfg, ds, bundle_dir, with_views=with_views), owner, splits)


def read_splits(
    shards: str, splits: tuple[str, ...], columns: list[str], *, min_blocks: int | None = None
) -> tuple[Any, dict[str, str]]:
    """:func:`read_split_files` of the shard files of ``splits``."""

    return read_split_files({s: validate_split(shards, s) for s in splits}, columns, min_blocks=min_blocks)


def read_split_files(
    files: dict[str, list[str]], columns: list[str], *, min_blocks: int | None = None
) -> tuple[Any, dict[str, str]]:
    """A Ray Dataset of the rows of shard ``files`` (split -> files; ``columns``, which name
    ``path`` for :func:`by_split`) and each file's split; ``min_blocks``: read in at least that
    many blocks (default one per file)."""

    locs = [(storage.locate(f), split) for split, fs in files.items() for f in fs]
    owner = {loc.path: split for loc, split in locs}  # the paths Ray Data reports (s3: bucket/key)
    blocks = {} if min_blocks is None else {"override_num_blocks": max(len(owner), min_blocks)}
    ds = ray.data.read_parquet(list(owner), filesystem=locs[0][0].fs, include_paths=True, **blocks)
    return ds.select_columns(columns), owner


def by_split(
    cols: dict[str, Any], owner: dict[str, str], splits: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """Embedded columns (with ``path``) -> ``{split: columns}`` (``owner``: file -> split)."""
    split_of = np.array([owner[str(p)] for p in cols.pop("path")])
    return {s: {k: v[split_of == s] for k, v in cols.items()} for s in splits}


def embed_dataset(
    cfg: Any, ds: Any, bundle_dir: str, *, with_views: bool, udf: Any = None, udf_args: tuple = ()
) -> dict[str, Any]:
    """Embed every row of a Ray Dataset of clips (shard rows, or rendered stream rows from
    ``ray_jobs._datasets.stream_dataset``): numpy columns, those of :data:`PASS_THROUGH` the rows
    have plus ``emb`` and ``view_probs``.

    ``udf`` (with its constructor's ``udf_args``) replaces :class:`EmbedClips` in the actor
    pool: evaluation's, which also embeds each clip's first frame."""
    n_actors = max(1, min(cfg.ingest.decode_actors, 2))
    ds = ds.map_batches(
        udf or EmbedClips,
        fn_constructor_args=udf_args if udf is not None else (bundle_dir, with_views),
        batch_size=ACTOR_BATCH,
        num_cpus=1,
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        **POOL_RETRIES,
    )
    cols: dict[str, list] = {}
    for b in ds.iter_batches(batch_size=256, batch_format="numpy"):
        for k, v in b.items():
            cols.setdefault(k, []).append(v)
    if not cols:
        return {k: np.zeros((0,)) for k in (*PASS_THROUGH, "emb", "view_probs")}
    return {k: np.concatenate(v) for k, v in cols.items()}
