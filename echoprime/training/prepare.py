"""What a training job checks and plans on the driver before a worker starts, without Ray.

Everything that can be wrong with the shards, the storage or the starting bundle is found here,
so a bad run fails in seconds with one message instead of after Ray Train has started: the
pretraining job (``ray_jobs/pretrain.py``) calls :func:`prepare_pretrain`, the fine-tuning job
(``ray_jobs/finetune.py``) :func:`prepare_finetune`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from echoprime import storage
from echoprime.bundle import load_module
from echoprime.bundle import read_manifest as read_bundle_manifest
from echoprime.data.shards import read_manifest, validate_split
from echoprime.training.resume import run_folder
from echoprime.training.rows import check_labelled, labelled, training_reports
from echoprime.training.run import RunPlan

if TYPE_CHECKING:
    from echoprime.config import EchoPrimeConfig
    from echoprime.training.finetune import InitModel
    from echoprime.training.heads import Task


@dataclass(frozen=True)
class Prepared:
    """A checked training run, ready for Ray Train.

    Attributes:
        spec: the shards' preprocessing spec (the clips' shape and normalisation).
        clip_shape: one stored clip's array shape.
        train_files: the train split's shard files.
        val_files: the val split's shard files.
        storage_uri: ``train.storage_path``, absolute when local.
        run_uri: the run's own folder under it.
        n_train: training rows (a stream's exact clip count).
        plan: the run's steps and policy.
        val_studies: studies of the val split (those with a target, for a head).
        reports: the train split's reports (pretraining's tokenizer corpus).
        init: the ``--init`` bundle's towers and tokenizer, or None.
        labelled: for a head, split -> (rows, studies, class counts) labelled for its task.
        bundle_root: for a head, the local copy of the bundle whose tower it reads.
    """

    spec: dict[str, Any]
    clip_shape: tuple[int, ...]
    train_files: list[str]
    val_files: list[str]
    storage_uri: str
    run_uri: str
    n_train: int
    plan: RunPlan
    val_studies: int
    reports: list[str] = field(default_factory=list)
    init: InitModel | None = None
    labelled: dict[str, tuple[int, int, dict[str, int]]] = field(default_factory=dict)
    bundle_root: Path | None = None


def check_clip_shape(shards: str, spec: dict[str, Any], frames: int, size: int) -> None:
    """Refuse shards whose clips are not the config's ``data.frames`` x ``data.size``.

    Raises:
        ValueError: naming both shapes and the way out.
    """
    if spec["size"] != size or spec["frames"] != frames:
        raise ValueError(
            f"shards at {shards} hold {spec['frames']} x {spec['size']} px clips but the config asks for "
            f"data.frames={frames}, data.size={size}; re-ingest or change the config"
        )


def prepare_pretrain(cfg: EchoPrimeConfig, shards: str, out: str, *, resume: bool) -> Prepared:
    """Check a pretraining run on ``shards`` writing to ``out`` and plan it.

    Raises:
        ShardError: missing/empty split, missing column, wrong clip shape, or no report.
        ValueError: unwritable storage path or output, a run of that name without ``resume``,
            too few clips for one batch per worker, or a stream that would replay the shards.
        InitError: an ``--init`` bundle the config or shards do not fit.
    """
    from echoprime.data.stream import check_stream_seed, stream_clips
    from echoprime.training.finetune import load_init

    tc = cfg.train
    manifest = read_manifest(shards)
    train_files, val_files = validate_split(shards, "train"), validate_split(shards, "val")
    spec = dict(manifest.spec)
    check_clip_shape(shards, spec, cfg.data.frames, cfg.data.size)
    storage_uri, run_uri = run_folder(
        tc.storage_path, tc.run_name, resume=resume, rename_hint="set train.run_name=<new name>"
    )
    storage.ensure_dir(out)
    stream = cfg.stream.studies > 0
    if stream:
        check_stream_seed(cfg, shards)
    # The rows are split equally between the workers; a stream's count is exact, so an epoch
    # uses every clip it renders (a lower bound from synth.min_videos left ~1/6 of them unused).
    n_train = stream_clips(cfg, spec, cfg.stream.studies) if stream else manifest.rows["train"]
    plan = RunPlan.for_rows(n_train, tc)
    if plan.steps_per_epoch < 1:
        what = f"{cfg.stream.studies} stream studies hold" if stream else "the train split has"
        raise ValueError(
            f"{what} {n_train} clips: too few for {tc.num_workers} workers x batch {tc.batch_size}"
            + " (lower train.batch_size or train.num_workers, or use more studies)"
        )
    # The tokenizer is trained on (or, for BERT, loaded for) the training reports, once.
    reports = training_reports(shards, train_files)
    return Prepared(
        spec=spec,
        clip_shape=tuple(manifest.clip_shape),
        train_files=train_files,
        val_files=val_files,
        storage_uri=storage_uri,
        run_uri=run_uri,
        n_train=n_train,
        plan=plan,
        val_studies=manifest.studies.get("val", 0),
        reports=reports,
        # --init: the bundle's towers and tokenizer (checked against the config and shards first).
        init=load_init(tc.init, cfg.model.model_dump(), spec) if tc.init else None,
    )


def parse_unfreeze(value: str | int | None) -> int | None:
    """``--unfreeze``: ``all`` -> None (everything trains), ``N`` -> N.

    Raises:
        ValueError: neither ``all`` nor a non-negative integer.
    """
    if value is None or str(value).strip().lower() == "all":
        return None
    try:
        n = int(str(value))
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"--unfreeze takes a number of layers (0, 1, 2, ...) or 'all', got {value!r}")
    return n


def finetune_config(
    cfg: EchoPrimeConfig, task: Task, unfreeze: int | None, run_name: str | None
) -> EchoPrimeConfig:
    """``cfg`` with the head's training settings: ``unfreeze`` layers of the video tower train,
    the run is named ``run_name`` (default ``finetune-<task>``), early stopping watches the
    head's ``val_score``."""
    tc = cfg.train.model_copy(
        update={
            "video_trainable_layers": unfreeze,
            "run_name": run_name or f"finetune-{task.folder}",
            "early_stop_metric": "val_score",
        }
    )
    return cfg.model_copy(update={"train": tc})


