"""One job at a time on an output (a local folder or an ``s3://`` prefix): ``OUT/.echoprime.lock``.

Two jobs writing the same output (two ``echoprime batch-interpret --out X``, two ``echoprime
ingest --out X``) would overwrite each other's files, and each would clean up as debris what the
other is still writing. A job holds its output's lock from before it writes anything until it
ends; a second job is refused with :class:`OutputBusy`, whose message names the holder (the
command, its host and pid, since when) and what to do.

- **Local folders**: ``flock`` on the lock file. The kernel drops the lock when its process
  dies, so a dead holder never blocks anyone; the file still names it, and the next job says
  that it took the lock over (``OutputLock.recovered``). NFS v4 passes ``flock`` on to the server.
- **S3**: the lock is an object created with a conditional write (``If-None-Match: *``: of two
  jobs, exactly one creates it), rewritten every ``stale_after_s / 5`` seconds with the holder's
  heartbeat (``If-Match`` its own version, so a holder that lost the lock finds out), and deleted
  on release. A lock is stale, and is replaced with ``If-Match`` (again exactly one winner), when
  its holder is a process of this host (same hostname and pid namespace) that no longer runs, or
  when its heartbeat is older than ``stale_after_s`` (a holder on another machine).

A lock file is hidden (its name starts with a dot), so listings of the output never show it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from echoprime import storage

LOCK_NAME = ".echoprime.lock"
STALE_AFTER_S = 600.0
"""An S3 lock whose heartbeat is older than this is stale (its holder refreshes it 5x as often)."""


class OutputBusy(RuntimeError):
    """Another job holds the output; the message names it and says what to do."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: what ``OUT/.echoprime.lock`` says."""

    job: str
    host: str
    pid: int
    started: float
    heartbeat: float
    token: str
    pid_ns: str | None = None
    """The holder's pid namespace: a pid means the same process only inside one namespace."""
    proc_start: str | None = None
    """The holder's start time in /proc: tells the holder from a later process given its pid."""

    @classmethod
    def me(cls, job: str) -> LockHolder:
        now = time.time()
        pid = os.getpid()
        return cls(job, socket.gethostname(), pid, now, now, uuid.uuid4().hex, _pid_ns(), _proc_start(pid))

    @classmethod
    def parse(cls, data: bytes) -> LockHolder | None:
        """The holder a lock file names, or None when it names none (empty, or unreadable)."""
        try:
            d = json.loads(data)
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError):
            return None

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    def describe(self) -> str:
        return f"{self.job} (pid {self.pid} on {self.host}, since {_utc(self.started)})"

    def gone(self) -> bool | None:
        """Whether the holding process has ended: True or False when it ran on this host (same
        hostname and pid namespace), None when that cannot be told from here."""
        if self.host != socket.gethostname() or (self.pid_ns or None) != _pid_ns():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # someone else's process: it exists
            pass
        now = _proc_start(self.pid)
        return bool(self.proc_start and now and now != self.proc_start)  # the pid was given again


