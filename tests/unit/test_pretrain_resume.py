"""`pretrain --resume` of a run with nothing left to train exports its last checkpoint without
starting Ray Train; a run that is not finished is resumed by Ray Train as before."""

from __future__ import annotations

import json

from echoprime.training.resume import finished_checkpoint, local_copy


def _ckpt(run, name, step, epoch):
    d = run / f"checkpoint_{name}"
    d.mkdir(parents=True)
    (d / "state.json").write_text(json.dumps({"step": step, "epoch": epoch, "extra": {}}))
    (d / "model.safetensors").write_bytes(b"w")
    return d


def test_only_a_finished_latest_checkpoint_counts(tmp_path):
    run = tmp_path / "runs" / "r"
    assert finished_checkpoint(str(run), epochs=2, total_steps=9) is None  # no run yet
    _ckpt(run, "2026-11-28_10-00-01.000001", step=3, epoch=0)
    assert finished_checkpoint(str(run), epochs=2, total_steps=9) is None  # mid-run
    last = _ckpt(run, "2026-11-28_10-00-09.000001", step=9, epoch=1)
    assert finished_checkpoint(str(run), epochs=2, total_steps=9) == str(last)
    # a later, unfinished checkpoint (a longer run resumed) means there is work left
    _ckpt(run, "2026-11-28_10-01-00.000001", step=10, epoch=1)
    assert finished_checkpoint(str(run), epochs=3, total_steps=20) is None
    # a run stopped on its time budget records its last epoch: finished
    budget = _ckpt(run, "2026-11-28_10-02-00.000001", step=12, epoch=3)
    assert finished_checkpoint(str(run), epochs=3, total_steps=20) == str(budget)
    assert local_copy(str(budget), tmp_path / "unused") == budget  # local: used in place
    # other files of the run (Ray's own state) are not checkpoints
    (run / "checkpoint_manager_snapshot.json").write_text("{}")
    assert finished_checkpoint(str(run), epochs=3, total_steps=20) == str(budget)


def _saved(run, name, step):
    import torch

    from echoprime.training.checkpoint import save_checkpoint

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    return save_checkpoint(
        run / f"checkpoint_{name}",
        model,
        opt,
        None,
        step=step,
        epoch=0,
        config={},
        extra={"step_in_epoch": step},
    )


def test_a_restart_goes_on_from_the_newest_complete_checkpoint(tmp_path):
    """Ray Train registers a checkpoint only when its controller next polls the workers, so the
    one written just before a worker died can be missing from its registry: the restore reads
    the run's folder, and there takes the highest step whose files are all there in full."""
    from echoprime.training.resume import newest_checkpoint

    run = tmp_path / "runs" / "r"
    assert newest_checkpoint(str(run)) is None
    three = _saved(run, "2026-11-28_10-00-01.000001", step=3)
    six = _saved(run, "2026-11-28_10-00-02.000001", step=6)
    uri, st = newest_checkpoint(str(run))
    assert uri == str(six) and st["step"] == 6 and st["extra"] == {"step_in_epoch": 6}
    assert set(st["files"]) == {"model.safetensors", "optimizer.pt", "config.yaml"}
    # an upload cut off by the dying worker: a file shorter than written, or one missing
    opt = six / "optimizer.pt"
    opt.write_bytes(opt.read_bytes()[:-5])
    assert newest_checkpoint(str(run))[0] == str(three)
    opt.unlink()
    assert newest_checkpoint(str(run))[0] == str(three)
    # a folder whose state.json never arrived, or arrived cut short, is not a checkpoint either
    nine = _saved(run, "2026-11-28_10-00-03.000001", step=9)
    (nine / "state.json").write_text('{"step": 9, "ep')
    assert newest_checkpoint(str(run))[0] == str(three)
    (nine / "state.json").unlink()
    assert newest_checkpoint(str(run))[0] == str(three)
    # the finished-run check sees only complete checkpoints too
    assert finished_checkpoint(str(run), epochs=5, total_steps=3) == str(three)
