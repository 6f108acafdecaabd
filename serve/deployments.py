"""The graph's back-end deployments: plain classes, wrapped with ``serve.deployment`` by
``serve.app.build_graph``. Each loads only its part of the bundle and calls the library
(:class:`echoprime.interpret.StudyInterpreter`); none holds model logic of its own.

Data between them: Preprocess returns ``{"clips": N x T x S x S x 3 uint8, "n_valid": N
int64, "files": [FileReport], "previews": [str] | None, "loops": [dict] | None}`` (the clips in their storage form, a
quarter of the float32 model input: a 50-video study at 224 px is 120 MB instead of 482 MB in the
object store and on the wire); the encoders take that dict, normalise the clips on their own
device (bit-identical to the one-process path) and return ``N x D`` / ``N x V`` arrays;
AnatomicalAttention turns one study's arrays into section embeddings and weights; RAIRetriever
searches the bank and assembles the ``StudyResult`` JSON. The ingress reads Preprocess's answer
(file statuses, clip count) and hands each response on to the next deployment as it is (Serve
passes it through the object store): the clips are not sent again, and of the later answers
only the report comes back to the ingress.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from ray import serve

from echoprime.api.errors import ApiError
from echoprime.api.examples import EXAMPLE_COUNT, EXAMPLE_SEED, example_study
from echoprime.api.previews import first_frame_png, study_loops
from echoprime.api.uploads import Limits, Study, fetch_s3
from echoprime.interpret import StudyInterpreter
from echoprime.io import FileReport

DEFAULT_BATCH = {"max_batch_size": 16, "batch_wait_timeout_s": 0.02}


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


def _torch_threads() -> int:
    """One intra-op thread per CPU Ray gave this replica (at least one): replicas share cores."""
    import ray

    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    n = max(1, round(cpus))
    torch.set_num_threads(n)
    return n


class Preprocess:
    """CPU: a study's files (uploaded bytes or ``s3://`` URIs) -> model clips and per-file status.

    Files are read one at a time in a worker thread: a request that is cancelled (its client
    went, or the ingress timed it out) stops after the file in hand instead of reading the rest.

    Args:
        bundle_uri: the bundle (only its manifest's preprocessing spec is used).
        limits: request limits (upload size, frames per file).
    """

    def __init__(self, bundle_uri: str, limits: Limits) -> None:
        _torch_threads()
        # Only the manifest's preprocessing spec is read (no weights): nothing to hash.
        self.interp = StudyInterpreter.from_bundle(bundle_uri, verify=False, components=(), device="cpu")
        self.limits = limits
        self.counts = {"studies": 0, "files": 0, "cancelled": 0}

    def ready(self) -> str:
        return "Preprocess"

    def stats(self) -> dict[str, int]:
        """Studies loaded, files read, and loads stopped by a cancellation, since the start."""
        return dict(self.counts)

    def _within_frames(self, part: tuple[np.ndarray, np.ndarray, list[FileReport]]) -> tuple[Any, Any, Any]:
        """One file's ``load_study_uint8`` answer, or that file skipped (``too_many_frames``)
        when it has more frames than allowed: a file over a limit never fails its study."""
        clips, n_valid, (report,) = part
        limit = self.limits.max_frames_per_file
        if report.status != "used" or report.n_frames <= limit:
            return part
        why = f"the file has {report.n_frames} frames; the limit is {limit} (max_frames_per_file)"
        skipped = FileReport(report.path, "skipped", why, report.n_frames, report.fps, code="too_many_frames")
        return clips[:0], n_valid[:0], [skipped]

    @answers_errors
    async def load(self, study: Study, previews: bool = False, loops: bool = False) -> dict[str, Any]:
        """Read and preprocess the files; a bad file is a ``skipped`` entry, never an error (a
        file over ``max_frames_per_file`` too: ``too_many_frames``). ``previews``: each clip's
        first frame as a PNG data URL; ``loops``: each clip as a moving loop
        (:func:`echoprime.api.previews.clip_loop`), both in the order of the clips.

        Raises:
            ApiError: 413 when the S3 objects together are too large.
        """
        failed: dict[str, tuple[str, str]] = {}
        if study and isinstance(study[0], str):
            study, failed = await asyncio.to_thread(fetch_s3, study, self.limits)  # type: ignore[arg-type]
        parts = []
        try:
            for item in study:
                part = await asyncio.to_thread(self.interp.load_study_uint8, [item])
                self.counts["files"] += 1
                parts.append(self._within_frames(part))
        except asyncio.CancelledError:
            self.counts["cancelled"] += 1
            raise
        self.counts["studies"] += 1
        shape = (self.interp.spec.frames, self.interp.spec.size, self.interp.spec.size, 3)
        clips = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, *shape), np.uint8)
        n_valid = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
        reports = [r for p in parts for r in p[2]]
        reports += [FileReport(uri, "skipped", why, code=code) for uri, (code, why) in failed.items()]
        out: dict[str, Any] = {
            "clips": clips,
            "n_valid": n_valid,
            "files": reports,
            "previews": None,
            "loops": None,
        }
        if previews:
            out["previews"] = [first_frame_png(c) for c in clips]
        if loops:
            out["loops"] = await asyncio.to_thread(self._loops, clips, n_valid, reports)
        return out

    def _loops(
        self, clips: np.ndarray, n_valid: np.ndarray, reports: list[FileReport]
    ) -> list[dict[str, Any]]:
        return study_loops(clips, n_valid, reports, self.interp.spec.stride)

    @answers_errors
    def example(self, index: int) -> dict[str, Any]:
        """Synthetic example study ``index`` (:func:`echoprime.api.examples.example_study`).

        Raises:
            ApiError: 404 for an index outside ``0..EXAMPLE_COUNT-1``.
        """
        if not 0 <= index < EXAMPLE_COUNT:
            raise ApiError(404, "not_found", f"example index must be in 0..{EXAMPLE_COUNT - 1}, got {index}")
        return example_study(EXAMPLE_SEED, index)


Piece = tuple[np.ndarray, np.ndarray]
"""Up to ``max_batch_size`` uint8 clips ``n x T x S x S x 3`` and their ``n`` valid-frame counts."""


def _n_clips(pieces: list[Piece]) -> int:
    return sum(int(clips.shape[0]) for clips, _ in pieces)


class _ClipBatcher:
    """Batches clips across requests (and studies) for one model of the bundle.

    A study's clips are cut into pieces of at most ``max_batch_size`` clips; ``@serve.batch``
    gathers pieces from concurrent requests until a batch holds ``max_batch_size`` clips (the
    batch size counts clips, not requests) or ``batch_wait_timeout_s`` has passed. The model
    runs in a worker thread so that the replica keeps accepting requests meanwhile.
    """

    components: tuple[str, ...] = ()
    width = 0

    def __init__(
        self, bundle_uri: str, device: str | None = None, verify: bool = True, precision: str = "fp32"
    ) -> None:
        self.threads = _torch_threads()
        self.interp = StudyInterpreter.from_bundle(
            bundle_uri, verify=verify, components=set(self.components), device=device, precision=precision
        )
        self.max_batch = DEFAULT_BATCH["max_batch_size"]
        self.batches: deque[int] = deque(maxlen=1024)

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
        return {"batches": list(self.batches), "device": str(self.interp.device), "threads": self.threads}

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
        out = (await asyncio.to_thread(self._normalised_compute, clips, n_valid)).numpy()
        return np.split(out, np.cumsum([c.shape[0] for c, _ in pieces])[:-1])

    def _normalised_compute(self, clips: np.ndarray, n_valid: np.ndarray) -> torch.Tensor:
        # uint8 to the device, normalised there (B x 3 x T x S x S float32), then the model.
        return self._compute(self.interp.normalise_clips(clips, n_valid))

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class VideoEncoder(_ClipBatcher):
    """Clips -> unit-norm video embeddings ``N x D``, followed by the bundle's fine-tuned heads'
    logits ``N x H`` when it has heads (``echoprime finetune``; GPU when the replica has one)."""

    components = ("video_encoder", "heads")
    width = 512

    async def encode(self, study: dict[str, Any]) -> np.ndarray:
        """``N x (D + H)``: what AnatomicalAttention (the first D columns) and RAIRetriever (the
        heads' columns) take."""
        return await self._map(study)

    async def embed(self, study: dict[str, Any]) -> np.ndarray:
        """The embeddings alone, ``N x D``."""
        return (await self._map(study))[:, : self.interp._embed_dim]

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.interp.embed_clips_with_tasks(x)


class ViewClassifier(_ClipBatcher):
    """Clips -> view probabilities ``N x 11`` (GPU when the replica has one)."""

    components = ("view_classifier",)
    width = 11

    async def classify(self, study: dict[str, Any]) -> np.ndarray:
        return await self._map(study)

    def _compute(self, x: torch.Tensor) -> torch.Tensor:
        return self.interp.classify_views(x)


class AnatomicalAttention:
    """One study's embeddings and views -> per-section embeddings ``15 x D`` and weights ``15 x N``."""

    def __init__(self, bundle_uri: str, device: str | None = None, verify: bool = True) -> None:
        _torch_threads()
        self.interp = StudyInterpreter.from_bundle(
            bundle_uri, verify=verify, components={"mil"}, device=device
        )

    def ready(self) -> str:
        return "AnatomicalAttention"

    def attend(self, emb: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``emb`` ``N x (D + H)`` (VideoEncoder.encode: the heads' logits after the embeddings)."""
        # Arrays from the object store are read-only views: copy them into tensors.
        d = self.interp.parts.bank.dim
        return self.interp.attend(torch.tensor(emb[:, :d]), torch.tensor(probs))


class RAIRetriever:
    """The bank (memory-mapped, loaded once per replica) and the text tower: per-section
    search, report assembly, kNN metrics; report embedding and search.

    Args:
        bundle_uri: the bundle.
        k: neighbours for the metrics (``None``: the interpreter's default).
        n_neighbours: neighbour studies listed per section.
        device: where the text encoder runs (default: CUDA when the replica was given a GPU).
        verify: check the bundle's hashes.
    """

    def __init__(
        self,
        bundle_uri: str,
        k: int | None = None,
        n_neighbours: int = 5,
        device: str | None = None,
        verify: bool = True,
    ) -> None:
        _torch_threads()
        self.interp = StudyInterpreter.from_bundle(
            bundle_uri, verify=verify, components={"bank", "text_encoder"}, device=device
        )
        self.k, self.n_neighbours = k, n_neighbours
        from echoprime.training.heads import head_tasks

        self.heads = head_tasks(self.interp.parts.manifest)  # their names and widths, from the manifest

    def ready(self) -> str:
        return "RAIRetriever"

    def assemble(
        self,
        sections: np.ndarray | None,
        weights: np.ndarray | None,
        probs: np.ndarray,
        files: list[FileReport],
        encoded: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """The study's ``StudyResult`` as JSON (``sections`` ``None``: no usable video);
        ``encoded``: VideoEncoder.encode's ``N x (D + H)``, whose last H columns are the heads'."""
        tasks = None
        if encoded is not None and self.heads:
            tasks = [np.asarray(encoded)[:, self.interp.parts.bank.dim :]]
        (result,) = self.interp.interpret_from_sections(
            [sections], [weights], [torch.tensor(probs)], [files], k=self.k, n_neighbours=self.n_neighbours,
            task_logits=tasks,
        )  # fmt: skip
        return result.to_dict()

    def report(
        self,
        attended: tuple[np.ndarray, np.ndarray],
        probs: np.ndarray,
        files: list[FileReport],
        encoded: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """:meth:`assemble` from :meth:`AnatomicalAttention.attend`'s ``(sections, weights)``."""
        return self.assemble(*attended, probs, files, encoded)

    @answers_errors
    def embed_text(self, reports: list[str]) -> np.ndarray:
        """Reports -> unit-norm ``B x D`` embeddings.

        Raises:
            ApiError: 501 when the bundle has no text encoder.
        """
        try:
            return self.interp.embed_text(reports)
        except ValueError as e:
            raise ApiError(501, "not_in_bundle", str(e)) from None

    @answers_errors
    def search(self, query: str | list[float], k: int) -> list[dict[str, Any]]:
        """The ``k`` bank reports nearest a text or an embedding.

        Raises:
            ApiError: 422 for an embedding of the wrong width, 501 without a text encoder.
        """
        if isinstance(query, str):
            emb = self.embed_text([query])
            return emb if isinstance(emb, ApiError) else self.interp.search_reports(emb, k)
        if len(query) != self.interp.parts.bank.dim:
            raise ApiError(
                422,
                "invalid_embedding",
                f"the embedding has {len(query)} values; this bundle's bank has {self.interp.parts.bank.dim}",
            )
        return self.interp.search_reports(np.asarray(query, np.float32), k)
