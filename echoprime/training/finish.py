"""After a training run: its last checkpoint exported into the bundle, and its headline numbers
as the jobs return and print them.

A run's history (:class:`echoprime.training.run.RunState`) holds an ``init`` entry (the starting
model's numbers, for a fine-tune), ``resume`` entries and one ``epoch`` entry per epoch; the
summaries read its first and last epochs.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.nn as nn

from echoprime.training.prepare import Prepared

if TYPE_CHECKING:
    from echoprime.training.heads import Task


def export_checkpoint(
    checkpoint_dir: str | os.PathLike,
    model_cfg: Mapping[str, Any],
    spec: Mapping[str, Any],
    vocab_size: int,
    tokenizer_dir: str | os.PathLike,
    config_yaml: str,
    out_uri: str,
    staging: str | os.PathLike,
) -> dict[str, Any]:
    """Export a pretraining checkpoint as the bundle's ``pretrained/`` stage at ``out_uri``
    (local or ``s3://``, staged in ``staging`` then) and check it loads back; returns the
    checkpoint's state (``step``, ``extra`` with the run's history)."""
    from echoprime import storage
    from echoprime.training.checkpoint import load_checkpoint
    from echoprime.training.setup import build_clip, export_pretrained, load_pretrained

    model = build_clip(model_cfg, spec, vocab_size)
    st = load_checkpoint(checkpoint_dir, model)
    out = storage.locate(out_uri)
    s3 = storage.is_s3(out.uri)
    local_out = Path(staging) if s3 else Path(out.path)
    export_pretrained(
        model,
        local_out,
        tokenizer_dir=tokenizer_dir,
        config_yaml=config_yaml,
        spec=spec,
        metrics=st["extra"].get("history", []),
    )
    load_pretrained(local_out)  # what was written loads back
    if s3:
        for p in sorted(local_out.rglob("*")):
            if p.is_file():
                storage.write_bytes(out.join(p.relative_to(local_out).as_posix()).uri, p.read_bytes())
    return st


def export_head(
    bundle_root: Path,
    out: str,
    model: nn.Module,
    st: Mapping[str, Any],
    *,
    shards: str,
    encoder_trained: bool,
) -> str:
    """Write the bundle at ``bundle_root`` plus the head ``model`` (its checkpoint's state ``st``
    loaded) to ``out`` (echoprime.training.heads.write_bundle_with_head), its last validation
    numbers and history recorded; returns the new bundle's URI."""
    from echoprime.training.heads import write_bundle_with_head

    history = st["extra"].get("history", [])
    metrics = val_numbers(history_ends(history)[2])
    return write_bundle_with_head(
        bundle_root,
        out,
        model,
        encoder_trained=encoder_trained,
        metrics={**metrics, "history": history},
        note={"shards": shards, "steps": st["step"], **metrics},
    )


def history_ends(
    history: list[Mapping[str, Any]],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], int]:
    """``(init entry, first epoch, last epoch, number of epochs)``; an absent one is ``{}``."""
    epochs = [dict(h) for h in history if h.get("kind") == "epoch"]
    started = next((dict(h) for h in history if h.get("kind") == "init"), {})
    return started, (epochs[0] if epochs else {}), (epochs[-1] if epochs else {}), len(epochs)


