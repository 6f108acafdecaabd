"""Evaluate a committed bundle on the held-out studies of ingested shards.

Ray Data embeds every clip of the train, val and test splits with an actor pool (each actor
loads the bundle's video encoder and view classifier once; it embeds each clip and a copy of
the clip made of its first frame only, for the ablation). The driver then computes, without
Ray (echoprime.eval.suite):

  retrieval      video->text and text->video recall@1/5/10 and median rank, video and study level
  clinical       the 21 phenotypes: kNN through the bank and a linear probe; AUC with a bootstrap
                 95 % interval, sensitivity/specificity at fitted thresholds, calibration; MAE
  hidden         diagnoses never written in a report (synthetic cohorts): kNN and linear probes
  ablation       one frame / one video / mean / section x view table / attention module (/ oracle)
  views          accuracy, confusion matrix; learned attention next to the visibility table
  zero-shot      phenotypes from report-text prompts, next to kNN

Writes OUT/metrics.json, OUT/*.png and OUT/report.md, and prints the headline table.

Example:
  echoprime evaluate --bundle quickstart-out/bundle --shards quickstart-out/shards --out quickstart-out/eval
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.config import EchoPrimeConfig

SPLITS = ("train", "val", "test")
PASS_THROUGH = ("study_id", "video_id", "view", "labels", "hidden_labels", "report")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="a committed model bundle (folder or s3://)")
    p.add_argument("--shards", required=True, help="ingest output with train, val and test splits")
    p.add_argument("--out", default="evaluation", help="output folder (default: ./evaluation)")
    p.add_argument(
        "--boot", type=int, default=1000, help="bootstrap resamples of each interval (default 1000)"
    )
    p.add_argument(
        "--draws", type=int, default=5, help="single-video draws averaged in the ablation (default 5)"
    )
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


class EmbedForEval:
    """Ray Data UDF: shard (or stream) rows -> clip embedding, first-frame embedding (``static``),
    view probabilities."""

    def __init__(self, bundle: str, columns: tuple[str, ...], static: bool = True) -> None:
        import torch

        from echoprime.interpret import load_bundle_parts

        torch.set_num_threads(1)  # one intra-op thread per actor: several actors share the cores
        self.parts = load_bundle_parts(bundle, verify=False, components={"video_encoder", "view_classifier"})
        self.columns, self.static = columns, static

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from echoprime.eval.studies import embed_clip_batch

        out = embed_clip_batch(
            self.parts.video_encoder,
            self.parts.view_classifier,
            self.parts.spec,
            np.asarray(batch["clip"]),
            [int(v) for v in batch["n_valid"]] if "n_valid" in batch else None,  # stream rows: all real
            static=self.static,
        )
        return {**{c: batch[c] for c in self.columns}, **out}


def shard_label_sets(shards: str) -> tuple[set[str], set[str], bool]:
    """Phenotype names in the shards' label cells, view names, and whether hidden labels exist."""
    import pyarrow.parquet as pq

    from echoprime import storage
    from echoprime.data.shards import read_split, validate_split

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


def embed_for_eval(
    cfg: EchoPrimeConfig, shards: str, bundle: str, with_hidden: bool
) -> dict[str, dict[str, Any]]:
    """Every clip of the three splits through one Ray Data pipeline: ``{split: numpy columns}``."""
    import ray

    from echoprime import storage
    from echoprime.data.shards import validate_split
    from ray_jobs._embed import embed_dataset

    owner: dict[str, str] = {}
    for split in SPLITS:
        for f in validate_split(shards, split):
            owner[storage.locate(f).path] = split
    locs = [storage.locate(f) for f in owner]
    columns = tuple(c for c in PASS_THROUGH if with_hidden or c != "hidden_labels")
    n_actors = max(1, min(cfg.ingest.decode_actors, 2))
    # One read block per file (V1 datasource, configure_ray_data); a shard set of only a few files
    # would leave actors idle, so ask for at least four blocks per actor.
    ds = ray.data.read_parquet([loc.path for loc in locs], filesystem=locs[0].fs, include_paths=True,
                               override_num_blocks=max(len(locs), 4 * n_actors))  # fmt: skip
    ds = ds.select_columns(["clip", "n_valid", *columns, "path"])
    allc = embed_dataset(
        cfg, ds, bundle, with_views=True, udf=EmbedForEval, udf_args=(bundle, (*columns, "path"))
    )
    split_of = np.array([owner[str(p)] for p in allc.pop("path")])
    return {s: {k: v[split_of == s] for k, v in allc.items()} for s in SPLITS}


