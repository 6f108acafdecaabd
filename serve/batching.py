"""Serve plumbing shared by the model replicas: batching clips across requests, thread counts,
client errors answered as values."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import ray
import torch
from ray import serve

from echoprime.api.errors import ApiError

DEFAULT_BATCH = {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}

Piece = tuple[np.ndarray, np.ndarray]
"""Up to ``max_batch_size`` uint8 clips ``n x T x S x S x 3`` and their ``n`` valid-frame counts."""


def answers_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Return a client's :class:`ApiError` as the call's value instead of raising it: a raised
    exception would log a replica traceback for every bad request (the ingress raises it).
    Works on plain and on ``async`` methods."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except ApiError as e:
                return e

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ApiError as e:
            return e

    return wrapper


def torch_threads() -> int:
    """One intra-op thread per CPU Ray gave this replica (at least one): replicas share cores."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    n = max(1, round(cpus))
    torch.set_num_threads(n)
    return n


def _n_clips(pieces: list[Piece]) -> int:
    return sum(int(clips.shape[0]) for clips, _ in pieces)


class ClipBatcher:
    """Batches clips across requests (and studies) for one model of the bundle.

    A study's clips are cut into pieces of at most ``max_batch_size`` clips; ``@serve.batch``
    gathers pieces from concurrent requests until a batch holds ``max_batch_size`` clips (the
    batch size counts clips, not requests) or ``batch_wait_timeout_s`` has passed. The model
    (:meth:`compute`, on uint8 clips) runs in a worker thread so that the replica keeps accepting
    requests meanwhile.
    """

    width = 0

    def __init__(self) -> None:
        self.threads = torch_threads()
        self.max_batch = DEFAULT_BATCH["max_batch_size"]
        self.batches: deque[int] = deque(maxlen=1024)
        self.device = "cpu"

    def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``max_batch_size`` (clips) and ``batch_wait_timeout_s``; applied live."""
        unknown = set(config) - set(DEFAULT_BATCH)
        if unknown:
            raise ValueError(f"unknown user_config keys {sorted(unknown)}; expected {sorted(DEFAULT_BATCH)}")
        cfg = {**DEFAULT_BATCH, **config}
        self.max_batch = int(cfg["max_batch_size"])
        self._batch.set_max_batch_size(self.max_batch)
        self._batch.set_batch_wait_timeout_s(float(cfg["batch_wait_timeout_s"]))

    def ready(self) -> str:
        return type(self).__name__

    def stats(self) -> dict[str, Any]:
        """Clips per model call, most recent last (what batching achieved)."""
        return {"batches": list(self.batches), "device": str(self.device), "threads": self.threads}

    async def _map(self, study: dict[str, Any]) -> np.ndarray:
        """``study``: Preprocess's answer (``clips`` uint8 ``N x T x S x S x 3``, ``n_valid``)."""
        clips, n_valid = study["clips"], study["n_valid"]
        step = self.max_batch
        pieces = [(clips[i : i + step], n_valid[i : i + step]) for i in range(0, clips.shape[0], step)]
        outs = await asyncio.gather(*(self._batch(p) for p in pieces))
        return np.concatenate(outs) if outs else np.zeros((0, self.width), np.float32)

    @serve.batch(batch_size_fn=_n_clips, **DEFAULT_BATCH)
    async def _batch(self, pieces: list[Piece]) -> list[np.ndarray]:
        clips = np.concatenate([c for c, _ in pieces])  # B x T x S x S x 3, clips of several requests
        n_valid = np.concatenate([v for _, v in pieces])
        self.batches.append(int(clips.shape[0]))
        out = (await asyncio.to_thread(self.compute, clips, n_valid)).numpy()
        return np.split(out, np.cumsum([c.shape[0] for c, _ in pieces])[:-1])

    def compute(self, clips: np.ndarray, n_valid: np.ndarray) -> torch.Tensor:
        raise NotImplementedError
