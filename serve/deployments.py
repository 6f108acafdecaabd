"""The graph's model deployments (wrapped with ``serve.deployment`` by ``serve.app.build_graph``),
each loading only its part of the bundle and running the library's one path
(:mod:`echoprime.inference`): the encoders run ``Towers`` on Preprocess's uint8 clips (normalised
on their own device, bit-identical to the one-process path), AnatomicalAttention runs ``attend``,
RAIRetriever runs ``ResultBuilder``. Answers pass between them through the object store.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from echoprime.api.errors import ApiError
from echoprime.inference import ResultBuilder, StudyEncoding, Towers, attend, embed_reports, load_bundle_parts
from echoprime.inference.result import search_bank
from echoprime.io import FileReport
from serve.batching import ClipBatcher, answers_errors, torch_threads


class _TowerReplica(ClipBatcher):
    components: tuple[str, ...] = ()

    def __init__(
        self, bundle_uri: str, device: str | None = None, verify: bool = True, precision: str = "fp32"
    ) -> None:
        super().__init__()
        parts = load_bundle_parts(bundle_uri, verify=verify, components=set(self.components))
        self.towers = Towers.of(parts, device=device, precision=precision)
        self.device = self.towers.device


class VideoEncoder(_TowerReplica):
    """Clips -> unit-norm video embeddings ``N x D``, then the bundle's heads' logits ``N x H``."""

    components = ("video_encoder", "heads")
    width = 512

    async def encode(self, study: dict[str, Any]) -> np.ndarray:
        """``N x (D + H)``: AnatomicalAttention takes the first D columns, RAIRetriever the rest."""
        return await self._map(study)

    async def embed(self, study: dict[str, Any]) -> np.ndarray:
        """The embeddings alone, ``N x D``."""
        return (await self._map(study))[:, : self.towers.embed_dim]

    def compute(self, clips: np.ndarray, n_valid: np.ndarray) -> torch.Tensor:
        return self.towers.embed_with_tasks(self.towers.normalise(clips, n_valid))


class ViewClassifier(_TowerReplica):
    """Clips -> view probabilities ``N x 11``."""

    components = ("view_classifier",)
    width = 11

    async def classify(self, study: dict[str, Any]) -> np.ndarray:
        return await self._map(study)

    def compute(self, clips: np.ndarray, n_valid: np.ndarray) -> torch.Tensor:
        return self.towers.classify(self.towers.normalise(clips, n_valid))


class AnatomicalAttention:
    """One study's embeddings and views -> per-section embeddings ``15 x D`` and weights ``15 x N``."""

    def __init__(self, bundle_uri: str, device: str | None = None, verify: bool = True) -> None:
        torch_threads()
        parts = load_bundle_parts(bundle_uri, verify=verify, components={"mil"})
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.mil, self.dim = parts.mil.to(self.device).eval(), parts.bank.dim

    def ready(self) -> str:
        return "AnatomicalAttention"

    def attend(self, emb: np.ndarray, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``emb`` ``N x (D + H)`` (VideoEncoder.encode), ``probs`` ``N x V``."""
        return attend(self.mil, emb[:, : self.dim], probs.argmax(1), self.device)


class RAIRetriever:
    """The bank (memory-mapped, loaded once) and the text tower: search, report, findings;
    report embedding and search (``k``, ``n_neighbours``: as :class:`ResultBuilder` takes them)."""

    def __init__(
        self, bundle_uri: str, k: int | None = None, n_neighbours: int = 5, device: str | None = None,
        verify: bool = True,
    ) -> None:  # fmt: skip
        torch_threads()
        self.parts = load_bundle_parts(bundle_uri, verify=verify, components={"bank", "text_encoder"})
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.parts.text_encoder is not None:
            self.parts.text_encoder.to(self.device).eval()
        self.results = ResultBuilder.of(self.parts)
        self.k, self.n_neighbours = k, n_neighbours

    def ready(self) -> str:
        return "RAIRetriever"

    def assemble(
        self, sections: np.ndarray | None, weights: np.ndarray | None, probs: np.ndarray,
        files: list[FileReport], encoded: np.ndarray | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """The study's ``StudyResult`` as JSON (``sections`` None: no usable video); ``encoded``:
        VideoEncoder.encode's ``N x (D + H)``, whose last H columns are the heads' logits."""
        tasks = (
            np.asarray(encoded)[:, self.parts.bank.dim :]
            if encoded is not None and self.results.tasks
            else None
        )
        enc = None if sections is None else StudyEncoding(sections, weights, np.asarray(probs), tasks)
        (result,) = self.results.build([enc], [files], k=self.k, n_neighbours=self.n_neighbours)
        return result.to_dict()

    def report(
        self, attended: tuple[np.ndarray, np.ndarray], probs: np.ndarray, files: list[FileReport],
        encoded: np.ndarray | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """:meth:`assemble` from AnatomicalAttention.attend's ``(sections, weights)``."""
        return self.assemble(*attended, probs, files, encoded)

    @answers_errors
    def embed_text(self, reports: list[str]) -> np.ndarray:
        """Reports -> unit-norm ``B x D`` embeddings (ApiError 501 without a text encoder)."""
        if self.parts.text_encoder is None or self.parts.tokenizer is None:
            raise ApiError(
                501,
                "not_in_bundle",
                "this bundle has no text encoder/tokenizer: text embedding and search are unavailable",
            )
        return embed_reports(self.parts.text_encoder, self.parts.tokenizer, reports, device=self.device)

    @answers_errors
    def search(self, query: str | list[float], k: int) -> list[dict[str, Any]]:
        """The ``k`` bank reports nearest a text or an embedding (ApiError 422: wrong width)."""
        if isinstance(query, str):
            emb = self.embed_text([query])
            if isinstance(emb, ApiError):
                return emb
        elif len(query) != self.parts.bank.dim:
            raise ApiError(
                422, "invalid_embedding",
                f"the embedding has {len(query)} values; this bundle's bank has {self.parts.bank.dim}",
            )  # fmt: skip
        else:
            emb = np.asarray(query, np.float32).reshape(1, -1)
        return search_bank(self.parts.bank, emb, k)
