"""``evaluate`` without Ray: the inputs' checks before embedding, and everything after it.

The job (``ray_jobs/evaluate.py``) checks its inputs here (:func:`check_inputs`), embeds every
clip of the three splits with an actor pool, and hands the numpy columns to
:func:`evaluate_embedded`, which runs the suite (:mod:`echoprime.eval.suite`) and writes
OUT/metrics.json, the plots and OUT/report.md.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from echoprime import storage
from echoprime.bundle import fetch, read_manifest, read_mil_table
from echoprime.config import EchoPrimeConfig
from echoprime.data.shards import read_manifest as read_shard_manifest
from echoprime.data.shards import read_split, validate_split
from echoprime.eval.document import format_headline, headline, jsonable, write_report
from echoprime.eval.plots import write_plots
from echoprime.eval.studies import StudySet
from echoprime.eval.suite import check_compatible, check_spec_compatible, evaluate_sets
from echoprime.inference import StudyInterpreter, load_bundle_parts

SPLITS = ("train", "val", "test")
"""The shard splits evaluate embeds (the probes fit on train, the thresholds are the bundle's)."""


def shard_label_sets(shards: str) -> tuple[set[str], set[str], bool]:
    """Phenotype names in the shards' label cells, view names, and whether hidden labels exist."""
    labels: set[str] = set()
    views: set[str] = set()
    hidden = True
    for split in SPLITS:
        files = validate_split(shards, split)
        loc = storage.locate(files[0])
        hidden = hidden and "hidden_labels" in pq.read_schema(loc.path, filesystem=loc.fs).names
        t = read_split(shards, split, columns=["labels", "view"])
        for cell in t.column("labels").to_pylist():
            labels.update(json.loads(cell or "{}"))
        views.update(v for v in t.column("view").to_pylist() if v is not None)
    return labels, views, hidden


def check_inputs(bundle: str, shards: str) -> tuple[Path, dict[str, Any], bool]:
    """Everything that can be wrong with a bundle and shards, checked before Ray starts: the
    bundle (fetched, every file hashed), then its preprocessing against the shards' (manifests
    only), then the label and view sets. Returns (the bundle's local root, its manifest, whether
    the shards carry hidden labels).

    Raises:
        echoprime.eval.suite.EvaluationInputError: different preprocessing or label sets.
        echoprime.bundle.BundleError, echoprime.data.shards.ShardError: unusable inputs.
    """
    root = fetch(bundle)
    manifest = read_manifest(root, verify=True)
    check_spec_compatible(bundle, manifest, shards, read_shard_manifest(shards).spec)  # before reading shards
    labels, views, with_hidden = shard_label_sets(shards)
    check_compatible(bundle, manifest, shards, read_shard_manifest(shards).spec, labels, views)
    return root, manifest, with_hidden


def evaluate_embedded(
    cfg: EchoPrimeConfig,
    bundle: str,
    shards: str,
    root: Path,
    manifest: dict[str, Any],
    cols: dict[str, dict[str, Any]],
    out: Path,
    *,
    n_boot: int,
    draws: int,
    started: float,
    embed_s: float,
) -> dict[str, Any]:
    """Run the suite on the embedded splits ``cols`` (``{split: numpy columns}``, plus ``"probe"``
    with ``stream.probe_studies``) and write OUT/metrics.json, the plots and OUT/report.md.

    Returns:
        The headline numbers (:func:`echoprime.eval.document.headline`) plus ``embed_s``,
        ``wall_s`` (from ``started``, a ``time.perf_counter()``) and ``out``.
    """
    sets = {s: StudySet.from_columns(c) for s, c in cols.items()}
    parts = load_bundle_parts(str(root), verify=False)
    interp = StudyInterpreter(parts, device="cpu")
    k = min(int(manifest.get("extra", {}).get("k", cfg.interpret.k)), len(parts.bank))
    table = read_mil_table(root / manifest["components"]["mil"]["table"])
    metrics, _ = evaluate_sets(
        parts,
        sets,
        table=table,
        embed_text=interp.embed_text if parts.text_encoder is not None else None,
        rng=np.random.default_rng(cfg.seed),
        k=k,
        n_boot=n_boot,
        draws=draws,
        mil_epochs=cfg.mil.epochs,
        seed=cfg.seed,
    )
    context = {
        "bundle": bundle,
        "shards": shards,
        "n_boot": n_boot,
        "seed": cfg.seed,
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "notes": method_notes(manifest, k, cfg.stream.probe_studies),
    }
    head = headline(metrics)
    metrics["headline"] = head
    metrics["context"] = context
    metrics["timings_s"].update(embed=round(embed_s, 1), total=round(time.perf_counter() - started, 1))
    plots = write_plots(metrics, out)
    (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    (out / "report.md").write_text(write_report(metrics, plots, context))
    return {
        **head,
        "embed_s": round(embed_s, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "out": str(out),
    }


def method_notes(manifest: dict[str, Any], k: int, n_probe: int = 0) -> list[str]:
    """The choices behind the numbers, stated in the report."""
    mil = manifest["components"]["mil"]
    return [
        f"Section embeddings come from the bundle's attention ({mil.get('model', mil.get('kind'))}), "
        "over unit-norm clip embeddings, with each clip's view from the bundle's classifier (as interpretation does).",
        f"kNN = the bank's {k} nearest training reports per section (echoprime.retrieval.predict_metrics_batch).",
        "Linear probes read the phenotype's own section embedding (the same vector the kNN reads); "
        "hidden diagnoses, which have no section, read the 15 section embeddings side by side.",
        *(
            [
                f"The probes are fitted on the train split and {n_probe} rendered training studies (stream.probe_studies)."
            ]
            if n_probe
            else []
        ),
        "An AUC needs at least 2 positives and 2 negatives in the test split; otherwise it is reported as not computable.",
        "One frame = a clip whose every frame is the clip's first (the encoder sees no motion).",
    ]


def summary_lines(res: dict[str, Any]) -> list[str]:
    """What ``echoprime evaluate`` prints of :func:`evaluate_embedded`'s numbers."""
    return [
        format_headline(res),
        f"evaluate: report {Path(res['out']) / 'report.md'}; embedding {res['embed_s']} s, total {res['wall_s']} s",
    ]
