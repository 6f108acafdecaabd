"""What every Ray job shares: starting or joining Ray, Ray Data settings, resources, progress
over futures.

The commands' arguments and config (what needs no Ray) are :mod:`echoprime.commands`; nothing in
echoprime/ imports this module, so ``echoprime --help`` and the library never pay for Ray.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import ray
import ray.data
from tqdm import tqdm

from echoprime.config import RayCfg


def _quiet_ray_env(cfg: RayCfg, local: bool) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # A stalled Data pipeline becomes an error instead of a 30-minute hang (docs/ray-notes.md).
    os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", str(cfg.data_no_progress_timeout_s))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if local:
        # A local Ray owned by this command needs no token; without this, Ray 2.60 writes
        # ~/.ray/auth_token, which changes what a later `ray start` does (docs/ray-notes.md).
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")


@contextmanager
def ray_session(cfg: RayCfg) -> Iterator[None]:
    """Join the configured Ray cluster, or start a local one for the duration of the block.

    Inside an already initialised Ray (a test session, a submitted job) the block runs there and
    nothing is shut down afterwards.
    """
    if ray.is_initialized():
        yield
        return
    address = cfg.address
    if address is None and os.environ.get("RAY_ADDRESS"):
        # Submitted with `ray job submit`: the job runner names the cluster to join.
        address = os.environ["RAY_ADDRESS"]
    local = address in (None, "local")
    _quiet_ray_env(cfg, local)
    if local:
        ray.init(
            address="local",
            num_cpus=cfg.num_cpus,
            include_dashboard=False,
            object_store_memory=cfg.object_store_mb << 20,
            logging_level=logging.WARNING,
            log_to_driver=cfg.log_to_driver,
            runtime_env={"env_vars": _worker_env()},
        )
    else:
        ray.init(
            address=address,
            logging_level=logging.WARNING,
            log_to_driver=cfg.log_to_driver,
            runtime_env={"env_vars": _worker_env()},
        )
    try:
        yield
    finally:
        ray.shutdown()


POOL_RETRIES: dict[str, int] = {"max_restarts": 3, "max_task_retries": -1}
"""Bounds for every Ray Data actor pool of the jobs (``map_batches(..., **POOL_RETRIES)``).

Ray Data's pools default to retrying for ever (``max_restarts=-1``, ``max_task_retries=-1``): a
batch whose actor dies (a decoder crash, the memory monitor's kill) would take a new actor down
each time. Here an actor is replaced at most 3 times, which bounds the whole pool; a batch that
lost its actor is retried until a live actor runs it (a single retry was spent in the ~10 s
before Ray declares a lost node dead, while its actor still looked alive, and the job failed:
tests/ray/test_multinode.py); then the job fails with Ray Data's error instead of looping."""


def configure_ray_data() -> None:
    """The Ray Data settings every job uses; call it before building a dataset.

    * No per-operator progress logs (our jobs print their own progress).
    * Parquet is read by the V1 datasource. Ray 2.60's default V2 path lists files in a
      ``ListFiles`` task that starts nested footer-reading tasks, and hands the whole file list
      to the next operator as one block: on a 2-core node reading 18 small shards took 12.6 s
      against 7.4 s, and read + embed 29.8 s against 14.9 s, the single block feeding one actor
      of a pool of two (bench/ray_data_read.py; docs/benchmarks.md, "Ray Data read path").
      V1 makes one read task per file, so
      ``override_num_blocks`` and actor pools work as written.
    """
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.use_datasource_v2 = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def _worker_env() -> dict[str, str]:
    # One intra-op thread per worker process: on a small box, N workers x N threads thrash.
    keep = ("OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "ECHOPRIME_DEBUG")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def wait_with_progress(
    refs: list[Any], desc: str, unit: str = "it", total: int | None = None
) -> Iterable[Any]:
    """Yield results of Ray object refs as they finish, with a progress bar on the driver."""
    pending = list(refs)
    with tqdm(total=total or len(pending), desc=desc, unit=unit, dynamic_ncols=True, leave=False) as bar:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for r in done:
                res = ray.get(r)
                bar.update(1)
                yield res


def require_resources(cpus: float, gpus: float, wait_s: float, what: str) -> None:
    """Fail with a clear message when the cluster cannot ever give ``what`` its resources.

    Waits up to ``wait_s`` for an autoscaling cluster to grow before giving up.

    Raises:
        RuntimeError: naming the resources asked for and those the cluster has.
    """
    deadline = time.monotonic() + wait_s
    while True:
        total = ray.cluster_resources()
        have_cpu, have_gpu = total.get("CPU", 0.0), total.get("GPU", 0.0)
        if have_cpu >= cpus and have_gpu >= gpus:
            return
        if time.monotonic() >= deadline:
            raise RuntimeError(
                f"{what} asks for {cpus:g} CPU and {gpus:g} GPU but the cluster has {have_cpu:g} CPU and "
                f"{have_gpu:g} GPU (waited {wait_s:g} s for it to grow); lower train.num_workers / "
                f"set train.use_gpu=false, or add nodes"
            )
        time.sleep(min(5.0, max(0.1, deadline - time.monotonic())))
