"""The graph's first deployment: a study's files (uploads or ``s3://`` URIs) -> uint8 clips.

Wrapped with ``serve.deployment`` by ``serve.app.build_graph``; it reads with the library's one
reader (:func:`echoprime.inference.read_study`), one file at a time in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

from echoprime.api.previews import first_frame_png, study_loops
from echoprime.api.uploads import Limits, Study, fetch_s3
from echoprime.inference import load_bundle_parts, read_study
from echoprime.inference.study import join_studies, within_frame_limit
from echoprime.io import FileReport
from serve.batching import answers_errors, torch_threads


class Preprocess:
    """CPU: a study's files (uploaded bytes or ``s3://`` URIs) -> uint8 clips and per-file status.

    Files are read one at a time in a worker thread: a cancelled request (its client went, or the
    ingress timed it out) stops after the file in hand. Only the manifest's spec is read.
    """

    def __init__(self, bundle_uri: str, limits: Limits) -> None:
        torch_threads()
        self.spec = load_bundle_parts(bundle_uri, verify=False, components=()).spec
        self.limits = limits
        self.counts = {"studies": 0, "files": 0, "cancelled": 0}

    def ready(self) -> str:
        return "Preprocess"

    def stats(self) -> dict[str, int]:
        """Studies loaded, files read, and loads stopped by a cancellation, since the start."""
        return dict(self.counts)

    @answers_errors
    async def load(self, study: Study, previews: bool = False, loops: bool = False) -> dict[str, Any]:
        """Read the files (a bad one, or one over ``max_frames_per_file``, is a ``skipped`` entry);
        ``previews``: each clip's first frame as a PNG data URL; ``loops``: each clip as a loop.

        Raises:
            ApiError: 413 when the S3 objects together are too large.
        """
        failed: dict[str, tuple[str, str]] = {}
        if study and isinstance(study[0], str):
            study, failed = await asyncio.to_thread(fetch_s3, study, self.limits)  # type: ignore[arg-type]
        parts = []
        try:
            for item in study:
                one = await asyncio.to_thread(read_study, [item], self.spec)
                self.counts["files"] += 1
                parts.append(within_frame_limit(one, self.limits.max_frames_per_file))
        except asyncio.CancelledError:
            self.counts["cancelled"] += 1
            raise
        self.counts["studies"] += 1
        clips, n_valid, files = join_studies(parts, self.spec)
        files += [FileReport(uri, "skipped", why, code=code) for uri, (code, why) in failed.items()]
        out = {"clips": clips, "n_valid": n_valid, "files": files, "previews": None, "loops": None}
        if previews:
            out["previews"] = [first_frame_png(c) for c in clips]
        if loops:
            out["loops"] = await asyncio.to_thread(study_loops, clips, n_valid, files, self.spec.stride)
        return out
