"""Losing a node: pretraining and ingest on a Ray cluster of several nodes on loopback.

Each test runs tests/ray/_multinode.py in a process of its own (the session's process is joined
to the session's single-node Ray), which builds the cluster with ``ray.cluster_utils.Cluster``,
removes a node mid-run by killing its processes, adds a replacement and writes what it saw to a
JSON file; the checks are here. The process's Ray files live in a temporary folder of their own,
and every process that folder's cluster started is gone when a test ends, whatever happened.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from echoprime.data.shards import SPLITS, clips_to_numpy, read_manifest, read_split
from echoprime.training.setup import CLIP_FILE
from ray_jobs.pretrain import run_pretrain
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------- the process
def _processes_of(ray_tmp: str) -> list[int]:
    """Processes whose environment names ``RAY_TMPDIR=ray_tmp``: the multi-node driver and every
    process its cluster started (they inherit it); nothing else on the machine has it."""
    mine, tag = [], f"RAY_TMPDIR={ray_tmp}".encode()
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and int(p.name) != os.getpid():
            try:
                if tag in (p / "environ").read_bytes().split(b"\0"):
                    mine.append(int(p.name))
            except OSError:
                continue
    return mine


def multinode(what: str, args: list[str], tmp_path: Path, timeout_s: float) -> dict[str, Any]:
    """Run ``python -m tests.ray._multinode WHAT ARGS`` and return its result JSON.

    The driver gets ``timeout_s``; then SIGTERM (Ray's nodes shut down on it), and SIGKILL for
    whatever of the cluster is left. Fails the test, with the end of the log, when the driver
    failed or wrote no result."""
    ray_tmp = tempfile.mkdtemp(prefix="epmn-", dir="/tmp")  # short: Ray's socket paths live there
    result, log = tmp_path / f"{what}-result.json", tmp_path / f"{what}.log"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "tests.ray._multinode", what, *args]
    cmd += ["--work", str(tmp_path / "work"), "--result", str(result)]
    t0 = time.monotonic()
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
    finally:
        for pid in _processes_of(ray_tmp):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(ray_tmp, ignore_errors=True)
    wall = time.monotonic() - t0
    lines = [x for x in log.read_text(errors="replace").splitlines() if "State API" not in x]
    tail = "\n".join(lines[-80:])
    if rc != 0 or not result.exists():
        pytest.fail(f"{' '.join(cmd)} exited with {rc} after {wall:.0f} s; its log ends:\n{tail}")
    res = json.loads(result.read_text())
    print(f"{what}: the multi-node driver took {wall:.0f} s")
    return res


def _alive(actors: list[dict[str, Any]], cls: str) -> list[dict[str, Any]]:
    return [a for a in actors if a["class"] == cls and a["state"] == "ALIVE"]


# --------------------------------------------------------------------------- the restore
def check_resumed_run(
    cfg: Any,
    shards_dir: Path,
    model_dir: Path,
    s3: Any,
    bucket: str,
    run_prefix: str,
    probe: Path,
    *,
    checkpoint_step: int = 3,
    failed_step: int = 5,
    world: int = 2,
) -> dict[int, list[dict[str, Any]]]:
    """The checks of a run that lost workers after ``failed_step`` and went on from its
    ``checkpoint_step`` checkpoint (on S3, ``bucket``/``run_prefix``), with the ``probe`` test
    hook on: one resume, at that checkpoint's step, with its learning rate; the Adam moments and
    scheduler of every rank equal to the checkpoint's; the place in the epoch (the re-run steps
    take again exactly the batches they took before; no clip of the checkpoint's steps is taken
    again); every planned step run. A run that started again from step 0 fails here.

    Returns each rank's probe lines (one per step taken, both groups)."""
    from echoprime.training.schedule import lr_at

    tc = cfg.train
    steps = tc.max_steps
    lr = lambda step: lr_at(step, tc.lr, min(tc.warmup_steps, steps // 4), steps, tc.min_lr)  # noqa: E731
    hist = json.loads((model_dir / "metrics.json").read_text())
    resumes = [h for h in hist if h["kind"] == "resume"]
    assert len(resumes) == 1, f"expected one resume from the step-{checkpoint_step} checkpoint, got {resumes}"
    assert {k: v for k, v in resumes[0].items() if k not in ("lr", "checkpoint")} == {
        "kind": "resume",
        "step": checkpoint_step,
        "epoch": 0,
        "skipped_batches": checkpoint_step,
    }
    assert resumes[0]["lr"] == pytest.approx(lr(checkpoint_step), rel=1e-6)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=run_prefix)["Contents"]]
    assert any("checkpoint_" in k and k.endswith("model.safetensors") for k in keys)

    # Optimizer and scheduler state on every rank: equal to the checkpoint's.
    states = {
        k.rsplit("/", 1)[0]: json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read())
        for k in keys
        if k.endswith("/state.json")
    }
    (ck,) = [d for d, st in states.items() if st["step"] == checkpoint_step]
    assert resumes[0]["checkpoint"] == ck.rsplit("/", 1)[1]
    saved = {
        name: torch.load(
            io.BytesIO(s3.get_object(Bucket=bucket, Key=f"{ck}/{name}.pt")["Body"].read()), weights_only=True
        )
        for name in ("optimizer", "scheduler")
    }
    assert saved["scheduler"]["last_epoch"] == checkpoint_step and saved["optimizer"]["state"]
    for rank in range(world):
        restored = torch.load(probe / f"restored-rank{rank}.pt", weights_only=True)
        assert restored["scheduler"]["last_epoch"] == checkpoint_step
        assert restored["optimizer"]["param_groups"] == saved["optimizer"]["param_groups"]
        assert restored["optimizer"]["state"].keys() == saved["optimizer"]["state"].keys()
        for i, want in saved["optimizer"]["state"].items():
            got = restored["optimizer"]["state"][i]
            assert got.keys() == want.keys() and {"exp_avg", "exp_avg_sq", "step"} <= set(want)
            for k in want:
                assert torch.equal(got[k], want[k]), (rank, i, k)

    # The data position: what each rank took at each step, before and after the failure.
    table = read_split(str(shards_dir), "train", columns=["clip"])
    data = Counter(
        zlib.crc32(c.tobytes())
        for c in clips_to_numpy(table.column("clip"), read_manifest(str(shards_dir)).clip_shape)
    )
    taken: Counter = Counter()
    lines_of = {}
    for rank in range(world):
        lines = [json.loads(x) for x in (probe / f"batches-rank{rank}.jsonl").read_text().splitlines()]
        lines_of[rank] = lines
        restart = next(i for i in range(1, len(lines)) if lines[i]["step"] <= lines[i - 1]["step"])
        before, after = lines[:restart], lines[restart:]
        assert [r["step"] for r in before][:failed_step] == list(range(1, failed_step + 1)), rank
        assert [r["step"] for r in after] == list(range(checkpoint_step + 1, steps + 1)), rank
        assert all(r["epoch"] == 0 for r in lines)
        for r in lines:  # every step ran at the scheduler's rate for it
            assert r["lr"] == pytest.approx(lr(r["step"] - 1), rel=1e-6), (rank, r["step"])
        by_step = {r["step"]: r["clips"] for r in before}
        for r in after[: failed_step - checkpoint_step]:  # the re-run steps: the same batches as before
            assert r["clips"] == by_step[r["step"]], (rank, r["step"])
        for r in before[:checkpoint_step] + after:  # the steps the final model is made of
            taken.update(r["clips"])
    assert set(taken) <= set(data)
    replayed = {c: n for c, n in taken.items() if n > data[c]}
    assert not replayed, f"{len(replayed)} clips were taken more often than the split holds them"
    assert sum(taken.values()) == steps * world * tc.batch_size
    return lines_of


