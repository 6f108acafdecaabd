"""StudyInterpreter: the one API that the CLI, the Ray jobs and the Serve graph all call.

A study (a set of echo videos) goes in; out come each video's view with its confidence, a report
section by section (retrieval-augmented: each section taken from the most similar historical
report that has it), the 21 phenotype predictions from the nearest neighbours' labels (value,
probability, decision, spread), the per-section weight of every video (anatomical attention) and
the neighbour studies behind each section, named as the bank names them (a bank built by
build-bank holds keyed pseudonyms, never other patients' study ids: docs/privacy.md).

The release-compatible methods keep the published ``EchoPrime`` class's names and shapes:
``process_dicoms``, ``process_mp4s``, ``encode_study(clips) -> N x (512 + 11)``,
``predict_metrics(encoding, k) -> {phenotype: value}``, ``generate_report(encoding) -> str``.

Example::

    interp = StudyInterpreter.from_bundle("quickstart-out/bundle")
    result = interp.interpret("path/to/study_folder")
    print(result.report_text)
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echoprime.io import FileReport, VideoData
from echoprime.io.files import clip_reader, load_file, prepare_clip
from echoprime.preprocess import PreprocessSpec, normalise
from echoprime.taxonomy import MIL_SECTIONS, VIEWS

StudyInput = str | os.PathLike | Sequence[str | os.PathLike] | Sequence[tuple[str, bytes]] | torch.Tensor
"""A folder, a list of files, a list of ``(name, bytes)`` uploads, or preprocessed clips ``N x 3 x T x S x S``."""


CPU_ONE_CLIP_PARAMS = 10_000_000
"""Video towers larger than this run one clip per forward on a CPU (:class:`StudyInterpreter`)."""

PRECISIONS = ("fp32", "bf16")
"""Arithmetic of the towers' forward: ``fp32`` (default; bit-identical across the in-process,
Serve and batch paths) or ``bf16`` autocast (opt-in: a GPU, or a CPU with AVX512-BF16 / AMX;
docs/benchmarks.md measures its speed and how far its embeddings and answers move)."""


@dataclass
class InterpreterParts:
    """Everything interpretation needs, however it was loaded (a bundle, a published release).

    Attributes:
        spec: preprocessing of a clip into model input.
        video_encoder: ``B x 3 x T x S x S -> B x D``.
        view_classifier: clip (or first frame) ``-> B x V`` logits.
        mil: ``(embeddings, view_ids, mask) -> {"weights", "section_embeddings"}`` (learned or table).
        bank: the candidate report bank.
        thresholds: decision threshold per binary phenotype.
        text_encoder: report -> embedding (optional: text embedding and search).
        tokenizer: the text encoder's :class:`ReportTokenizer` (optional).
        manifest: where it came from (bundle manifest or a description of the release).
        normalize_embeddings: clip embeddings are unit-normalised before the attention pools
            them (our bundles); False pools the encoder's raw outputs, as the published release
            does (its converted bundles record ``normalize: false``).
        calibration: the bundle's ``calibration.json`` (probability maps, measurement
            intervals, grade scales); None for bundles without one (a converted release), whose
            results then carry no calibrated probabilities, intervals or grades.
        heads: supervised heads fitted by ``echoprime finetune`` (none by default).

    A part not loaded (``load_bundle_parts(..., components=...)``) is ``None``.
    """

    spec: PreprocessSpec
    video_encoder: torch.nn.Module | None
    view_classifier: torch.nn.Module | None
    mil: torch.nn.Module | None
    bank: Any
    thresholds: Mapping[str, float] = field(default_factory=dict)
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    manifest: dict[str, Any] = field(default_factory=dict)
    normalize_embeddings: bool = True
    calibration: Any = None
    heads: list[Any] = field(default_factory=list)
    """The bundle's fine-tuned task heads (echoprime.training.heads.LoadedHead), in logit order."""


