"""The whole evaluation of a bundle on embedded splits (no Ray): the library half of
``echoprime evaluate``.

``ray_jobs/evaluate.py`` embeds the clips of the train, val and test splits with Ray Data, then
calls :func:`evaluate_sets` with the bundle's parts. Everything here is deterministic given the
``rng``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from echoprime.eval.ablation import mil_sections, run_ablation
from echoprime.eval.crossmodal import video_text_retrieval
from echoprime.eval.graded import graded_evaluation
from echoprime.eval.studies import StudySet
from echoprime.eval.tasks import binary_result, clinical_tasks, hidden_tasks, regression_result
from echoprime.eval.view_scores import attention_tables, view_metrics
from echoprime.eval.zeroshot import zero_shot_scores, zero_shot_values
from echoprime.taxonomy import MIL_SECTIONS, PHENOTYPE_NAMES, VIEWS

EmbedText = Callable[[Sequence[str]], np.ndarray]
SPEC_KEYS = ("size", "frames", "stride", "mean", "std", "crop_fraction", "mask")


class EvaluationInputError(ValueError):
    """A bundle and shards that cannot be evaluated together; the message names both."""


def check_compatible(
    bundle: str,
    bundle_manifest: Mapping[str, Any],
    shards: str,
    shard_spec: Mapping[str, Any],
    shard_labels: set[str],
    shard_views: set[str],
) -> None:
    """Refuse a bundle and shards made with different preprocessing or label sets.

    Args:
        bundle: the bundle's URI (for the message).
        bundle_manifest: its manifest (``spec`` and ``label_sets``).
        shards: the shards' URI (for the message).
        shard_spec: the shard manifest's preprocessing spec.
        shard_labels: every phenotype name found in the shards' ``labels`` cells.
        shard_views: every view named in the shards' ``view`` column.

    Raises:
        EvaluationInputError: naming the bundle, the shards, and the differing keys or names.
    """
    check_spec_compatible(bundle, bundle_manifest, shards, shard_spec)
    sets = bundle_manifest.get("label_sets", {})
    phenos, views = set(sets.get("phenotypes", PHENOTYPE_NAMES)), set(sets.get("views", VIEWS))
    unknown_labels, unknown_views = sorted(shard_labels - phenos), sorted(shard_views - views)
    if unknown_labels or unknown_views or not (shard_labels & phenos):
        raise EvaluationInputError(
            f"bundle {bundle} and shards {shards} have different label sets: shards label "
            f"{sorted(shard_labels)[:8]}{'...' if len(shard_labels) > 8 else ''} (unknown to the bundle: "
            f"{unknown_labels or 'none'}), views unknown to the bundle: {unknown_views or 'none'}; "
            f"the bundle has phenotypes {sorted(phenos)[:8]}... and views {sorted(views)}"
        )


def check_spec_compatible(
    bundle: str, bundle_manifest: Mapping[str, Any], shards: str, shard_spec: Mapping[str, Any]
) -> None:
    """The preprocessing half of :func:`check_compatible`: manifests only, so it runs first.

    Raises:
        EvaluationInputError: naming the bundle, the shards and each differing spec key.
    """
    spec = bundle_manifest.get("spec", {})
    diffs = [
        f"{k}: bundle {spec.get(k)!r} vs shards {shard_spec.get(k)!r}"
        for k in SPEC_KEYS
        if not _same(spec.get(k), shard_spec.get(k))
    ]
    if diffs:
        raise EvaluationInputError(
            f"bundle {bundle} and shards {shards} were preprocessed differently ({'; '.join(diffs)}); "
            f"ingest the archive again with the bundle's spec (its preprocess.json)"
        )


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def section_text_embeddings(
    embed_text: EmbedText, reports: Sequence[str], batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Each report's 15 MIL section texts embedded: ``B x 15 x D`` (zeros where absent) and ``B x 15`` presence."""
    from echoprime.reports.labels import split_sections

    items = []
    for i, rep in enumerate(reports):
        bodies = split_sections(rep)
        items += [
            (i, s, f"{name}: {bodies[name]} [SEP]") for s, name in enumerate(MIL_SECTIONS) if name in bodies
        ]
    if not items:
        raise ValueError("no report holds any of the 15 MIL sections")
    vecs = np.concatenate(
        [embed_text([t for _, _, t in items[j : j + batch]]) for j in range(0, len(items), batch)]
    )
    out = np.zeros((len(reports), len(MIL_SECTIONS), vecs.shape[1]), np.float32)
    present = np.zeros((len(reports), len(MIL_SECTIONS)), bool)
    for (i, s, _), v in zip(items, vecs, strict=True):
        out[i, s], present[i, s] = v, True
    return out, present


