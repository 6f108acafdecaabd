"""``fit-mil`` without Ray: the attention's training data and its fit, export and report.

The job (``ray_jobs/fit_mil.py``) embeds the train and val clips (or rendered stream studies
for train) with an actor pool and hands the numpy columns to :func:`fit_attention`, which embeds
each study's report section by section (:func:`section_texts_embeddings`), groups the clips into
bags (:func:`bags_from`), fits the gated attention (or keeps a table) and writes BUNDLE/mil/.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_model

from echoprime.bundle import write_mil_table
from echoprime.config import EchoPrimeConfig
from echoprime.eval.view_scores import visibility_alignment
from echoprime.inference import embed_reports
from echoprime.models import create_model
from echoprime.models.mil import TableMIL, export_table
from echoprime.models.tokenizer import ReportTokenizer
from echoprime.reports.labels import split_sections
from echoprime.staging import load_component, staged_components, write_component
from echoprime.synth.state import section_view_visibility
from echoprime.taxonomy import MIL_SECTIONS, VIEWS
from echoprime.training.mil_fit import StudyBag, UniformMIL, fit_mil, pad_bags, section_retrieval


def section_texts_embeddings(
    bundle: str, reports: dict[str, str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per study: (15 x D section text embeddings, 15 presence flags) with the staged text tower."""
    comps = staged_components(bundle)
    text = load_component(bundle, "text_encoder").eval()
    tok = ReportTokenizer.from_pretrained(Path(bundle) / comps["text_encoder"]["tokenizer"])
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    items = []
    for sid, rep in reports.items():
        bodies = split_sections(rep)
        for s, name in enumerate(MIL_SECTIONS):
            if name in bodies:
                body = bodies[name].replace("[SEP]", " ").strip()
                items.append((sid, s, f"{name}: {body} [SEP]"))
    e = embed_reports(text, tok, [t for _, _, t in items])
    dim = e.shape[1] if len(items) else None
    vecs = {(sid, s): v for (sid, s, _), v in zip(items, e, strict=True)}
    for sid in reports:
        mat = np.zeros((len(MIL_SECTIONS), dim or 1), np.float32)
        present = np.zeros(len(MIL_SECTIONS), bool)
        for s in range(len(MIL_SECTIONS)):
            if (sid, s) in vecs:
                mat[s], present[s] = vecs[(sid, s)], True
        out[sid] = (mat, present)
    return out


def bags_from(cols: dict[str, Any], sections: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[StudyBag]:
    """Group clip embeddings by study into StudyBags (views = the classifier's predictions)."""
    by: dict[str, list[int]] = {}
    for i, s in enumerate(cols["study_id"]):
        by.setdefault(str(s), []).append(i)
    bags = []
    for sid in sorted(by):  # a fixed order: Ray Data's block order is not, and fit_mil batches by it
        idx = by[sid]
        views = (
            cols["view_probs"][idx].argmax(1) if cols["view_probs"].shape[1] else np.zeros(len(idx), np.int64)
        )
        mat, present = sections[sid]
        bags.append(StudyBag(sid, cols["emb"][idx].astype(np.float32), views.astype(np.int64), mat, present))
    return bags


def fit_attention(
    cfg: EchoPrimeConfig, bundle: str, tr: dict[str, Any], va: dict[str, Any], *, started: float
) -> dict[str, Any]:
    """Fit the attention on the embedded train clips ``tr``, score it on ``va``, write BUNDLE/mil/;
    returns per-section retrieval numbers and the alignment with the visibility table
    (``wall_s`` counted from ``started``, a ``time.perf_counter()``)."""
    n_stream = cfg.mil.stream_studies
    reports = {
        str(s): str(r)
        for s, r in zip(
            np.concatenate([tr["study_id"], va["study_id"]]),
            np.concatenate([tr["report"], va["report"]]),
            strict=True,
        )
    }
    sections = section_texts_embeddings(bundle, reports)
    train_bags, val_bags = bags_from(tr, sections), bags_from(va, sections)
    torch.manual_seed(cfg.seed)
    truth = section_view_visibility()
    out = Path(bundle) / "mil"
    out.mkdir(parents=True, exist_ok=True)
    uniform = section_retrieval(UniformMIL(), val_bags)
    truth_table = section_retrieval(TableMIL(torch.from_numpy(truth)), val_bags)
    metrics: dict[str, Any] = {"val_uniform": uniform, "val_visibility_table": truth_table}
    if cfg.mil.mode == "learned":
        overrides = (
            {"embed_dim": int(tr["emb"].shape[1]), "hidden": cfg.mil.hidden}
            if cfg.mil.model == "section_attention_mil"
            else {}
        )
        module = create_model(cfg.mil.model, **overrides)
        history = fit_mil(module, train_bags, epochs=cfg.mil.epochs, lr=cfg.mil.lr, seed=cfg.seed)
        learned = section_retrieval(module, val_bags)
        table = (
            module.table() if hasattr(module, "table") else export_table(module, [pad_bags(train_bags)[:3]])
        ).numpy()
        table_res = section_retrieval(TableMIL(torch.from_numpy(table)), val_bags)
        save_model(module, str(out / "mil.safetensors"))
        write_component(
            out,
            "mil",
            {
                "kind": "learned",
                "model": cfg.mil.model,
                "overrides": overrides,
                "file": "mil/mil.safetensors",
                "table": "mil/mil_table.csv",
            },
        )
        metrics.update(
            val_learned=learned, val_learned_table=table_res, loss_first=history[0], loss_last=history[-1]
        )
    else:
        # No learning: the generator's visibility table (synthetic data), or uniform weights.
        table = truth if cfg.mil.mode == "table" else np.ones_like(truth)
        write_component(out, "mil", {"kind": "table", "table": "mil/mil_table.csv"})
    write_mil_table(out / "mil_table.csv", np.clip(table, 0.0, 1.0))
    align = visibility_alignment(table, truth)
    metrics["alignment_with_visibility"] = align
    metrics["table"] = {
        "sections": list(MIL_SECTIONS),
        "views": list(VIEWS),
        "learned": np.round(table, 4).tolist(),
        "visibility": truth.tolist(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    res = {
        "mode": cfg.mil.mode,
        "train_studies": len(train_bags),
        "stream_studies": n_stream,
        "val_studies": len(val_bags),
        "val_section_r@1_uniform": round(uniform["r@1"], 4),
        "val_section_r@1_visibility_table": round(truth_table["r@1"], 4),
        "alignment_auc": round(align["mean_auc"], 3),
        "alignment_correlation": round(align["mean_correlation"], 3),
        "alignment_spearman": round(align["mean_spearman"], 3),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    if cfg.mil.mode == "learned":
        res["val_section_r@1_learned"] = round(metrics["val_learned"]["r@1"], 4)
        res["val_section_r@1_learned_table"] = round(metrics["val_learned_table"]["r@1"], 4)
    return res


def summary_line(res: dict[str, Any]) -> str:
    """What ``echoprime fit-mil`` prints of its numbers."""
    return "fit-mil: " + ", ".join(f"{k} {v}" for k, v in res.items())
