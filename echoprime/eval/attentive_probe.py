"""The frozen *attentive* probe: a learned query cross-attends over a frozen video tower's last
tokens, then one linear layer; the protocol the published EchoPrime / PanEcho / EchoJEPA
comparisons on EchoNet-Dynamic use (``echoprime probe``, docs/probe.md).

Where the linear probe of echoprime.eval.dataset_probe sees one pooled embedding per study, this
probe sees every token of every clip (``forward_tokens`` of the tower: MViT's class token and one
per patch of its last grid; the small Conv3d tower's last feature map, one token per cell) and
learns *where* to look. The tower stays frozen: its tokens are computed once and stored
(``ClipTokens``: rows of one float16 array, memory-mapped when it is large).

Training, per target (:func:`fit_and_score`): every clip of a labelled train study is a sample
with its study's label (standardised for measurements; balanced BCE for binaries); AdamW from
:data:`LR` with a cosine decay, batches of :data:`BATCH`, :data:`EPOCHS` epochs and at least
:data:`MIN_STEPS` steps. After each epoch the val studies are
scored with test-time multi-clip averaging (a study's prediction is the mean of its clips'), and
the best epoch's weights are kept; the weight decay is chosen on val from :data:`WEIGHT_DECAYS`.
The test split is scored once, by the chosen model, the same way.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

EPOCHS = 20
"""Epochs per fit (the best one on val is kept), at least :data:`MIN_STEPS` steps' worth."""
MIN_STEPS = 600
"""Optimiser steps a fit takes at least: a small dataset gets more epochs, not fewer steps."""
LR = 2e-3
"""AdamW's peak learning rate (cosine decay to 0 over the fit)."""
BATCH = 64
"""Clips per step."""
WEIGHT_DECAYS: tuple[float, ...] = (0.01, 0.1)
"""AdamW weight decays tried (one fit each; the best on val is kept)."""


class AttentivePooler(nn.Module):
    """``B x L x F`` tokens -> ``B x outputs``: layer norm, one learned query attending over the
    tokens (multi-head), layer norm, linear.

    Args:
        dim: token width ``F``.
        outputs: output width (1 for a measurement or a binary).
    """

    def __init__(self, dim: int, outputs: int = 1) -> None:
        super().__init__()
        heads = next(h for h in (8, 4, 2, 1) if dim % h == 0)
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, outputs)

    def attention(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pooled B x F, weights B x L)``: the query's attention over the tokens, heads averaged."""
        t = self.norm(tokens)
        pooled, w = self.attn(self.query.expand(len(t), -1, -1), t, t, need_weights=True)
        return pooled[:, 0], w[:, 0]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.out_norm(self.attention(tokens)[0]))


class TokenStore:
    """Clips' tokens written as they arrive into one float16 array memory-mapped at
    ``folder/tokens.npy`` (``rows`` clips; the shape of a clip's tokens is the first batch's).
    A release-size tower's tokens are ~0.6 MB a clip: they go to disk, not to a list in memory."""

    def __init__(self, folder: str | Path, rows: int) -> None:
        self.path, self.rows, self.n = Path(folder) / "tokens.npy", rows, 0
        self.array: np.ndarray | None = None

    def append(self, tokens: np.ndarray) -> None:
        """Add ``len(tokens)`` clips' tokens after the ones written so far.

        Raises:
            ValueError: more clips than ``rows``, or tokens of another shape than the first batch's.
        """
        if self.array is None:
            self.array = np.lib.format.open_memmap(
                self.path, "w+", np.float16, (self.rows, *tokens.shape[1:])
            )
        if self.n + len(tokens) > self.rows or tokens.shape[1:] != self.array.shape[1:]:
            raise ValueError(
                f"tokens {tokens.shape} after {self.n} of {self.rows} clips of {self.array.shape[1:]} each"
            )
        self.array[self.n : self.n + len(tokens)] = tokens
        self.n += len(tokens)

    def splits(
        self, split: np.ndarray, study_ids: np.ndarray, ids: dict[str, list[str]]
    ) -> dict[str, ClipTokens]:
        """``{split: ClipTokens}`` for the clips written, given each clip's split and study and
        each split's studies in their order (a Studies' ``ids``)."""
        if self.array is None:
            raise ValueError("no tokens were written")
        out = {}
        for s, ordered in ids.items():
            rows = np.flatnonzero(split[: self.n] == s)
            out[s] = ClipTokens(self.array, rows, study_index(study_ids[rows], ordered))
        return out


@dataclass
class ClipTokens:
    """One split's clips: ``store[rows[i]]`` is clip ``i``'s tokens ``L x F`` (``store`` may be a
    memory map shared by every split); ``study[i]`` its study's index in the split's studies."""

    store: np.ndarray
    rows: np.ndarray
    study: np.ndarray

    def batch(self, idx: np.ndarray) -> torch.Tensor:
        """Clips ``idx`` as float32 ``len(idx) x L x F`` (read in row order, returned in ``idx``'s)."""
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")
        got = np.empty((len(idx), *self.store.shape[1:]), np.float32)
        got[order] = self.store[rows[order]]
        return torch.from_numpy(got)


