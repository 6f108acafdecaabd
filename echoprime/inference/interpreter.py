"""StudyInterpreter: the facade the CLI, the batch jobs and notebooks call.

A study (a set of echo videos) goes in; out come each video's view with its confidence, a report
section by section (retrieval-augmented: each section taken from the most similar historical
report that has it), the phenotype findings from the nearest neighbours' labels, the per-section
weight of every video (anatomical attention) and the neighbour studies behind each section, named
as the bank names them (a bank built by build-bank holds keyed pseudonyms: docs/privacy.md).

One path: files -> :func:`~echoprime.inference.study.read_study` (uint8 clips) ->
:class:`~echoprime.inference.towers.Towers` (normalise, embed, classify) ->
:func:`~echoprime.inference.towers.attend` -> :class:`~echoprime.inference.result.ResultBuilder`.
The Serve graph runs the same pieces, one per replica.

Example::

    interp = StudyInterpreter.from_bundle("quickstart-out/bundle")
    result = interp.interpret("path/to/study_folder")
    print(result.report_text)
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch

from echoprime.inference.parts import InterpreterParts, load_bundle_parts
from echoprime.inference.result import ResultBuilder, StudyEncoding, StudyResult, search_bank
from echoprime.inference.study import StudyClips, StudyInput, read_study
from echoprime.inference.towers import Towers, attend, embed_reports
from echoprime.io import FileReport


class StudyInterpreter:
    """Interpret echo studies with a model bundle (or a published release's parts).

    Args:
        parts: the loaded components (:func:`load_bundle_parts`, or
            :func:`echoprime.release.load_release_parts` for a user's copy of the release).
        device: where the towers run (``cpu``, ``cuda``; default: CUDA when present).
        batch_size: clips normalised and sent through the towers together.
        k: default neighbours for the kNN findings.
        video_batch: clips per forward of the video tower (:class:`Towers`).
        precision: ``"fp32"`` (default) or ``"bf16"`` autocast (:data:`~echoprime.inference.towers.PRECISIONS`).
    """

    def __init__(
        self,
        parts: InterpreterParts,
        device: str | torch.device | None = None,
        batch_size: int = 50,
        k: int = 50,
        video_batch: int | None = None,
        precision: str = "fp32",
    ) -> None:
        self.parts, self.spec = parts, parts.spec
        self.towers = Towers.of(
            parts, device=device, batch_size=batch_size, video_batch=video_batch, precision=precision
        )
        self.device, self.batch_size, self.video_batch = (
            self.towers.device,
            batch_size,
            self.towers.video_batch,
        )
        self.precision = precision
        self.results = ResultBuilder.of(parts, k)
        self.k = self.results.k
        for m in (parts.mil, parts.text_encoder):
            if m is not None:
                m.to(self.device).eval()

    @classmethod
    def from_bundle(
        cls,
        uri: str | os.PathLike,
        *,
        verify: bool = True,
        components: Collection[str] | None = None,
        **kwargs: Any,
    ) -> StudyInterpreter:
        """Load a model bundle (local folder or ``s3://``), verifying every file's hash.

        Args:
            uri: the bundle.
            verify: check every file against the manifest's sha256.
            components: load only these parts (:data:`~echoprime.inference.parts.COMPONENTS`;
                default all), e.g. ``{"video_encoder"}`` to embed clips.
            **kwargs: for :class:`StudyInterpreter` (device, batch_size, k, precision).

        Raises:
            echoprime.bundle.BundleError: missing, unknown or tampered files, naming them.
        """
        return cls(load_bundle_parts(str(uri), verify=verify, components=components), **kwargs)

    # ------------------------------------------------------------------------------ reading
    def read_study(self, study: str | os.PathLike | Sequence[Any]) -> StudyClips:
        """A study's files -> uint8 clips, real-frame counts and one report per file
        (:func:`~echoprime.inference.study.read_study`); bad files are reported, never fatal."""
        return read_study(study, self.spec)

    def load_study(self, study: StudyInput) -> tuple[torch.Tensor, list[FileReport]]:
        """A study -> float32 model clips ``N x 3 x T x S x S`` on the CPU, and one report per
        file (preprocessed clips given as a tensor are checked and returned as they are)."""
        if isinstance(study, torch.Tensor):
            self.towers.check_clips(study)
            return study, [FileReport(f"clip[{i}]", "used") for i in range(study.shape[0])]
        read = self.read_study(study)
        return self.towers.normalise(read.clips, read.n_valid).cpu(), read.files

    def normalise_clips(
        self, clips: np.ndarray | torch.Tensor, n_valid: Sequence[int] | np.ndarray
    ) -> torch.Tensor:
        """uint8 ``N x T x S x S x 3`` clips -> float32 model input on this interpreter's device."""
        return self.towers.normalise(clips, n_valid)

    # ------------------------------------------------------------------------------ towers
    def embed_and_classify(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model clips -> (embeddings ``N x D``, view probabilities ``N x V``)."""
        return self.towers.embed(clips), self.towers.classify(clips)

    def attend(
        self, embeddings: torch.Tensor | np.ndarray, view_ids: torch.Tensor | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """One study's embeddings ``N x D`` and view indices ``N`` -> (section embeddings
        ``15 x D``, weights ``15 x N``)."""
        return attend(self.parts.mil, embeddings, view_ids, self.device)

    # ------------------------------------------------------------------------- the answer
    def interpret(self, study: StudyInput, *, k: int | None = None, n_neighbours: int = 5) -> StudyResult:
        """Interpret one study (a folder, files, ``(name, bytes)`` uploads, :class:`StudyClips`
        or a tensor of model clips); a study without a usable video says so."""
        return self.interpret_many([study], k=k, n_neighbours=n_neighbours)[0]

    def interpret_many(
        self, studies: Sequence[StudyInput], *, k: int | None = None, n_neighbours: int = 5
    ) -> list[StudyResult]:
        """Interpret several studies: clips encoded in shared batches, the bank searched once.

        Studies given as :class:`StudyClips` (read ahead, e.g. in reader threads) are used as
        they are; files are read into uint8 clips and normalised a batch at a time; tensors of
        model clips are encoded as they are."""
        if any(isinstance(s, torch.Tensor) for s in studies):
            loaded = [self.load_study(s) for s in studies]
            counts = [int(c.shape[0]) for c, _ in loaded]
            clips = torch.cat([c for c, _ in loaded]) if any(counts) else None
            emb = self.towers.embed_with_tasks(clips) if clips is not None else None
            probs = self.towers.classify(clips) if clips is not None else None
            files = [f for _, f in loaded]
        else:
            read = [s if isinstance(s, StudyClips) else self.read_study(s) for s in studies]
            counts = [int(r.clips.shape[0]) for r in read]
            clips_u8 = np.concatenate([r.clips for r in read]) if any(counts) else None
            n_valid = np.concatenate([np.asarray(r.n_valid, np.int64) for r in read]) if any(counts) else None
            emb, probs = self.towers.encode_uint8(clips_u8, n_valid) if clips_u8 is not None else (None, None)
            files = [list(r.files) for r in read]
        encodings: list[StudyEncoding | None] = []
        d, start = self.towers.embed_dim, 0
        for n in counts:
            if not n:
                encodings.append(None)
                continue
            e, p = emb[start : start + n], probs[start : start + n]
            start += n
            sections, weights = self.attend(e[:, :d], p.argmax(1))
            tasks = e[:, d:].numpy() if self.parts.heads else None
            encodings.append(StudyEncoding(sections, weights, p.numpy(), tasks))
        return self.results.build(encodings, files, k=k, n_neighbours=n_neighbours)

    # --------------------------------------------------------------------------------- text
    def embed_text(self, reports: Sequence[str]) -> np.ndarray:
        """Report texts -> ``B x D`` unit-norm embeddings in the joint space.

        Raises:
            ValueError: the bundle has no text encoder.
        """
        if self.parts.text_encoder is None or self.parts.tokenizer is None:
            raise ValueError(
                "this bundle has no text encoder/tokenizer: text embedding and search are unavailable"
            )
        return embed_reports(self.parts.text_encoder, self.parts.tokenizer, reports, device=self.device)

    def search_reports(self, query: np.ndarray | str, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` bank reports nearest to a text or an embedding: study id, similarity, text."""
        q = (
            self.embed_text([query])
            if isinstance(query, str)
            else np.asarray(query, np.float32).reshape(1, -1)
        )
        return search_bank(self.parts.bank, q, k)
