"""`pretrain --resume` of a run with nothing left to train exports its last checkpoint without
starting Ray Train; a run that is not finished is resumed by Ray Train as before."""

from __future__ import annotations

import json

from ray_jobs.pretrain import _finished_checkpoint, _local_copy


def _ckpt(run, name, step, epoch):
    d = run / f"checkpoint_{name}"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"step": step, "epoch": epoch, "extra": {}}))
    (d / "model.safetensors").write_bytes(b"w")
    return d


def test_only_a_finished_latest_checkpoint_counts(tmp_path):
    run = tmp_path / "runs" / "r"
    assert _finished_checkpoint(str(run), epochs=2, total_steps=9) is None  # no run yet
    _ckpt(run, "2026-11-28_10-00-01.000001", step=3, epoch=0)
    assert _finished_checkpoint(str(run), epochs=2, total_steps=9) is None  # mid-run
    last = _ckpt(run, "2026-11-28_10-00-09.000001", step=9, epoch=1)
    assert _finished_checkpoint(str(run), epochs=2, total_steps=9) == str(last)
    # a later, unfinished checkpoint (a longer run resumed) means there is work left
    _ckpt(run, "2026-11-28_10-01-00.000001", step=10, epoch=1)
    assert _finished_checkpoint(str(run), epochs=3, total_steps=20) is None
    # a run stopped on its time budget records its last epoch: finished
    budget = _ckpt(run, "2026-11-28_10-02-00.000001", step=12, epoch=3)
    assert _finished_checkpoint(str(run), epochs=3, total_steps=20) == str(budget)
    assert _local_copy(str(budget), tmp_path / "unused") == budget  # local: used in place
    # other files of the run (Ray's own state) are not checkpoints
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert _finished_checkpoint(str(run), epochs=3, total_steps=20) == str(budget)