def val_numbers(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry's validation numbers without their ``val_`` prefix."""
    return {k[4:]: v for k, v in entry.items() if k.startswith("val_")}


def pretrain_summary(
    st: Mapping[str, Any],
    run: Prepared,
    *,
    out: str,
    init: str | None,
    stream_studies: int,
    finished: bool,
    t0: float,
) -> dict[str, Any]:
    """The headline numbers of a pretraining run from its last checkpoint's state ``st``.

    Args:
        st: the exported checkpoint's state (``step``, ``extra``).
        run: what the driver prepared (:func:`echoprime.training.prepare.prepare_pretrain`).
        out: where the pretrained stage went.
        init: the ``--init`` bundle (``train.init``), or None.
        stream_studies: ``stream.studies``.
        finished: a ``--resume`` of a finished run, exported only.
        t0: the job's ``time.perf_counter()`` start.
    """
    extra = st["extra"]
    started, first, last, n_epochs = history_ends(extra.get("history", []))
    return {
        "out": out,
        "run": run.run_uri,
        "already_finished": finished,
        "steps": st["step"],
        "planned_steps": run.plan.total_steps,
        "epochs": n_epochs,
        "stopped_on_budget": bool(extra.get("stopped_on_budget", False)),
        "stopped_early": bool(extra.get("stopped_early", False)),
        "init": init,
        "init_notes": run.init.notes if run.init is not None else [],
        "init_val_v2t_r@10": started.get("val_v2t_r@10"),
        "init_val_t2v_r@10": started.get("val_t2v_r@10"),
        "train_clips": run.n_train,  # a stream's exact clip count
        "stream_studies": stream_studies,
        "loss_first": first.get("loss"),
        "loss_last": last.get("loss"),
        "val_v2t_r@1": last.get("val_v2t_r@1"),
        "val_v2t_r@5": last.get("val_v2t_r@5"),
        "val_v2t_r@10": last.get("val_v2t_r@10"),
        "val_t2v_r@10": last.get("val_t2v_r@10"),
        "val_studies": run.val_studies,
        "chance_r@10": min(1.0, 10 / max(run.val_studies, 1)),
        "clips_per_s": last.get("clips_per_s"),
        "data_wait_frac": last.get("data_wait_frac"),
        "temperature": last.get("temperature"),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def finetune_summary(
    st: Mapping[str, Any],
    run: Prepared,
    task: Task,
    *,
    out: str,
    unfreeze: int | None,
    finished: bool,
    t0: float,
) -> dict[str, Any]:
    """The headline numbers of a fine-tuning head from its last checkpoint's state ``st``.

    Args:
        st: the checkpoint's state (``step``, ``extra``).
        run: what the driver prepared (:func:`echoprime.training.prepare.prepare_finetune`).
        task: the head's task.
        out: the new bundle.
        unfreeze: layers of the video tower that trained (0: frozen; None: all).
        finished: a ``--resume`` of a finished run, exported only.
        t0: the job's ``time.perf_counter()`` start.
    """
    extra = st["extra"]
    started, first, last, n_epochs = history_ends(extra.get("history", []))
    (n_train, train_studies, train_classes), (n_val, val_studies, _) = (
        run.labelled["train"],
        run.labelled["val"],
    )
    return {
        "task": task.name,
        "kind": task.kind,
        "out": out,
        "run": run.run_uri,
        "already_finished": finished,
        "encoder": "tuned" if unfreeze != 0 else "frozen",
        "unfreeze": "all" if unfreeze is None else unfreeze,
        "steps": st["step"],
        "planned_steps": run.plan.total_steps,
        "epochs": n_epochs,
        "stopped_early": bool(extra.get("stopped_early", False)),
        "train_clips": n_train,
        "train_studies": train_studies,
        "val_clips": n_val,
        "val_studies": val_studies,
        "classes_train": train_classes,
        "init_val": val_numbers(started),
        "val": val_numbers(last),
        "loss_first": first.get("loss") if n_epochs else None,
        "loss_last": last.get("loss"),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def describe_metrics(m: Mapping[str, Any], kind: str, unit: str = "") -> str:
    """A head's validation numbers in a few words: MAE (with ``unit``), AUC or accuracy (and
    kappa); ``n/a`` for none."""
    if not m:
        return "n/a"
    if kind == "regression":
        return f"MAE {m.get('mae', math.nan):.2f}{' ' + unit if unit else ''}"
    if kind == "binary":
        return f"AUC {m.get('auc', math.nan):.3f}"
    kappa = f", kappa {m['kappa']:.2f}" if "kappa" in m else ""
    return f"accuracy {m.get('accuracy', math.nan):.3f}{kappa}"


def describe_finetune(res: Mapping[str, Any]) -> str:
    """The line ``echoprime finetune`` prints for :func:`finetune_summary`'s ``res``."""
    from echoprime.training.heads import resolve_task

    task = resolve_task(res["task"])
    before = describe_metrics(res["init_val"], task.kind, task.unit)
    after = describe_metrics(res["val"], task.kind, task.unit)
    return (
        f"finetune {res['task']}: {res['steps']}/{res['planned_steps']} steps in {res['epochs']} epochs "
        f"(tower {res['encoder']}); val {res['val_studies']} studies: {before} before -> {after} "
        f"after; bundle with the head in {res['out']}"
    )
