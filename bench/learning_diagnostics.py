"""Diagnostic objectives of the learning benchmark: they answer *why* CLIP does (not) learn.

* ``supervised``: the video tower learns the labels directly (each clip the findings its view
  shows): the upper bound of what the tower sees in the same number of steps.
* ``clip_labels``: CLIP against a text tower that reads the study's labels, not its words: the
  contrastive objective with a report space organised by the findings and nothing else.
* ``clip_aux``: CLIP plus linear heads reading the report-derived labels off the joint-space
  embeddings: the production objective (``model.label_heads``, ``train.label_weight_*``;
  ``echoprime.losses.ClipLabelLoss``), named here by ``--aux video=W,text=W,shared=0|1``.
* ``clip_study``: CLIP between studies (clip embeddings of a study averaged, as at evaluation).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch
from learning_lib import PHENOTYPE_FIELD, _auc, batches, epoch_order

from echoprime.losses import ClipLoss, pool_by_study
from echoprime.synth.state import VISIBILITY
from echoprime.taxonomy import PHENOTYPES
from echoprime.training.batch import Augmentation, prepare_batch
from echoprime.training.schedule import cosine_scheduler


def visible_mask(data: dict[str, Any]) -> torch.Tensor:
    """``N x 21`` bool: the clip's view shows the phenotype's finding (and the study has a label)."""
    rows = []
    for s, v in zip(data["study"], data["view"], strict=True):
        lab = data["labels"][s]
        rows.append(
            [v in VISIBILITY[PHENOTYPE_FIELD[p.name]] and lab[p.name] is not None for p in PHENOTYPES]
        )
    return torch.tensor(rows)


def label_matrix(data: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(
        [[float(data["labels"][s][p.name] or 0.0) for p in PHENOTYPES] for s in data["study"]],
        dtype=torch.float32,
    )


def supervised_run(
    video: torch.nn.Module, d: dict[str, Any], tc: Any, aug: Augmentation, args: argparse.Namespace
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], int, float]:
    """Train the video tower on the labels directly (each clip on the findings its view shows).

    The upper bound of what the tower can see in the same number of steps: if this fails, the
    signal (renderer, resolution) or the encoder is the limit, not the contrastive objective.
    Study prediction: the mean over its clips that show the finding, the prior where none does.
    """
    tr, ev, spec, dev = d["tr"], d["ev"], d["spec"], args.device
    reg = torch.tensor([p.kind == "regression" for p in PHENOTYPES])
    y_tr, m_tr = label_matrix(tr), visible_mask(tr)
    mu = (y_tr * m_tr).sum(0) / m_tr.sum(0).clamp(min=1)
    var = ((y_tr - mu) ** 2 * m_tr).sum(0) / m_tr.sum(0).clamp(min=1)
    sd = torch.where(reg, var.sqrt(), torch.ones(len(reg)))
    mu = torch.where(reg, mu, torch.zeros(len(reg)))
    head = torch.nn.Linear(video.embed_dim, len(PHENOTYPES))
    model = torch.nn.ModuleDict({"video": video, "head": head}).to(dev)
    bs, n = tc.batch_size, len(tr["study"])
    total = (n // bs) * tc.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = cosine_scheduler(opt, tc.lr, min(tc.warmup_steps, total // 4), total, tc.min_lr)
    g = torch.Generator().manual_seed(args.seed)
    regd, mud, sdd = reg.to(dev), mu.to(dev), sd.to(dev)
    t_train, steps, history = 0.0, 0, []
    for epoch in range(tc.epochs):
        model.train()
        t0, tot = time.perf_counter(), 0.0
        order = epoch_order(tr["study"], args.sampler, g)
        for b_i, b in enumerate(batches(d["TR"], order, bs, spec, aug, g, dev)):
            idx = order[b_i * bs : (b_i + 1) * bs]
            out = head(video(b["clip"]))
            y, m = (y_tr[idx].to(dev) - mud) / sdd, m_tr[idx].float().to(dev)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(out, y.clamp(0, 1), reduction="none")
            loss = (torch.where(regd, (out - y) ** 2, bce) * m).sum() / m.sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip or 1e9)
            opt.step()
            sched.step()
            tot += float(loss)
            steps += 1
        t_train += time.perf_counter() - t0
        history.append({"epoch": epoch + 1, "loss": tot / max(1, n // bs), "train_s": t_train})
        if args.verbose:
            print(
                f"epoch {epoch + 1:3d} supervised loss {history[-1]['loss']:.3f} train {t_train:.0f}s",
                flush=True,
            )
        if args.time_budget_s and t_train >= args.time_budget_s:
            break
    model.eval()
    with torch.no_grad():
        pred = torch.cat(
            [
                head(
                    video(prepare_batch({k: v[i : i + 256] for k, v in d["EV"].items()}, spec, dev)["video"])
                ).cpu()
                for i in range(0, len(ev["study"]), 256)
            ]
        )
    pred = torch.where(reg, pred * sd + mu, torch.sigmoid(pred))
    m_ev = visible_mask(ev)
    ids = sorted(set(ev["study"]))
    rows_of: dict[str, list[int]] = {}
    for i, x in enumerate(ev["study"]):
        rows_of.setdefault(x, []).append(i)
    out: dict[str, dict[str, Any]] = {}
    for j, ph in enumerate(PHENOTYPES):
        truth = np.array([ev["labels"][s][ph.name] for s in ids], dtype=float)
        prior = float(mu[j]) if reg[j] else float(y_tr[:, j].mean())
        p = []
        for s in ids:
            rows = [i for i in rows_of[s] if m_ev[i, j]]
            p.append(float(pred[rows, j].mean()) if rows else prior)
        p = np.array(p)
        if reg[j]:
            out[ph.name] = {
                "mae": float(np.mean(np.abs(p - truth))),
                "chance": float(np.mean(np.abs(prior - truth))),
            }
        elif 0 < truth.sum() < len(truth):
            out[ph.name] = {"auc": _auc(truth, p), "positives": int(truth.sum())}
    return history, out, steps, t_train


class LabelTextEncoder(torch.nn.Module):
    """Diagnostic text tower that reads the study's labels instead of its words.

    ``input_ids[:, 0]`` is the study's row in ``table`` (standardised phenotype values): the
    text side of a CLIP whose report space is organised by the findings and nothing else.
    """

    def __init__(self, table: torch.Tensor, embed_dim: int, hidden: int = 128) -> None:
        super().__init__()
        self.register_buffer("table", table)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(table.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, embed_dim)
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: Any = None, token_type_ids: Any = None
    ) -> torch.Tensor:
        return self.mlp(self.table[input_ids[:, 0]])


def label_text_inputs(
    d: dict[str, Any],
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The label table of every study and train/eval batches whose 'report' is the study's row."""
    ids = sorted(set(d["tr"]["study"]) | set(d["ev"]["study"]))
    row = {s: i for i, s in enumerate(ids)}
    labels = d["tr"]["labels"] | d["ev"]["labels"]
    scale = {"ejection_fraction": (50.0, 15.0), "pulmonary_artery_pressure_continuous": (30.0, 10.0)}
    table = torch.tensor(
        [
            [
                (labels[s][p.name] - scale.get(p.name, (0.5, 1.0))[0]) / scale.get(p.name, (0.5, 1.0))[1]
                for p in PHENOTYPES
            ]
            for s in ids
        ],
        dtype=torch.float32,
    )

    def swap(x: dict[str, torch.Tensor], studies: list[str]) -> dict[str, torch.Tensor]:
        n = len(studies)
        return {
            "clip": x["clip"],
            "input_ids": torch.tensor([[row[s]] for s in studies]),
            "attention_mask": torch.ones(n, 1, dtype=torch.long),
            "token_type_ids": torch.zeros(n, 1, dtype=torch.long),
            "study_idx": x["study_idx"],
        }

    return table, swap(d["TR"], d["tr"]["study"]), swap(d["EV"], d["ev"]["study"])


class StudyPooledLoss:
    """CLIP between studies: a study's video embedding is the normalised mean of its clips in the
    batch (as at evaluation), its report is embedded once; plain CLIP over the batch's studies."""

    def __init__(self) -> None:
        self.clip = ClipLoss()

    def __call__(
        self,
        *,
        video_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor,
        study_ids: torch.Tensor,
        **_: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        pooled, first = pool_by_study(study_ids, video_features)
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        return self.clip(pooled, text_features[first], logit_scale, study_ids=study_ids[first])
