"""What the tiny CPU configuration learns in a few minutes: a learning benchmark (no Ray).

Trains the configured EchoClip in-process on the train split of ingested shards, with the
library's own pieces (``build_tokenizer``, ``create_clip``, ``train_one_epoch``, ``ClipLoss``,
``prepare_batch`` augmentation), then measures on held-out studies:

* retrieval: each held-out clip ranks the held-out study reports (``v2t_r@1/5/10``, chance
  ``k / n_studies``) and each report ranks the clips (``t2v``), after every epoch;
* phenotypes through the report bank, as ``StudyInterpreter`` does it: a study's embedding is
  the normalised mean of its clip embeddings; its ``k`` nearest *training* reports vote (mean of
  their labels). AUC per binary phenotype, MAE for ejection fraction and PA pressure (chance: the
  MAE of predicting the training mean);
* a visibility ceiling per phenotype: the AUC of an oracle that knows the label exactly when the
  study holds a view where the finding is drawn (``synth.state.VISIBILITY``) and guesses the
  prior otherwise. With 4-6 of 11 views per study, a finding seen in one view is out of reach
  for most studies, whatever the model.

Writes ``bench/out/learning/<tag>.json`` (settings, per-epoch history, metrics) and prints a
table; ``--table`` prints the table of every saved run.

Examples::

    python bench/learning.py --shards /tmp/sh300 --epochs 12
    python bench/learning.py --shards /tmp/sh300 --tag shift2 --aug shift=2 --video width=16,pool=spatial
    python bench/learning.py --table
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from echoprime.config import load_config  # noqa: E402
from echoprime.data.shards import clips_to_numpy, read_manifest, read_split  # noqa: E402
from echoprime.losses import ClipLoss  # noqa: E402
from echoprime.models import create_clip  # noqa: E402
from echoprime.models.tokenizer import ReportTokenizer  # noqa: E402
from echoprime.synth.state import VISIBILITY  # noqa: E402
from echoprime.taxonomy import PHENOTYPE_BY_NAME, PHENOTYPES  # noqa: E402
from echoprime.training.batch import prepare_batch  # noqa: E402
from echoprime.training.loop import embed_for_retrieval, retrieval_metrics, train_one_epoch  # noqa: E402
from echoprime.training.schedule import cosine_scheduler  # noqa: E402
from echoprime.training.setup import build_tokenizer, study_index  # noqa: E402

OUT_DIR = ROOT / "bench" / "out" / "learning"
# phenotype -> the PatientState field whose visibility decides whether a study can show it
PHENOTYPE_FIELD = {
    "impella": "impella",
    "ejection_fraction": "ef",
    "pacemaker": "pacemaker",
    "rv_systolic_function_depressed": "rv_function",
    "right_ventricle_dilation": "rv_size",
    "left_atrium_dilation": "la_size",
    "right_atrium_dilation": "ra_size",
    "mitraclip": "mitraclip",
    "mitral_annular_calcification": "mac",
    "mitral_stenosis": "ms",
    "mitral_regurgitation": "mr",
    "tavr": "tavr",
    "bicuspid_aov_morphology": "bicuspid",
    "aortic_stenosis": "as_",
    "aortic_regurgitation": "ar",
    "tricuspid_stenosis": "ts",
    "tricuspid_valve_regurgitation": "tr",
    "pericardial_effusion": "effusion",
    "aortic_root_dilation": "aortic_root",
    "dilated_ivc": "ivc_dilated",
    "pulmonary_artery_pressure_continuous": "pasp",
}
SHORT = {
    "impella": "impella",
    "ejection_fraction": "EF",
    "pacemaker": "pacer",
    "rv_systolic_function_depressed": "RVfn",
    "right_ventricle_dilation": "RV",
    "left_atrium_dilation": "LA",
    "right_atrium_dilation": "RA",
    "mitraclip": "clip",
    "mitral_annular_calcification": "MAC",
    "mitral_stenosis": "MS",
    "mitral_regurgitation": "MR",
    "tavr": "TAVR",
    "bicuspid_aov_morphology": "bicusp",
    "aortic_stenosis": "AS",
    "aortic_regurgitation": "AR",
    "tricuspid_stenosis": "TS",
    "tricuspid_valve_regurgitation": "TR",
    "pericardial_effusion": "effus",
    "aortic_root_dilation": "root",
    "dilated_ivc": "IVC",
    "pulmonary_artery_pressure_continuous": "PASP",
}


def parse_kv(text: str | None) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (numbers parsed, everything else a string)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"expected key=value, got {part!r} in {text!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            try:
                out[k.strip()] = float(v)
            except ValueError:
                out[k.strip()] = v.strip()
    return out


# ----------------------------------------------------------------------------------- data
def load_split(shards: str, split: str) -> dict[str, Any]:
    """Clips (uint8 ``N x T x H x W x 3``), study ids, views, reports and per-study labels."""
    m = read_manifest(shards)
    t = read_split(shards, split, ["clip", "study_id", "view", "report", "labels"])
    if t.num_rows == 0:
        raise ValueError(f"{shards} has no rows in split {split!r}")
    studies = t.column("study_id").to_pylist()
    labels: dict[str, dict[str, float]] = {}
    views: dict[str, set[str]] = {}
    for s, v, lab in zip(studies, t.column("view").to_pylist(), t.column("labels").to_pylist(), strict=True):
        labels.setdefault(s, json.loads(lab))
        views.setdefault(s, set()).add(v)
    return {
        "clip": clips_to_numpy(t.column("clip"), m.clip_shape),
        "study": studies,
        "view": t.column("view").to_pylist(),
        "report": t.column("report").to_pylist(),
        "labels": labels,
        "views": views,
    }


def concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "clip": np.concatenate([p["clip"] for p in parts]),
        "labels": {},
        "views": {},
    }
    for key in ("study", "view", "report"):
        out[key] = [x for p in parts for x in p[key]]
    for p in parts:
        out["labels"].update(p["labels"])
        out["views"].update(p["views"])
    return out


def encode(data: dict[str, Any], tok: ReportTokenizer) -> dict[str, torch.Tensor]:
    enc = tok(data["report"])
    return {
        "clip": torch.from_numpy(np.ascontiguousarray(data["clip"])),
        **enc,
        "study_idx": torch.tensor([study_index(s) for s in data["study"]]),
    }


def epoch_order(studies: list[str], sampler: str, g: torch.Generator) -> torch.Tensor:
    """Row order for one epoch.

    ``random``: a permutation of the clips. ``study``: rounds, each holding one clip of every
    study that has one left, in a random study order, so a batch rarely holds two clips of one
    study (only where rounds meet). ``grouped``: studies in a random order, each with all its
    clips together (for study-level losses).
    """
    n = len(studies)
    if sampler == "random":
        return torch.randperm(n, generator=g)
    if sampler not in ("study", "grouped"):
        raise ValueError(f"sampler must be 'random', 'study' or 'grouped', got {sampler!r}")
    by: dict[str, list[int]] = {}
    for i, s in enumerate(studies):
        by.setdefault(s, []).append(i)
    rows = list(by.values())
    if sampler == "grouped":
        # whole studies one after the other (a batch holds every clip of most of its studies)
        return torch.tensor([i for j in torch.randperm(len(rows), generator=g).tolist() for i in rows[j]])
    shuffled = [[r[j] for j in torch.randperm(len(r), generator=g).tolist()] for r in rows]
    order: list[int] = []
    for rnd in range(max(len(r) for r in rows)):
        left = [r[rnd] for r in shuffled if len(r) > rnd]
        order += [left[j] for j in torch.randperm(len(left), generator=g).tolist()]
    return torch.tensor(order)


def batches(
    data: dict[str, torch.Tensor],
    order: torch.Tensor,
    batch_size: int,
    spec: dict[str, Any],
    aug: dict[str, Any],
    g: torch.Generator,
    device: str,
) -> Iterator[dict[str, torch.Tensor]]:
    """Full batches in ``order``; clips normalised and augmented by ``prepare_batch`` on ``device``.

    The clip comes out as the normalised float ``B x 3 x T x H x W`` that ``train_one_epoch``
    passes through unchanged.
    """
    for i in range(len(order) // batch_size):
        idx = order[i * batch_size : (i + 1) * batch_size]
        b = prepare_batch({k: v[idx] for k, v in data.items()}, spec, device, generator=g, **aug)
        b["clip"] = b.pop("video")
        yield b


# ------------------------------------------------------------------------------- metrics
def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def visibility_ceiling(name: str, truth: np.ndarray, prior: float, views: list[set[str]]) -> float | None:
    """AUC (MAE for regressions) of an oracle exact on studies holding a view that shows the
    finding and answering the training prior elsewhere."""
    seen = np.array([bool(v & set(VISIBILITY[PHENOTYPE_FIELD[name]])) for v in views])
    pred = np.where(seen, truth, prior)
    if PHENOTYPE_BY_NAME[name].kind == "regression":
        return float(np.mean(np.abs(pred - truth)))
    if 0 < truth.sum() < len(truth):
        return _auc(truth, pred)
    return None


def knn_metrics(model: torch.nn.Module, d: dict[str, Any], k: int, device: str) -> dict[str, dict[str, Any]]:
    """Per-phenotype kNN metrics of held-out studies through the training report bank."""
    tr, ev, spec = d["tr"], d["ev"], d["spec"]

    def chunks(x: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        n = len(x["study_idx"])
        return [{kk: v[i : i + 256] for kk, v in x.items()} for i in range(0, n, 256)]

    e_tr = embed_for_retrieval(model, chunks(d["TR"]), device, spec=spec)
    e_ev = embed_for_retrieval(model, chunks(d["EV"]), device, spec=spec)
    idx_to_id = {study_index(s): s for s in tr["study"]} | {study_index(s): s for s in ev["study"]}
    bank_ids = [idx_to_id[int(i)] for i in e_tr["text_study"]]
    vs = e_ev["video_study"]
    studies = sorted(set(vs.tolist()))
    # a study's embedding: the normalised mean of its clips' (StudyInterpreter's unweighted case)
    q = torch.nn.functional.normalize(torch.stack([e_ev["video"][vs == s].mean(0) for s in studies]), dim=1)
    top = (q @ e_tr["text"].T).topk(k, dim=1).indices.tolist()
    # The same vote with the study's own report as the query: how well the text space alone
    # sorts the findings (a ceiling for the video side; low means the text tower is the limit).
    tq = torch.stack([e_ev["text"][e_ev["text_study"] == s][0] for s in studies])
    top_t = (tq @ e_tr["text"].T).topk(k, dim=1).indices.tolist()
    ids = [idx_to_id[s] for s in studies]
    views = [ev["views"][s] for s in ids]
    out: dict[str, dict[str, Any]] = {}
    for ph in PHENOTYPES:
        bank = np.array([tr["labels"][b][ph.name] for b in bank_ids], dtype=float)
        truth = np.array([ev["labels"][s][ph.name] for s in ids], dtype=float)
        pred = np.array([np.nanmean(bank[row]) for row in top])
        pred_t = np.array([np.nanmean(bank[row]) for row in top_t])
        prior = float(np.nanmean(bank))
        ceil = visibility_ceiling(ph.name, truth, prior, views)
        if ph.kind == "regression":
            out[ph.name] = {
                "mae": float(np.mean(np.abs(pred - truth))),
                "chance": float(np.mean(np.abs(prior - truth))),
                "ceiling": ceil,
                "text_mae": float(np.mean(np.abs(pred_t - truth))),
            }
        elif 0 < truth.sum() < len(truth):
            out[ph.name] = {
                "auc": _auc(truth, pred),
                "positives": int(truth.sum()),
                "ceiling": ceil,
                "text_auc": _auc(truth, pred_t),
            }
    return out


def knn_ceiling(ev: dict[str, Any], tr: dict[str, Any]) -> dict[str, float | None]:
    """The visibility ceiling of every phenotype for the held-out studies."""
    ids = sorted(set(ev["study"]))
    out = {}
    for ph in PHENOTYPES:
        truth = np.array([ev["labels"][s][ph.name] for s in ids], dtype=float)
        prior = float(np.mean([tr["labels"][s][ph.name] for s in set(tr["study"])]))
        out[ph.name] = visibility_ceiling(ph.name, truth, prior, [ev["views"][s] for s in ids])
    return out


def summary(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean AUC (and mean ceiling) over the binary phenotypes with at least 3 held-out positives."""
    aucs = [v["auc"] for v in metrics.values() if "auc" in v and v["positives"] >= 3]
    ceil = [v["ceiling"] for v in metrics.values() if "auc" in v and v["positives"] >= 3]
    text = [v["text_auc"] for v in metrics.values() if "text_auc" in v and v["positives"] >= 3]
    return {
        "mean_auc": float(np.mean(aucs)),
        "mean_ceiling_auc": float(np.mean(ceil)),
        "mean_text_auc": float(np.mean(text)) if text else float("nan"),
        "n_auc": len(aucs),
    }


