"""A job submitted to a real Ray head node, the way docs/operations.md submits every stage.

Starts `ray start --head --block` in its own process group and temp dir (never `ray stop`: it
kills every Ray on the host, docs/ray-notes.md), submits `python -m ray_jobs.synth` with the Ray
job SDK and the runtime environment of cluster/job-env.yaml (the checkout as working_dir), and
checks that the job joined that head (`ray.address=auto`), ran its studies as Ray tasks there,
succeeded, logged its summary and wrote the cohort. The head is killed, and its processes are
reaped, whatever happens.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

HEAD_START_TIMEOUT_S = 60
JOB_TIMEOUT_S = 120
RAY = Path(sys.executable).with_name("ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 40) -> str:
    return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:]) if path.is_file() else ""


def _pids_using(marker: str) -> list[int]:
    """Processes whose command line names ``marker`` (the head's private temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            pids.append(int(entry.name))
    return pids


def _stop_head(proc: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM the `ray start --block` process alone (it drains and stops its daemons in order,
    about 3 s), then SIGKILL its process group if it is still there."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:
        # Signalling the whole group at once instead makes the daemons race the drain (30 s timeouts).
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
    # Ray daemons that left the group (or outlived the --block process) still name the temp dir
    # in their command line: these and only these are ours to end.
    deadline = time.monotonic() + 10
    while (left := _pids_using(temp_dir)) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[str]:
    """A real single-node Ray cluster with the dashboard (the job API); yields the dashboard URL."""
    from ray.job_submission import JobSubmissionClient

    # A short private temp dir: Ray's Unix socket paths must stay under 108 characters, and the
    # address file it writes (ray_current_cluster) lands here instead of /tmp/ray.
    temp_dir = tempfile.mkdtemp(prefix="ep-head-", dir="/tmp")
    gcs_port, dash_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",  # no token to share with the client (docs/ray-notes.md, "Starting a cluster")
        "RAY_USAGE_STATS_ENABLED": "0",
        "PATH": f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}",  # the job's `python` is ours
    }
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "head.log"
    cmd = [
        str(RAY), "start", "--head", "--block",
        f"--port={gcs_port}", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}",
        "--num-cpus=2", "--include-dashboard=true", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    with open(log, "w") as log_f:
        proc = subprocess.Popen(cmd, env=env, stdout=log_f, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{dash_port}"
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"`ray start --head` exited with {proc.returncode}:\n{_tail(log)}")
            try:
                JobSubmissionClient(address).list_jobs()
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"the job API at {address} did not answer in {HEAD_START_TIMEOUT_S} s:\n{_tail(log)}"
                    )
                time.sleep(0.5)
        yield address
    finally:
        _stop_head(proc, temp_dir)
        leftover = _pids_using(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not leftover, f"Ray processes of the test head survived: {leftover}"


def _submit_when_agent_is_up(client, **kwargs) -> str:
    """Submit, retrying while the head's job agent has not registered yet.

    The job API answers ``list_jobs`` as soon as the dashboard is up, but a submission in the
    next seconds can still get HTTP 500 "No available agent to submit job" (seen once in ~10
    runs on the 2-core VM); any other error is raised at once.
    """
    deadline = time.monotonic() + HEAD_START_TIMEOUT_S
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as e:
            if "No available agent" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def test_submitted_job_joins_the_head_and_writes_its_output(
    ray_head: str, root: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq
    from ray._common.utils import get_ray_address_file
    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_tasks

    default_address_file = Path(get_ray_address_file(None))  # what a bare ray.init() on this host reads
    address_file_before = default_address_file.stat().st_mtime_ns if default_address_file.exists() else None

    runtime_env = yaml.safe_load((root / "cluster" / "job-env.yaml").read_text())
    runtime_env["working_dir"] = str(root)
    out = tmp_path / "cohort"
    client = JobSubmissionClient(ray_head)
    job = _submit_when_agent_is_up(
        client,
        entrypoint=(
            f"python -m ray_jobs.synth --config configs/tiny-cpu.yaml --studies 2 --test-studies 0 --frames 8 --size 64 "
            f"--out {out} ray.address=auto"
        ),
        runtime_env=runtime_env,
    )
    try:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while (status := client.get_job_status(job)) not in {
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.STOPPED,
        }:
            if time.monotonic() > deadline:
                pytest.fail(
                    f"job {job} still {status} after {JOB_TIMEOUT_S} s:\n{client.get_job_logs(job)[-3000:]}"
                )
            time.sleep(0.5)
    finally:
        if client.get_job_status(job) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
            client.stop_job(job)
    logs = client.get_job_logs(job)
    assert status == JobStatus.SUCCEEDED, f"job {job} ended {status}:\n{logs[-3000:]}"
    assert "synth: wrote 2 studies" in logs, logs[-3000:]

    # The studies were made by Ray tasks of this job on this head, not by a Ray the job started itself.
    ray_job_id = client.get_job_info(job).driver_info.id
    tasks = list_tasks(address=ray_head, filters=[("job_id", "=", ray_job_id)], raise_on_missing_output=False)
    chunk_tasks = [t for t in tasks if t.name.endswith("make_chunk")]  # echoprime.synth.chunked.make_chunk
    assert chunk_tasks and all(t.state == "FINISHED" for t in chunk_tasks), [(t.name, t.state) for t in tasks]

    studies = pq.read_table(out / "studies.parquet").column("study_id").to_pylist()
    manifest = pq.read_table(out / "manifest.parquet")
    assert len(set(studies)) == 2
    assert set(manifest.column("study_id").to_pylist()) == set(studies)
    videos = [p for p in (out / "videos").rglob("*") if p.is_file()]
    assert manifest.num_rows >= 2 and len(videos) == manifest.num_rows, (manifest.num_rows, len(videos))

    address_file_after = default_address_file.stat().st_mtime_ns if default_address_file.exists() else None
    assert address_file_after == address_file_before, (
        "the test head touched the shared /tmp/ray/ray_current_cluster"
    )
