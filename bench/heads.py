"""A fine-tuned head against the bundle's retrieval, on the same held-out studies.

For each seed: ``echoprime finetune --task TASK`` (ray_jobs.finetune.run_finetune, on a local Ray)
over ``--bundle``'s video tower on ``--shards``, then both answers for every study of the
cohort's ``--split`` (default val) through ``StudyInterpreter.interpret`` on the new bundle: the
head's (``tasks``, pooled by the attention of the finding's section) and the bank's kNN vote
(``metrics``), against the study's label in the cohort's studies table. Regressions are scored by
MAE (and the MAE of predicting the train split's mean, a floor), binaries by AUC.

Writes ``<out>/heads-<task>.json`` and prints a table. Results and conclusions: docs/learning.md.

Example (the label-only cohort of docs/training.md, recipe 1)::

    python bench/heads.py --config quickstart-out/config.yaml --bundle quickstart-out/bundle \
        --cohort lo-cohort --shards lo-shards --task ef --seeds 0 1 --out bench/out/heads
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    from scipy.stats import rankdata

    pos = y == 1
    if pos.all() or not pos.any():
        return math.nan
    r = rankdata(s)
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--bundle", required=True)
    p.add_argument("--cohort", required=True, help="the synth cohort the shards were ingested from")
    p.add_argument("--shards", required=True)
    p.add_argument("--task", default="ef")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--unfreeze", default="0")
    p.add_argument("--split", default="val")
    p.add_argument("--out", default="bench/out/heads")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.epochs=5")
    args = p.parse_args(argv)

    import ray

    from echoprime.config import load_config
    from echoprime.inference import StudyInterpreter
    from echoprime.training.heads import resolve_task
    from echoprime.training.prepare import parse_unfreeze
    from ray_jobs.finetune import run_finetune

    task = resolve_task(args.task)
    if task.kind not in ("regression", "binary"):
        raise SystemExit(f"bench/heads.py scores regressions and binaries; {task.name!r} is {task.kind}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    studies = pq.read_table(Path(args.cohort) / "studies.parquet").to_pylist()
    label = {s["study_id"]: json.loads(s["labels"]).get(task.target) for s in studies}
    held = [s["study_id"] for s in studies if s["split"] == args.split and label[s["study_id"]] is not None]
    train_mean = float(
        np.mean(
            [
                label[s["study_id"]]
                for s in studies
                if s["split"] == "train" and label[s["study_id"]] is not None
            ]
        )
    )
    y = np.array([label[s] for s in held], dtype=np.float64)
    runs = []
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        for seed in args.seeds:
            cfg = load_config(
                args.config, [*args.overrides, f"seed={seed}", f"train.storage_path={out / 'runs'}"]
            )
            t0 = time.perf_counter()
            res = run_finetune(
                cfg, args.task, args.bundle, args.shards, str(out / f"bundle-{task.folder}-s{seed}"),
                unfreeze=parse_unfreeze(args.unfreeze), run_name=f"bench-{task.folder}-s{seed}-{int(time.time())}",
            )  # fmt: skip
            interp = StudyInterpreter.from_bundle(res["out"], device="cpu")
            results = interp.interpret_many([Path(args.cohort) / "videos" / s for s in held])
            head = np.array(
                [r.tasks[task.name]["value" if task.kind == "regression" else "probability"] for r in results]
            )
            knn = np.array([r.metrics[task.target]["value"] for r in results], dtype=np.float64)
            row = {
                "seed": seed,
                "steps": res["steps"],
                "fit_s": round(time.perf_counter() - t0, 1),
                "n": len(held),
            }
            if task.kind == "regression":
                row |= {"head_mae": float(np.abs(head - y).mean()), "knn_mae": float(np.abs(knn - y).mean()),
                        "mean_mae": float(np.abs(train_mean - y).mean())}  # fmt: skip
            else:
                row |= {"head_auc": _auc(y, head), "knn_auc": _auc(y, knn)}
            row["val_during_training"] = res["val"]
            runs.append(row)
            print(json.dumps(row))
    finally:
        ray.shutdown()
    keys = [k for k in runs[0] if k.endswith(("_mae", "_auc"))]
    summary = {
        k: {"mean": float(np.mean([r[k] for r in runs])), "sd": float(np.std([r[k] for r in runs]))}
        for k in keys
    }
    doc = {"task": task.name, "bundle": args.bundle, "shards": args.shards, "split": args.split,
           "unfreeze": args.unfreeze, "overrides": args.overrides, "runs": runs, "summary": summary}  # fmt: skip
    (out / f"heads-{task.folder}.json").write_text(json.dumps(doc, indent=2))
    print(f"{task.name} on {len(held)} {args.split} studies, seeds {args.seeds}:")
    for k, v in summary.items():
        print(f"  {k:<10} {v['mean']:.3f} +/- {v['sd']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
