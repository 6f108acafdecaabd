"""Fit the anatomical attention (multiple-instance learning over a study's videos, per section).

Embeds every clip of the train and val splits (or, with ``mil.stream_studies``, of that many
rendered synthetic studies instead of the train split) with the pretrained video encoder and the
trained view classifier (Ray Data, an actor pool), embeds each study's report section by section with
the text tower, then trains a gated attention module so that each section's attention-pooled
study embedding retrieves that section's own text. The learned module is also exported as the
release's 15 x 11 section x view table, and compared with the synthetic generator's visibility
table when the shards carry synthetic studies.

Writes BUNDLE/mil/{mil.safetensors, mil_table.csv, metrics.json, component.json}.

Example:
  echoprime fit-mil --shards shards --bundle bundle --config configs/tiny-cpu.yaml
  echoprime fit-mil ... mil.mode=table     # skip learning: keep only the table form
  echoprime fit-mil ... mil.stream_studies=2000   # fit on 2000 rendered studies
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shards", required=True, help="ingest output (train and val splits)")
    p.add_argument(
        "--bundle", required=True, help="the bundle folder being built (pretrained/ and views/ done)"
    )
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def section_texts_embeddings(
    bundle: str, reports: dict[str, str]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per study: (15 x D section text embeddings, 15 presence flags) with the staged text tower."""
    import torch
    import torch.nn.functional as F

    from echoprime.models.tokenizer import ReportTokenizer
    from echoprime.reports.labels import split_sections
    from echoprime.staging import load_component, staged_components
    from echoprime.taxonomy import MIL_SECTIONS

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
    dim = None
    vecs: dict[tuple[str, int], np.ndarray] = {}
    with torch.no_grad():
        for i in range(0, len(items), 256):
            chunk = items[i : i + 256]
            enc = tok([t for _, _, t in chunk])
            e = F.normalize(
                text(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]).float(), dim=-1
            ).numpy()
            dim = e.shape[1]
            for (sid, s, _), v in zip(chunk, e, strict=True):
                vecs[(sid, s)] = v
    for sid in reports:
        mat = np.zeros((len(MIL_SECTIONS), dim or 1), np.float32)
        present = np.zeros(len(MIL_SECTIONS), bool)
        for s in range(len(MIL_SECTIONS)):
            if (sid, s) in vecs:
                mat[s], present[s] = vecs[(sid, s)], True
        out[sid] = (mat, present)
    return out


def bags_from(cols: dict[str, Any], sections: dict[str, tuple[np.ndarray, np.ndarray]]):
    """Group clip embeddings by study into StudyBags (views = the classifier's predictions)."""
    from echoprime.training.mil_fit import StudyBag

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


def run_fit_mil(
    cfg: EchoPrimeConfig, shards: str, bundle: str, *, keep_embeddings: dict | None = None
) -> dict[str, Any]:
    """Fit the attention; returns per-section retrieval numbers and the alignment with the visibility table.

    Args:
        keep_embeddings: a dict that receives the embedded clips (``{"train": cols, "val": cols}``;
            "train" holds the rendered studies' clips with ``mil.stream_studies``) so that a
            following build-bank in the same process need not embed the val clips again.
    """
    import torch

    from echoprime.bundle import write_mil_table
    from echoprime.data.shards import validate_split
    from echoprime.data.stream import check_stream_seed
    from echoprime.eval.views import visibility_alignment
    from echoprime.models import create_model
    from echoprime.models.mil import TableMIL, export_table
    from echoprime.staging import spec_of, write_component
    from echoprime.synth.state import section_view_visibility
    from echoprime.taxonomy import MIL_SECTIONS, VIEWS
    from echoprime.training.mil_fit import UniformMIL, fit_mil, pad_bags, section_retrieval
    from ray_jobs._datasets import stream_dataset
    from ray_jobs._embed import embed_dataset, embed_splits
    from ray_jobs.common import configure_ray_data, ray_session

    t0 = time.perf_counter()
    validate_split(shards, "train"), validate_split(shards, "val")  # before Ray starts: fail fast
    n_stream = cfg.mil.stream_studies
    if n_stream:
        check_stream_seed(cfg, shards)
    with ray_session(cfg.ray):
        configure_ray_data()
        emb = embed_splits(cfg, shards, ("val",) if n_stream else ("train", "val"), bundle, with_views=True)
        if n_stream:
            # The attention is a small model on frozen embeddings, but 243 stored studies leave
            # each section x view weight to a handful of examples: fit it on rendered studies.
            stream = stream_dataset(cfg, spec_of(bundle).to_dict(), n_stream)
            emb["train"] = embed_dataset(cfg, stream, bundle, with_views=True)
    tr, va = emb["train"], emb["val"]
    if keep_embeddings is not None:
        keep_embeddings.update(emb)
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
        from safetensors.torch import save_model

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
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    if cfg.mil.mode == "learned":
        res["val_section_r@1_learned"] = round(metrics["val_learned"]["r@1"], 4)
        res["val_section_r@1_learned_table"] = round(metrics["val_learned_table"]["r@1"], 4)
    return res


def run(args: argparse.Namespace) -> int:
    from ray_jobs.common import resolve_config

    res = run_fit_mil(resolve_config(args), args.shards, args.bundle)
    print("fit-mil: " + ", ".join(f"{k} {v}" for k, v in res.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["fit-mil", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
