"""What the tiny CPU configuration learns in a few minutes: a learning benchmark (no Ray).

Trains the configured EchoClip in-process on the train split of ingested shards, with the
library's own pieces (``build_tokenizer``, ``create_clip``, ``train_one_epoch``, ``ClipLoss``,
``prepare_batch`` augmentation), then measures on the held-out studies (``--eval-splits``,
val and test by default):

* retrieval: each held-out clip ranks the held-out study reports (``v2t_r@1/5/10``, chance
  ``k / n_studies``) and each report ranks the clips (``t2v``);
* phenotypes through the report bank, as ``StudyInterpreter`` does it: a study's embedding is
  the normalised mean of its clip embeddings; its ``k`` nearest *training* reports vote (mean of
  their labels). AUC per binary phenotype, MAE for ejection fraction and PA pressure (chance: the
  MAE of predicting the training mean); ``meanAUC`` over the binaries with >= 3 positives;
* ``txtEF`` / ``txtAUC``: the same vote with the study's own report as the query, i.e. how well
  the learned report space alone is organised by the findings (a ceiling for the video side);
* a visibility ceiling per phenotype: the AUC of an oracle that knows the label exactly when the
  study holds a view where the finding is drawn (``synth.state.VISIBILITY``) and guesses the
  prior otherwise. With 4-6 of 11 views per study, a finding seen in one view (IVC: subcostal)
  is out of reach for most studies, whatever the model.

``--objective`` also runs the diagnostics of ``learning_diagnostics.py`` (supervised upper
bound, CLIP against a label-reading text tower, auxiliary label heads, study-level CLIP).
``--grid FILE --part i/n`` runs many settings in one process (data loaded once); n processes
with ``--device cuda`` sweep a grid on one GPU (TF32 is turned off: fp32 as on the CPU, so
results depend on the number of steps, not on the device).

Writes ``<out-dir>/<tag>.json`` (settings, per-epoch history, metrics; default
``bench/out/learning/``) and prints a table; ``--table [--mean] [--brief]`` prints the saved runs
(``--mean`` averages tags ``name@seed`` over seeds). Results and conclusions: docs/learning.md.

Examples::

    python bench/learning.py --shards /tmp/sh300 --epochs 12
    python bench/learning.py --shards /tmp/sh300 --tag shift4@0 --aug shift=4 --epochs 30
    python bench/learning.py --shards /tmp/sh300 --tag sup --objective supervised --video pool=spatial
    python bench/learning.py --table --mean --brief
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from learning_diagnostics import (  # noqa: E402
    LabelTextEncoder,
    StudyPooledLoss,
    label_text_inputs,
    supervised_run,
)
from learning_lib import (  # noqa: E402
    ROOT,
    batches,
    concat,
    encode,
    epoch_order,
    knn_ceiling,
    knn_metrics,
    load_split,
    mean_over_seeds,
    parse_kv,
    stream_split,
    summary,
    table,
)

from echoprime.config import load_config  # noqa: E402
from echoprime.data.shards import read_manifest  # noqa: E402
from echoprime.losses import ClipLabelLoss, ClipLoss, LabelLoss  # noqa: E402
from echoprime.models import create_clip  # noqa: E402
from echoprime.models.tokenizer import ReportTokenizer  # noqa: E402
from echoprime.training.batch import Augmentation  # noqa: E402
from echoprime.training.labels import LABEL_NAMES, column_weights, regression_columns  # noqa: E402
from echoprime.training.loop import embed_for_retrieval, retrieval_metrics, train_one_epoch  # noqa: E402
from echoprime.training.schedule import cosine_scheduler  # noqa: E402
from echoprime.training.setup import build_tokenizer  # noqa: E402

OUT_DIR = ROOT / "bench" / "out" / "learning"


_DATA: dict[tuple[str, str, int], dict[str, Any]] = {}


def load_data(
    shards: str,
    eval_splits: str,
    mc: Any,
    stream: str | None = None,
    cfg: Any = None,
    grades: tuple[str, ...] = (),
    tokenizer_dir: Path | None = None,
) -> dict[str, Any]:
    """Train and held-out splits, tokenised (a WordPiece trained on the train reports); cached per process.

    ``stream="N"`` or ``"N,seed"``: the training set is N synthetic studies rendered as the
    production stream renders them (``echoprime.data.stream``, seed default 1), not the shards'
    train split; the held-out splits stay the shards'.
    """
    key = (
        shards,
        eval_splits,
        int(mc.tokenizer_vocab),
        stream,
        float(mc.number_step),
        grades,
        str(tokenizer_dir),
    )
    if key not in _DATA:
        t0 = time.perf_counter()
        tr = load_split(shards, "train") if not stream else stream_split(shards, stream, cfg)
        ev = concat([load_split(shards, s) for s in eval_splits.split(",")])
        if tokenizer_dir is not None:  # --init: the bundle's tokenizer, as pretrain --init uses it
            tok = ReportTokenizer.from_pretrained(tokenizer_dir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                build_tokenizer(mc.model_dump(), tr["report"], tmp)
                tok = ReportTokenizer.from_pretrained(tmp)
        _DATA[key] = {
            "tr": tr,
            "ev": ev,
            "TR": encode(tr, tok, grades),
            "EV": encode(ev, tok, grades),
            "vocab": tok.vocab_size,
            "spec": read_manifest(shards).spec,
            "load_s": time.perf_counter() - t0,
        }
    return _DATA[key]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """One training run with the settings of ``args``; returns the result record."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    # fp32 as on the CPU: no TF32 in cuDNN convolutions or matmuls
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    overrides = [f"train.{k}={v}" for k, v in parse_kv(args.train).items()]
    if args.objective == "clip_aux":  # the production label loss, named by --aux
        w = parse_kv(args.aux)
        overrides += [
            f"model.label_heads={'shared' if int(w.get('shared', 0)) else 'separate'}",
            f"train.label_weight_video={float(w.get('video', 1.0))}",
            f"train.label_weight_text={float(w.get('text', 1.0))}",
        ]
    overrides += [f"model.{k}={v}" for k, v in parse_kv(args.model).items()]
    cfg = load_config(args.config, overrides)
    tc, mc = cfg.train, cfg.model
    init = None
    if args.init:  # start from a bundle's towers and tokenizer (echoprime pretrain --init)
        from echoprime.training.finetune import load_init

        init = load_init(args.init, mc.model_dump(), dict(read_manifest(args.shards).spec))
    d = load_data(args.shards, args.eval_splits, mc, args.stream, cfg, tuple(cfg.train.label_grades),
                  init.tokenizer_dir if init is not None else None)  # fmt: skip
    tr, ev, spec, dev = d["tr"], d["ev"], d["spec"], args.device
    video_kw = {"frames": int(spec["frames"]), "size": int(spec["size"]), **parse_kv(args.video)}
    text_kw = {"vocab_size": d["vocab"], **parse_kv(args.text)}
    model = create_clip(
        mc.video_encoder,
        mc.text_encoder,
        embed_dim=mc.embed_dim,
        video_overrides=video_kw,
        text_overrides=text_kw,
        init_logit_scale=mc.init_logit_scale,
        max_logit_scale=mc.max_logit_scale,
        label_outputs=len(LABEL_NAMES) if mc.label_heads != "none" else 0,
        shared_label_head=mc.label_heads == "shared",
    )
    if init is not None:
        from echoprime.training.finetune import apply_init

        apply_init(model, init.state, init.towers)
    aug_kw = {"brightness": tc.brightness, "contrast": tc.contrast, **parse_kv(args.aug)}
    aug = Augmentation(**aug_kw)
    n_ev = len(set(ev["study"]))
    record: dict[str, Any] = {
        "tag": args.tag,
        "objective": args.objective,
        "shards": args.shards,
        "device": args.device,
        "settings": {
            "train": tc.model_dump(),
            "model": mc.model_dump(),
            "video": video_kw,
            "text": text_kw,
            "aug": aug_kw,
            "sampler": args.sampler,
            "seed": args.seed,
            "threads": args.threads,
            "eval_splits": args.eval_splits,
            "k": args.k,
            "init": args.init,
        },
        "data": {
            "train_clips": len(tr["study"]),
            "train_studies": len(set(tr["study"])),
            "eval_clips": len(ev["study"]),
            "eval_studies": n_ev,
            "load_s": d["load_s"],
        },
        "chance_r@k": {f"r@{k}": k / n_ev for k in (1, 5, 10)},
    }
    if args.objective == "supervised":
        hist, metrics, steps, train_s = supervised_run(model.video_encoder, d, tc, aug, args)
        for ph, v in knn_ceiling(ev, tr).items():
            if ph in metrics:
                metrics[ph]["ceiling"] = v
        hist[-1].update({f"{x}_r@{k}": float("nan") for x in ("v2t", "t2v") for k in (1, 5, 10)})
        return record | {
            "steps": steps,
            "train_s": train_s,
            "history": hist,
            "final": hist[-1],
            "phenotypes": metrics,
            "summary": summary(metrics),
        }

    if args.objective == "clip_labels":
        from echoprime.models.clip import EchoClip

        table, TR, EV = label_text_inputs(d)
        model = EchoClip(
            model.video_encoder,
            LabelTextEncoder(table, mc.embed_dim),
            mc.init_logit_scale,
            mc.max_logit_scale,
        )
        d = d | {"TR": TR, "EV": EV}
    # The production objective (ray_jobs/pretrain.py): CLIP, plus the label loss of
    # echoprime.losses when train.label_weight_* > 0 (model.label_heads set).
    loss_fn: Any = ClipLoss()
    if tc.label_weight_video > 0 or tc.label_weight_text > 0:
        loss_fn = ClipLabelLoss(
            loss_fn,
            LabelLoss(
                regression_columns(tc.label_grades),
                tc.label_weight_video,
                tc.label_weight_text,
                video_balance=tc.label_balance,
                column_weight=column_weights(tc.label_grades, tc.label_grade_weight),
            ),
            pool_studies=tc.label_pool == "study",
        )
    if args.objective == "clip_study":
        loss_fn = StudyPooledLoss()
    model.to(dev)
    bs, n = tc.batch_size, len(tr["study"])
    total = (n // bs) * tc.epochs
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = cosine_scheduler(opt, tc.lr, min(tc.warmup_steps, total // 4), total, tc.min_lr)
    g = torch.Generator().manual_seed(args.seed)
    ev_batches = [{k: v[i : i + 256] for k, v in d["EV"].items()} for i in range(0, len(ev["study"]), 256)]
    history: list[dict[str, Any]] = []
    train_s, steps = 0.0, 0
    parts: list[float] = []  # contrastive part of each step's loss
    for epoch in range(tc.epochs):
        order = epoch_order(tr["study"], args.sampler, g)
        parts.clear()
        st = train_one_epoch(
            model,
            loss_fn,
            opt,
            sched,
            batches(d["TR"], order, bs, spec, aug, g, dev),
            dev,
            grad_clip=tc.grad_clip,
            on_step=lambda info: parts.append(info.losses.get("contrastive_loss", float("nan"))) and False,
        )
        train_s += st.seconds
        steps += st.steps
        last = epoch == tc.epochs - 1 or bool(args.time_budget_s and train_s >= args.time_budget_s)
        row = {
            "epoch": epoch + 1,
            "loss": st.loss,
            "clips_per_s": st.clips_per_s,
            "train_s": train_s,
            "temperature": float(1 / model.scale().detach()),
            "clip_loss": float(np.mean(parts)) if parts else float("nan"),
        }
        if last or (args.eval_every and (epoch + 1) % args.eval_every == 0):
            r = retrieval_metrics(**embed_for_retrieval(model, ev_batches, dev, spec=spec))
            row |= {k: float(v) for k, v in r.items()}
            if args.verbose:
                print(
                    f"epoch {epoch + 1:3d} loss {st.loss:.3f} T {row['temperature']:.3f} "
                    f"v2t R@1/5/10 {r['v2t_r@1']:.3f}/{r['v2t_r@5']:.3f}/{r['v2t_r@10']:.3f} "
                    f"t2v R@1 {r['t2v_r@1']:.3f}  {st.clips_per_s:.0f} clips/s  train {train_s:.0f}s",
                    flush=True,
                )
        history.append(row)
        if last:
            break
    metrics = knn_metrics(model, d, args.k, dev)
    return record | {
        "steps": steps,
        "train_s": train_s,
        "history": history,
        "final": history[-1],
        "phenotypes": metrics,
        "summary": summary(metrics),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shards", help="ingest output with train and val (and test) splits")
    p.add_argument("--config", default=str(ROOT / "configs" / "tiny-cpu.yaml"))
    p.add_argument("--tag", default="run", help="name of the run (the JSON file's name)")
    p.add_argument("--epochs", type=int, help="train.epochs (default: the config's)")
    p.add_argument("--time-budget-s", type=float, help="stop after the epoch that passes this training time")
    p.add_argument("--train", help="train.* overrides, e.g. lr=0.001,batch_size=64,weight_decay=0.1")
    p.add_argument("--model", help="model.* overrides, e.g. embed_dim=128,init_logit_scale=2.3")
    p.add_argument(
        "--video", help="video builder overrides, e.g. width=24,pool=spatial,dropout=0.1,norm=group"
    )
    p.add_argument("--text", help="text builder overrides, e.g. hidden=64,token_dropout=0.2")
    p.add_argument("--aug", help="augmentation overrides, e.g. shift=2,noise=0.1,reverse=0.5,brightness=0.1")
    p.add_argument("--sampler", default="random", choices=["random", "study", "grouped"])
    p.add_argument(
        "--stream",
        help="train on N freshly rendered synthetic studies instead of the train split: N or N,seed "
        "(the production stream, echoprime.data.stream; seed default 1)",
    )
    p.add_argument("--aux", help="clip_aux loss weights and head sharing, e.g. video=1,text=1,shared=1")
    p.add_argument(
        "--objective",
        default="clip",
        choices=["clip", "supervised", "clip_labels", "clip_aux", "clip_study"],
        help="supervised: the video tower learns the labels directly (the diagnostic upper bound); "
        "clip_labels: CLIP against a text tower that reads the study's labels, not its words",
    )
    p.add_argument("--eval-splits", default="val,test", help="held-out splits, comma separated")
    p.add_argument("--eval-every", type=int, default=1, help="retrieval on the held-out clips every N epochs")
    p.add_argument("--k", type=int, default=10, help="neighbours for the phenotype vote")
    p.add_argument("--init", help="start from this bundle's towers and tokenizer (a fine-tune)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-dir", default=str(OUT_DIR), help="where <tag>.json goes")
    p.add_argument(
        "--grid",
        help="file of runs, one per line, each line's arguments added to this command line's; '#' comments",
    )
    p.add_argument("--part", default="0/1", help="with --grid: run lines i, i+n, ... of the grid (i/n)")
    p.add_argument("--quiet", dest="verbose", action="store_false", help="no per-epoch lines")
    p.add_argument(
        "--table", action="store_true", help="print the table of the saved runs (by time) and exit"
    )
    p.add_argument("--mean", action="store_true", help="with --table: average tags name@seed over seeds")
    p.add_argument("--match", help="with --table: only tags matching this glob")
    p.add_argument("--brief", action="store_true", help="with --table: eight phenotypes instead of 19")
    p.add_argument(
        "--plot",
        metavar="PNG",
        help="with --table: also draw held-out mean AUC, R@10 and EF MAE against steps into this PNG "
        "(a point per run, a line per setting: the tag up to its last '-')",
    )
    return p


def plot_curve(runs: list[dict], path: Path) -> None:
    """Held-out kNN mean AUC, clip v2t R@10 and EF MAE against optimiser steps: a point per run
    (seed), a line through each tag's seed means (tags ``name@seed``; the name up to the last
    ``-`` groups runs of one setting at several lengths, e.g. ``curve-5ep``, ``curve-10ep``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("kNN mean AUC (19 binaries)", lambda r: r["summary"]["mean_auc"]),
        ("clip v2t R@10", lambda r: r["final"]["v2t_r@10"]),
        ("EF MAE (kNN, points)", lambda r: r["phenotypes"]["ejection_fraction"]["mae"]),
    ]
    series: dict[str, dict[int, list[dict]]] = {}
    for r in runs:
        name = r["tag"].split("@")[0].rsplit("-", 1)[0]
        series.setdefault(name, {}).setdefault(int(r["steps"]), []).append(r)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4))
    for ax, (title, get) in zip(axes, panels, strict=True):
        for name, by_steps in sorted(series.items()):
            steps = sorted(by_steps)
            means = [float(np.mean([get(r) for r in by_steps[n]])) for n in steps]
            (line,) = ax.plot(steps, means, marker="o", label=name)
            for n in steps:
                ax.scatter([n] * len(by_steps[n]), [get(r) for r in by_steps[n]], s=12,
                           color=line.get_color(), alpha=0.5)  # fmt: skip
        ax.set_xscale("log")
        ticks: list[int] = []
        for t in sorted({int(r["steps"]) for r in runs}):
            if not ticks or t > 1.05 * ticks[-1]:  # runs of nearly equal length share a tick
                ticks.append(t)
        ax.set_xticks(ticks, [f"{t:,}" for t in ticks], fontsize=7, rotation=30)
        ax.minorticks_off()
        ax.set_xlabel("optimiser steps (batch 32)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.table:
        runs = [
            json.loads(f.read_text()) for f in sorted(out_dir.glob("*.json"), key=lambda f: f.stat().st_mtime)
        ]
        if args.match:
            runs = [r for r in runs if fnmatch.fnmatch(r["tag"], args.match)]
        print(table(mean_over_seeds(runs) if args.mean else runs, brief=args.brief))
        if args.plot:
            plot_curve(runs, Path(args.plot))
            print(f"plot: {args.plot}")
        return 0
    if not args.shards:
        p.error("--shards is required (unless --table)")
    jobs = [args]
    if args.grid:
        lines = [ln.split("#", 1)[0].split() for ln in Path(args.grid).read_text().splitlines()]
        i, n = (int(x) for x in args.part.split("/"))
        jobs = [p.parse_args(argv + ln) for ln in [x for x in lines if x][i::n]]
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for a in jobs:
        if a.epochs:
            a.train = ",".join(x for x in (a.train or "", f"epochs={a.epochs}") if x)
        t0 = time.perf_counter()
        res = run(a)
        res["wall_s"] = time.perf_counter() - t0
        (out_dir / f"{a.tag}.json").write_text(json.dumps(res, indent=1))
        results.append(res)
        print(table([res]).splitlines()[2], flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
