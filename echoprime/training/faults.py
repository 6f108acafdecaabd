"""The test hooks of a training run (``run_pretrain(fault=...)``): what a resumed run restored and
took, and a pause after a given step while a test removes a node (tests/ray/_multinode.py).
All are off in a normal run."""

from __future__ import annotations

import json
import os
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from echoprime.training.run import RunState


@dataclass(frozen=True)
class FaultHooks:
    """Test hooks of a run (``run_pretrain(fault=...)``); all off by default.

    Attributes:
        probe: a folder where each rank writes the optimizer and scheduler state it restored
            (:meth:`record_restored`) and, per step, the clips it took (:meth:`log_batches`).
        pause_at_step: every rank waits once after this step (:meth:`after_step`) while a test
            removes a node (tests/ray/_multinode.py).
        pause_dir: where a pausing rank writes ``paused-rank{rank}.json``.
        pause_s: the longest wait.
        node_id: the worker's node, written into the pause mark (the job knows it).
    """

    probe: Path | None = None
    pause_at_step: int | None = None
    pause_dir: Path | None = None
    pause_s: float = 240.0
    node_id: str = ""

    @classmethod
    def from_dict(cls, fault: Mapping[str, Any] | None, node_id: str = "") -> FaultHooks:
        """The hooks of ``run_pretrain``'s ``fault`` dict (``probe``, ``pause_at_step``,
        ``pause_dir``, ``pause_s``)."""
        f = fault or {}
        return cls(
            probe=Path(f["probe"]) if f.get("probe") else None,
            pause_at_step=f.get("pause_at_step"),
            pause_dir=Path(f["pause_dir"]) if f.get("pause_dir") else None,
            pause_s=float(f.get("pause_s", 240.0)),
            node_id=node_id,
        )

    def pauses_after(self, step: int) -> bool:
        """This step is the one every rank waits after."""
        return self.pause_at_step is not None and self.pause_at_step == step

    def after_step(self, rank: int, step: int) -> None:
        """Once per rank (the first time it reaches ``pause_at_step``), write
        ``pause_dir/paused-rank{rank}.json`` (rank, step, node id, pid) and wait there for at most
        ``pause_s`` seconds while the test removes a node. Every rank stops after the same
        optimizer step, so the test knows what the run had done; the restarted group goes on."""
        if not self.pauses_after(step) or self.pause_dir is None:
            return
        mark = self.pause_dir / f"paused-rank{rank}.json"
        if mark.exists():
            return
        tmp = mark.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rank": rank, "step": step, "node_id": self.node_id, "pid": os.getpid()}))
        tmp.rename(mark)
        deadline = time.monotonic() + self.pause_s
        while time.monotonic() < deadline:
            time.sleep(0.2)

    def record_restored(self, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int) -> None:
        """The optimizer and scheduler state as restored on this rank, to ``probe``."""
        if self.probe is not None:
            torch.save(
                {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()},
                self.probe / f"restored-rank{rank}.pt",
            )

    def log_batches(
        self,
        batches: Iterable[Mapping[str, Any]],
        rank: int,
        state: RunState,
        optimizer: torch.optim.Optimizer,
    ) -> Iterable[Mapping[str, Any]]:
        """With a ``probe``: before each step, one JSON line with the step it feeds, the learning
        rate it will use and a CRC32 of each of its clips, so a test can see what a resumed run
        took; without one, ``batches`` unchanged."""
        if self.probe is None:
            return batches
        return _logged(batches, self.probe / f"batches-rank{rank}.jsonl", state, optimizer)


def _logged(
    batches: Iterable[Mapping[str, Any]], path: Path, state: RunState, optimizer: torch.optim.Optimizer
) -> Iterator[Mapping[str, Any]]:
    for b in batches:
        rec = {
            "epoch": state.epoch,
            "step": state.step + 1,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "clips": [zlib.crc32(c.numpy().tobytes()) for c in b["clip"]],
        }
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        yield b
