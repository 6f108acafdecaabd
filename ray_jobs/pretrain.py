"""``echoprime pretrain`` on Ray: the tokenised shards (or the synthetic stream) through Ray Data
into a Ray Train run (ray_jobs/_train.py), its last checkpoint exported as BUNDLE/pretrained.

The command's arguments and description are :mod:`echoprime.commands.pretrain`; what is checked
before a worker starts is :func:`echoprime.training.prepare.prepare_pretrain`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from echoprime import storage
from echoprime.commands import command_main
from echoprime.commands.pretrain import add_arguments, pretrain_config
from echoprime.config import EchoPrimeConfig
from echoprime.models.tokenizer import ReportTokenizer
from echoprime.training.finish import export_checkpoint, pretrain_summary
from echoprime.training.prepare import prepare_pretrain
from echoprime.training.setup import prepare_tokenizer
from ray_jobs._datasets import token_datasets
from ray_jobs._train import trained


def run_pretrain(
    cfg: EchoPrimeConfig, shards: str, out: str, *, resume: bool = False, fault: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Pretrain on ``shards`` and write the pretrained model to ``out``; returns headline numbers.

    Args:
        cfg: the resolved config (model, data, train, ray sections are used).
        shards: ingest output with committed train and val splits.
        out: output folder (local or s3://).
        resume: continue ``train.run_name`` from its last checkpoint instead of refusing to reuse it.
        fault: test hooks (echoprime.training.faults.FaultHooks): ``"probe": folder``: each rank
            writes there the optimizer and scheduler state it restored and, per step, the clips
            it took; ``{"pause_at_step": k, "pause_dir": folder}``: every rank waits once after
            step k while a test removes a node.

    Raises:
        ShardError: missing/empty split, missing column or wrong clip shape (before training).
        ValueError: unwritable storage path or output, or a run of that name exists without --resume.
    """
    t0, tc, model_cfg = time.perf_counter(), cfg.train, cfg.model.model_dump()
    p = prepare_pretrain(cfg, shards, out, resume=resume)  # what can be wrong fails before a worker starts
    work = Path(tempfile.mkdtemp(prefix="echoprime-pretrain-"))
    try:
        init_tok = p.init.tokenizer_dir if p.init is not None else None
        tok_dir = prepare_tokenizer(model_cfg, p.reports, work / "tokenizer", init_tok)
        tokenizer = ReportTokenizer.from_pretrained(tok_dir)

        def inputs() -> tuple[Any, Any, dict[str, Any]]:
            init = p.init and {
                "state": ray.put(p.init.state),
                "towers": p.init.towers,
                "source": p.init.source,
            }
            loop = {"model": model_cfg, "spec": p.spec, "vocab_size": tokenizer.vocab_size, "fault": fault}
            return (*token_datasets(cfg, p, tokenizer), {**loop, "init": init})

        out_uri, how = storage.locate(out).uri, {"job": "pretrain", "doing": "pretraining", "work": work}
        with trained(cfg, p, inputs, resume=resume, **how) as (d, done):
            st = export_checkpoint(
                d, model_cfg, p.spec, tokenizer.vocab_size, tok_dir, cfg.to_yaml(), out_uri, work / "export"
            )
        summary = {"init": tc.init, "stream_studies": cfg.stream.studies, "finished": done, "t0": t0}
        return pretrain_summary(st, p, out=out_uri, **summary)
    finally:
        # The tokenizer and (for S3) the staged export were copied into the bundle.
        shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    cfg = pretrain_config(args)
    res = run_pretrain(
        cfg, args.shards, storage.locate(args.bundle).join("pretrained").uri, resume=args.resume
    )
    print(
        f"pretrain: {res['steps']}/{res['planned_steps']} steps in {res['epochs']} epochs, loss {res['loss_first']:.3f} -> "
        f"{res['loss_last']:.3f}; val video->report R@1/5/10 {res['val_v2t_r@1']:.2f}/{res['val_v2t_r@5']:.2f}/"
        f"{res['val_v2t_r@10']:.2f} (chance R@10 {res['chance_r@10']:.2f}, {res['val_studies']} studies); "
        f"{res['clips_per_s']:.0f} clips/s, data wait {100 * res['data_wait_frac']:.1f} %; model in {res['out']}"
    )
    print(json.dumps(res, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("pretrain", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
