"""``echoprime probe`` on Ray: every clip of a dataset's splits embedded by an actor pool of the
bundle's video tower.

The command's arguments are :mod:`echoprime.commands.probe`; the inputs' checks, the embedding
actor, the probes, the document and the outputs are :mod:`echoprime.eval.probing` (and
:mod:`echoprime.eval.dataset_probe`). Here: the Ray session, the Ray Data pipeline and the
ingest of a public dataset's folder for ``--input``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import ray

from echoprime.commands import command_main, config_of
from echoprime.commands.probe import add_arguments, probe_shards
from echoprime.config import EchoPrimeConfig
from echoprime.eval import probing
from echoprime.eval.attentive_probe import TokenStore
from echoprime.eval.dataset_probe import run_all
from ray_jobs._embed import read_split_files
from ray_jobs.common import POOL_RETRIES, configure_ray_data, ray_session
from ray_jobs.ingest import run_dataset_ingest


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
    """Embed, probe, report (:mod:`echoprime.commands.probe`); returns the metrics document.
    ``attentive``: also store every clip's last tokens (float16, in a folder under ``out`` removed
    at the end) and fit the frozen attentive probe on them.

    Raises:
        ValueError: shards whose preprocessing differs from the bundle's, a missing split, a wanted
            target no train study has, or a ``--head-target`` without a fitted linear probe.
    """
    t0 = time.perf_counter()
    files, root, chosen = probing.probe_inputs(bundle, shards, fit_shards, targets)  # before embedding
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
            probing.EmbedWithBundle,
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
    cfg = config_of(args)
    shards = probe_shards(args)
    if args.input is not None:
        # ingested at the bundle's preprocessing (its preprocess.json), whatever the config says
        data_cfg = probing.bundle_data_config(cfg, args.bundle)
        got = run_dataset_ingest(data_cfg, args.dataset, args.input, shards, options=args.dataset_option)
        print(f"probe: ingested {args.dataset} from {args.input} into {shards}: rows {got.get('rows')}")
    doc = run_probe(
        cfg, args.bundle, shards, args.out, dataset=args.dataset, targets=args.targets,
        head_out=args.head_out, head_target=args.head_target, n_boot=args.bootstrap, fit_shards=args.fit_shards,
        attentive=args.attentive, attentive_epochs=args.attentive_epochs,
    )  # fmt: skip
    print("\n".join(probing.summary_lines(doc, args.out)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("probe", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
