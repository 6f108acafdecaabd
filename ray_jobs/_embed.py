"""Shared by the jobs after pretraining: embed a split's clips with Ray Data and an actor pool.

Each actor loads the staged video encoder (and, once trained, the view classifier) from the
bundle folder once, then embeds batches of clips; the driver collects the (small) embeddings.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PASS_THROUGH: tuple[str, ...] = ("study_id", "video_id", "view", "labels", "report", "path")
"""Row columns an embedded batch keeps (those the source has: stream rows carry no ``video_id``
or ``path``)."""


class EmbedClips:
    """Ray Data UDF: shard or stream rows -> video embeddings (+ view probabilities when available)."""

    def __init__(self, bundle_dir: str, with_views: bool, threads: int = 1) -> None:
        import torch

        from echoprime.staging import load_component, spec_of

        torch.set_num_threads(threads)
        self.spec = spec_of(bundle_dir)
        self.video = load_component(bundle_dir, "video_encoder").eval()
        self.views = load_component(bundle_dir, "view_classifier").eval() if with_views else None

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        from echoprime.preprocess import normalise

        n_valid = batch.get("n_valid")  # absent on stream rows: every rendered frame is real
        x = normalise(
            torch.as_tensor(np.asarray(batch["clip"])),
            self.spec.mean,
            self.spec.std,
            n_valid=None if n_valid is None else [int(v) for v in n_valid],
        )  # B x 3 x T x S x S
        with torch.no_grad():
            emb = F.normalize(self.video(x).float(), dim=-1).numpy()
            probs = (
                torch.softmax(self.views(x).float(), -1).numpy()
                if self.views is not None
                else np.zeros((len(emb), 0), np.float32)
            )
        out = {k: batch[k] for k in PASS_THROUGH if k in batch}
        out.update(emb=emb, view_probs=probs)
        return out


def embed_split(cfg: Any, shards: str, split: str, bundle_dir: str, *, with_views: bool) -> dict[str, Any]:
    """Embed every clip of ``split``: returns numpy columns (study_id, video_id, view, labels, report, emb, view_probs)."""
    return embed_splits(cfg, shards, (split,), bundle_dir, with_views=with_views)[split]


def embed_splits(
    cfg: Any, shards: str, splits: tuple[str, ...], bundle_dir: str, *, with_views: bool
) -> dict[str, dict[str, Any]]:
    """Embed several splits in ONE pipeline (one actor pool, models loaded once per actor)."""
    import ray

    from echoprime import storage
    from echoprime.data.shards import validate_split

    owner: dict[str, str] = {}
    for split in splits:
        for f in validate_split(shards, split):
            owner[storage.locate(f).path] = split
    locs = [storage.locate(f) for f in owner]
    ds = ray.data.read_parquet(
        [loc.path for loc in locs], filesystem=locs[0].fs, include_paths=True
    ).select_columns(["clip", "n_valid", *PASS_THROUGH])
    allc = embed_dataset(cfg, ds, bundle_dir, with_views=with_views)
    split_of = np.array([owner[str(p)] for p in allc.pop("path")])
    return {s: {k: v[split_of == s] for k, v in allc.items()} for s in splits}


def embed_dataset(
    cfg: Any, ds: Any, bundle_dir: str, *, with_views: bool, udf: Any = None, udf_args: tuple = ()
) -> dict[str, Any]:
    """Embed every row of a Ray Dataset of clips (shard rows, or rendered stream rows from
    ``ray_jobs._datasets.stream_dataset``): numpy columns, those of :data:`PASS_THROUGH` the rows
    have plus ``emb`` and ``view_probs``.

    ``udf`` (with its constructor's ``udf_args``) replaces :class:`EmbedClips` in the actor
    pool: evaluation's, which also embeds each clip's first frame."""
    import ray

    from ray_jobs.common import POOL_RETRIES

    n_actors = max(1, min(cfg.ingest.decode_actors, 2))
    ds = ds.map_batches(
        udf or EmbedClips,
        fn_constructor_args=udf_args if udf is not None else (bundle_dir, with_views),
        batch_size=64,
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
