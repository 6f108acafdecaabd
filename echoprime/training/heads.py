"""Supervised heads on the video tower: ``echoprime finetune --task NAME`` (issue 26, part 2).

A *task* is one thing a labels table can say about a study or a video:

* ``ef`` (ejection fraction, %), ``pasp`` (pulmonary artery pressure, mmHg), or any other
  regression of the taxonomy (``heart_rate``): a standardised squared-error target;
* a binary finding of the taxonomy by name (``aortic_stenosis``): binary cross-entropy;
* ``<graded finding>:grade`` (``mitral_regurgitation:grade``): the report's severity grade as a
  class (cross-entropy over the grade scale's levels);
* ``views``: each video's coarse view (cross-entropy over the 11 views).

A head is one linear layer on the video tower's embedding, the same (unit-norm, unless the bundle
says otherwise) embedding that interpretation computes, so a head trained with the encoder frozen
runs on the embeddings a study's interpretation already has. With the encoder (partly) trained
the head keeps its own copy of the tuned encoder (``encoder.safetensors``), which interpretation
runs on the same clips.

Training is per clip: every clip of a study carries the study's label (``views``: the clip's
own). A study's answer pools its clips' outputs with the anatomical attention's weights of the
finding's report section (the ejection fraction listens to the videos the left-ventricle section
attends to), which for a linear head equals the head applied to that section's embedding.
Targets come from the shards' ``labels`` JSON (a label-only archive's table, or the report's
findings): a graded task reads the ``<phenotype>_grade`` key, or the report's stated grade.

In a bundle::

    BUNDLE/heads/<task>/head.json            task, kind, classes, standardisation, pooling section,
                                             the metrics of its validation split
    BUNDLE/heads/<task>/head.safetensors     the linear layer (``weight``, ``bias``)
    BUNDLE/heads/<task>/encoder.safetensors  (only when the encoder was trained) the tuned tower
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from echoprime.metrics import quadratic_weighted_kappa
from echoprime.taxonomy import (
    BINARY_PHENOTYPES,
    FINDING_BY_NAME,
    GRADE_SCALES,
    MIL_SECTIONS,
    VIEW_INDEX,
    VIEWS,
    grade_column,
)

KINDS = ("regression", "binary", "graded", "views")
ALIASES: dict[str, str] = {"ef": "ejection_fraction", "pasp": "pulmonary_artery_pressure_continuous"}
"""Short names of the regressions users fine-tune most."""
SCALES: dict[str, tuple[float, float]] = {
    "ejection_fraction": (50.0, 15.0),
    "pulmonary_artery_pressure_continuous": (30.0, 10.0),
    "heart_rate": (70.0, 20.0),
}
"""``(centre, scale)`` of each regression: the target is ``(x - centre) / scale``."""
HEADS_DIR = "heads"


@dataclass(frozen=True)
class Task:
    """One fine-tuning target (module docstring).

    Attributes:
        name: as the user names it (``ef``, ``aortic_stenosis``, ``mitral_regurgitation:grade``, ``views``).
        kind: ``regression``, ``binary``, ``graded`` or ``views``.
        target: the finding (taxonomy name) the labels hold, or ``view``.
        classes: the grade levels or the views (empty for one-output tasks).
        centre: a regression's standardisation centre (units).
        scale: a regression's standardisation scale (units).
        unit: a regression's unit.
        section: the report section whose attention weights pool a study's videos (None: ``views``,
            answered per video).
    """

    name: str
    kind: str
    target: str
    classes: tuple[str, ...] = ()
    centre: float = 0.0
    scale: float = 1.0
    unit: str = ""
    section: str | None = None

    @property
    def outputs(self) -> int:
        """Width of the head."""
        return len(self.classes) if self.classes else 1

    @property
    def folder(self) -> str:
        """The head's folder name in a bundle (``:`` is not portable in a path)."""
        return self.name.replace(":", "-")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Task:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: (tuple(v) if k == "classes" else v) for k, v in d.items() if k in known})


def known_tasks() -> list[str]:
    """Every task name :func:`resolve_task` accepts, for help texts and errors."""
    regressions = [n for n, p in FINDING_BY_NAME.items() if p.kind == "regression"]
    return sorted(
        [*ALIASES, *regressions, *BINARY_PHENOTYPES, *(f"{p}:grade" for p in GRADE_SCALES), "views"]
    )


