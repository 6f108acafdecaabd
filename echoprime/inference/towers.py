"""The towers' forward, written once: check, normalise, embed, classify, in batches.

Every path that turns clips into embeddings or view probabilities calls :class:`Towers`: the
in-process :class:`~echoprime.inference.StudyInterpreter`, the Serve encoder and view replicas,
the Ray Data actors of fit-mil, build-bank, evaluate and probe, and the release-compatible
``EchoPrime``. So one study gives the same embeddings (bit for bit on a CPU, for the same clips
per forward) whichever way it came in, and a change to normalisation is made here or nowhere.

Shapes: uint8 storage clips ``N x T x S x S x 3`` (what shards, the Serve object store and the
batch readers hold); model input ``N x 3 x T x S x S`` float32, normalised with the spec's mean
and std, frames past a clip's ``n_valid`` zeroed (:func:`echoprime.preprocess.normalise`).

The text tower's forward (:func:`embed_reports`) and the anatomical attention (:func:`attend`)
live here too: the other two places a model runs at inference.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from echoprime.preprocess import PreprocessSpec, normalise
from echoprime.taxonomy import VIEWS

CPU_ONE_CLIP_PARAMS = 10_000_000
"""Video towers larger than this run one clip per forward on a CPU (bench/encoder_cpu.py: the
release-size tower is fastest one clip at a time there, 1.27 s a clip against 1.70 in eights; the
small Conv3d tower is 2.5x faster in batches; docs/benchmarks.md)."""

PRECISIONS = ("fp32", "bf16")
"""Arithmetic of the towers' forward: ``fp32`` (default; bit-identical across the in-process,
Serve and batch paths) or ``bf16`` autocast (opt-in: a GPU, or a CPU with AVX512-BF16 / AMX;
docs/benchmarks.md measures its speed and how far its embeddings and answers move)."""


def _writable(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    # Arrays from Ray's object store are read-only views; torch warns on those (and must not write).
    return np.array(a, copy=True) if isinstance(a, np.ndarray) and not a.flags.writeable else a


class Towers:
    """The video tower, the view classifier and the bundle's task heads, run one way.

    Args:
        spec: the preprocessing spec (clip shape, mean, std).
        video_encoder: ``B x 3 x T x S x S -> B x D`` (None: embedding unavailable).
        view_classifier: clip ``-> B x V`` logits (None: view probabilities are ``N x 0``).
        heads: the bundle's fine-tuned heads (:class:`echoprime.training.heads.LoadedHead`),
            whose logits follow the embeddings in :meth:`embed_with_tasks`.
        normalize: unit-normalise the embeddings (our bundles); False keeps the encoder's raw
            outputs, as the published release pools them.
        device: where the towers run (default: CUDA when present).
        batch_size: clips normalised and sent through the towers together.
        video_batch: clips per forward of the video tower within a batch (default: one on a CPU
            for a tower of more than :data:`CPU_ONE_CLIP_PARAMS` parameters, else ``batch_size``).
        precision: :data:`PRECISIONS`.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        video_encoder: torch.nn.Module | None = None,
        view_classifier: torch.nn.Module | None = None,
        *,
        heads: Sequence[Any] = (),
        normalize: bool = True,
        device: str | torch.device | None = None,
        batch_size: int = 50,
        video_batch: int | None = None,
        precision: str = "fp32",
    ) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.spec, self.precision, self.normalize = spec, precision, normalize
        self.video, self.views, self.heads = video_encoder, view_classifier, list(heads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.batch_size = batch_size
        if video_batch is None:
            size = sum(p.numel() for p in video_encoder.parameters()) if video_encoder is not None else 0
            video_batch = 1 if self.device.type == "cpu" and size > CPU_ONE_CLIP_PARAMS else batch_size
        self.video_batch = max(1, min(video_batch, batch_size))
        for m in (video_encoder, view_classifier):
            if m is not None:
                m.to(self.device).eval()
        for h in self.heads:
            h.linear.to(self.device)
            if h.encoder is not None:
                h.encoder.to(self.device).eval()

    @classmethod
    def of(cls, parts: Any, **kwargs: Any) -> Towers:
        """The towers of :class:`~echoprime.inference.InterpreterParts` (those it loaded)."""
        return cls(
            parts.spec, parts.video_encoder, parts.view_classifier, heads=parts.heads,
            normalize=parts.normalize_embeddings, **kwargs,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ shapes
    @property
    def embed_dim(self) -> int:
        return getattr(self.video, "embed_dim", None) or 512

    @property
    def task_width(self) -> int:
        """Columns the heads' logits add after the embeddings (0 without heads)."""
        return sum(h.task.outputs for h in self.heads)

    def check_clips(self, clips: torch.Tensor) -> None:
        """Raises ValueError unless ``clips`` is ``N x 3 x T x S x S`` for this spec."""
        want = (3, self.spec.frames, self.spec.size, self.spec.size)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want:
            raise ValueError(
                f"clips must be N x {' x '.join(map(str, want))} (this bundle's spec), got {tuple(clips.shape)}"
            )

    def check_uint8(
        self, clips: np.ndarray | torch.Tensor, n_valid: Sequence[int] | np.ndarray | None
    ) -> None:
        """Raises ValueError unless ``clips`` is uint8 ``N x T x S x S x 3`` with ``N`` counts."""
        want = (self.spec.frames, self.spec.size, self.spec.size, 3)
        if clips.ndim != 5 or tuple(clips.shape[1:]) != want or clips.dtype not in (np.uint8, torch.uint8):
            raise ValueError(
                f"expected uint8 clips N x {' x '.join(map(str, want))}, got {clips.dtype} {tuple(clips.shape)}"
            )
        if n_valid is not None and len(n_valid) != clips.shape[0]:
            raise ValueError(f"n_valid has {len(n_valid)} values for {clips.shape[0]} clips")

    def normalise(
        self, clips: np.ndarray | torch.Tensor, n_valid: Sequence[int] | np.ndarray | None = None
    ) -> torch.Tensor:
        """uint8 ``N x T x S x S x 3`` -> ``N x 3 x T x S x S`` float32 model input on the device
        (moved there as uint8, then normalised). ``n_valid`` None: every frame is real."""
        self.check_uint8(clips, n_valid)
        x = torch.as_tensor(_writable(clips)).to(self.device)
        nv = None if n_valid is None else [int(v) for v in n_valid]
        return normalise(x, self.spec.mean, self.spec.std, n_valid=nv)

    # ---------------------------------------------------- one normalised batch on the device
    def _autocast(self) -> Any:
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def _unit(self, e: torch.Tensor) -> torch.Tensor:
        return F.normalize(e, dim=-1) if self.normalize else e

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        b, enc = self.video_batch, self.video
        if enc is None:
            raise ValueError("these towers have no video encoder")
        with self._autocast():
            e = enc(x) if len(x) <= b else torch.cat([enc(x[i : i + b]) for i in range(0, len(x), b)])
        return self._unit(e.float())

    def _embed_tasks(self, x: torch.Tensor) -> torch.Tensor:
        emb = self._embed(x)
        if not self.heads:
            return emb
        # A head fitted on unit embeddings gets unit embeddings, also from a bundle whose
        # interpretation pools raw ones (a converted release).
        unit = emb if self.normalize else F.normalize(emb, dim=-1)
        return torch.cat([emb, *(h.logits(x, unit if h.normalize else emb) for h in self.heads)], dim=1)

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        if self.views is None:
            return torch.zeros((len(x), 0))
        with self._autocast():
            logits = self.views(x)
        return torch.softmax(logits.float(), dim=-1)

    @torch.no_grad()
    def _batched(
        self, clips: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], width: int
    ) -> torch.Tensor:
        self.check_clips(clips)
        outs = [
            fn(clips[i : i + self.batch_size].to(self.device, torch.float32)).cpu()
            for i in range(0, clips.shape[0], self.batch_size)
        ]
        return torch.cat(outs) if outs else torch.zeros((0, width))

    # ------------------------------------------------------------- float clips, in batches
    def embed(self, clips: torch.Tensor) -> torch.Tensor:
        """Model clips ``N x 3 x T x S x S`` -> embeddings ``N x D``."""
        return self._batched(clips, self._embed, self.embed_dim)

    def embed_with_tasks(self, clips: torch.Tensor) -> torch.Tensor:
        """:meth:`embed`, then the heads' logits per clip: ``N x (D + H)``."""
        return self._batched(clips, self._embed_tasks, self.embed_dim + self.task_width)

    def classify(self, clips: torch.Tensor) -> torch.Tensor:
        """Model clips -> view probabilities ``N x V`` (``N x 0`` without a view classifier)."""
        return self._batched(clips, self._classify, len(VIEWS) if self.views is not None else 0)

    @torch.no_grad()
    def embed_with_tokens(self, clips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`embed` and, from the same forward, the video tower's last tokens ``N x L x F``
        (what a frozen attentive probe pools), ``video_batch`` clips a forward.

        Raises:
            ValueError: clips of the wrong shape, none, or a tower that does not expose its tokens.
        """
        self.check_clips(clips)
        if not hasattr(self.video, "forward_with_tokens"):
            raise ValueError(
                f"the bundle's video tower ({type(self.video).__name__}) does not expose its tokens"
            )
        embs, toks = [], []
        for i in range(0, clips.shape[0], self.video_batch):
            with self._autocast():
                e, t = self.video.forward_with_tokens(
                    clips[i : i + self.video_batch].to(self.device, torch.float32)
                )
            embs.append(self._unit(e.float()).cpu())
            toks.append(t.float().cpu())
        if not embs:
            raise ValueError("no clips to embed")
        return torch.cat(embs), torch.cat(toks)

    # ------------------------------------------------------- uint8 clips, in batches
    @torch.no_grad()
    def encode_uint8(
        self,
        clips: np.ndarray | torch.Tensor,
        n_valid: Sequence[int] | np.ndarray | None = None,
        *,
        tasks: bool = True,
        views: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 clips -> (embeddings ``N x D``, then the heads' logits when ``tasks``;
        view probabilities ``N x V``, ``N x 0`` unless ``views``), normalised on the device one
        batch at a time: only ``batch_size`` clips' float32 input ever exists, and both towers
        share each batch.

        Raises:
            ValueError: clips not uint8 ``N x T x S x S x 3`` for this spec, or ``n_valid`` of
                another length.
        """
        self.check_uint8(clips, n_valid)
        embed = self._embed_tasks if tasks else self._embed
        width = self.embed_dim + (self.task_width if tasks else 0)
        views = views and self.views is not None
        n_views = len(VIEWS) if views else 0
        embs, probs = [], []
        for i in range(0, clips.shape[0], self.batch_size):
            nv = None if n_valid is None else n_valid[i : i + self.batch_size]
            x = self.normalise(clips[i : i + self.batch_size], nv)
            if self.video is not None:
                embs.append(embed(x).cpu())
            if views:
                probs.append(self._classify(x).cpu())
        return (
            torch.cat(embs) if embs else torch.zeros((0, width)),
            torch.cat(probs) if probs else torch.zeros((0, n_views)),
        )


@torch.no_grad()
def attend(
    mil: torch.nn.Module,
    embeddings: torch.Tensor | np.ndarray,
    view_ids: torch.Tensor | np.ndarray,
    device: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Anatomical attention over one study: embeddings ``N x D`` and each clip's view index
    ``N`` -> (section embeddings ``15 x D``, weights ``15 x N``).

    Raises:
        ValueError: no clips, or embeddings and view ids of different lengths.
    """
    emb = torch.as_tensor(
        _writable(np.asarray(embeddings)) if isinstance(embeddings, np.ndarray) else embeddings
    )
    views = torch.as_tensor(_writable(np.asarray(view_ids)) if isinstance(view_ids, np.ndarray) else view_ids)
    if emb.ndim != 2 or emb.shape[0] == 0 or views.shape != (emb.shape[0],):
        raise ValueError(
            f"attention takes embeddings N x D with N >= 1 and N view ids, got {tuple(emb.shape)} and {tuple(views.shape)}"
        )
    device = (
        device or next(itertools.chain(mil.parameters(), mil.buffers()), emb).device
    )  # a table has no parameters
    out = mil(emb.float().to(device), views.long().to(device))
    return out["section_embeddings"].float().cpu().numpy(), out["weights"].float().cpu().numpy()


@torch.no_grad()
def embed_reports(
    text_encoder: torch.nn.Module,
    tokenizer: Any,
    reports: Sequence[str],
    *,
    device: Any = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Report texts -> ``B x D`` unit-norm embeddings in the joint space, ``batch_size`` a forward."""
    device = device or next(text_encoder.parameters()).device
    out = []
    for i in range(0, len(reports), batch_size):
        enc = {k: v.to(device) for k, v in tokenizer(list(reports[i : i + batch_size])).items()}
        e = text_encoder(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        out.append(F.normalize(e.float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, getattr(text_encoder, "embed_dim", 512)), np.float32)
