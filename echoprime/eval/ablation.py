"""The ablation of the paper's Fig 2A: how much each part of the study-level model adds.

The same phenotype tasks (kNN through the bank and a linear probe on the phenotype's section
embedding) from section embeddings built six ways:

1. ``one_frame``: one randomly drawn video of the study, encoded from a clip whose frames are all
   its first frame (the encoder sees no motion); every section reads that one embedding.
2. ``one_video``: the same drawn video, the full clip.
3. ``mean``: every video of the study, averaged (uniform weights).
4. ``table``: every video, weighted by the bundle's section x view table (``mil_table.csv``).
5. ``attention``: every video, through the learned content-conditioned attention module
   (:class:`~echoprime.models.mil.SectionAttentionMIL`).
6. ``oracle`` (synthetic cohorts only): the generator's visibility table as the section x view
   table: the weighting a perfect table would learn.

Variants 1 and 2 depend on the drawn video, so they are averaged over ``draws`` draws (each a
fresh video per study, the same for train and test of that draw). The expected ordering on
findings seen in few views is 1 < 2 < 3 < 4/5: one video often misses the finding's views, an
average dilutes them, a section x view weighting picks them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from echoprime.eval.probes import NotComputable
from echoprime.eval.studies import StudySet
from echoprime.eval.tasks import MIN_PER_CLASS, knn_bank_scores, probe_scores
from echoprime.synth.state import PHENOTYPE_FIELD, VISIBILITY
from echoprime.taxonomy import MIL_SECTIONS, PHENOTYPES

VARIANTS: dict[str, str] = {
    "one_frame": "one frame of one video",
    "one_video": "one video",
    "mean": "all videos averaged",
    "table": "all videos, learned section x view table",
    "attention": "all videos, learned attention module",
    "oracle": "all videos, generator's visibility table (oracle)",
}


VIEW_LIMITED_MAX_VIEWS = 2
"""A finding drawn in at most this many of the 11 views counts as view-limited."""


def view_limited_phenotypes(max_views: int = VIEW_LIMITED_MAX_VIEWS) -> tuple[str, ...]:
    """Binary phenotypes whose finding the generator draws in at most ``max_views`` views."""
    return tuple(
        p.name
        for p in PHENOTYPES
        if p.kind == "binary" and len(VISIBILITY[PHENOTYPE_FIELD[p.name]]) <= max_views
    )


def single_video_sections(emb: torch.Tensor, mask: torch.Tensor, pick: np.ndarray) -> np.ndarray:
    """Every section of study ``b`` reads its video ``pick[b]``: ``B x N x D -> B x 15 x D``.

    Raises:
        ValueError: a pick on padding.
    """
    b = np.arange(emb.shape[0])
    if not bool(mask[b, pick].all()):
        raise ValueError("a drawn video index points at padding")
    one = emb[b, pick].numpy()  # B x D
    return np.repeat(one[:, None, :], len(MIL_SECTIONS), axis=1)  # B x D -> B x 15 x D


def draw_videos(mask: torch.Tensor, rng: np.random.Generator) -> np.ndarray:
    """One valid video index per study, uniformly."""
    counts = mask.sum(dim=1).numpy()
    return (rng.random(len(counts)) * counts).astype(np.int64)  # valid slots come first


@torch.no_grad()
def mil_sections(
    module: torch.nn.Module, padded: tuple[torch.Tensor, torch.Tensor, torch.Tensor]
) -> np.ndarray:
    """``B x 15 x D`` section embeddings of a padded split through an attention module or table."""
    emb, views, mask = padded
    return module(emb, views, mask)["section_embeddings"].float().numpy()


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    keep = ~np.isnan(y) & ~np.isnan(s)
    y, s = y[keep], s[keep]
    if (y == 1).sum() < MIN_PER_CLASS or (y == 0).sum() < MIN_PER_CLASS:
        return None
    return float(roc_auc_score(y, s))


def _mae(y: np.ndarray, s: np.ndarray) -> float | None:
    keep = ~np.isnan(y) & ~np.isnan(s)
    return float(np.abs(y[keep] - s[keep]).mean()) if keep.any() else None


def score_sections(
    train_secs: np.ndarray, test_secs: np.ndarray, train: StudySet, test: StudySet, bank: Any, k: int
) -> dict[str, dict[str, float | None]]:
    """Point AUC (binaries) or MAE (regressions) of kNN and of the linear probe for each phenotype."""
    knn = knn_bank_scores(test_secs, bank, k)
    out: dict[str, dict[str, float | None]] = {}
    for ph in PHENOTYPES:
        row = MIL_SECTIONS.index(ph.section)
        y = test.label(ph.name)
        metric = _auc if ph.kind == "binary" else _mae
        res: dict[str, float | None] = {"knn": metric(y, knn[ph.name]) if ph.name in knn else None}
        try:
            (s,) = probe_scores(
                "linear", ph.kind, train_secs[:, row], train.label(ph.name), [test_secs[:, row]]
            )
            res["linear"] = metric(y, s)
        except NotComputable:
            res["linear"] = None
        out[ph.name] = res
    return out


def _mean_of(runs: Sequence[dict[str, dict[str, float | None]]]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name in runs[0]:
        out[name] = {}
        for m in runs[0][name]:
            vals = [r[name][m] for r in runs if r[name][m] is not None]
            out[name][m] = float(np.mean(vals)) if vals else None
    return out


def run_ablation(
    sets: Mapping[str, StudySet],
    bank: Any,
    *,
    k: int,
    modules: Mapping[str, torch.nn.Module | None],
    rng: np.random.Generator,
    draws: int = 5,
) -> dict[str, Any]:
    """Every variant's per-phenotype scores and their summary.

    Args:
        sets: ``{"train", "test"}`` study sets (the test split needs first-frame embeddings).
        bank: the candidate bank.
        k: neighbours.
        modules: ``{"table", "attention", "oracle"}`` attention modules; a None or missing one
            is reported as not present.
        rng: draws the single videos.
        draws: draws averaged for the single-video variants.

    Returns:
        ``{"variants": {name: {"description", "present", "phenotypes", "summary"}},
        "view_limited": [...], "draws": draws, "test_studies": n}``.
    """
    tr, te = sets["train"], sets["test"]
    pad = {"train": tr.padded(), "test": te.padded()}
    pad_static = {"train": tr.padded(static=True), "test": te.padded(static=True)}
    variants: dict[str, Any] = {}
    runs: dict[str, list] = {"one_frame": [], "one_video": []}
    for _ in range(max(1, draws)):
        pick = {s: draw_videos(pad[s][2], rng) for s in ("train", "test")}
        for name, src in (("one_frame", pad_static), ("one_video", pad)):
            secs = {s: single_video_sections(src[s][0], src[s][2], pick[s]) for s in ("train", "test")}
            runs[name].append(score_sections(secs["train"], secs["test"], tr, te, bank, k))
    for name in ("one_frame", "one_video"):
        variants[name] = {"present": True, "phenotypes": _mean_of(runs[name])}
    from echoprime.training.mil_fit import UniformMIL

    all_modules: dict[str, torch.nn.Module | None] = {"mean": UniformMIL(), **modules}
    for name in ("mean", "table", "attention", "oracle"):
        module = all_modules.get(name)
        if module is None:
            variants[name] = {"present": False}
            continue
        secs = {s: mil_sections(module, pad[s]) for s in ("train", "test")}
        variants[name] = {
            "present": True,
            "phenotypes": score_sections(secs["train"], secs["test"], tr, te, bank, k),
        }
    limited = view_limited_phenotypes()
    for name, v in variants.items():
        v["description"] = VARIANTS[name]
        if v["present"]:
            v["summary"] = summarise_variant(v["phenotypes"], limited)
    return {"variants": variants, "view_limited": list(limited), "draws": draws, "test_studies": len(te)}


def summarise_variant(
    phenos: Mapping[str, Mapping[str, float | None]], limited: Sequence[str]
) -> dict[str, Any]:
    """Mean AUC over binaries (all, and view-limited) and the regressions' MAE, per method.

    A mean is over the binaries scored by both methods in this variant.
    """
    out: dict[str, Any] = {}
    binaries = [p.name for p in PHENOTYPES if p.kind == "binary"]
    for subset, names in (("all", binaries), ("view_limited", [p for p in binaries if p in limited])):
        scored = [p for p in names if all(phenos[p][m] is not None for m in ("knn", "linear"))]
        for m in ("knn", "linear"):
            out[f"mean_auc_{m}_{subset}"] = float(np.mean([phenos[p][m] for p in scored])) if scored else None
        out[f"n_{subset}"] = len(scored)
    for p in PHENOTYPES:
        if p.kind == "regression":
            for m in ("knn", "linear"):
                out[f"{p.name}_mae_{m}"] = phenos[p.name][m]
    return out
