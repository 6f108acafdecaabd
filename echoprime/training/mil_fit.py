"""Fitting the anatomical attention: each section's pooled study embedding should retrieve that
section's own text (per-section matching: a study-level target lets one section's strong signal
stand in for the others; docs/learning.md).

Inputs are frozen: per study, its videos' embeddings (``N x D``) and view indices, and the text
embedding of each of its report's 15 MIL sections (``15 x D``, with a presence mask: a study
whose report lacks a section does not train that section's attention).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from echoprime.taxonomy import MIL_SECTIONS, VIEWS


@dataclass
class StudyBag:
    """One study for MIL: video embeddings, their views, and its section text embeddings."""

    study_id: str
    video: np.ndarray  # N x D
    views: np.ndarray  # N
    sections: np.ndarray  # 15 x D (zeros where absent)
    present: np.ndarray  # 15 bool


def pad_bags(
    bags: Sequence[StudyBag],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack studies into ``emb B x N x D``, ``views B x N``, ``mask B x N``, ``text B x 15 x D``, ``present B x 15``."""
    n = max(b.video.shape[0] for b in bags)
    d = bags[0].video.shape[1]
    emb = torch.zeros(len(bags), n, d)
    views = torch.zeros(len(bags), n, dtype=torch.long)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        k = b.video.shape[0]
        emb[i, :k] = torch.from_numpy(b.video)
        views[i, :k] = torch.from_numpy(b.views)
        mask[i, :k] = True
    text = torch.from_numpy(np.stack([b.sections for b in bags])).float()
    present = torch.from_numpy(np.stack([b.present for b in bags]))
    return emb, views, mask, text, present


def section_contrastive_loss(
    sec: torch.Tensor, text: torch.Tensor, present: torch.Tensor, scale: float | torch.Tensor = 10.0
) -> torch.Tensor:
    """Per section, InfoNCE between the B pooled study embeddings and the B section texts.

    Args:
        sec: ``B x S x D`` pooled section embeddings (unit norm).
        text: ``B x S x D`` section text embeddings (unit norm; zeros where absent).
        present: ``B x S`` which studies' reports have the section.
        scale: logit scale (``fit_mil`` learns it with the attention; the towers are frozen).
    """
    losses = []
    for s in range(sec.shape[1]):
        m = present[:, s]
        if int(m.sum()) < 2:
            continue
        t = text[m, s]
        logits = scale * sec[m, s] @ t.T  # b x b
        # Many studies share a section's exact text (normal findings read alike): every study
        # with the same text is a positive, with the probability mass shared among them.
        same = (t @ t.T > 1 - 1e-5).float()
        target = same / same.sum(dim=1, keepdim=True)
        losses.append(0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)))
    if not losses:
        return sec.sum() * 0.0
    return torch.stack(losses).mean()


def fit_mil(
    module: torch.nn.Module,
    train: Sequence[StudyBag],
    *,
    epochs: int = 30,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
) -> list[float]:
    """Train a :class:`~echoprime.models.mil.SectionAttentionMIL` on frozen embeddings; returns the epoch losses."""
    if len(train) < 2:
        raise ValueError(f"fitting the attention needs at least 2 training studies, got {len(train)}")
    g = torch.Generator().manual_seed(seed)
    # The similarity scale is learned too: frozen towers give similarities whose spread depends
    # on the data, and a fixed scale either drowns the signal or punishes every near miss.
    log_scale = torch.nn.Parameter(torch.tensor(2.0))
    opt = torch.optim.Adam([*module.parameters(), log_scale], lr=lr)
    history = []
    # Padded once: a batch is rows of these (trailing all-padding columns are masked out).
    all_emb, all_views, all_mask, all_text, all_present = pad_bags(train)
    module.train()
    for _ in range(epochs):
        perm = torch.randperm(len(train), generator=g)
        total, steps = 0.0, 0
        for i in range(0, len(perm), batch_size):
            idx = perm[i : i + batch_size]
            if len(idx) < 2:
                continue
            n = int(all_mask[idx].sum(1).max())
            emb, views, mask = all_emb[idx, :n], all_views[idx, :n], all_mask[idx, :n]
            text, present = all_text[idx], all_present[idx]
            out = module(emb, views, mask)
            loss = section_contrastive_loss(
                out["section_embeddings"], text, present, log_scale.exp().clamp(max=100)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        history.append(total / max(steps, 1))
    module.eval()
    return history


@torch.no_grad()
def section_retrieval(
    module: torch.nn.Module, bags: Sequence[StudyBag], ks: Sequence[int] = (1, 5)
) -> dict[str, float]:
    """Mean over sections of section-embedding -> own-section-text recall@k among the given studies.

    A study's own text is a hit at k when it (or an identical text of another study) ranks within
    the top k of the distinct other texts.
    """
    emb, views, mask, text, present = pad_bags(bags)
    sec = module(emb, views, mask)["section_embeddings"]
    out = {f"r@{k}": [] for k in ks}
    for s in range(len(MIL_SECTIONS)):
        m = present[:, s]
        if int(m.sum()) < 2:
            continue
        t = text[m, s]
        sim = sec[m, s] @ t.T  # b x b
        same = t @ t.T > 1 - 1e-5  # studies whose section reads exactly the same count as hits
        best_pos = sim.masked_fill(~same, float("-inf")).max(dim=1).values
        # Ties count against the query: a study with no video for the section pools to the zero
        # vector, ties with every text, and must not score a hit for it.
        rank = (sim.masked_fill(same, float("-inf")) >= best_pos[:, None]).sum(1)
        for k in ks:
            out[f"r@{k}"].append(float((rank < k).float().mean()))
    res = {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}
    res["studies"] = len(bags)
    return res


class UniformMIL(torch.nn.Module):
    """Every video weighs the same for every section (the "all videos averaged" baseline)."""

    def forward(
        self, embeddings: torch.Tensor, view_ids: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict:
        from echoprime.models.mil import TableMIL

        return TableMIL(torch.ones(len(MIL_SECTIONS), len(VIEWS)))(embeddings, view_ids, mask)


def table_alignment(learned: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """How a learned ``15 x 11`` table lines up with the generator's visibility table.

    Returns the mean per-section Pearson correlation and the mean per-section AUC of the learned
    weights at telling visible views from invisible ones (sections with both kinds only).
    """
    from sklearn.metrics import roc_auc_score

    cors, aucs = [], []
    for s in range(truth.shape[0]):
        t, w = truth[s], learned[s]
        if 0 < t.sum() < len(t):
            aucs.append(roc_auc_score(t, w))
            if np.std(w) > 0:
                cors.append(float(np.corrcoef(t, w)[0, 1]))
    return {
        "mean_correlation": float(np.mean(cors)) if cors else float("nan"),
        "mean_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "sections": len(aucs),
    }
