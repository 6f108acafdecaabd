"""Faults injected into a real Serve graph (``serve.app.build_graph(..., classes=...)``).

No input known today crashes a replica (the readers bound every allocation), so a poison input
is made on purpose: a Preprocess whose process exits, as a decoder's segfault or the kernel's
out-of-memory kill would, on a file that starts with :data:`CRASH`; and one that works forever
(until cancelled) on a file that starts with :data:`HANG`. Each event is appended to a file
the test reads, which is how it counts crashes and sees the cancellation arrive.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

CRASH = b"ECHOPRIME-TEST-CRASH"
HANG = b"ECHOPRIME-TEST-HANG"


def faulty_preprocess(record: str) -> type:
    """A :class:`serve.preprocess.Preprocess` subclass with the two faults, recording to
    ``record``. Defined inside this function so that Ray pickles it by value: the replica needs
    no ``tests`` package on its path."""
    from serve.preprocess import Preprocess

    crash, hang = CRASH, HANG  # closed over: nothing of this module is needed in the replica

    def note(line: str) -> None:
        with open(record, "a") as f:
            f.write(line + "\n")

    class FaultyPreprocess(Preprocess):
        async def load(self, study: Any, previews: bool = False, loops: bool = False) -> Any:
            for item in study:
                data = item[1] if isinstance(item, tuple) else b""
                if data.startswith(crash):
                    note(f"crash pid {os.getpid()}")
                    os._exit(70)  # the process dies mid-request, as on SIGSEGV or an OOM kill
                if data.startswith(hang):
                    note("hang")
                    try:
                        await asyncio.sleep(3600)
                    except asyncio.CancelledError:
                        note("cancelled")
                        raise
            return await super().load(study, previews, loops)

    return FaultyPreprocess


def events(record: str | os.PathLike) -> list[str]:
    with open(record) as f:
        return [line.strip() for line in f if line.strip()]
