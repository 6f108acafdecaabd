"""``probe`` without Ray: its targets, its study sets, its document, its head and its summary.

The job (``ray_jobs/probe.py``) checks the inputs and chooses the targets from the train split's
labels (:func:`probe_inputs`), embeds every clip with an actor pool of :class:`EmbedWithBundle`,
and hands the columns here: :func:`study_sets` per split, the probes (:func:`echoprime.eval.dataset_probe.run_all`),
:func:`probe_document`, then :func:`write_outputs` (plots, the optional head bundle,
metrics.json, report.md). :func:`summary_lines` is what ``echoprime probe`` prints.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from echoprime import storage
from echoprime.bundle import fetch, manifest_sha256, read_manifest
from echoprime.config import EchoPrimeConfig
from echoprime.data.shards import read_manifest as read_shard_manifest
from echoprime.data.shards import validate_split
from echoprime.eval import dataset_probe as dp
from echoprime.inference import Towers, load_bundle_parts
from echoprime.taxonomy import FINDING_BY_NAME
from echoprime.training.finetune import check_spec
from echoprime.training.heads import Task, TaskModel, write_bundle_with_head

SPLITS = ("train", "val", "test")


def bundle_data_config(cfg: EchoPrimeConfig, bundle: str) -> EchoPrimeConfig:
    """``cfg`` with its ``data`` section at the bundle's preprocessing (its ``preprocess.json``,
    whatever the config says): what ``probe --input`` ingests a public dataset with."""
    spec = json.loads((fetch(bundle) / "preprocess.json").read_text())
    data = cfg.data.model_dump() | {
        k: spec[k] for k in ("size", "frames", "stride", "mean", "std", "crop_fraction")
    }
    data["mask_sector"] = bool(spec.get("mask", data["mask_sector"]))
    return cfg.model_copy(update={"data": type(cfg.data).model_validate(data)})


def train_targets(train_files: list[str], targets: str) -> dict[str, str]:
    """The targets to probe (``"auto"`` or comma-separated label keys), from the train split's
    labels alone, so that a wrong name fails before any embedding.

    Raises:
        ValueError: a wanted target no train study has (:func:`~echoprime.eval.dataset_probe.choose_targets`).
    """
    ids, labels = [], []
    for f in train_files:
        loc = storage.locate(f)
        t = pq.read_table(loc.path, filesystem=loc.fs, columns=["study_id", "labels"])
        ids += t.column("study_id").to_pylist()
        labels += t.column("labels").to_pylist()
    wanted = None if targets == "auto" else [t.strip() for t in targets.split(",") if t.strip()]
    return dp.choose_targets(dp.study_features(np.zeros((len(ids), 1)), ids, labels), wanted)


def count_rows(files: Mapping[str, list[str]]) -> int:
    """Clip rows in the shard ``files`` (split -> files), from the Parquet footers."""
    return sum(pq.ParquetFile(loc.path, filesystem=loc.fs).metadata.num_rows
               for fl in files.values() for loc in map(storage.locate, fl))  # fmt: skip


def probe_inputs(
    bundle: str, shards: str, fit_shards: str | None, targets: str
) -> tuple[dict[str, list[str]], Path, dict[str, str]]:
    """Everything checked before any embedding: the split files (train and val of ``fit_shards``
    or ``shards``, test of ``shards``), the fetched bundle (manifest verified) and the targets.

    Raises:
        ValueError: shards whose preprocessing differs from the bundle's, a missing split or a
            wanted target no train study has.
    """
    fit = fit_shards or shards  # the transfer protocol fits on other shards than it scores on
    files = {s: validate_split(fit, s) for s in ("train", "val")} | {"test": validate_split(shards, "test")}
    root = fetch(bundle)
    bman = read_manifest(root, verify=True)
    for sh in dict.fromkeys((fit, shards)):
        check_spec(bundle, bman, dict(read_shard_manifest(sh).spec))
    return files, root, train_targets(files["train"], targets)


class EmbedWithBundle:
    """Ray Data UDF: shard rows -> unit video embeddings by the bundle's tower (the interpreter's
    own normalisation and forward; one model per actor)."""

    def __init__(self, bundle: str, split_of: dict[str, str], threads: int = 1, tokens: bool = False) -> None:
        torch.set_num_threads(threads)
        self.split_of = split_of  # shard file -> split
        self.tokens = tokens  # also the tower's last tokens (float16), for the attentive probe
        parts = load_bundle_parts(bundle, components={"video_encoder"})
        # unit embeddings whatever the bundle pools (a converted release pools raw ones)
        self.towers = Towers(parts.spec, parts.video_encoder, normalize=True, device="cpu")

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = self.towers.normalise(np.asarray(batch["clip"]), batch["n_valid"])
        split = np.array([self.split_of[str(p)] for p in batch["path"]])
        got = {"study_id": batch["study_id"], "labels": batch["labels"], "split": split}
        if self.tokens:
            emb, tok = self.towers.embed_with_tokens(x)
            got["tokens"] = tok.numpy().astype(np.float16)
        else:
            emb = self.towers.embed(x)
        return got | {"emb": emb.numpy()}


def study_sets(cols: Mapping[str, np.ndarray]) -> dict[str, dp.Studies]:
    """Embedded clip columns (``study_id``, ``labels``, ``split``, ``emb``) -> per split, its
    studies' mean embeddings and labels."""
    sets = {}
    for s in SPLITS:
        m = cols["split"] == s
        sets[s] = dp.study_features(cols["emb"][m], list(cols["study_id"][m]), list(cols["labels"][m]))
    return sets


