"""``echoprime probe``: how well a bundle's frozen embeddings predict a dataset's labels.

  echoprime probe --bundle quickstart-out/bundle --shards dynamic-shards --dataset echonet-dynamic --out probe-dynamic
  echoprime probe --bundle B --shards S --targets ejection_fraction,IVSd --head-out B-with-ef --head-target ejection_fraction

Every clip of the shards' train, val and test splits is embedded on Ray Data by an actor pool
that runs the bundle's video tower as interpretation does (and returns its last tokens, for the
attentive probe); then, per target, the frozen attentive probe, a linear and a kNN probe are
fitted on train, tuned on val and scored on test with bootstrap intervals, beside the train-mean
floor (echoprime.eval.dataset_probe, echoprime.eval.attentive_probe). Writes ``OUT/metrics.json``,
``OUT/report.md`` (with the figures published on the dataset, when ``--dataset`` names one) and
predicted-vs-true / Bland-Altman plots. ``--head-out`` also writes a new bundle whose head is the
linear probe of ``--head-target``: interpretation and Serve then answer with it (``tasks``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--bundle", required=True, help="the bundle whose video tower embeds the dataset (folder or s3://)"
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--shards", help="ingest output with train, val and test splits (labels only is fine)")
    src.add_argument(
        "--input",
        help="a public dataset's folder as published (with --dataset): ingested first into OUT/shards at "
        "the bundle's preprocessing (echoprime ingest --dataset, docs/datasets/), then probed",
    )
    p.add_argument("--out", required=True, help="folder for metrics.json, report.md and the plots")
    p.add_argument(
        "--dataset",
        default=None,
        help="the public dataset the shards (or --input) hold (echonet-dynamic, echonet-pediatric, ...): "
        "names the report and puts the figures published on it beside ours",
    )
    p.add_argument(
        "--dataset-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of --dataset for --input, as for echoprime ingest (e.g. fold=3)",
    )
    p.add_argument(
        "--targets",
        default="auto",
        help="comma-separated label keys to probe (default auto: every numeric label with >= 10 labelled "
        "train studies, and ef_below_40 when ejection_fraction is there)",
    )
    p.add_argument(
        "--fit-shards",
        default=None,
        help="transfer protocol: fit and tune the probes on these shards' train and val splits, score on "
        "--shards' test split (e.g. fit on EchoNet-Dynamic, score on EchoNet-Pediatric)",
    )
    p.add_argument(
        "--head-out", default=None, help="also write this bundle: --bundle plus the linear probe as a head"
    )
    p.add_argument(
        "--head-target", default="ejection_fraction", help="the target whose linear probe --head-out stores"
    )
    p.add_argument(
        "--bootstrap", type=int, default=1000, help="bootstrap resamples of the test split (default 1000)"
    )
    p.add_argument(
        "--no-attentive",
        dest="attentive",
        action="store_false",
        help="skip the frozen attentive probe over the tower's last tokens (it stores every clip's "
        "tokens while it runs: float16, ~0.6 MB a clip for MViT v2 S, under OUT, removed at the end)",
    )
    p.add_argument(
        "--attentive-epochs",
        type=int,
        default=None,
        help="epochs of each attentive probe fit (default 20; the best on val is kept)",
    )
    from echoprime.commands import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def ingest_for_bundle(
    cfg: EchoPrimeConfig, bundle: str, dataset: str, input_uri: str, shards: str, options: Any = None
) -> dict[str, Any]:
    """``echoprime ingest --dataset`` of a public dataset's folder at the bundle's preprocessing
    (its ``preprocess.json``, whatever the config's ``data`` section says)."""
    from echoprime.eval.probing import bundle_data_config
    from ray_jobs.ingest import run_dataset_ingest

    return run_dataset_ingest(bundle_data_config(cfg, bundle), dataset, input_uri, shards, options=options)


class EmbedWithBundle:
    """Ray Data UDF: shard rows -> unit video embeddings by the bundle's tower (the interpreter's
    own normalisation and forward; one model per actor)."""

    def __init__(self, bundle: str, split_of: dict[str, str], threads: int = 1, tokens: bool = False) -> None:
        import torch

        from echoprime.inference import Towers, load_bundle_parts

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


def run_probe(
    cfg: EchoPrimeConfig,
    bundle: str,
    shards: str,
    out: str,
    *,
    dataset: str | None = None,
    targets: str = "auto",
    head_out: str | None = None,
    head_target: str = "ejection_fraction",
    n_boot: int = 1000,
    fit_shards: str | None = None,
    attentive: bool = True,
    attentive_epochs: int | None = None,
) -> dict[str, Any]:
    """Embed, probe, report (module docstring); returns the metrics document. ``attentive``: also
    store every clip's last tokens (float16, in a folder under ``out`` removed at the end) and fit
    the frozen attentive probe on them.

    Raises:
        ValueError: shards whose preprocessing differs from the bundle's, a missing split, a wanted
            target no train study has, or a ``--head-target`` without a fitted linear probe.
    """
    import ray

    from echoprime.bundle import fetch, read_manifest
    from echoprime.data.shards import read_manifest as read_shard_manifest
    from echoprime.data.shards import validate_split
    from echoprime.eval import probing
    from echoprime.eval.attentive_probe import TokenStore
    from echoprime.eval.dataset_probe import run_all
    from echoprime.training.finetune import check_spec
    from ray_jobs._embed import read_split_files
    from ray_jobs.common import POOL_RETRIES, configure_ray_data, ray_session

    t0 = time.perf_counter()
    fit = fit_shards or shards  # the transfer protocol fits on other shards than it scores on
    files = {s: validate_split(fit, s) for s in ("train", "val")} | {"test": validate_split(shards, "test")}
    root = fetch(bundle)
    bman = read_manifest(root, verify=True)
    for sh in dict.fromkeys((fit, shards)):
        check_spec(bundle, bman, dict(read_shard_manifest(sh).spec))
    chosen = probing.train_targets(files["train"], targets)  # a wrong name fails before any embedding
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cols: dict[str, list[Any]] = {"study_id": [], "labels": [], "split": [], "emb": []}
    rows = probing.count_rows(files)
    scratch = tempfile.TemporaryDirectory(prefix="tokens-", dir=out_dir) if attentive else None
    store = TokenStore(scratch.name, rows) if scratch is not None else None
    with ray_session(cfg.ray):
        configure_ray_data()
        ds, split_of = read_split_files(files, ["clip", "n_valid", "study_id", "labels", "path"])
        # One CPU stays free for the read tasks (a pool holding every CPU starves them).
        cpus = int(ray.cluster_resources().get("CPU", 1))
        ds = ds.map_batches(
            EmbedWithBundle,
            fn_constructor_args=(str(root), split_of, 1, attentive),
            batch_size=64,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=max(1, min(cfg.ingest.decode_actors, 2, cpus - 1))),
            **POOL_RETRIES,
        )
        for b in ds.iter_batches(batch_size=256, batch_format="numpy"):
            for k in cols:
                cols[k].append(b[k])
            if store is not None:
                store.append(b["tokens"])
    allc = {k: np.concatenate(v) for k, v in cols.items()}
    t_embed = time.perf_counter() - t0
    sets = probing.study_sets(allc)
    tokens = None
    if store is not None:
        tokens = store.splits(allc["split"], allc["study_id"], {s: st.ids for s, st in sets.items()})
    t1 = time.perf_counter()
    metrics, fitted = run_all(
        sets["train"], sets["val"], sets["test"], chosen, n_boot=n_boot, seed=cfg.seed, tokens=tokens,
        epochs=attentive_epochs,
    )  # fmt: skip
    t_fit = time.perf_counter() - t1
    del tokens, store
    if scratch is not None:
        scratch.cleanup()
    doc = probing.probe_document(
        cfg, bundle, root, shards, sets, int(len(allc["emb"])), metrics, dataset=dataset,
        fit_shards=fit_shards, n_boot=n_boot, embed_s=t_embed, fit_s=t_fit,
    )  # fmt: skip
    probing.write_outputs(doc, out_dir, root, fitted, head_out=head_out, head_target=head_target)
    doc["wall_s"] = round(time.perf_counter() - t0, 1)
    return doc


def run(args: argparse.Namespace) -> int:
    from echoprime.eval.probing import summary_lines
    from ray_jobs.common import resolve_config

    cfg = resolve_config(args)
    shards = args.shards
    if args.input is not None:
        if not args.dataset:
            raise ValueError(
                "--input names a public dataset's folder: give --dataset NAME with it (docs/datasets/)"
            )
        shards = str(Path(args.out) / "shards")
        got = ingest_for_bundle(cfg, args.bundle, args.dataset, args.input, shards, args.dataset_option)
        print(f"probe: ingested {args.dataset} from {args.input} into {shards}: rows {got.get('rows')}")
    doc = run_probe(
        cfg, args.bundle, shards, args.out, dataset=args.dataset, targets=args.targets,
        head_out=args.head_out, head_target=args.head_target, n_boot=args.bootstrap, fit_shards=args.fit_shards,
        attentive=args.attentive, attentive_epochs=args.attentive_epochs,
    )  # fmt: skip
    print("\n".join(summary_lines(doc, args.out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.commands import command_main

    return command_main("probe", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