def resolve_task(name: str) -> Task:
    """The :class:`Task` a name stands for.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    raw = name.strip()
    if raw == "views":
        return Task("views", "views", "view", classes=VIEWS)
    if raw.endswith(":grade"):
        phen = raw[: -len(":grade")]
        if phen in GRADE_SCALES:
            return Task(raw, "graded", phen, classes=GRADE_SCALES[phen].levels,
                        section=FINDING_BY_NAME[phen].section)  # fmt: skip
    else:
        phen = ALIASES.get(raw, raw)
        p = FINDING_BY_NAME.get(phen)
        if p is not None and p.kind == "regression":
            centre, scale = SCALES.get(
                phen, (float(np.mean(p.valid_range)), float(np.ptp(p.valid_range)) / 6)
            )
            return Task(raw, "regression", phen, centre=centre, scale=scale, unit=p.unit, section=p.section)
        if p is not None:
            return Task(raw, "binary", phen, section=p.section)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(known_tasks())}")


def task_targets(
    task: Task, labels: Sequence[str | None], views: Sequence[str | None], reports: Sequence[str | None]
) -> np.ndarray:
    """Shard rows -> ``N x 1`` float32 targets (NaN: this row says nothing about the task).

    Regressions are standardised; binaries 0/1; grades and views are class indices. A graded
    task reads ``<phenotype>_grade`` from the labels JSON, else the grade the row's report
    states (``echoprime.reports.extract_findings``).

    Raises:
        ValueError: a grade outside the scale, or a regression value outside its valid range,
            naming the row and the value.
    """
    from echoprime.data.shards import parse_labels

    out = np.full((len(labels), 1), np.nan, dtype=np.float32)
    if task.kind == "views":
        from echoprime.taxonomy import coarse_view

        for i, v in enumerate(views):
            if v:
                try:
                    out[i, 0] = VIEW_INDEX[coarse_view(str(v))]
                except ValueError as err:
                    raise ValueError(f"row {i}: {err}") from None
        return out
    found: dict[str, dict[str, float]] = {}
    for i, (cell, report) in enumerate(zip(labels, reports, strict=True)):
        lab = parse_labels(cell)
        if task.kind == "graded":
            value = lab.get(grade_column(task.target), math.nan)
            if value != value and report:
                if report not in found:
                    from echoprime.reports import extract_findings

                    found[report] = extract_findings(report)
                value = found[report].get(grade_column(task.target), math.nan)
            if value == value and not (0 <= value < len(task.classes) and float(value).is_integer()):
                raise ValueError(
                    f"row {i}: {grade_column(task.target)} = {value} is not a grade index 0-{len(task.classes) - 1} "
                    f"({', '.join(task.classes)})"
                )
        else:
            value = lab.get(task.target, math.nan)
            if value == value and task.kind == "regression":
                lo, hi = FINDING_BY_NAME[task.target].valid_range
                if not lo <= value <= hi:
                    raise ValueError(f"row {i}: {task.target} = {value} is outside {lo}-{hi} {task.unit}")
                value = (value - task.centre) / task.scale
            elif value == value and value not in (0.0, 1.0):
                raise ValueError(f"row {i}: {task.target} = {value}; a binary label is 0 or 1")
        out[i, 0] = value
    return out


class TaskModel(nn.Module):
    """The video tower and a linear head: ``B x 3 x T x S x S -> {"task_logits": B x outputs}``.

    Args:
        video_encoder: the bundle's video tower (``B x 3 x T x S x S -> B x D``).
        task: what the head predicts.
        embed_dim: the tower's output width.
        normalize: unit-normalise the embedding before the head (as the bundle's interpretation does).
    """

    def __init__(self, video_encoder: nn.Module, task: Task, embed_dim: int, normalize: bool = True) -> None:
        super().__init__()
        self.video_encoder = video_encoder
        self.head = nn.Linear(embed_dim, task.outputs)
        self.normalize = normalize
        self.task = task

    def train(self, mode: bool = True) -> TaskModel:
        """Frozen parts of the tower stay in eval mode while the head trains: their batch-norm
        statistics (and, for a wholly frozen tower, its dropout) stay the bundle's, so the head
        learns on the embeddings interpretation computes."""
        super().train(mode)
        if mode:
            if not any(p.requires_grad for p in self.video_encoder.parameters()):
                self.video_encoder.eval()
            else:
                for m in self.video_encoder.modules():
                    own = list(m.parameters(recurse=False))
                    if own and not any(p.requires_grad for p in own):
                        m.eval()
        return self

    def embed(self, video: torch.Tensor) -> torch.Tensor:
        e = self.video_encoder(video).float()
        return F.normalize(e, dim=-1) if self.normalize else e

    def forward(self, video: torch.Tensor, *_: Any) -> dict[str, torch.Tensor]:
        """The extra positional arguments (a text batch) are ignored: the training loop's call."""
        return {"task_logits": self.head(self.embed(video))}


class TaskLoss(nn.Module):
    """The task's loss over the rows with a target (NaN rows take no part)."""

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task

    def forward(self, task_logits: torch.Tensor, labels: torch.Tensor, **_: Any) -> dict[str, torch.Tensor]:
        y = labels.reshape(-1).float()
        keep = torch.isfinite(y)
        if not bool(keep.any()):
            # Nothing labelled in this batch: a zero that still reaches every trainable parameter
            # (DDP waits for a gradient of each).
            return {"task_loss": task_logits.sum() * 0.0}
        z, t = task_logits[keep].float(), y[keep]
        if self.task.kind == "regression":
            loss = F.mse_loss(z[:, 0], t)
        elif self.task.kind == "binary":
            loss = F.binary_cross_entropy_with_logits(z[:, 0], t)
        else:
            loss = F.cross_entropy(z, t.long())
        return {"task_loss": loss}


def answer(task: Task, logits: np.ndarray) -> dict[str, Any]:
    """One row of pooled logits -> the task's answer: a value in units (regression), a
    probability (binary), the most likely class and each class's probability (graded, views)."""
    z = np.asarray(logits, np.float64).reshape(-1)
    if task.kind == "regression":
        return {"value": float(z[0] * task.scale + task.centre), "unit": task.unit}
    if task.kind == "binary":
        return {"probability": float(1.0 / (1.0 + np.exp(-z[0])))}
    p = np.exp(z - z.max())
    p /= p.sum()
    key = "grade" if task.kind == "graded" else "view"
    return {
        key: task.classes[int(p.argmax())],
        "probabilities": dict(zip(task.classes, map(float, p), strict=True)),
    }


def pool_study(task: Task, logits: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """``N x outputs`` clip logits -> the study's logits: the attention weights of the task's
    section over the study's videos (``weights`` ``15 x N``), or their mean without them."""
    if weights is not None and task.section in MIL_SECTIONS:
        w = np.asarray(weights[MIL_SECTIONS.index(task.section)], np.float64)
        if w.shape[0] == logits.shape[0] and w.sum() > 0:
            return (w[:, None] * logits).sum(0) / w.sum()
    return logits.mean(0)


def study_answer(
    task: Task, logits: np.ndarray, weights: np.ndarray | None, files: Sequence[str]
) -> dict[str, Any]:
    """A study's answer from its clips' logits (``views``: one answer per video instead)."""
    out: dict[str, Any] = {"task": task.name, "kind": task.kind, "target": task.target}
    if task.kind == "views":
        out["videos"] = [{"file": f, **answer(task, z)} for f, z in zip(files, logits, strict=True)]
        return out
    out.update(answer(task, pool_study(task, logits, weights)))
    out["pooled_by"] = task.section if weights is not None else "mean of the videos"
    return out


def task_metrics(
    task: Task, logits: np.ndarray, targets: np.ndarray, studies: np.ndarray
) -> dict[str, float]:
    """Validation numbers of a head: per study (clips' logits averaged) for findings, per clip for
    views. ``score`` is the number early stopping watches (higher is better): ``-mae`` for a
    regression, AUC for a binary, accuracy otherwise.

    Returns:
        ``{"mae", "score", "n"}`` (regression, in units), ``{"auc", "score", "n"}`` (binary; AUC
        NaN with one class only), ``{"accuracy", "kappa" (graded), "score", "n"}``.
    """
    targets = targets.reshape(-1)
    if task.kind != "views":
        ids, inv = np.unique(studies, return_inverse=True)
        pooled = np.zeros((len(ids), logits.shape[1]))
        np.add.at(pooled, inv, logits)
        pooled /= np.bincount(inv, minlength=len(ids))[:, None]
        y = np.full(len(ids), np.nan)
        y[inv] = targets
        logits, targets = pooled, y
    keep = np.isfinite(targets)
    z, y = logits[keep], targets[keep]
    n = int(keep.sum())
    if n == 0:
        return {"score": math.nan, "n": 0}
    if task.kind == "regression":
        mae = float(np.abs(z[:, 0] - y).mean() * task.scale)
        return {"mae": mae, "score": -mae, "n": n}
    if task.kind == "binary":
        from scipy.stats import rankdata

        pos = y == 1
        if pos.all() or not pos.any():
            return {"auc": math.nan, "score": math.nan, "n": n}
        r = rankdata(z[:, 0])
        auc = float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))
        return {"auc": auc, "score": auc, "n": n}
    pred = z.argmax(1)
    acc = float((pred == y).mean())
    out = {"accuracy": acc, "score": acc, "n": n}
    if task.kind == "graded":
        out["kappa"] = float(quadratic_weighted_kappa(y.astype(int), pred.astype(int), len(task.classes)))
    return out