# ------------------------------------------------------------------- supervised diagnostic
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
    video: torch.nn.Module, d: dict[str, Any], tc: Any, aug: dict[str, Any], args: argparse.Namespace
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


class AuxHeads(torch.nn.Module):
    """EchoClip plus linear heads that read the study's labels off each side's embedding.

    The heads work on the normalised joint-space features, so the auxiliary loss organises the
    joint space itself by the findings (the kNN vote through the report bank relies on that).
    """

    def __init__(self, clip: torch.nn.Module, n_out: int) -> None:
        super().__init__()
        self.clip = clip
        d = clip.video_encoder.embed_dim
        self.video_head = torch.nn.Linear(d, n_out)
        self.text_head = torch.nn.Linear(d, n_out)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.clip, name)  # encode_video, encode_text, scale ... for evaluation

    def forward(self, video: torch.Tensor, *text: Any) -> dict[str, torch.Tensor]:
        out = self.clip(video, *text)
        out["video_logits"] = self.video_head(out["video_features"])
        out["text_logits"] = self.text_head(out["text_features"])
        return out


class AuxLoss:
    """ClipLoss + ``weight`` x (label loss of the video head + label loss of the text head).

    Labels per study come from ``table`` (study index -> standardised phenotype row); binaries
    take BCE, regressions (standardised) MSE. No view masking: a clip predicts its whole study's
    labels, the prior where its view shows nothing.
    """

    def __init__(self, table: dict[int, torch.Tensor], weight: float, text_weight: float) -> None:
        self.table, self.w, self.wt = table, weight, text_weight
        self.reg = torch.tensor([p.kind == "regression" for p in PHENOTYPES])
        self.clip = ClipLoss()

    def _part(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        reg = self.reg.to(logits.device)
        bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.clamp(0, 1), reduction="none")
        return torch.where(reg, (logits - y) ** 2, bce).mean()

    def __call__(
        self,
        *,
        study_ids: torch.Tensor,
        video_logits: torch.Tensor,
        text_logits: torch.Tensor,
        **clip_kw: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        out = dict(self.clip(**clip_kw, study_ids=study_ids))
        y = torch.stack([self.table[int(s)] for s in study_ids.tolist()]).to(video_logits.device)
        if self.w > 0:
            out["video_label_loss"] = self.w * self._part(video_logits, y)
        if self.wt > 0:
            out["text_label_loss"] = self.wt * self._part(text_logits, y)
        return out


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
    ) -> dict[str, torch.Tensor]:
        uniq, inv = torch.unique(study_ids, return_inverse=True)
        n = len(uniq)
        pooled = video_features.new_zeros(n, video_features.shape[1]).index_add_(0, inv, video_features)
        pooled = torch.nn.functional.normalize(pooled, dim=1)
        first = torch.full((n,), len(study_ids), device=study_ids.device).scatter_reduce_(
            0, inv, torch.arange(len(study_ids), device=study_ids.device), reduce="amin"
        )
        return self.clip(pooled, text_features[first], logit_scale, study_ids=uniq)