def bundle_tower(root: Path) -> tuple[Any, int, bool]:
    """The video tower a head reads from the bundle at ``root``: ``(encoder, its embedding
    width, whether its embeddings are normalised)``."""
    info = read_bundle_manifest(root, verify=False)["components"]["video_encoder"]
    encoder = load_module(root, info)
    # a tower that does not state its width embeds into 512 (the towers' default)
    return encoder, int(getattr(encoder, "embed_dim", 0) or 512), bool(info.get("normalize", True))


def prepare_finetune(
    cfg: EchoPrimeConfig, task: Task, bundle: str, shards: str, out: str, *, resume: bool
) -> Prepared:
    """Check a fine-tuning run of ``task`` over ``bundle`` (fetched here) on ``shards``, writing
    the new bundle to ``out``, and plan it; ``cfg`` is :func:`finetune_config`'s.

    Raises:
        ShardError: missing/empty split or missing column.
        InitError: shards not preprocessed as the bundle expects.
        ValueError: ``out`` is ``bundle``, a split with no labelled row (or one class only for
            a binary task), too few labelled clips for one batch per worker, a run of that name
            without ``resume``.
    """
    from echoprime.bundle import fetch
    from echoprime.bundle import read_manifest as read_bundle_manifest
    from echoprime.training.finetune import check_spec

    if storage.locate(out).uri.rstrip("/") == storage.locate(bundle).uri.rstrip("/"):
        raise ValueError(
            f"--out {out} is the bundle it starts from; a committed bundle never changes: name a new one"
        )
    tc = cfg.train
    manifest = read_manifest(shards)
    train_files, val_files = validate_split(shards, "train"), validate_split(shards, "val")
    spec = dict(manifest.spec)
    root = fetch(bundle)
    check_spec(bundle, read_bundle_manifest(root, verify=True), spec)
    counts = {"train": labelled(train_files, task), "val": labelled(val_files, task)}
    check_labelled(shards, task, {s: (n, classes) for s, (n, _, classes) in counts.items()})
    n_train = counts["train"][0]
    plan = RunPlan.for_rows(n_train, tc)
    if plan.steps_per_epoch < 1:
        raise ValueError(
            f"the train split has {n_train} clips labelled for {task.name!r}: too few for {tc.num_workers} "
            f"workers x batch {tc.batch_size} (lower train.batch_size or train.num_workers)"
        )
    storage_uri, run_uri = run_folder(
        tc.storage_path, tc.run_name, resume=resume, rename_hint="--run-name <new name>"
    )
    return Prepared(
        spec=spec,
        clip_shape=tuple(manifest.clip_shape),
        train_files=train_files,
        val_files=val_files,
        storage_uri=storage_uri,
        run_uri=run_uri,
        n_train=n_train,
        plan=plan,
        val_studies=counts["val"][1],
        labelled=counts,
        bundle_root=root,
    )