@torch.no_grad()
def predict(
    model: nn.Module,
    batches: Any,
    device: torch.device | str,
    *,
    spec: Mapping[str, Any] | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A task model's logits over batches of ``clip``, ``study_idx`` and ``labels`` (targets):
    ``(logits N x outputs, targets N, study index N)``, the model left in the mode it was in."""
    import contextlib

    from echoprime.training.batch import prepare_batch
    from echoprime.training.checkpoint import unwrap

    device = torch.device(device)
    m = unwrap(model)
    was = m.training
    m.eval()
    zs, ys, ss = [], [], []
    try:
        for raw in batches:
            b = prepare_batch(raw, spec, device)
            ctx = (
                torch.autocast(device.type, dtype=autocast_dtype)
                if autocast_dtype
                else contextlib.nullcontext()
            )
            with ctx:
                zs.append(m(b["video"])["task_logits"].float().cpu().numpy())
            ys.append(b["labels"].reshape(-1).cpu().numpy())
            ss.append(b["study_idx"].cpu().numpy())
    finally:
        m.train(was)
    if not zs:
        raise ValueError("no batches to evaluate")
    return np.concatenate(zs), np.concatenate(ys), np.concatenate(ss)


def head_json(task: Task, *, encoder_trained: bool, normalize: bool, metrics: Mapping[str, Any]) -> str:
    """The ``head.json`` of a head folder."""
    return json.dumps(
        {"task": task.to_dict(), "encoder": "own" if encoder_trained else "bundle", "normalize": normalize,
         "metrics": dict(metrics)},
        indent=2,
        sort_keys=True,
    )  # fmt: skip


# ------------------------------------------------------------------------------ heads in a bundle
HEAD_KIND = "task_head"


@dataclass
class LoadedHead:
    """A bundle's head, ready to run: the task, its linear layer and, when the encoder was tuned
    with it, its own copy of the video tower (None: it reads the bundle's embeddings)."""

    task: Task
    linear: nn.Linear
    encoder: nn.Module | None
    normalize: bool

    def logits(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``x`` the normalised clips, ``emb`` the bundle's embeddings of them -> ``B x outputs``."""
        if self.encoder is not None:
            e = self.encoder(x).float()
            emb = F.normalize(e, dim=-1) if self.normalize else e
        return self.linear(emb.float()).float()


def head_components(manifest: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The manifest's heads ``(component name, info)``, in name order (the order of their logits)."""
    comps = manifest.get("components", {})
    return sorted((k, v) for k, v in comps.items() if isinstance(v, dict) and v.get("kind") == HEAD_KIND)


def head_tasks(manifest: Mapping[str, Any]) -> list[Task]:
    """The tasks of a bundle's heads, in logit order (read from the manifest alone)."""
    return [Task.from_dict(info["task"]) for _, info in head_components(manifest)]


def load_heads(root: Any, manifest: Mapping[str, Any]) -> list[LoadedHead]:
    """Every head of a (verified) local bundle.

    Raises:
        echoprime.bundle.BundleError: a head whose weights do not fit its task.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    from echoprime.bundle import BundleError, load_module

    out = []
    for name, info in head_components(manifest):
        task = Task.from_dict(info["task"])
        state = load_file(str(Path(root) / info["file"]))
        w = state.get("weight")
        if w is None or "bias" not in state or w.ndim != 2 or w.shape[0] != task.outputs:
            raise BundleError(
                f"bundle {root}: head {name!r} ({info['file']}) is not a linear layer with {task.outputs} outputs"
            )
        linear = nn.Linear(int(w.shape[1]), task.outputs)
        linear.load_state_dict(state)
        enc = load_module(Path(root), info["encoder"]) if info.get("encoder") else None
        out.append(LoadedHead(task, linear.eval(), enc, bool(info.get("normalize", True))))
    return out


def write_bundle_with_head(
    bundle_root: Any,
    out: str,
    model: TaskModel,
    *,
    encoder_trained: bool,
    metrics: Mapping[str, Any],
    note: Mapping[str, Any] | None = None,
) -> str:
    """Write ``out``: the committed local bundle at ``bundle_root`` plus ``model``'s head (a head
    of the same task is replaced), with a new manifest; returns ``out``'s URI.

    Args:
        bundle_root: a verified local bundle (echoprime.bundle.fetch).
        out: the new bundle (folder or ``s3://``); never the bundle itself.
        model: the fitted task model.
        encoder_trained: store the model's tower with the head (it was tuned).
        metrics: the head's validation numbers (and the run's history) for ``head.json``.
        note: a line about the head for the manifest's ``extra.heads``.

    Raises:
        echoprime.bundle.BundleError: what was written does not load back.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from safetensors.torch import save_file

    from echoprime.bundle import MANIFEST, SIGNATURE, BundleWriter, publish, read_manifest

    root = Path(bundle_root)
    manifest = read_manifest(root, verify=False)
    task = model.task
    with tempfile.TemporaryDirectory(prefix="echoprime-head-") as tmp:
        stage = Path(tmp) / "bundle"
        # The manifest and its signature are the bundle's own (a bank's manifest.json is not).
        top = (MANIFEST, SIGNATURE)
        shutil.copytree(
            root, stage, ignore=lambda d, names: [n for n in names if n in top and Path(d) == root]
        )
        rel = f"{HEADS_DIR}/{task.folder}"
        head_dir = stage / rel
        shutil.rmtree(head_dir, ignore_errors=True)
        head_dir.mkdir(parents=True)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()},
            str(head_dir / "head.safetensors"),
        )
        comp: dict[str, Any] = {
            "kind": HEAD_KIND,
            "task": task.to_dict(),
            "file": f"{rel}/head.safetensors",
            "info": f"{rel}/head.json",
            "normalize": model.normalize,
        }
        if encoder_trained:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in model.video_encoder.state_dict().items()},
                str(head_dir / "encoder.safetensors"),
            )
            vinfo = manifest["components"]["video_encoder"]
            comp["encoder"] = {
                "model": vinfo["model"],
                "overrides": dict(vinfo.get("overrides") or {}),
                "file": f"{rel}/encoder.safetensors",
            }
        (head_dir / "head.json").write_text(
            head_json(task, encoder_trained=encoder_trained, normalize=model.normalize, metrics=metrics)
        )
        writer = BundleWriter(stage)
        writer.components = {
            **{k: v for k, v in manifest["components"].items() if k != f"head:{task.folder}"},
            f"head:{task.folder}": comp,
        }
        extra = dict(manifest.get("extra") or {})
        extra["heads"] = {**dict(extra.get("heads") or {}), task.name: dict(note or {})}
        writer.commit(spec=manifest["spec"], config=None, extra=extra)
        uri = publish(stage, out)
    from echoprime.bundle import fetch

    written = fetch(uri)
    heads = load_heads(written, read_manifest(written, verify=True))  # what was written loads back
    if not any(h.task.name == task.name for h in heads):
        from echoprime.bundle import BundleError

        raise BundleError(f"bundle {uri}: the head {task.name!r} did not load back")
    return uri