def fit_attention(
    train: StudySet, embed_text: EmbedText, *, epochs: int = 40, lr: float = 3e-3, seed: int = 0
) -> torch.nn.Module:
    """Fit a :class:`SectionAttentionMIL` on the training split's frozen embeddings (as ``fit-mil`` does)."""
    from echoprime.models.mil import SectionAttentionMIL
    from echoprime.training.mil_fit import StudyBag, fit_mil

    text, present = section_text_embeddings(embed_text, train.reports)
    views = train.pred_views
    bags = [
        StudyBag(sid, train.emb[train.clip_study == b], views[train.clip_study == b], text[b], present[b])
        for b, sid in enumerate(train.study_ids)
    ]
    torch.manual_seed(seed)
    module = SectionAttentionMIL(embed_dim=train.emb.shape[1])
    fit_mil(module, bags, epochs=epochs, lr=lr, seed=seed)
    return module.eval()


def evaluate_sets(
    parts: Any,
    sets: Mapping[str, StudySet],
    *,
    table: np.ndarray | None,
    embed_text: EmbedText | None,
    rng: np.random.Generator,
    k: int,
    n_boot: int = 1000,
    draws: int = 5,
    mil_epochs: int = 40,
    seed: int = 0,
    threads: int | None = 1,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every section of the evaluation report.

    Args:
        parts: the bundle's :class:`~echoprime.inference.InterpreterParts` (``mil``, ``bank``,
            ``thresholds``).
        sets: ``{"train", "val", "test"}`` :class:`StudySet`, optionally ``"probe"`` (the set
            the linear probes are fitted on: the train split and rendered training studies;
            :func:`~echoprime.eval.tasks.clinical_tasks`) (test and train with first-frame
            embeddings for the ablation).
        table: the bundle's ``15 x 11`` section x view table.
        embed_text: report texts -> unit embeddings; None when the bundle has no text encoder
            (retrieval, zero-shot and the attention fit are then reported as skipped).
        rng: all randomness (bootstrap, drawn videos).
        k: kNN neighbours.
        n_boot: bootstrap resamples.
        draws: single-video draws of the ablation.
        mil_epochs: epochs of the attention module fitted when the bundle has none.
        seed: torch seed of that fit.
        threads: BLAS and torch threads while it runs (restored after); None leaves them. The
            work is hundreds of small fits, where threads cost more than they give: one probe
            fit took 30 ms with one thread and 0.1-2.5 s with two on a loaded 2-core machine.

    Returns:
        ``(metrics, raw)``: the JSON-able metrics, and arrays for the plots.
    """
    from threadpoolctl import threadpool_limits

    if threads is None:
        return _evaluate_sets(parts, sets, table=table, embed_text=embed_text, rng=rng, k=k, n_boot=n_boot,
                              draws=draws, mil_epochs=mil_epochs, seed=seed)  # fmt: skip
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            return _evaluate_sets(parts, sets, table=table, embed_text=embed_text, rng=rng, k=k, n_boot=n_boot,
                                  draws=draws, mil_epochs=mil_epochs, seed=seed)  # fmt: skip
    finally:
        torch.set_num_threads(before)


def _evaluate_sets(
    parts: Any,
    sets: Mapping[str, StudySet],
    *,
    table: np.ndarray | None,
    embed_text: EmbedText | None,
    rng: np.random.Generator,
    k: int,
    n_boot: int,
    draws: int,
    mil_epochs: int,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    from echoprime.models.mil import SectionAttentionMIL, TableMIL, export_table

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    tr, te = sets["train"], sets["test"]
    secs = {name: mil_sections(parts.mil, s.padded()) for name, s in sets.items()}
    synthetic = te.hidden is not None
    metrics: dict[str, Any] = {
        "splits": {name: {"studies": len(s), "clips": int(len(s.clip_study))} for name, s in sets.items()},
        "k": k,
        "synthetic": synthetic,
    }
    raw: dict[str, Any] = {}
    if embed_text is not None:
        report_emb = embed_text(te.reports)
        metrics["retrieval"] = video_text_retrieval(te.emb, te.clip_study, report_emb, te.study_mean())
    else:
        metrics["retrieval"] = {"skipped": "the bundle has no text encoder"}
    timings["retrieval"] = time.perf_counter() - t0

    t = time.perf_counter()
    metrics["clinical"], raw["clinical"] = clinical_tasks(
        secs, sets, parts.bank, k=k, thresholds=parts.thresholds or {}, rng=rng, n_boot=n_boot
    )
    metrics["calibration"] = pooled_calibration(raw["clinical"])
    metrics["hidden"] = hidden_tasks(sets, secs, rng=rng, n_boot=n_boot)
    timings["clinical"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics["graded"] = graded_evaluation(parts, secs, sets, k=k)
    timings["graded"] = time.perf_counter() - t

    t = time.perf_counter()
    metrics["zero_shot"] = zero_shot_section(secs["test"], te, metrics["clinical"], embed_text, rng, n_boot)
    timings["zero_shot"] = time.perf_counter() - t

    t = time.perf_counter()
    attention, note = (
        (parts.mil, "the bundle's") if isinstance(parts.mil, SectionAttentionMIL) else (None, "")
    )
    if attention is None and embed_text is not None:
        attention = fit_attention(tr, embed_text, epochs=mil_epochs, seed=seed)
        note = f"fitted here on the train split ({mil_epochs} epochs): the bundle has none"
        if not all(bool(torch.isfinite(p).all()) for p in attention.parameters()):
            attention, note = None, "the fit on the train split diverged (non-finite weights)"
    elif attention is None:
        note = "not present in this bundle (and no text encoder to fit one)"
    timings["attention_fit"] = time.perf_counter() - t

    t = time.perf_counter()
    from echoprime.synth.state import section_view_visibility

    truth = section_view_visibility() if synthetic else None
    modules = {
        "table": TableMIL(torch.from_numpy(np.asarray(table, np.float32))) if table is not None else None,
        "attention": attention,
        "oracle": TableMIL(torch.from_numpy(truth)) if truth is not None else None,
    }
    metrics["ablation"] = run_ablation(sets, parts.bank, k=k, modules=modules, rng=rng, draws=draws)
    metrics["ablation"]["variants"]["attention"]["note"] = note
    timings["ablation"] = time.perf_counter() - t

    exported = export_table(attention, [tr.padded()]).numpy() if attention is not None else None
    metrics["views"] = view_metrics(te.true_views, te.pred_views)
    metrics["attention_tables"] = attention_tables(
        {"bundle table (mil_table.csv)": table, "attention module (exported)": exported}, truth
    )
    metrics["timings_s"] = {k2: round(v, 2) for k2, v in timings.items()}
    return metrics, raw


def pooled_calibration(raw: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """ECE and reliability curve of each method's binary probabilities pooled over phenotypes."""
    from echoprime.eval.calibration import expected_calibration_error, reliability_curve
    from echoprime.taxonomy import BINARY_PHENOTYPES

    out: dict[str, Any] = {}
    for method in ("knn", "linear"):
        ys = [raw[p]["y"] for p in BINARY_PHENOTYPES if p in raw and method in raw[p]]
        ps = [raw[p][method] for p in BINARY_PHENOTYPES if p in raw and method in raw[p]]
        if not ys:
            out[method] = {"computable": False, "reason": f"no {method} probabilities"}
            continue
        y, p = np.concatenate(ys), np.clip(np.concatenate(ps), 0.0, 1.0)
        keep = ~np.isnan(y) & ~np.isnan(p)
        out[method] = {
            "computable": bool(keep.any()),
            "ece": expected_calibration_error(y, p) if keep.any() else None,
            "reliability": reliability_curve(y, p),
            "n": int(keep.sum()),
            "phenotypes": len(ys),
        }
    return out


def zero_shot_section(
    test_secs: np.ndarray,
    test: StudySet,
    clinical: Mapping[str, Any],
    embed_text: EmbedText | None,
    rng: np.random.Generator,
    n_boot: int,
) -> dict[str, Any]:
    """Zero-shot AUC (binaries) and MAE (regressions) next to the kNN numbers of the same studies."""
    if embed_text is None:
        return {"skipped": "the bundle has no text encoder"}
    out: dict[str, Any] = {}
    for name, s in zero_shot_scores(test_secs, embed_text).items():
        out[name] = {
            "kind": "binary",
            "zero_shot": binary_result(test.label(name), s, rng=rng, calibrate=False, n_boot=n_boot),
            "knn": clinical[name]["knn"],
        }
    for name, v in zero_shot_values(test_secs, embed_text).items():
        out[name] = {
            "kind": "regression",
            "zero_shot": regression_result(test.label(name), v, rng=rng, n_boot=n_boot),
            "knn": clinical[name]["knn"],
        }
    from echoprime.eval.tasks import summarise

    out["summary"] = summarise(out, methods=("zero_shot", "knn"))
    return out
