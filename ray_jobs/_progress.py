"""A progress bar on the driver fed by the Ray Train workers (through a tiny actor)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from tqdm import tqdm


class _ProgressState:
    """A tiny actor the training workers write their progress to (read by the driver's bar)."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {"step": 0, "total": 0, "postfix": ""}

    def set(self, **kw: Any) -> None:
        self.state.update(kw)

    def get(self) -> dict[str, Any]:
        return dict(self.state)


@contextmanager
def driver_progress(desc: str, unit: str = "step") -> Iterator[Any]:
    """A progress bar on the driver fed by remote workers: yields the actor handle to pass them.

    Workers call ``handle.set.remote(step=..., total=..., postfix=...)``; a thread polls it.
    """
    actor = ray.remote(num_cpus=0)(_ProgressState).remote()
    stop = threading.Event()

    def poll() -> None:
        with tqdm(desc=desc, unit=unit, dynamic_ncols=True, leave=False) as bar:
            while not stop.wait(0.5):
                try:
                    st = ray.get(actor.get.remote(), timeout=5)
                except Exception:  # noqa: BLE001 - the bar is cosmetic; never fail the job for it
                    continue
                if st["total"]:
                    bar.total = st["total"]
                bar.n = st["step"]
                bar.set_postfix_str(st["postfix"], refresh=False)
                bar.refresh()

    t = threading.Thread(target=poll, daemon=True)
    t.start()
    try:
        yield actor
    finally:
        stop.set()
        t.join(timeout=2)
        ray.kill(actor)