def probe_document(
    cfg: EchoPrimeConfig,
    bundle: str,
    root: Path,
    shards: str,
    sets: Mapping[str, dp.Studies],
    n_clips: int,
    metrics: dict[str, Any],
    *,
    dataset: str | None,
    fit_shards: str | None,
    n_boot: int,
    embed_s: float,
    fit_s: float,
) -> dict[str, Any]:
    """The metrics document of a probe run (before its plots and head)."""
    return {
        "dataset": dataset,
        "shards": shards,
        "protocol": "own splits"
        if fit_shards is None
        else f"transfer: fitted on {fit_shards} (train, val), scored on {shards} (test)",
        "bundle_name": Path(str(bundle).rstrip("/")).name,
        "bundle_sha256": manifest_sha256(str(root)),
        "seed": cfg.seed,
        "n_boot": n_boot,
        "studies": {s: len(v.ids) for s, v in sets.items()},
        "clips": n_clips,
        "targets": metrics,
        "published": dp.PUBLISHED.get(dataset or "", []),
        "embed_s": round(embed_s, 1),
        "fit_s": round(fit_s, 1),
    }


def write_head(
    root: Path,
    head_out: str,
    head_target: str,
    metrics: Mapping[str, Any],
    fitted: Mapping[str, Any],
    shards: str,
) -> dict[str, Any]:
    """Write ``head_out``: the bundle at ``root`` plus the linear probe of ``head_target`` as a
    head (interpretation and Serve then answer with it); returns the document's ``head`` entry.

    Raises:
        ValueError: ``head_target`` has no fitted linear probe.
    """
    if head_target not in fitted:
        raise ValueError(
            f"--head-target {head_target!r} has no fitted linear probe (probed: {sorted(fitted) or 'none'})"
        )
    kind = metrics[head_target]["kind"]
    finding = FINDING_BY_NAME.get(head_target)
    task = Task(
        head_target, kind, head_target, unit=dp.UNITS.get(head_target, ""),
        section=finding.section if finding is not None else ("Left Ventricle" if head_target in dp.UNITS else None),
    )  # fmt: skip
    w, b = dp.linear_weights(fitted[head_target])
    encoder = load_bundle_parts(str(root), verify=False, components=["video_encoder"]).video_encoder
    model = TaskModel(encoder, task, w.shape[1], normalize=True)
    with torch.no_grad():
        model.head.weight.copy_(torch.from_numpy(w).float())
        model.head.bias.copy_(torch.from_numpy(b).float())
    score = {k: v for k, v in metrics[head_target]["linear"].items() if isinstance(v, (int, float))}
    uri = write_bundle_with_head(
        root, head_out, model, encoder_trained=False, metrics={"probe": "linear", **score},
        note={"probe": "linear", "shards": shards, **score},
    )  # fmt: skip
    return {"target": head_target, "bundle": uri, "bundle_name": Path(uri.rstrip("/")).name}


def write_outputs(
    doc: dict[str, Any],
    out_dir: Path,
    root: Path,
    fitted: Mapping[str, Any],
    *,
    head_out: str | None,
    head_target: str,
) -> None:
    """Add the plots (and, with ``head_out``, the head bundle) to ``doc``, then write
    OUT/metrics.json and OUT/report.md."""
    doc["plots"] = dp.write_plots(doc["targets"], out_dir)
    if head_out is not None:
        doc["head"] = write_head(root, head_out, head_target, doc["targets"], fitted, doc["shards"])
    (out_dir / "metrics.json").write_text(dp.to_json(doc))
    (out_dir / "report.md").write_text(dp.report_markdown(doc))


def summary_lines(doc: Mapping[str, Any], out: str) -> list[str]:
    """What ``echoprime probe`` prints: counts and times, one line per target, the head, the report."""
    lines = [
        f"probe: {doc['clips']} clips, studies train/val/test {doc['studies']['train']}/{doc['studies']['val']}/"
        f"{doc['studies']['test']} (embedded in {doc['embed_s']} s, probes fitted in {doc['fit_s']} s)"
    ]
    for key, r in doc["targets"].items():
        if not r.get("computable"):
            lines.append(f"  {key:<24} n/a: {r.get('reason')}")
        elif r["kind"] == "regression":
            u = dp.UNITS.get(key, "")
            att = f"attentive {r['attentive']['mae']:.2f} / " if "attentive" in r else ""
            lines.append(
                f"  {key:<24} MAE {att}linear {r['linear']['mae']:.2f} / kNN {r['knn']['mae']:.2f} / train mean "
                f"{r['mean']['mae']:.2f} {u} (test {r['n_test']} studies; linear R² {r['linear']['r2']:.2f})"
            )
        else:
            att = (
                f"attentive {r['attentive']['auc']:.3f} / "
                if r.get("attentive", {}).get("computable")
                else ""
            )
            lines.append(
                f"  {key:<24} AUC {att}linear {r['linear']['auc']:.3f} / kNN {r['knn']['auc']:.3f} (test {r['n_test']} studies)"
                if r["linear"].get("computable") and r["knn"].get("computable")
                else f"  {key:<24} n/a on test: {r['linear'].get('reason')}"
            )
    if doc.get("head"):
        lines.append(f"probe: the linear {doc['head']['target']} probe is a head of {doc['head']['bundle']}")
    lines.append(f"probe: report in {Path(out) / 'report.md'} ({doc['wall_s']} s)")
    return lines