def study_index(study_ids: list[str] | np.ndarray, ordered: list[str]) -> np.ndarray:
    """Each clip's study as an index into ``ordered`` (a Studies' ``ids``).

    Raises:
        ValueError: a clip whose study is not in ``ordered``.
    """
    where = {s: i for i, s in enumerate(ordered)}
    try:
        return np.array([where[str(s)] for s in study_ids], dtype=np.int64)
    except KeyError as err:
        raise ValueError(f"clip of study {err.args[0]!r}, which the split's studies do not hold") from None


def _predict(model: AttentivePooler, clips: ClipTokens, n_studies: int, out: Callable) -> np.ndarray:
    """Per study: the mean of its clips' predictions (``out`` maps logits to the scale); NaN for a
    study without clips."""
    model.eval()
    total, count = np.zeros(n_studies), np.zeros(n_studies)
    with torch.no_grad():
        for i in range(0, len(clips.rows), 256):
            idx = np.arange(i, min(i + 256, len(clips.rows)))
            p = out(model(clips.batch(idx))[:, 0]).numpy().astype(np.float64)
            np.add.at(total, clips.study[idx], p)
            np.add.at(count, clips.study[idx], 1)
    with np.errstate(invalid="ignore"):
        return total / count


def fit_and_score(
    kind: str,
    train: tuple[ClipTokens, np.ndarray],
    val: tuple[ClipTokens, np.ndarray],
    test: tuple[ClipTokens, np.ndarray],
    *,
    val_score: Callable[[str, np.ndarray, np.ndarray], float],
    seed: int = 0,
    epochs: int = EPOCHS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the attentive probe of one target on train, choose epoch and weight decay on val,
    predict test (module docstring).

    Args:
        kind: ``"regression"`` or ``"binary"``.
        train, val, test: each split's clips and its studies' labels (NaN: unlabelled, its clips unused).
        val_score: ``(kind, labels, predictions) -> score``, higher better (NaN: none), the
            other probes' own criterion (echoprime.eval.dataset_probe).

    Returns:
        ``(test predictions per study, {"weight_decay", "epoch" (the best), "epochs" (run),
        "val_score"})``; a binary's
        predictions are probabilities.

    Raises:
        ValueError: no labelled train clip.
    """
    (tr, ytr), (va, yva), (te, yte) = train, val, test
    keep = ~np.isnan(ytr[tr.study])
    if not keep.any():
        raise ValueError("no train clip has a label")
    ids = np.flatnonzero(keep)
    y_clip = ytr[tr.study]
    if kind == "regression":
        mu, sd = float(np.nanmean(ytr)), float(np.nanstd(ytr)) or 1.0
        target = torch.from_numpy((y_clip - mu) / sd).float()

        def out(z: torch.Tensor) -> torch.Tensor:
            return z * sd + mu

        def loss_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.smooth_l1_loss(z, t)
    else:
        pos = float(np.nansum(y_clip[ids]))
        weight = torch.tensor((len(ids) - pos) / max(pos, 1.0))
        target = torch.from_numpy(y_clip).float()
        out = torch.sigmoid

        def loss_fn(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return F.binary_cross_entropy_with_logits(z, t, pos_weight=weight)

    dim = tr.store.shape[-1]
    vmask = ~np.isnan(yva)
    best: tuple[float, AttentivePooler | None, dict[str, Any]] = (-math.inf, None, {})
    for wd in WEIGHT_DECAYS:
        torch.manual_seed(seed)
        rng = np.random.default_rng(seed)
        model = AttentivePooler(dim)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=wd)
        per_epoch = math.ceil(len(ids) / BATCH)
        n_epochs = max(epochs, math.ceil(MIN_STEPS / per_epoch))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n_epochs * per_epoch)
        for epoch in range(1, n_epochs + 1):
            model.train()
            perm = rng.permutation(ids)
            for i in range(0, len(perm), BATCH):
                idx = perm[i : i + BATCH]
                loss = loss_fn(model(tr.batch(idx))[:, 0], target[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            p = _predict(model, va, len(yva), out)
            score = val_score(kind, yva[vmask], p[vmask]) if vmask.any() else math.nan
            # No val score (one class on val): the first epoch is kept unless a scored one beats it.
            if best[1] is None or score > best[0]:
                best = (
                    score if not math.isnan(score) else -math.inf,
                    copy.deepcopy(model),
                    {"weight_decay": wd, "epoch": epoch, "epochs": n_epochs, "val_score": score},
                )
    assert best[1] is not None
    return _predict(best[1], te, len(yte), out), best[2]