# --------------------------------------------------------------------------------- training
def test_node_lost_mid_training_resumes_from_checkpoint_on_s3(test_cfg, shards_dir, s3_server, tmp_path):
    """Two Ray Train workers, one on each of two nodes; after step 5 (checkpoints every 3 steps,
    on S3) the node of the worker that is not on the head is lost, and a replacement node joins.
    The group is placed again over the head and the new node and goes on from the step-3
    checkpoint (check_resumed_run). With augmentation and dropout off (their random streams
    are not part of a checkpoint: docs/training.md), the resumed run must end with the very
    weights and validation numbers of an uninterrupted run of the same seed on the same cluster,
    each rank having taken the same batches at every step."""
    import boto3
    from safetensors.torch import load_file

    boto3.client("s3").create_bucket(Bucket="echo-nodes")
    cfg = test_cfg.replace(
        train={
            **test_cfg.train.model_dump(),
            "epochs": 2,
            "max_steps": 9,  # ends inside the first epoch (15 steps)
            "time_budget_s": None,
            "checkpoint_every_steps": 3,
            "keep_checkpoints": 10,  # the step-3 checkpoint stays, to compare the restore with
            "max_failures": 1,
            "storage_path": "s3://echo-nodes/runs",
            "brightness": 0.0,
            "contrast": 0.0,
            "shift": 0,
        },
        model={
            **test_cfg.model.model_dump(),
            "video_options": {**test_cfg.model.video_options, "dropout": 0.0},
            "text_options": {**test_cfg.model.text_options, "token_dropout": 0.0},
        },
    )
    assert cfg.train.num_workers == 2 and cfg.train.cpus_per_worker == 1  # one on each 1-CPU node
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(cfg.to_yaml())
    t0 = time.monotonic()
    res = multinode(
        "train", ["--config", str(cfg_file), "--shards", str(shards_dir), "--pause-at", "5"], tmp_path, 480
    )
    work = tmp_path / "work"
    for part in ("clean", "fault", "loss"):
        assert "error" not in res[part], res[part]["error"]
    head, loss = res["head_node_id"], res["loss"]

    # Where things ran: the Train controller and Ray Data's coordinators on the head; one worker
    # on each node; the node lost was the other worker's; the restarted group used the new node.
    before = loss["actors_before"]
    for cls in ("TrainController", "DatasetManager", "SplitCoordinator"):
        assert _alive(before, cls) and {a["node_id"] for a in _alive(before, cls)} == {head}, cls
    workers = _alive(before, "RayTrainWorker")
    assert (
        len(workers) == 2
        and len({a["node_id"] for a in workers}) == 2
        and head in {a["node_id"] for a in workers}
    )
    assert len(loss["paused"]) == 2 and {m["step"] for m in loss["paused"]} == {5}
    lost = loss["removed_node_id"]
    assert lost != head and lost in {a["node_id"] for a in workers}
    assert lost not in res["nodes_after"] and loss["replacement_node_id"] in res["nodes_after"]
    assert any(
        a["class"] == "RayTrainWorker" and a["node_id"] == loss["replacement_node_id"]
        for a in res["actors_after"]
    ), "the restarted group never ran on the replacement node"

    # The restore: the step, optimizer, scheduler and data position of the step-3 checkpoint.
    fault, clean = res["fault"]["result"], res["clean"]["result"]
    assert fault["steps"] == fault["planned_steps"] == 9 and clean["steps"] == 9
    s3 = boto3.client("s3")
    lines = check_resumed_run(
        cfg, shards_dir, work / "fault" / "model", s3, "echo-nodes", "runs/fault/", work / "probe"
    )
    # The checks are not vacuous: the uninterrupted run, whose history has no resume (like a
    # run that went back to step 0), fails them.
    with pytest.raises(AssertionError, match="expected one resume"):
        check_resumed_run(
            cfg, shards_dir, work / "clean" / "model", s3, "echo-nodes", "runs/clean/", work / "probe-clean"
        )

    # As an uninterrupted run: each rank took the same batches at every step, and the model is
    # the same to the bit, so its validation numbers are too.
    for rank, taken in lines.items():
        plain = [json.loads(x) for x in (work / "probe-clean" / f"batches-rank{rank}.jsonl").open()]
        assert [r["step"] for r in plain] == list(range(1, 10))
        by_step = {r["step"]: r["clips"] for r in plain}
        assert all(r["clips"] == by_step[r["step"]] for r in taken), rank
    a, b = (load_file(str(work / run / "model" / CLIP_FILE)) for run in ("clean", "fault"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    val = sorted(k for k in clean if k.startswith("val_") and isinstance(clean[k], float))
    assert val and {k: fault[k] for k in val} == {k: clean[k] for k in val}

    # the run exists now: reusing its name needs --resume, and resuming a finished run is a no-op
    fcfg = cfg.replace(train={**cfg.train.model_dump(), "run_name": "fault"})
    with pytest.raises(ValueError, match="already exists.*--resume"):
        run_pretrain(fcfg, str(shards_dir), str(tmp_path / "model2"))
    again = run_pretrain(fcfg, str(shards_dir), str(tmp_path / "model2"), resume=True)
    assert again["already_finished"] and not fault["already_finished"]
    assert again["steps"] == 9 and (tmp_path / "model2" / CLIP_FILE).is_file()
    print(
        f"node-loss training: clean run {res['clean']['wall_s']} s, run with the node lost "
        f"{res['fault']['wall_s']} s, all {time.monotonic() - t0:.0f} s"
    )


# ----------------------------------------------------------------------------------- ingest
def _row_keys(out: Path) -> tuple[Counter, list[str], dict[str, int]]:
    """The shard rows of an ingest as a multiset of (split, view, report, labels, CRC32 of the
    clip): what a row holds, whatever pseudonyms the run's secret gave; with each row's video
    key and the studies per split."""
    m = read_manifest(str(out))
    keys: Counter = Counter()
    videos: list[str] = []
    studies: dict[str, int] = {}
    for split in SPLITS:
        if not m.rows.get(split):
            continue
        t = read_split(str(out), split, columns=["video_id", "study_id", "view", "report", "labels", "clip"])
        clips = clips_to_numpy(t.column("clip"), m.clip_shape)
        cols = {k: t.column(k).to_pylist() for k in ("video_id", "study_id", "view", "report", "labels")}
        for i in range(t.num_rows):
            keys[
                (split, cols["view"][i], cols["report"][i], cols["labels"][i], zlib.crc32(clips[i].tobytes()))
            ] += 1
        videos += cols["video_id"]
        studies[split] = len(set(cols["study_id"]))
    return keys, videos, studies


def test_node_lost_mid_ingest_loses_and_duplicates_no_row(test_cfg, cohort_dir, shards_dir, tmp_path):
    """The session's cohort (with a broken file in 24 of its study folders) is ingested on a head
    and a second node, each running one of the two decode actors. Once shard files start to
    appear, the second node is lost (a replacement joins); Ray restarts its decoder, and the run
    must commit exactly the rows of the session's own ingest of that cohort (shards_dir, one
    node, no failure): counted and hashed, none lost, none twice; every broken file rejected
    once."""
    archive = tmp_path / "archive"
    shutil.copytree(cohort_dir, archive)
    rng = np.random.default_rng(26)
    folders = sorted(p for p in (archive / "videos").iterdir() if p.is_dir())
    broken = [f / "zz-broken.mp4" for f in folders[:: max(1, len(folders) // 24)][:24]]
    for f in broken:
        f.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    # small shard files, so that they appear while the decoders are still at work
    cfg = test_cfg.replace(ingest={**test_cfg.ingest.model_dump(), "shard_rows": 16, "decode_actors": 2})
    cfg_file = tmp_path / "config.yaml"
    cfg_file.write_text(cfg.to_yaml())
    res = multinode("ingest", ["--config", str(cfg_file), "--input", str(archive)], tmp_path, 360)
    for part in ("fault", "loss"):
        assert "error" not in res[part], res[part]["error"]
    head, loss = res["head_node_id"], res["loss"]

    # The node was lost mid-ingest, with a decode actor on it, which Ray restarted.
    assert not loss["committed_before"] and loss["files_before"] >= 1
    decoders = [a for a in loss["actors_before"] if "_Decoder" in a["class"] and a["state"] == "ALIVE"]
    lost = loss["removed_node_id"]
    assert lost != head and lost in {a["node_id"] for a in decoders}
    assert any("_Decoder" in a["class"] and a["restarts"] >= 1 for a in res["actors_after"]), (
        "no decode actor was restarted"
    )
    assert {a["node_id"] for a in _alive(loss["actors_before"], "_Rejects")} == {head}

    # What was committed: every row of the cohort once, as the single-node ingest wrote it.
    out = tmp_path / "work" / "fault"
    got = res["fault"]["result"]
    want = read_manifest(str(shards_dir))
    assert got["status"] == "ingested" and got["rows"] == want.rows
    assert read_manifest(str(out)).rows == want.rows
    keys, videos, studies = _row_keys(out)
    want_keys, want_videos, want_studies = _row_keys(shards_dir)
    assert sum(keys.values()) == sum(want_keys.values()) == sum(want.rows.values())
    assert keys == want_keys, (
        f"{sum((want_keys - keys).values())} rows lost, {sum((keys - want_keys).values())} rows extra"
    )
    assert len(set(videos)) == len(videos) == len(want_videos)  # no video twice (by its key)
    assert studies == want_studies
    # The broken files: each rejected once (none counted twice by a batch Ray ran again).
    m = read_manifest(str(out))
    rejects = pq.read_table(m.rejects_file).to_pylist()
    assert got["rejects"] == m.rejects == len(rejects) == len(broken)
    assert len({r["source_uri"] for r in rejects}) == len(broken)
    assert all("not a readable video" in r["reason"] for r in rejects), rejects[:3]
    print(f"node-loss ingest: {res['fault']['wall_s']} s, node lost after {loss['files_before']} shard files")