def study_label_table(d: dict[str, Any]) -> dict[int, torch.Tensor]:
    """study index -> standardised phenotype row (EF (x-50)/15, PASP (x-30)/10, binaries 0/1)."""
    scale = {"ejection_fraction": (50.0, 15.0), "pulmonary_artery_pressure_continuous": (30.0, 10.0)}
    labels = d["tr"]["labels"] | d["ev"]["labels"]
    return {
        study_index(s): torch.tensor(
            [
                (lab[p.name] - scale.get(p.name, (0.0, 1.0))[0]) / scale.get(p.name, (0.0, 1.0))[1]
                for p in PHENOTYPES
            ],
            dtype=torch.float32,
        )
        for s, lab in labels.items()
    }


# -------------------------------------------------------------------------------- the run
_DATA: dict[tuple[str, str, int], dict[str, Any]] = {}


def load_data(shards: str, eval_splits: str, mc: Any) -> dict[str, Any]:
    """Train and held-out splits, tokenised (a WordPiece trained on the train reports); cached per process."""
    key = (shards, eval_splits, int(mc.tokenizer_vocab))
    if key not in _DATA:
        t0 = time.perf_counter()
        tr = load_split(shards, "train")
        ev = concat([load_split(shards, s) for s in eval_splits.split(",")])
        with tempfile.TemporaryDirectory() as tmp:
            build_tokenizer(mc.model_dump(), tr["report"], tmp)
            tok = ReportTokenizer.from_pretrained(tmp)
        _DATA[key] = {
            "tr": tr,
            "ev": ev,
            "TR": encode(tr, tok),
            "EV": encode(ev, tok),
            "vocab": tok.vocab_size,
            "spec": read_manifest(shards).spec,
            "load_s": time.perf_counter() - t0,
        }
    return _DATA[key]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One training run with the settings of ``args``; returns the result record."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # fp32 as on the CPU: no TF32 in cuDNN convolutions or matmuls
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    overrides = [f"train.{k}={v}" for k, v in parse_kv(args.train).items()]
    overrides += [f"model.{k}={v}" for k, v in parse_kv(args.model).items()]
    cfg = load_config(args.config, overrides)
    tc, mc = cfg.train, cfg.model
    d = load_data(args.shards, args.eval_splits, mc)
    tr, ev, spec, dev = d["tr"], d["ev"], d["spec"], args.device
    video_kw = {"frames": int(spec["frames"]), "size": int(spec["size"]), **parse_kv(args.video)}
    text_kw = {"vocab_size": d["vocab"], **parse_kv(args.text)}
    model = create_clip(
        mc.video_encoder,
        mc.text_encoder,
        embed_dim=mc.embed_dim,
        video_overrides=video_kw,
        text_overrides=text_kw,
        init_logit_scale=mc.init_logit_scale,
        max_logit_scale=mc.max_logit_scale,
    )
    aug = {"brightness": tc.brightness, "contrast": tc.contrast, **parse_kv(args.aug)}
    n_ev = len(set(ev["study"]))
    record: dict[str, Any] = {
        "tag": args.tag,
        "objective": args.objective,
        "shards": args.shards,
        "device": args.device,
        "settings": {
            "train": tc.model_dump(),
            "model": mc.model_dump(),
            "video": video_kw,
            "text": text_kw,
            "aug": aug,
            "sampler": args.sampler,
            "seed": args.seed,
            "threads": args.threads,
            "eval_splits": args.eval_splits,
            "k": args.k,
        },
        "data": {
            "train_clips": len(tr["study"]),
            "train_studies": len(set(tr["study"])),
            "eval_clips": len(ev["study"]),
            "eval_studies": n_ev,
            "load_s": d["load_s"],
        },
        "chance_r@k": {f"r@{k}": k / n_ev for k in (1, 5, 10)},
    }
    if args.objective == "supervised":
        hist, metrics, steps, train_s = supervised_run(model.video_encoder, d, tc, aug, args)
        for ph, v in knn_ceiling(ev, tr).items():
            if ph in metrics:
                metrics[ph]["ceiling"] = v
        hist[-1].update({f"{x}_r@{k}": float("nan") for x in ("v2t", "t2v") for k in (1, 5, 10)})
        return record | {
            "steps": steps,
            "train_s": train_s,
            "history": hist,
            "final": hist[-1],
            "phenotypes": metrics,
            "summary": summary(metrics),
        }

    if args.objective == "clip_labels":
        from echoprime.models.clip import EchoClip

        table, TR, EV = label_text_inputs(d)
        model = EchoClip(
            model.video_encoder,
            LabelTextEncoder(table, mc.embed_dim),
            mc.init_logit_scale,
            mc.max_logit_scale,
        )
        d = d | {"TR": TR, "EV": EV}
    loss_fn: Any = ClipLoss()
    if args.objective == "clip_aux":
        w = parse_kv(args.aux)
        model = AuxHeads(model, len(PHENOTYPES))
        loss_fn = AuxLoss(study_label_table(d), float(w.get("video", 1.0)), float(w.get("text", 1.0)))
    elif args.objective == "clip_study":
        loss_fn = StudyPooledLoss()
    model.to(dev)
    bs, n = tc.batch_size, len(tr["study"])
    total = (n // bs) * tc.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = cosine_scheduler(opt, tc.lr, min(tc.warmup_steps, total // 4), total, tc.min_lr)
    g = torch.Generator().manual_seed(args.seed)
    ev_batches = [{k: v[i : i + 256] for k, v in d["EV"].items()} for i in range(0, len(ev["study"]), 256)]
    history: list[dict[str, Any]] = []
    train_s, steps = 0.0, 0
    parts: list[float] = []  # contrastive part of each step's loss
    for epoch in range(tc.epochs):
        order = epoch_order(tr["study"], args.sampler, g)
        parts.clear()
        st = train_one_epoch(
            model,
            loss_fn,
            opt,
            sched,
            batches(d["TR"], order, bs, spec, aug, g, dev),
            dev,
            grad_clip=tc.grad_clip,
            on_step=lambda info: parts.append(info.losses.get("contrastive_loss", float("nan"))) and False,
        )
        train_s += st.seconds
        steps += st.steps
        last = epoch == tc.epochs - 1 or bool(args.time_budget_s and train_s >= args.time_budget_s)
        row = {
            "epoch": epoch + 1,
            "loss": st.loss,
            "clips_per_s": st.clips_per_s,
            "train_s": train_s,
            "temperature": float(1 / model.scale().detach()),
            "clip_loss": float(np.mean(parts)) if parts else float("nan"),
        }
        if last or (args.eval_every and (epoch + 1) % args.eval_every == 0):
            r = retrieval_metrics(**embed_for_retrieval(model, ev_batches, dev, spec=spec))
            row |= {k: float(v) for k, v in r.items()}
            if args.verbose:
                print(
                    f"epoch {epoch + 1:3d} loss {st.loss:.3f} T {row['temperature']:.3f} "
                    f"v2t R@1/5/10 {r['v2t_r@1']:.3f}/{r['v2t_r@5']:.3f}/{r['v2t_r@10']:.3f} "
                    f"t2v R@1 {r['t2v_r@1']:.3f}  {st.clips_per_s:.0f} clips/s  train {train_s:.0f}s",
                    flush=True,
                )
        history.append(row)
        if last:
            break
    metrics = knn_metrics(model, d, args.k, dev)
    return record | {
        "steps": steps,
        "train_s": train_s,
        "history": history,
        "final": history[-1],
        "phenotypes": metrics,
        "summary": summary(metrics),
    }


# ------------------------------------------------------------------------------- tables
def table(results: list[dict[str, Any]]) -> str:
    """One row per run: retrieval vs chance, EF/PASP MAE, AUC per binary phenotype."""
    names = [p.name for p in PHENOTYPES if p.kind == "binary"]
    head = [
        "tag",
        "n",
        "steps",
        "s",
        "loss",
        "R@1",
        "R@5",
        "R@10",
        "EF",
        "PASP",
        "meanAUC",
        "txtEF",
        "txtAUC",
    ]
    head += [SHORT[x] for x in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(tag: str, r: dict[str, Any], key: str) -> list[str]:
        ph = r["phenotypes"]
        cells = [f"{ph[x][key]:.2f}" if x in ph and ph[x].get(key) is not None else "" for x in names]
        return cells

    for r in results:
        f, ph = r["final"], r["phenotypes"]
        cells = [
            r["tag"],
            str(r.get("n_runs", 1)),
            str(r["steps"]),
            f"{r['train_s']:.0f}",
            f"{f['loss']:.2f}",
            f"{f['v2t_r@1']:.2f}",
            f"{f['v2t_r@5']:.2f}",
            f"{f['v2t_r@10']:.2f}",
            f"{ph['ejection_fraction']['mae']:.1f}",
            f"{ph['pulmonary_artery_pressure_continuous']['mae']:.1f}",
            f"{r['summary']['mean_auc']:.3f}",
            f"{ph['ejection_fraction'].get('text_mae', float('nan')):.1f}",
            f"{r['summary'].get('mean_text_auc', float('nan')):.3f}",
        ] + row(r["tag"], r, "auc")
        lines.append("| " + " | ".join(cells) + " |")
    if results:
        r = results[-1]
        ph, c = r["phenotypes"], r["chance_r@k"]
        lines.append(
            "| chance | | | | | "
            + " | ".join(f"{c[k]:.2f}" for k in ("r@1", "r@5", "r@10"))
            + f" | {ph['ejection_fraction']['chance']:.1f} | {ph['pulmonary_artery_pressure_continuous']['chance']:.1f}"
            + " | 0.5 | | | "
            + " | ".join("0.50" for _ in names)
            + " |"
        )
        lines.append(
            "| visibility ceiling | | | | | | | | "
            + f"{ph['ejection_fraction']['ceiling']:.1f} | {ph['pulmonary_artery_pressure_continuous']['ceiling']:.1f}"
            + f" | {r['summary']['mean_ceiling_auc']:.3f} | | | "
            + " | ".join(row("", r, "ceiling"))
            + " |"
        )
        lines.append(
            "| positives |"
            + " |" * 12
            + " "
            + " | ".join(str(int(ph[x]["positives"])) if x in ph else "" for x in names)
            + " |"
        )
    return "\n".join(lines)


def mean_over_seeds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average runs whose tags differ only after an ``@`` (``name@1``, ``name@2`` -> ``name``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["tag"].split("@")[0], []).append(r)
    out = []
    for tag, rs in groups.items():

        def avg(get: Any, rs: list[dict[str, Any]] = rs) -> float:
            vals = [v for v in (get(r) for r in rs) if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        first = rs[0]
        final = {k: avg(lambda r, k=k: r["final"].get(k)) for k in first["final"]}
        ph = {
            name: {k: avg(lambda r, name=name, k=k: r["phenotypes"].get(name, {}).get(k)) for k in v}
            for name, v in first["phenotypes"].items()
        }
        summ = {k: avg(lambda r, k=k: r["summary"].get(k)) for k in first["summary"]}
        out.append(
            first
            | {
                "tag": tag,
                "n_runs": len(rs),
                "steps": int(avg(lambda r: r["steps"])),
                "train_s": avg(lambda r: r["train_s"]),
                "final": final,
                "phenotypes": ph,
                "summary": summ,
            }
        )
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="ingest output with train and val (and test) splits")
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny-cpu.yaml"))
    p.add_argument("--tag", default="run", help="name of the run (the JSON file's name)")
    p.add_argument("--epochs", type=int, help="train.epochs (default: the config's)")
    p.add_argument("--time-budget-s", type=float, help="stop after the epoch that passes this training time")
    p.add_argument("--train", help="train.* overrides, e.g. lr=0.001,batch_size=64,weight_decay=0.1")
    p.add_argument("--model", help="model.* overrides, e.g. embed_dim=128,init_logit_scale=2.3")
    p.add_argument(
        "--video", help="video builder overrides, e.g. width=24,pool=spatial,dropout=0.1,norm=group"
    )
    p.add_argument("--text", help="text builder overrides, e.g. hidden=64,token_dropout=0.2")
    p.add_argument("--aug", help="augmentation overrides, e.g. shift=2,noise=0.1,reverse=0.5,brightness=0.1")
    p.add_argument("--sampler", default="random", choices=["random", "study", "grouped"])
    p.add_argument("--aux", help="clip_aux loss weights, e.g. video=1,text=1")
    p.add_argument(
        "--objective",
        default="clip",
        choices=["clip", "supervised", "clip_labels", "clip_aux", "clip_study"],
        help="supervised: the video tower learns the labels directly (the diagnostic upper bound); "
        "clip_labels: CLIP against a text tower that reads the study's labels, not its words",
    )
    p.add_argument("--eval-splits", default="val,test", help="held-out splits, comma separated")
    p.add_argument("--eval-every", type=int, default=1, help="retrieval on the held-out clips every N epochs")
    p.add_argument("--k", type=int, default=10, help="neighbours for the phenotype vote")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=str(OUT_DIR), help="where <tag>.json goes")
    p.add_argument(
        "--grid",
        help="file of runs, one per line, each line's arguments added to this command line's; '#' comments",
    )
    p.add_argument("--part", default="0/1", help="with --grid: run lines i, i+n, ... of the grid (i/n)")
    p.add_argument("--quiet", dest="verbose", action="store_false", help="no per-epoch lines")
    p.add_argument(
        "--table", action="store_true", help="print the table of the saved runs (by time) and exit"
    )
    p.add_argument("--mean", action="store_true", help="with --table: average tags name@seed over seeds")
    p.add_argument("--match", help="with --table: only tags matching this glob")
    return p


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.table:
        runs = [
            json.loads(f.read_text()) for f in sorted(out_dir.glob("*.json"), key=lambda f: f.stat().st_mtime)
        ]
        if args.match:
            runs = [r for r in runs if fnmatch.fnmatch(r["tag"], args.match)]
        print(table(mean_over_seeds(runs) if args.mean else runs))
        return 0
    if not args.shards:
        p.error("--shards is required (unless --table)")
    jobs = [args]
    if args.grid:
        lines = [ln.split("#", 1)[0].split() for ln in Path(args.grid).read_text().splitlines()]
        i, n = (int(x) for x in args.part.split("/"))
        jobs = [p.parse_args(argv + ln) for ln in [x for x in lines if x][i::n]]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for a in jobs:
        if a.epochs:
            a.train = ",".join(x for x in (a.train or "", f"epochs={a.epochs}") if x)
        t0 = time.perf_counter()
        res = run(a)
        res["wall_s"] = time.perf_counter() - t0
        (out_dir / f"{a.tag}.json").write_text(json.dumps(res, indent=1))
        results.append(res)
        print(table([res]).splitlines()[2], flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
