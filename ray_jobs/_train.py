"""The Ray Train trainer of pretraining and of the fine-tuning heads (ray_jobs/finetune.py).

:func:`trained` gives a run's last checkpoint: trained now by :func:`fit` (a ``TorchTrainer`` of
``train.*`` workers running ray_jobs/_worker.py, checkpoints to ``train.storage_path``, worker
failures survived), or, for ``--resume`` of a run that has finished, read back without Ray Train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from echoprime.config import EchoPrimeConfig
from echoprime.training.batch import Augmentation
from echoprime.training.prepare import Prepared
from echoprime.training.resume import finished_checkpoint, local_copy
from ray_jobs._progress import driver_progress
from ray_jobs._worker import train_fn
from ray_jobs.common import configure_ray_data, ray_session, require_resources


@contextlib.contextmanager
def trained(
    cfg: EchoPrimeConfig,
    run: Prepared,
    inputs: Callable[[], tuple[Any, Any, dict[str, Any]]],
    *,
    resume: bool,
    job: str,
    doing: str,
    work: Path,
    label: str | None = None,
) -> Iterator[tuple[Path, bool]]:
    """The run's last checkpoint folder, and whether the run had already finished.

    Args:
        cfg: the resolved config (``train.*``, ``ray.*``).
        run: the checked run (echoprime.training.prepare).
        inputs: called inside the Ray session: ``(train dataset, val dataset, loop config)``.
        resume: with a finished run, its last checkpoint is used as it is.
        job: the command's name, for messages (``pretrain``).
        doing: what the run does, for messages (``pretraining``).
        work: scratch space (an S3 checkpoint is copied there).
        label: the driver's progress bar (default: ``job``).

    Raises:
        RuntimeError: the cluster cannot give the workers their resources, or the run ended
            without a checkpoint.
    """
    tc = cfg.train
    finished = finished_checkpoint(run.run_uri, tc.epochs, run.plan.total_steps) if resume else None
    if finished is not None:
        # Nothing left to train: export the last checkpoint without starting Ray Train.
        print(f"{job}: run {tc.run_name!r} has finished ({finished}); exporting its last checkpoint")
        yield local_copy(finished, work / "finished"), True
        return
    with ray_session(cfg.ray):
        configure_ray_data()
        gpus = tc.num_workers * (1 if tc.use_gpu else 0)
        what = f"{doing} ({tc.num_workers} workers)"
        require_resources(tc.num_workers * tc.cpus_per_worker, gpus, cfg.ray.resource_wait_s, what)
        train_ds, val_ds, loop = inputs()
        result = fit(
            cfg, {"plan": run.plan, "run_uri": run.run_uri, **loop}, train_ds, val_ds, run.storage_uri, job
        )
    if result.checkpoint is None:
        raise RuntimeError(f"{doing} produced no checkpoint (error: {result.error})")
    with result.checkpoint.as_directory() as d:
        yield Path(d), False


def fit(
    cfg: EchoPrimeConfig,
    loop_config: dict[str, Any],
    train_ds: Any,
    val_ds: Any,
    storage_uri: str,
    label: str,
) -> Any:
    """Run :func:`ray_jobs._worker.train_fn` on Ray Train and return its ``Result``.

    ``loop_config`` holds what the run is made of (``plan``, model or ``task``, ``spec``,
    ``run_uri``, ``init``, ``fault``); the train config, augmentation, seed and progress bar are
    added here.
    """
    tc = cfg.train
    with driver_progress(label) as progress:
        trainer = TorchTrainer(
            train_fn,
            train_loop_config={
                "train": tc.model_dump(),
                "augmentation": Augmentation.from_train(tc),
                "seed": cfg.seed,
                "config_dict": cfg.to_dict(),
                "progress": progress,
                **loop_config,
            },
            scaling_config=ScalingConfig(
                num_workers=tc.num_workers,
                use_gpu=tc.use_gpu,
                resources_per_worker={"CPU": tc.cpus_per_worker, **({"GPU": 1} if tc.use_gpu else {})},
            ),
            run_config=RunConfig(
                name=tc.run_name,
                storage_path=storage_uri,
                failure_config=FailureConfig(max_failures=tc.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints),
            ),
            datasets={"train": train_ds, "val": val_ds},
            # Which rows each worker gets must not depend on the nodes the workers landed on: a
            # group restarted after a node was lost is placed elsewhere, and a locality-aware
            # split then gave a rank other rows than before, so its resumed epoch passed over
            # rows it had never trained on (tests/ray/test_multinode.py).
            dataset_config=DataConfig(datasets_to_split=["train"], enable_shard_locality=False),
        )
        return trainer.fit()
