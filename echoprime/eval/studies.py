"""Embedded clips grouped into studies: the input every evaluation task reads.

An evaluation embeds each clip of a split once (video embedding, the embedding of a clip made
of its first frame only, view probabilities) and then works per study. :class:`StudySet`
holds one split in that form, with the study-level labels (the 21 phenotypes, and the hidden
diagnoses where the shards carry them) as ``B x P`` matrices, NaN for "no label".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from echoprime.inference.towers import Towers
from echoprime.taxonomy import HIDDEN_DIAGNOSES, PHENOTYPE_NAMES, VIEW_INDEX


def _label_matrix(cells: Sequence[Any], names: Sequence[str]) -> np.ndarray:
    """JSON label cells (one per study) -> ``B x P`` float64, NaN where a study has no value."""
    out = np.full((len(cells), len(names)), np.nan)
    col = {n: j for j, n in enumerate(names)}
    for i, cell in enumerate(cells):
        d = json.loads(cell) if isinstance(cell, (str, bytes)) and cell else (cell or {})
        for k, v in d.items():
            if k in col and v is not None:
                out[i, col[k]] = float(v)
    return out


@dataclass
class StudySet:
    """One split's clips, embedded, grouped by study (studies in first-appearance order).

    Attributes:
        study_ids: ``B`` study ids.
        clip_study: ``N`` index of each clip's study in ``study_ids``.
        emb: ``N x D`` unit-norm clip embeddings.
        emb_static: ``N x D`` embeddings of each clip's first frame repeated (no motion), or None.
        view_probs: ``N x V`` view-classifier probabilities.
        true_views: ``N`` view index from the shards' ``view`` column, -1 where unknown.
        labels: ``B x P`` phenotype labels (columns :data:`taxonomy.PHENOTYPE_NAMES`), NaN = none.
        hidden: ``B x H`` hidden-diagnosis labels (columns :attr:`hidden_names`), or None when
            the shards carry none (a real archive).
        hidden_names: names of the hidden columns.
        reports: ``B`` report texts.
    """

    study_ids: list[str]
    clip_study: np.ndarray
    emb: np.ndarray
    emb_static: np.ndarray | None
    view_probs: np.ndarray
    true_views: np.ndarray
    labels: np.ndarray
    hidden: np.ndarray | None
    hidden_names: tuple[str, ...]
    reports: list[str]

    @classmethod
    def from_columns(cls, cols: Mapping[str, Any]) -> StudySet:
        """Group per-clip columns (``study_id``, ``emb``, ``view_probs``, ``labels``, ``report``;
        optional ``emb_static``, ``view``, ``hidden_labels``) into studies.

        Raises:
            ValueError: no clips, columns of different lengths, or a missing column (named).
        """
        need = ("study_id", "emb", "view_probs", "labels", "report")
        missing = [c for c in need if c not in cols]
        if missing:
            raise ValueError(f"embedded columns lack {missing}; expected at least {list(need)}")
        n = len(cols["study_id"])
        if n == 0:
            raise ValueError("no embedded clips: the split is empty")
        for k, v in cols.items():
            if v is not None and len(v) != n:
                raise ValueError(f"column {k!r} has {len(v)} rows, study_id has {n}")
        index: dict[str, int] = {}
        clip_study = np.empty(n, np.int64)
        first_row: list[int] = []
        for i, s in enumerate(cols["study_id"]):
            s = str(s)
            if s not in index:
                index[s] = len(index)
                first_row.append(i)
            clip_study[i] = index[s]
        views = cols.get("view")
        true_views = np.array(
            [VIEW_INDEX.get(str(v), -1) if v is not None else -1 for v in views]
            if views is not None
            else [-1] * n,
            dtype=np.int64,
        )
        hidden_cells = cols.get("hidden_labels")
        has_hidden = hidden_cells is not None and any(
            c not in (None, "", "{}") for c in (hidden_cells[i] for i in first_row)
        )
        return cls(
            study_ids=list(index),
            clip_study=clip_study,
            emb=np.asarray(cols["emb"], np.float32),
            emb_static=None if cols.get("emb_static") is None else np.asarray(cols["emb_static"], np.float32),
            view_probs=np.asarray(cols["view_probs"], np.float32),
            true_views=true_views,
            labels=_label_matrix([cols["labels"][i] for i in first_row], PHENOTYPE_NAMES),
            hidden=_label_matrix([hidden_cells[i] for i in first_row], HIDDEN_DIAGNOSES)
            if has_hidden
            else None,
            hidden_names=tuple(HIDDEN_DIAGNOSES) if has_hidden else (),
            reports=[str(cols["report"][i]) for i in first_row],
        )

    def __len__(self) -> int:
        return len(self.study_ids)

    @property
    def pred_views(self) -> np.ndarray:
        """``N`` predicted view index of each clip (argmax of the view probabilities)."""
        return self.view_probs.argmax(axis=1)

    def label(self, name: str) -> np.ndarray:
        """``B`` labels of a phenotype or hidden diagnosis (NaN = none).

        Raises:
            KeyError: an unknown name.
        """
        if name in PHENOTYPE_NAMES:
            return self.labels[:, PHENOTYPE_NAMES.index(name)]
        if name in self.hidden_names:
            return self.hidden[:, self.hidden_names.index(name)]  # type: ignore[index]
        raise KeyError(f"no labels named {name!r}; have {list(PHENOTYPE_NAMES) + list(self.hidden_names)}")

    def padded(self, static: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Studies as a padded batch: ``emb B x N x D``, predicted ``views B x N``, ``mask B x N``.

        Args:
            static: use the first-frame embeddings instead of the clips'.

        Raises:
            ValueError: ``static`` without first-frame embeddings.
        """
        src = self.emb_static if static else self.emb
        if src is None:
            raise ValueError("this split was embedded without first-frame (static) clips")
        counts = np.bincount(self.clip_study, minlength=len(self))
        b, n, d = len(self), int(counts.max()), src.shape[1]
        emb = torch.zeros(b, n, d)
        views = torch.zeros(b, n, dtype=torch.long)
        mask = torch.zeros(b, n, dtype=torch.bool)
        slot = np.zeros(len(self), np.int64)
        pred = self.pred_views
        for i, s in enumerate(self.clip_study):
            j = slot[s]
            emb[s, j] = torch.from_numpy(src[i])
            views[s, j] = int(pred[i])
            mask[s, j] = True
            slot[s] += 1
        return emb, views, mask

    def study_mean(self, static: bool = False) -> np.ndarray:
        """``B x D`` unit-norm mean of each study's clip embeddings (the plain study embedding)."""
        src = self.emb_static if static else self.emb
        if src is None:
            raise ValueError("this split was embedded without first-frame (static) clips")
        total = np.zeros((len(self), src.shape[1]), np.float64)
        np.add.at(total, self.clip_study, src)
        norm = np.linalg.norm(total, axis=1, keepdims=True)
        return (total / np.where(norm == 0, 1.0, norm)).astype(np.float32)