@dataclass
class StudyResult:
    """A study's interpretation; ``to_dict()`` is JSON-serialisable (NaN written as None)."""

    status: str
    """``ok``, or ``no_usable_video`` when no file of the study could be used."""
    files: list[dict[str, Any]]
    videos: list[dict[str, Any]]
    report: list[dict[str, Any]]
    metrics: dict[str, dict[str, Any]]
    evidence: dict[str, list[dict[str, Any]]]
    neighbours: dict[str, list[dict[str, Any]]]
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The bundle's fine-tuned heads' answers (``echoprime finetune``), by task name."""

    @property
    def report_text(self) -> str:
        return " ".join(s["text"] for s in self.report)

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self) | {"report_text": self.report_text})


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


class StudyInterpreter:
    """Interpret echo studies with a model bundle (or a converted published release).

    Args:
        parts: the loaded components.
        device: where the encoders run (``cpu``, ``cuda``; default: CUDA when present).
        batch_size: clips normalised and sent through the towers together.
        k: default neighbours for the kNN metrics.
        video_batch: clips per forward of the video tower (within a batch). Default: one on a CPU
            for a tower of more than :data:`CPU_ONE_CLIP_PARAMS` parameters (mViT v2 S), else
            ``batch_size`` (bench/encoder_cpu.py: on CPU the release-size tower is fastest one clip
            at a time, 1.27 s a clip against 1.70 in eights; the small Conv3d tower is 2.5x faster
            in batches; docs/benchmarks.md).
        precision: :data:`PRECISIONS`: ``"bf16"`` runs the towers under bf16 autocast (faster
            where the hardware has bf16 arithmetic; the answers can move, see
            docs/benchmarks.md); ``"fp32"`` by default.
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
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.parts = parts
        self.spec = parts.spec
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        if video_batch is None:
            enc = parts.video_encoder
            size = sum(p.numel() for p in enc.parameters()) if enc is not None else 0
            video_batch = 1 if self.device.type == "cpu" and size > CPU_ONE_CLIP_PARAMS else batch_size
        self.video_batch = max(1, min(video_batch, batch_size))
        self.k = min(k, len(parts.bank)) if parts.bank is not None else k
        for m in (parts.video_encoder, parts.view_classifier, parts.mil, parts.text_encoder):
            if m is not None:
                m.to(self.device).eval()
        for h in parts.heads:
            h.linear.to(self.device)
            if h.encoder is not None:
                h.encoder.to(self.device).eval()

    # ------------------------------------------------------------------------------ loading
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
            components: load only these parts (:data:`COMPONENTS`; default all), e.g. a
                Serve replica that only encodes clips loads ``{"video_encoder"}``.
            **kwargs: for :class:`StudyInterpreter` (device, batch_size, k, precision).

        Raises:
            echoprime.bundle.BundleError: missing, unknown or tampered files, naming them.
        """
        return cls(load_bundle_parts(str(uri), verify=verify, components=components), **kwargs)

    @classmethod
    def from_release(
        cls,
        model_data_dir: str | os.PathLike,
        assets_dir: str | os.PathLike,
        trust_pickles: bool = False,
        **kwargs: Any,
    ) -> StudyInterpreter:
        """Read a user's copy of the published EchoPrime release (see echoprime.release)."""
        from echoprime.release import load_release_parts

        return cls(load_release_parts(model_data_dir, assets_dir, trust_pickles=trust_pickles), **kwargs)

    # ------------------------------------------------------------------------- preprocessing
    def load_study(self, study: StudyInput) -> tuple[torch.Tensor, list[FileReport]]:
        """Read and preprocess a study's files; bad files are reported, never fatal.

        Returns:
            ``N x 3 x T x S x S`` float32 clips of the usable files, and one report per file:
            :meth:`load_study_uint8` then normalised on the CPU (the values
            :meth:`normalise_clips` gives on any device).
        """
        if isinstance(study, torch.Tensor):
            self._check_clips(study)
            return study, [FileReport(f"clip[{i}]", "used") for i in range(study.shape[0])]
        u8, n_valid, reports = self.load_study_uint8(study)
        return torch.from_numpy(normalise(u8, self.spec.mean, self.spec.std, n_valid=n_valid)), reports

    def load_study_uint8(
        self, study: str | os.PathLike | Sequence[Any]
    ) -> tuple[np.ndarray, np.ndarray, list[FileReport]]:
        """Read a study's files into clips in their uint8 storage form, a quarter of the float
        clips' size: what the Serve graph passes between replicas (the towers normalise on their
        own device). Bad files are reported, never fatal.

        Returns:
            ``N x T x S x S x 3`` uint8 clips of the usable files, ``N`` int64 counts of each
            clip's frames that come from its file (the rest is padding, see
            :func:`echoprime.preprocess.valid_frames`), and one report per file.

        Raises:
            TypeError: ``study`` is a tensor (model clips are already past this step).
            FileNotFoundError: a study folder that does not exist.
        """
        if isinstance(study, torch.Tensor):
            raise TypeError("load_study_uint8 reads files; got a tensor of model clips (use load_study)")
        items: list[tuple[str, Any]]
        if isinstance(study, (str, os.PathLike)):
            folder = Path(study)
            if not folder.is_dir():
                raise FileNotFoundError(f"study folder {str(folder)!r} does not exist")
            items = [
                (str(p), p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith(".")
            ]
        else:
            items = [(it[0], it[1]) if isinstance(it, tuple) else (str(it), Path(it)) for it in study]
        clips, n_valid, reports = [], [], []
        read = clip_reader(self.spec)  # only the frames the clip samples are decoded

        def prepare(vid: VideoData) -> tuple[np.ndarray, int]:
            # T x S x S x 3 from frame 0, and how many of its frames come from the file
            return prepare_clip(vid, self.spec)

        for name, src in items:
            prepared, report = load_file(
                name, src, prepare, reader=read
            )  # a bad file: a report, never a raise
            reports.append(report)
            if prepared is not None:
                clips.append(prepared[0])
                n_valid.append(prepared[1])
        shape = (self.spec.frames, self.spec.size, self.spec.size, 3)
        u8 = np.stack(clips) if clips else np.zeros((0, *shape), np.uint8)
        return u8, np.asarray(n_valid, np.int64), reports

    def normalise_clips(
        self, clips: np.ndarray | torch.Tensor, n_valid: Sequence[int] | np.ndarray
    ) -> torch.Tensor:
        """:meth:`load_study_uint8`'s ``N x T x S x S x 3`` uint8 clips -> ``N x 3 x T x S x S``
        float32 model input on this interpreter's device (moved there as uint8, then normalised;
        the same values :meth:`load_study` gives).

        Raises:
            ValueError: not ``N x T x S x S x 3`` for this bundle's spec, or ``n_valid`` of another length.
        """
        self._check_uint8_clips(clips, n_valid)
        x = torch.as_tensor(clips).to(self.device)
        return normalise(x, self.spec.mean, self.spec.std, n_valid=n_valid)

    def _check_uint8_clips(
        self, clips: np.ndarray | torch.Tensor, n_valid: Sequence[int] | np.ndarray
    ) -> None:
        want = (self.spec.frames, self.spec.size, self.spec.size, 3)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want or clips.dtype not in (np.uint8, torch.uint8):
            raise ValueError(
                f"expected uint8 clips N x {' x '.join(map(str, want))}, got {clips.dtype} {tuple(clips.shape)}"
            )
        if len(n_valid) != clips.shape[0]:
            raise ValueError(f"n_valid has {len(n_valid)} values for {clips.shape[0]} clips")

    def process_dicoms(self, folder: str | os.PathLike) -> torch.Tensor:
        """Release-compatible: every DICOM video in ``folder`` -> ``N x 3 x T x S x S``."""
        from echoprime.io.folders import process_dicoms

        return process_dicoms(folder, self.spec)[0]

    def process_mp4s(self, folder: str | os.PathLike) -> torch.Tensor:
        """Release-compatible: every MP4 in ``folder`` -> ``N x 3 x T x S x S``."""
        from echoprime.io.folders import process_mp4s

        return process_mp4s(folder, self.spec)[0]

    def _check_clips(self, clips: torch.Tensor) -> None:
        want = (3, self.spec.frames, self.spec.size, self.spec.size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
            raise ValueError(
                f"clips must be N x {' x '.join(map(str, want))} (this bundle's spec), got {tuple(clips.shape)}"
            )

    # ------------------------------------------------------------------------------ encoding
    def embed_and_classify(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``N`` clips -> (embeddings ``N x D``, view probabilities ``N x V``), in batches.

        Embeddings are unit-normalised unless the parts say otherwise (release compatibility).
        """
        return self.embed_clips(clips), self.classify_views(clips)

    def embed_clips(self, clips: torch.Tensor) -> torch.Tensor:
        """``N`` clips ``N x 3 x T x S x S`` -> embeddings ``N x D``, in batches (unit-norm unless
        ``parts.normalize_embeddings`` is False, as for the published release)."""
        return self._batched(clips, self._embed, self._embed_dim)

    def classify_views(self, clips: torch.Tensor) -> torch.Tensor:
        """``N`` clips ``N x 3 x T x S x S`` -> view probabilities ``N x V``, in batches."""
        return self._batched(clips, self._classify, len(VIEWS))

    @property
    def _embed_dim(self) -> int:
        return getattr(self.parts.video_encoder, "embed_dim", None) or 512

    def _autocast(self) -> Any:
        """bf16 autocast around the towers' forward when ``precision="bf16"`` (the embeddings and
        probabilities come back as float32 either way)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        b, enc = self.video_batch, self.parts.video_encoder
        with self._autocast():
            e = enc(x) if len(x) <= b else torch.cat([enc(x[i : i + b]) for i in range(0, len(x), b)])
        return self._unit(e.float())

    def _unit(self, e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e, dim=-1) if self.parts.normalize_embeddings else e

    @torch.no_grad()
    def embed_clips_with_tokens(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed_clips` and, from the same forward pass, the video tower's last tokens per
        clip ``N x L x F`` (``forward_tokens``: what a frozen attentive probe pools), in batches.

        Raises:
            ValueError: clips of the wrong shape, or a tower that does not expose its tokens.
        """
        self._check_clips(clips)
        enc = self.parts.video_encoder
        if not hasattr(enc, "forward_with_tokens"):
            raise ValueError(f"the bundle's video tower ({type(enc).__name__}) does not expose its tokens")
        embs, toks = [], []
        for i in range(0, clips.shape[0], self.video_batch):
            with self._autocast():
                e, t = enc.forward_with_tokens(clips[i : i + self.video_batch].to(self.device, torch.float32))
            embs.append(self._unit(e.float()).cpu())
            toks.append(t.float().cpu())
        if not embs:
            raise ValueError("no clips to embed")
        return torch.cat(embs), torch.cat(toks)

    @property
    def _task_width(self) -> int:
        return sum(h.task.outputs for h in self.parts.heads)

    def _embed_tasks(self, x: torch.Tensor) -> torch.Tensor:
        """``B x (D + H)``: the embeddings, then every head's logits (``H`` = 0 without heads)."""
        emb = self._embed(x)
        if not self.parts.heads:
            return emb
        # A head fitted on unit embeddings gets unit embeddings, also from a bundle whose
        # interpretation pools raw ones (a converted release).
        unit = emb if self.parts.normalize_embeddings else F.normalize(emb, dim=-1)
        return torch.cat([emb, *(h.logits(x, unit if h.normalize else emb) for h in self.parts.heads)], dim=1)

    def embed_clips_with_tasks(self, clips: torch.Tensor) -> torch.Tensor:
        """:meth:`embed_clips`, then the bundle's heads' logits per clip: ``N x (D + H)`` (what
        the Serve encoder replica returns; without heads the same as :meth:`embed_clips`)."""
        return self._batched(clips, self._embed_tasks, self._embed_dim + self._task_width)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = self.parts.view_classifier(x)
        return torch.softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def _batched(self, clips: torch.Tensor, fn: Any, width: int) -> torch.Tensor:
        self._check_clips(clips)
        outs = [
            fn(clips[i : i + self.batch_size].to(self.device, torch.float32)).cpu()
            for i in range(0, clips.shape[0], self.batch_size)
        ]
        return torch.cat(outs) if outs else torch.zeros((0, width))

    @torch.no_grad()
    def embed_and_classify_uint8(
        self, clips: np.ndarray, n_valid: Sequence[int] | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed_and_classify` from :meth:`load_study_uint8`'s clips, normalised on the
        device one batch at a time: the float32 input of only ``batch_size`` clips ever exists
        (the whole study's would be four times the uint8 clips), and both towers share each
        normalised batch. The same values as ``embed_and_classify(normalise(...))``.

        Raises:
            ValueError: clips not ``N x T x S x S x 3`` uint8 for this bundle's spec, or
                ``n_valid`` of another length.
        """
        emb, probs = self._encode_uint8(clips, n_valid)
        return emb[:, : self._embed_dim], probs

    @torch.no_grad()
    def _encode_uint8(
        self, clips: np.ndarray, n_valid: Sequence[int] | np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed_and_classify_uint8` with the heads' logits after the embeddings (``N x (D + H)``)."""
        self._check_uint8_clips(clips, n_valid)
        width = self._embed_dim + self._task_width
        embs, probs = [torch.zeros((0, width))], [torch.zeros((0, len(VIEWS)))]
        for i in range(0, clips.shape[0], self.batch_size):
            x = self.normalise_clips(clips[i : i + self.batch_size], n_valid[i : i + self.batch_size])
            embs.append(self._embed_tasks(x).cpu())
            probs.append(self._classify(x).cpu())
        return torch.cat(embs), torch.cat(probs)

    def encode_study(self, clips: torch.Tensor) -> torch.Tensor:
        """Release-compatible study encoding ``N x (D + V)``: embedding, then the one-hot view."""
        emb, probs = self.embed_and_classify(clips)
        onehot = (
            F.one_hot(probs.argmax(dim=1), len(VIEWS)).float() if len(probs) else torch.zeros((0, len(VIEWS)))
        )
        return torch.cat([emb, onehot], dim=1)

    @torch.no_grad()
    def section_embeddings(self, encoding: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``N x (D + V)`` encoding -> (section embeddings ``15 x D``, weights ``15 x N``)."""
        if (
            encoding.ndim != 2
            or encoding.shape[0] == 0
            or encoding.shape[1] != self.parts.bank.dim + len(VIEWS)
        ):
            raise ValueError(
                f"encoding must be N x {self.parts.bank.dim + len(VIEWS)} with N >= 1 (embedding + one-hot view), "
                f"got {tuple(encoding.shape)}"
            )
        emb = encoding[:, : -len(VIEWS)].float().to(self.device)
        views = encoding[:, -len(VIEWS) :].argmax(dim=1).to(self.device)
        out = self.parts.mil(emb, views)
        return out["section_embeddings"].float().cpu().numpy(), out["weights"].float().cpu().numpy()

    # ---------------------------------------------------------------- release-compatible outputs
    def predict_metrics(self, encoding: torch.Tensor, k: int | None = None) -> dict[str, float]:
        """Release-compatible: ``{phenotype: value}`` (regressions in units, binaries as the positive
        fraction of the neighbours), each phenotype from its own section's ``k`` neighbours.

        Raises:
            ValueError: ``k`` not in ``1..len(bank)``.
        """
        from echoprime.retrieval import predict_metrics

        sec, _ = self.section_embeddings(encoding)
        preds = predict_metrics(
            sec, self.parts.bank, self.k if k is None else k, thresholds=self.parts.thresholds or None
        )
        return {p: m.value for p, m in preds.items()}

    def generate_report(self, encoding: torch.Tensor) -> str:
        """Release-compatible: the retrieval-augmented report text, section by section."""
        from echoprime.retrieval import generate_report

        sec, _ = self.section_embeddings(encoding)
        return generate_report(sec, self.parts.bank, top=self.k).text

    # ------------------------------------------------------------------------- the full answer
    def interpret(self, study: StudyInput, *, k: int | None = None, n_neighbours: int = 5) -> StudyResult:
        """Interpret one study (see :data:`StudyInput`); a study without a usable video says so."""
        return self.interpret_many([study], k=k, n_neighbours=n_neighbours)[0]

    def interpret_many(
        self, studies: Sequence[StudyInput], *, k: int | None = None, n_neighbours: int = 5
    ) -> list[StudyResult]:
        """Interpret several studies: clips are encoded in shared batches, the bank searched once.
        Files are read into uint8 clips (:meth:`load_study_uint8`) and normalised a batch at a
        time; studies given as tensors of model clips are interpreted as they are."""
        if any(isinstance(s, torch.Tensor) for s in studies):
            return self.interpret_loaded(
                [self.load_study(s) for s in studies], k=k, n_neighbours=n_neighbours
            )
        return self.interpret_stored(
            [self.load_study_uint8(s) for s in studies], k=k, n_neighbours=n_neighbours
        )

    def interpret_stored(
        self,
        loaded: Sequence[tuple[np.ndarray, np.ndarray, Sequence[FileReport]]],
        *,
        k: int | None = None,
        n_neighbours: int = 5,
    ) -> list[StudyResult]:
        """Interpret studies read by :meth:`load_study_uint8` (e.g. in reader threads): the same
        answers as :meth:`interpret_loaded` on the float clips, with a quarter of the memory for
        the clips held and the float32 input made one batch at a time.

        Args:
            loaded: per study, ``(clips N x T x S x S x 3 uint8, n_valid N, file reports)``.
            k: neighbours for the metrics (default: the interpreter's).
            n_neighbours: neighbour studies listed per section.
        """
        shape = (0, self.spec.frames, self.spec.size, self.spec.size, 3)
        counts = [int(c.shape[0]) for c, _, _ in loaded]
        clips = np.concatenate([c for c, _, _ in loaded if c.shape[0]] or [np.zeros(shape, np.uint8)])
        n_valid = np.concatenate([np.asarray(v, np.int64) for _, v, _ in loaded] or [np.zeros(0, np.int64)])
        emb, probs = self._encode_uint8(clips, n_valid)
        return self._interpret_encoded(
            emb, probs, counts, [list(r) for _, _, r in loaded], k=k, n_neighbours=n_neighbours
        )

    def interpret_loaded(
        self,
        loaded: Sequence[tuple[torch.Tensor, Sequence[FileReport]]],
        *,
        k: int | None = None,
        n_neighbours: int = 5,
    ) -> list[StudyResult]:
        """Interpret studies already read by :meth:`load_study` (e.g. in reader threads).

        Args:
            loaded: per study, :meth:`load_study`'s ``(clips N x 3 x T x S x S, file reports)``.
            k: neighbours for the metrics (default: the interpreter's).
            n_neighbours: neighbour studies listed per section.
        """
        for clips, _ in loaded:
            self._check_clips(clips)
        counts = [c.shape[0] for c, _ in loaded]
        all_clips = [c for c, _ in loaded if c.shape[0]]
        if all_clips:
            clips = torch.cat(all_clips)
            emb, probs = self.embed_clips_with_tasks(clips), self.classify_views(clips)
        else:
            emb, probs = torch.zeros(0, self._embed_dim + self._task_width), torch.zeros(0, len(VIEWS))
        return self._interpret_encoded(
            emb, probs, counts, [list(r) for _, r in loaded], k=k, n_neighbours=n_neighbours
        )

    def _interpret_encoded(
        self,
        emb: torch.Tensor,
        probs: torch.Tensor,
        counts: list[int],
        reports: list[list[FileReport]],
        *,
        k: int | None,
        n_neighbours: int,
    ) -> list[StudyResult]:
        # ``emb`` is N x (D + H): the embeddings, then the heads' logits (H = 0 without heads).
        offsets = np.cumsum([0, *counts])
        d = self._embed_dim
        per_probs = [probs[offsets[i] : offsets[i + 1]] for i in range(len(counts))]
        attended = [
            self.attend(emb[offsets[i] : offsets[i + 1], :d], per_probs[i]) if n else (None, None)
            for i, n in enumerate(counts)
        ]
        tasks = [emb[offsets[i] : offsets[i + 1], d:].numpy() for i in range(len(counts))]
        return self.interpret_from_sections(
            [a[0] for a in attended],
            [a[1] for a in attended],
            per_probs,
            reports,
            k=k,
            n_neighbours=n_neighbours,
            task_logits=tasks if self.parts.heads else None,
        )

    def attend(self, emb: torch.Tensor, probs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Anatomical attention over one study: embeddings ``N x D`` and view probabilities
        ``N x V`` -> (section embeddings ``15 x D``, weights ``15 x N``)."""
        return self.section_embeddings(
            torch.cat([emb, F.one_hot(probs.argmax(1), len(VIEWS)).float()], dim=1)
        )

    def interpret_from_sections(
        self,
        sections: Sequence[np.ndarray | None],
        weights: Sequence[np.ndarray | None],
        probs: Sequence[torch.Tensor],
        reports: Sequence[Sequence[FileReport]],
        *,
        k: int | None = None,
        n_neighbours: int = 5,
        task_logits: Sequence[np.ndarray] | None = None,
    ) -> list[StudyResult]:
        """The retrieval half for several studies: bank search, metrics, report, result assembly.

        Args:
            sections: per study, :meth:`attend`'s section embeddings (``None``: no usable video).
            weights: per study, :meth:`attend`'s weights ``15 x N``.
            probs: per study, view probabilities ``N x V``.
            reports: per study, one :class:`FileReport` per file.
            k: neighbours for the metrics (default: the interpreter's).
            n_neighbours: neighbour studies listed per section.
            task_logits: per study, the heads' logits ``N x H`` of its clips (the columns after
                the embeddings of :meth:`embed_clips_with_tasks`); None: no heads.
        """
        from echoprime.reports import grades_from_sections
        from echoprime.retrieval import generate_report_batch
        from echoprime.retrieval.findings import findings_batch

        k = self.k if k is None else k
        bank = self.parts.bank
        usable = [i for i, s in enumerate(sections) if s is not None]
        results: list[StudyResult] = [
            StudyResult("no_usable_video", [asdict(r) for r in files], [], [], {}, {}, {})
            for files in reports
        ]
        if usable:
            batch = np.stack([sections[i] for i in usable])  # B x 15 x D
            neigh = bank.neighbours(batch, max(k, n_neighbours, min(self.k, len(bank))))
            gen = generate_report_batch(batch, bank, top=max(self.k, 1), neighbours=neigh)
            said = [grades_from_sections({c.section: c.text for c in g.sections}) for g in gen]
            metrics = findings_batch(
                batch, bank, k, thresholds=self.parts.thresholds, calibration=self.parts.calibration,
                neighbours=neigh, report_grades=said,
            )  # fmt: skip
            for b, i in enumerate(usable):
                results[i] = self._result(
                    b, probs[i], weights[i], metrics[b], gen[b], neigh, reports[i], n_neighbours
                )
                if task_logits is not None:
                    results[i].tasks = self._task_answers(task_logits[i], weights[i], results[i].videos)
        return results

    def _task_answers(
        self, logits: np.ndarray, weights: np.ndarray | None, videos: list[dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """Each head's answer for one study from its clips' logits (echoprime.training.heads)."""
        from echoprime.training.heads import head_tasks, study_answer

        tasks = [h.task for h in self.parts.heads] or head_tasks(self.parts.manifest)
        if logits.shape[1] != sum(t.outputs for t in tasks):
            raise ValueError(
                f"task logits have {logits.shape[1]} columns; this bundle's heads "
                f"{[t.name for t in tasks]} have {sum(t.outputs for t in tasks)}"
            )
        out, col = {}, 0
        files = [v["file"] for v in videos]
        for t in tasks:
            out[t.name] = study_answer(t, logits[:, col : col + t.outputs], weights, files)
            col += t.outputs
        return out

    def _result(self, b, probs, w, metrics, gen, neigh, files, n_neighbours) -> StudyResult:
        bank = self.parts.bank
        p = probs.numpy()
        used = [f for f in files if f.status == "used"]
        videos = [
            {
                "file": used[j].path if j < len(used) else f"clip[{j}]",
                "view": VIEWS[int(p[j].argmax())],
                "confidence": float(p[j].max()),
            }
            for j in range(p.shape[0])
        ]
        evidence = {}
        for s, name in enumerate(MIL_SECTIONS):
            ws = w[s]
            order = np.argsort(-ws, kind="stable")
            evidence[name] = [
                {"video": int(j), "file": videos[j]["file"], "weight": float(ws[j])} for j in order
            ]
        report = [
            {"section": c.section, "text": c.text, "source_study": c.study_id, "similarity": c.similarity}
            for c in gen.sections
        ]
        neighbours = {}
        for r, row in enumerate(neigh.rows):
            neighbours[MIL_SECTIONS[row]] = [
                {"study_id": bank.study_id(int(j)), "similarity": float(sc)}
                for j, sc in zip(
                    neigh.ids[b, r, :n_neighbours], neigh.scores[b, r, :n_neighbours], strict=True
                )
            ]
        return StudyResult("ok", [asdict(f) for f in files], videos, report, metrics, evidence, neighbours)

    # --------------------------------------------------------------------------------- text
    @torch.no_grad()
    def embed_text(self, reports: Sequence[str]) -> np.ndarray:
        """Report texts -> ``B x D`` unit-norm embeddings in the joint space.

        Raises:
            ValueError: the bundle has no text encoder.
        """
        if self.parts.text_encoder is None or self.parts.tokenizer is None:
            raise ValueError(
                "this bundle has no text encoder/tokenizer: text embedding and search are unavailable"
            )
        enc = self.parts.tokenizer(list(reports))
        enc = {k: v.to(self.device) for k, v in enc.items()}
        e = self.parts.text_encoder(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        return F.normalize(e.float(), dim=-1).cpu().numpy()

    def search_reports(self, query: np.ndarray | str, k: int = 10) -> list[dict[str, Any]]:
        """The ``k`` bank reports nearest to a text or an embedding: study id, similarity, text."""

        q = (
            self.embed_text([query])
            if isinstance(query, str)
            else np.asarray(query, np.float32).reshape(1, -1)
        )
        if q.shape[1] != self.parts.bank.dim:
            raise ValueError(f"query embedding has width {q.shape[1]}, the bank has {self.parts.bank.dim}")
        k = min(int(k), len(self.parts.bank))
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        scores, ids = self.parts.bank.search(q, k)
        return [
            {
                "study_id": self.parts.bank.study_id(int(j)),
                "similarity": float(s),
                "report": self.parts.bank.report_text(int(j)),
            }
            for s, j in zip(scores[0], ids[0], strict=True)
        ]


COMPONENTS = ("video_encoder", "view_classifier", "mil", "bank", "text_encoder", "heads")
"""The parts :func:`load_bundle_parts` can load on their own."""


def load_bundle_parts(
    uri: str, *, verify: bool = True, components: Collection[str] | None = None
) -> InterpreterParts:
    """Read a bundle into :class:`InterpreterParts` (see echoprime.bundle for the layout).

    Args:
        uri: the bundle (local folder or ``s3://``).
        verify: check every file's sha256.
        components: the parts to load (:data:`COMPONENTS`; default all); the others are ``None``.

    Raises:
        ValueError: an unknown component name.
    """
    from echoprime.bundle import BundleError, fetch, load_module, read_manifest, read_mil_table
    from echoprime.models.mil import TableMIL
    from echoprime.retrieval import CandidateBank, Thresholds
    from echoprime.retrieval.calibration import Calibration

    root = fetch(uri)
    manifest = read_manifest(root, verify=verify)
    comps = manifest["components"]
    for need in ("video_encoder", "view_classifier", "mil"):
        if need not in comps:
            raise BundleError(f"bundle {uri}: manifest lists no {need}")
    want = set(COMPONENTS if components is None else components)
    if unknown := want - set(COMPONENTS):
        raise ValueError(f"unknown bundle components {sorted(unknown)}; expected some of {COMPONENTS}")
    spec = PreprocessSpec.from_dict(manifest["spec"])
    video = load_module(root, comps["video_encoder"]) if "video_encoder" in want else None
    views = load_module(root, comps["view_classifier"]) if "view_classifier" in want else None
    mil_info, mil = comps["mil"], None
    if "mil" in want and mil_info.get("kind") == "learned":
        mil = load_module(root, mil_info)
    elif "mil" in want:
        mil = TableMIL(torch.from_numpy(read_mil_table(root / mil_info["table"])))
    bank = CandidateBank.load(root / "bank") if want & {"bank", "mil"} else None
    thresholds = (
        Thresholds.from_json(root / "thresholds.json") if (root / "thresholds.json").is_file() else {}
    )
    calibration = (
        Calibration.from_json(root / "calibration.json") if (root / "calibration.json").is_file() else None
    )
    text = tok = None
    if "text_encoder" in comps and "text_encoder" in want:
        from echoprime.models.tokenizer import ReportTokenizer

        text = load_module(root, comps["text_encoder"])
        tok = ReportTokenizer.from_pretrained(root / comps["text_encoder"].get("tokenizer", "tokenizer"))
    normalize = bool(comps["video_encoder"].get("normalize", True))
    heads = []
    if "heads" in want:
        from echoprime.training.heads import load_heads

        heads = load_heads(root, manifest)
    return InterpreterParts(
        spec, video, views, mil, bank, thresholds, text, tok, manifest, normalize, calibration=calibration,
        heads=heads,
    )  # fmt: skip