def probe_columns(cfg: EchoPrimeConfig, bundle_dir: str, train: dict[str, Any], n: int) -> dict[str, Any]:
    """The columns of the probes' fitting set: the train split's clips and those of ``n`` stream
    studies (``stream.seed``, rendered at the bundle's spec, embedded as the shards' clips are).

    Only the columns both have are kept (no first-frame embeddings for the stream: the ablation
    reads the train split)."""
    from echoprime.data.stream import STREAM_COLUMNS
    from echoprime.staging import spec_of
    from ray_jobs._datasets import stream_dataset
    from ray_jobs._embed import embed_dataset

    columns = tuple(c for c in STREAM_COLUMNS if c != "clip" and c in train)
    stream = embed_dataset(
        cfg,
        stream_dataset(cfg, spec_of(bundle_dir).to_dict(), n),
        bundle_dir,
        with_views=True,
        udf=EmbedForEval,
        udf_args=(bundle_dir, columns, False),
    )
    return {k: np.concatenate([v, stream[k]]) for k, v in train.items() if k in stream}


def run_evaluate(
    cfg: EchoPrimeConfig, bundle: str, shards: str, out: str | Path, *, n_boot: int = 1000, draws: int = 5
) -> dict[str, Any]:
    """Evaluate ``bundle`` on ``shards``; writes OUT/metrics.json, plots and report.md.

    Returns:
        The headline numbers (:func:`echoprime.eval.report.headline`) plus ``wall_s``,
        ``embed_s`` and ``out``.

    Raises:
        echoprime.eval.suite.EvaluationInputError: different preprocessing or label sets.
        echoprime.bundle.BundleError, echoprime.data.shards.ShardError: unusable inputs.
    """
    from echoprime.bundle import fetch, read_manifest, read_mil_table
    from echoprime.data.shards import read_manifest as read_shard_manifest
    from echoprime.eval.plots import write_plots
    from echoprime.eval.report import headline, jsonable, write_report
    from echoprime.eval.studies import StudySet
    from echoprime.eval.suite import check_compatible, check_spec_compatible, evaluate_sets
    from echoprime.interpret import StudyInterpreter, load_bundle_parts
    from echoprime.runlog import ensure_writable_dir
    from ray_jobs.common import configure_ray_data, ray_session

    t0 = time.perf_counter()
    out = Path(out)
    ensure_writable_dir(out)
    # Everything that can be wrong is checked before Ray starts.
    root = fetch(bundle)
    manifest = read_manifest(root, verify=True)
    check_spec_compatible(bundle, manifest, shards, read_shard_manifest(shards).spec)  # before reading shards
    labels, views, with_hidden = shard_label_sets(shards)
    check_compatible(bundle, manifest, shards, read_shard_manifest(shards).spec, labels, views)
    n_probe = cfg.stream.probe_studies
    if n_probe:
        from echoprime.data.stream import check_stream_seed

        check_stream_seed(cfg, shards)
    with ray_session(cfg.ray):
        configure_ray_data()
        cols = embed_for_eval(cfg, shards, str(root), with_hidden)
        if n_probe:
            cols["probe"] = probe_columns(cfg, str(root), cols["train"], n_probe)
    embed_s = time.perf_counter() - t0
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
        "notes": method_notes(manifest, k, n_probe),
    }
    head = headline(metrics)
    metrics["headline"] = head
    metrics["context"] = context
    metrics["timings_s"].update(embed=round(embed_s, 1), total=round(time.perf_counter() - t0, 1))
    plots = write_plots(metrics, out)
    (out / "metrics.json").write_text(json.dumps(jsonable(metrics), indent=2))
    (out / "report.md").write_text(write_report(metrics, plots, context))
    return {
        **head,
        "embed_s": round(embed_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
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


def run(args: argparse.Namespace) -> int:
    from echoprime.eval.report import format_headline
    from ray_jobs.common import resolve_config

    res = run_evaluate(
        resolve_config(args), args.bundle, args.shards, args.out, n_boot=args.boot, draws=args.draws
    )
    print(format_headline(res))
    print(
        f"evaluate: report {Path(res['out']) / 'report.md'}; embedding {res['embed_s']} s, total {res['wall_s']} s"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["evaluate", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