def first_frame_clips(clips: np.ndarray) -> np.ndarray:
    """Clips whose every frame is their first: ``B x T x H x W x 3 -> B x T x H x W x 3`` (no motion)."""
    if clips.ndim != 5:
        raise ValueError(f"clips must be B x T x H x W x 3, got shape {clips.shape}")
    return np.repeat(clips[:, :1], clips.shape[1], axis=1)  # B x 1 x H x W x 3 -> B x T x H x W x 3


@torch.no_grad()
def embed_clip_batch(
    towers: Towers, clips: np.ndarray, n_valid: Sequence[int] | None = None, *, static: bool = True
) -> dict[str, np.ndarray]:
    """Shard clips -> what evaluation needs of them, through the interpreter's own towers.

    Args:
        towers: the bundle's towers (:class:`echoprime.inference.Towers`; no view classifier:
            zero-width view probabilities).
        clips: ``B x T x S x S x 3`` uint8 shard clips.
        n_valid: real frames per clip (the rest is padding, zeroed after normalising); None: all.
        static: also embed each clip's first frame repeated.

    Returns:
        ``emb`` ``B x D`` (unit norm), ``emb_static`` ``B x D`` (when ``static``), ``view_probs`` ``B x V``.
    """
    emb, probs = towers.encode_uint8(clips, n_valid, tasks=False)
    out = {"emb": emb.numpy(), "view_probs": probs.numpy()}
    if static:
        static_clips = first_frame_clips(np.asarray(clips))
        out["emb_static"] = towers.encode_uint8(static_clips, n_valid, tasks=False, views=False)[0].numpy()
    return out
