"""echoprime.locks: one job at a time on an output, local and on a real S3 server (moto); a busy
output is refused naming its holder, a dead holder's lock is taken over saying so."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from echoprime import storage
from echoprime.locks import LOCK_NAME, LockHolder, OutputBusy, OutputLock

DIE_HOLDING = (
    "import os, sys\n"
    "from echoprime.locks import OutputLock\n"
    "OutputLock(sys.argv[1], 'echoprime batch-interpret').acquire()\n"
    "print(os.getpid(), flush=True)\n"
    "os._exit(0)  # ends without releasing, as a killed job would\n"
)


def _die_holding(uri: str) -> int:
    """A job in another process that takes the lock and dies holding it; returns its pid."""
    done = subprocess.run(
        [sys.executable, "-c", DIE_HOLDING, uri], capture_output=True, text=True, check=True, timeout=120
    )
    return int(done.stdout.strip())


def _s3_out() -> str:
    import boto3

    bucket = "locks-" + os.urandom(4).hex()
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/out"


@pytest.fixture(params=["local", "s3"])
def out_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "out")
    request.getfixturevalue("s3_server")
    return _s3_out()


def test_a_busy_output_is_refused_naming_its_holder(out_uri):
    with OutputLock(out_uri, "echoprime batch-interpret"):
        with pytest.raises(OutputBusy) as busy:
            OutputLock(out_uri, "echoprime ingest").acquire()
        msg = str(busy.value)
        assert f"output {storage.locate(out_uri).uri} is in use by echoprime batch-interpret" in msg
        assert f"pid {os.getpid()} on {socket.gethostname()}" in msg and "use another output" in msg
    # released: the next job takes it, and there was nothing to recover
    with OutputLock(out_uri, "echoprime ingest") as lock:
        assert lock.recovered is None and lock.recovered_message is None
    if storage.is_s3(out_uri):
        assert not storage.exists(storage.locate(out_uri).join(LOCK_NAME).uri)  # deleted on release


def test_a_dead_holders_lock_is_taken_over_with_a_message(out_uri):
    dead = _die_holding(out_uri)
    lock = OutputLock(out_uri, "echoprime batch-interpret").acquire()
    try:
        assert lock.recovered is not None and lock.recovered.pid == dead
        assert lock.recovered_message.startswith(
            f"took over the lock on {storage.locate(out_uri).uri} from echoprime batch-interpret "
            f"(pid {dead} on {socket.gethostname()}"
        )
        assert f"process {dead} no longer runs" in lock.recovered_message
        with pytest.raises(OutputBusy, match=f"in use by echoprime batch-interpret \\(pid {os.getpid()}"):
            OutputLock(out_uri, "echoprime batch-interpret").acquire()
    finally:
        lock.release()


def test_of_jobs_starting_together_exactly_one_gets_the_output(out_uri):
    storage.ensure_dir(out_uri)
    got, busy, errors = [], [], []
    start = threading.Barrier(6)

    def job(i: int) -> None:
        start.wait()
        try:
            got.append(OutputLock(out_uri, f"job {i}").acquire())
        except OutputBusy as e:
            busy.append(str(e))
        except Exception as e:  # pragma: no cover - shown by the assert below
            errors.append(e)

    threads = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(got) == 1 and len(busy) == 5
    assert all(f"in use by {got[0].job} " in m for m in busy)
    got[0].release()


def test_s3_holder_on_another_machine_is_stale_only_after_its_heartbeat_stops(s3_server):
    """(Local locks need no heartbeat: the kernel releases a dead holder's flock.)"""
    out_uri = _s3_out()
    lock_uri = storage.locate(out_uri).join(LOCK_NAME).uri
    now = time.time()
    other = LockHolder("echoprime ingest", "node-7", 4242, now - 3600, now - 30, "t0")
    storage.write_bytes(lock_uri, other.to_bytes())
    with pytest.raises(OutputBusy) as busy:
        OutputLock(out_uri, "echoprime batch-interpret", stale_after_s=600).acquire()
    assert "in use by echoprime ingest (pid 4242 on node-7" in str(busy.value)
    assert "stale 600 s after its last heartbeat" in str(busy.value) and lock_uri in str(busy.value)
    # ten minutes without a heartbeat: its machine or process is gone
    storage.write_bytes(lock_uri, LockHolder(**{**other.__dict__, "heartbeat": now - 700}).to_bytes())
    with OutputLock(out_uri, "echoprime batch-interpret", stale_after_s=600) as lock:
        assert lock.recovered == LockHolder(**{**other.__dict__, "heartbeat": now - 700})
        # 700 s when written; a loaded machine may take a second or more to get here
        assert re.search(r"its last heartbeat was 7\d\d s ago \(stale after 600 s\)", lock.recovered_message)
        held = json.loads(storage.read_bytes(lock_uri))
        assert held["pid"] == os.getpid() and held["job"] == "echoprime batch-interpret"


def test_local_lock_file_names_no_one_after_a_clean_release(tmp_path):
    with OutputLock(str(tmp_path), "echoprime ingest"):
        held = LockHolder.parse((tmp_path / LOCK_NAME).read_bytes())
        assert held is not None and held.pid == os.getpid() and held.gone() is False
    assert (tmp_path / LOCK_NAME).read_bytes() == b""
    assert storage.list_files(str(tmp_path)) == []  # hidden: never part of an output's listing


def test_an_s3_holder_that_lost_its_lock_finds_out_and_leaves_the_new_holders_lock(s3_server):
    out_uri = _s3_out()
    lock = OutputLock(out_uri, "echoprime batch-interpret").acquire()
    try:
        first = json.loads(storage.read_bytes(lock.lock_uri))["heartbeat"]
        assert lock.beat() and json.loads(storage.read_bytes(lock.lock_uri))["heartbeat"] >= first
        lock.check()  # still held
        # This job stalled past stale_after_s and another took the output over.
        now = time.time()
        other = LockHolder("echoprime batch-interpret", "node-9", 77, now, now, "t9")
        storage.write_bytes(lock.lock_uri, other.to_bytes())
        assert not lock.beat()
        with pytest.raises(
            OutputBusy, match=r"lost the lock on .* to echoprime batch-interpret \(pid 77 on node-9"
        ):
            lock.check()
    finally:
        lock.release()
    assert LockHolder.parse(storage.read_bytes(lock.lock_uri)) == other  # left to its new holder