class OutputLock:
    """The lock of the output at ``uri``, for a job named ``job`` (e.g. ``echoprime ingest``).

    Use ``with OutputLock(uri, job) as lock:`` or :meth:`acquire` / :meth:`release`. After
    acquiring, :attr:`recovered` is the earlier holder whose lock was taken over because it had
    ended without releasing it (None otherwise), and :attr:`recovered_message` says so in words.

    Args:
        uri: the output folder or ``s3://`` prefix (created when missing).
        job: the command, as the refusal message of a second job shows it.
        stale_after_s: S3 only: a holder on another host is taken to be gone when its heartbeat
            is older than this.
    """

    def __init__(self, uri: str, job: str, *, stale_after_s: float = STALE_AFTER_S) -> None:
        self.out = storage.locate(uri)
        self.lock_uri = self.out.join(LOCK_NAME).uri
        self.job = job
        self.stale_after_s = float(stale_after_s)
        self.recovered: LockHolder | None = None
        self.recovered_message: str | None = None
        self._me: LockHolder | None = None
        self._fd: int | None = None
        self._etag: str | None = None
        self._lost: LockHolder | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._guard = threading.Lock()

    # ---------------------------------------------------------------------------------- API
    def acquire(self) -> OutputLock:
        """Take the lock.

        Raises:
            OutputBusy: a live job holds it (the message names it).
            ValueError: the output cannot be written.
        """
        if self._me is not None:
            raise RuntimeError(f"{self.lock_uri} is held already by this OutputLock")
        self._me = LockHolder.me(self.job)
        try:
            self._acquire_s3() if storage.is_s3(self.out.uri) else self._acquire_local()
        except BaseException:
            self._me = None
            raise
        if self.recovered is not None:
            self.recovered_message = (
                f"took over the lock on {self.out.uri} from {self.recovered.describe()}: "
                f"{self._why_gone(self.recovered)}; it ended without releasing the lock, so what it "
                "had not finished is redone or cleaned up now"
            )
        return self

    def release(self) -> None:
        """Give the lock back (a no-op when not held)."""
        if self._me is None:
            return
        try:
            if self._fd is not None:
                import fcntl

                os.ftruncate(self._fd, 0)  # an empty file names no holder: released, not crashed
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None
            else:
                self._release_s3()
        finally:
            self._me = None

    def check(self) -> None:
        """Raise when the lock was lost (an S3 holder that missed its heartbeats long enough for
        another job to take over); a long job calls this between units of work.

        Raises:
            OutputBusy: naming the job that holds the output now.
        """
        if self._lost is not None:
            raise OutputBusy(
                f"lost the lock on {self.out.uri} to {self._lost.describe()} (this job's heartbeat "
                f"was missed for over {self.stale_after_s:.0f} s); stopping so that two jobs do not "
                "write the same output"
            )

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # ---------------------------------------------------------------------------- messages
    def _busy(self, holder: LockHolder | None) -> OutputBusy:
        who = holder.describe() if holder else "another job (it has not written its name yet)"
        msg = (
            f"output {self.out.uri} is in use by {who}: two jobs writing one output would overwrite "
            f"each other's files. Wait for it to end, or use another output."
        )
        if storage.is_s3(self.out.uri) and holder is not None:
            msg += (
                f" If that job is gone, its lock counts as stale {self.stale_after_s:.0f} s after its "
                f"last heartbeat ({_utc(holder.heartbeat)}, refreshed every "
                f"{self.stale_after_s / 5:.0f} s), or delete {self.lock_uri} once you are sure."
            )
        return OutputBusy(msg)

    def _why_gone(self, holder: LockHolder) -> str:
        if holder.gone():
            return f"process {holder.pid} no longer runs on {holder.host}"
        if not storage.is_s3(self.out.uri):
            return "its process has ended (the kernel released its lock)"
        age = time.time() - holder.heartbeat
        return f"its last heartbeat was {age:.0f} s ago (stale after {self.stale_after_s:.0f} s)"

    def _stale(self, holder: LockHolder | None, modified: float) -> bool:
        if holder is None:  # an object that names no holder: judged by its age alone
            return time.time() - modified > self.stale_after_s
        gone = holder.gone()
        if gone is not None:
            return gone
        return time.time() - holder.heartbeat > self.stale_after_s

    # ------------------------------------------------------------------------------- local
    def _acquire_local(self) -> None:
        import fcntl

        folder = Path(self.out.path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ValueError(f"output location {self.out.uri!r} is not writable: {e}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = None
            for _ in range(100):  # the winner writes its name just after taking the lock: wait <= 1 s
                holder = LockHolder.parse(os.pread(fd, 1 << 16, 0))
                if holder is not None:
                    break
                time.sleep(0.01)
            os.close(fd)
            raise self._busy(holder) from None
        except BaseException:
            os.close(fd)
            raise
        self.recovered = LockHolder.parse(os.pread(fd, 1 << 16, 0))  # a holder that did not release
        assert self._me is not None
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._me.to_bytes(), 0)
        self._fd = fd

    # ---------------------------------------------------------------------------------- S3
    def _bucket_key(self) -> tuple[str, str]:
        bucket, _, key = self.out.join(LOCK_NAME).path.partition("/")
        return bucket, key

    def _acquire_s3(self) -> None:
        assert self._me is not None
        client, (bucket, key) = _s3_client(), self._bucket_key()
        body = self._me.to_bytes()
        for _ in range(5):
            try:
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")["ETag"]
                break
            except Exception as e:
                if not _precondition(e):
                    raise
            try:
                got = client.get_object(Bucket=bucket, Key=key)
            except Exception as e:
                if _missing(e):
                    continue  # released in between: try to create it again
                raise
            holder = LockHolder.parse(got["Body"].read())
            if not self._stale(holder, got["LastModified"].timestamp()):
                raise self._busy(holder)
            try:
                self._etag = client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=got["ETag"])["ETag"]
                self.recovered = holder
                break
            except Exception as e:
                if not (_precondition(e) or _missing(e)):
                    raise  # another job replaced or released it first: look again
        else:
            raise OutputBusy(
                f"output {self.out.uri}: its lock changed hands 5 times while this job tried to take it"
            )
        # An S3 endpoint that ignores conditional writes would let two jobs in: read back.
        got = LockHolder.parse(client.get_object(Bucket=bucket, Key=key)["Body"].read())
        if got is None or got.token != self._me.token:
            self._etag = None
            raise self._busy(got)
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="echoprime-lock-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        client = _s3_client()
        while not self._stop.wait(self.stale_after_s / 5) and self.beat(client):
            pass

    def beat(self, client: Any = None) -> bool:
        """Refresh an S3 lock's heartbeat once (the heartbeat thread does this every
        ``stale_after_s / 5`` seconds); False once the lock is not held or was lost (then
        :meth:`check` raises, naming the job that has it now). A network error is not a loss:
        the next beat tries again, long before the lock counts as stale."""
        client = client or _s3_client()
        bucket, key = self._bucket_key()
        with self._guard:
            if self._me is None or self._etag is None:
                return False
            me = LockHolder(**{**asdict(self._me), "heartbeat": time.time()})
            try:
                self._etag = client.put_object(
                    Bucket=bucket, Key=key, Body=me.to_bytes(), IfMatch=self._etag
                )["ETag"]
                self._me = me
                return True
            except Exception as e:
                if not (_precondition(e) or _missing(e)):
                    return True
            with contextlib.suppress(Exception):
                self._lost = LockHolder.parse(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            self._lost = self._lost or LockHolder("another job (its lock was deleted)", "?", 0, 0.0, 0.0, "")
            self._etag = None
            return False

    def _release_s3(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=30)
            self._beat = None
        with self._guard:
            etag, self._etag = self._etag, None
        if etag is None:  # lost: the lock is someone else's now
            return
        client, (bucket, key) = _s3_client(), self._bucket_key()
        try:
            client.delete_object(Bucket=bucket, Key=key, IfMatch=etag)
        except Exception as e:
            if _precondition(e) or _missing(e):
                return
            # An endpoint without conditional deletes: delete only what still names this job.
            got = LockHolder.parse(client.get_object(Bucket=bucket, Key=key)["Body"].read())
            if got is not None and self._me is not None and got.token == self._me.token:
                client.delete_object(Bucket=bucket, Key=key)


def _s3_client() -> Any:
    """A boto3 S3 client from the same environment as :func:`echoprime.storage.s3_filesystem`."""
    import boto3

    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return boto3.client("s3", endpoint_url=endpoint or None, region_name=region or None)


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _precondition(e: Exception) -> bool:
    """A conditional write lost: the object exists (create) or changed (replace)."""
    return _code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _missing(e: Exception) -> bool:
    return _code(e) in ("NoSuchKey", "404", "NotFound")


def _pid_ns() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: the process's start time in clock ticks since boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))
