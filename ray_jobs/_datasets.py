"""The Ray Data datasets the training and evaluation jobs read: shard splits, the synthetic
stream, and whether a training set is held in the object store."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import ray

from echoprime import storage
from echoprime.config import EchoPrimeConfig
from echoprime.data.stream import stream_options, stream_rows
from echoprime.training.prepare import Prepared
from echoprime.training.rows import SHARD_COLUMNS, token_columns, view_columns


def read_split(files: list[str], columns: list[str] | None = None) -> Any:
    """A split's shard files as a dataset of ``columns`` (default: what pretraining reads)."""
    locs = [storage.locate(f) for f in files]
    return ray.data.read_parquet([loc.path for loc in locs], filesystem=locs[0].fs).select_columns(
        columns or SHARD_COLUMNS
    )


def _render_stream(batch: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """Ray Data map: study indices -> rendered clip rows (``echoprime.data.stream``)."""
    return stream_rows(batch["id"], **kw)


def stream_dataset(cfg: EchoPrimeConfig, spec: dict[str, Any], n_studies: int) -> Any:
    """``n_studies`` synthetic stream studies (``cfg.stream.seed``, shape of ``cfg.synth``, clips
    at ``spec``) rendered by Ray Data tasks of ``cfg.stream.studies_per_task`` studies, as rows
    with the shard columns of :data:`echoprime.data.stream.STREAM_COLUMNS`."""
    per = cfg.stream.studies_per_task
    return ray.data.range(n_studies, override_num_blocks=max(1, math.ceil(n_studies / per))).map_batches(
        _render_stream, fn_kwargs=stream_options(cfg, spec), batch_size=per
    )


def held(ds: Any, rows: int, clip_shape: Sequence[int], materialize: str) -> Any:
    """``ds`` held in the object store when ``train.materialize`` says so (``auto``: when its
    clips fit in a third of the store): the pipeline then runs once instead of every epoch, and
    nothing competes with the training workers for the few CPUs (docs/ray-notes.md)."""
    store = ray.available_resources().get("object_store_memory", 0)
    if materialize == "always" or (materialize == "auto" and rows * math.prod(clip_shape) < store / 3):
        return ds.materialize()
    return ds


def token_datasets(cfg: EchoPrimeConfig, run: Prepared, tokenizer: Any) -> tuple[Any, Any]:
    """Pretraining's ``(train, val)`` datasets of tokenised rows (``token_columns``): the train
    split's shards or the config's stream, held in memory when small (:func:`held`), and the
    val split, materialised (evaluated every epoch; small by construction)."""
    kw = {"tokenizer": tokenizer, "grades": tuple(cfg.train.label_grades)}
    n = cfg.stream.studies
    rows = stream_dataset(cfg, run.spec, n) if n else read_split(run.train_files)
    train = rows.map_batches(token_columns, fn_kwargs={**kw, "seed": cfg.seed}, batch_size=64)
    val = read_split(run.val_files).map_batches(
        token_columns, fn_kwargs={**kw, "seed": cfg.seed + 1}, batch_size=64
    )
    return held(train, run.n_train, run.clip_shape, cfg.train.materialize), val.materialize()


def labelled_views(ds: Any) -> Any:
    """The rows of ``ds`` that have a view, as ``clip`` and ``view_idx`` (the view classifier's
    columns), materialised."""
    ds = ds.select_columns(["clip", "view"]).filter(lambda r: r["view"] is not None)
    return ds.map_batches(view_columns, batch_size=256).materialize()
