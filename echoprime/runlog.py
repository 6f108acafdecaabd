"""Per-stage run records: ``summary.json`` says what ran, how long it took and how well.

Used by the quickstart and every job that writes an output folder. The file is rewritten
atomically after each stage so that a person or a script can read it at any time, and a
stage that fails is recorded as failed with its reason (never silently missing).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class StageRecord:
    name: str
    status: str = "running"
    wall_s: float = 0.0
    numbers: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def record(self, **numbers: Any) -> None:
        """Attach headline numbers (JSON-serialisable) to this stage.

        ``status``/``wall_s``/``error`` are the record's own fields: a number of that name is
        kept under a ``result_`` prefix instead of overwriting them.
        """
        for k, v in numbers.items():
            self.numbers[f"result_{k}" if k in ("status", "wall_s", "error") else k] = v


class RunSummary:
    """An ordered set of stage records persisted to ``path`` (JSON)."""

    def __init__(self, path: str | os.PathLike, **meta: Any) -> None:
        self.path = Path(path)
        self.meta: dict[str, Any] = dict(meta)
        self.stages: dict[str, StageRecord] = {}
        self.started = time.time()

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        """Run a stage: timed, recorded as ``ok`` or ``failed`` (the exception propagates)."""
        rec = StageRecord(name)
        self.stages[name] = rec
        self.write()
        t0 = time.perf_counter()
        try:
            yield rec
        except BaseException as e:
            rec.status = "failed"
            rec.error = f"{type(e).__name__}: {e}"
            raise
        else:
            rec.status = "ok"
        finally:
            rec.wall_s = round(time.perf_counter() - t0, 2)
            self.write()

    def skip(self, name: str, reason: str) -> None:
        self.stages[name] = StageRecord(name, status="skipped", error=reason)
        self.write()

    def to_dict(self) -> dict[str, Any]:
        failed = any(s.status == "failed" for s in self.stages.values())
        running = any(s.status == "running" for s in self.stages.values())
        return {
            **self.meta,
            "status": "failed" if failed else ("running" if running else "ok"),
            "wall_s": round(time.time() - self.started, 2),
            "stages": {
                n: {
                    "status": s.status,
                    "wall_s": s.wall_s,
                    **({"error": s.error} if s.error else {}),
                    **s.numbers,
                }
                for n, s in self.stages.items()
            },
        }

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, default=_jsonable))
        tmp.replace(self.path)


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if hasattr(x, "tolist"):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check that files can be written there.

    Raises:
        ValueError: the folder cannot be created or written, naming it and the reason.
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output folder {str(p)!r} is not writable: {e.strerror or e}") from None
    return p
