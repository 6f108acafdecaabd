"""Local paths and ``s3://`` URIs behind one small interface (pyarrow filesystems).

S3 settings come from the usual AWS environment: credentials from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` (or the default chain), region from ``AWS_REGION`` /
``AWS_DEFAULT_REGION``, and a custom endpoint (MinIO, moto, an on-premises object store) from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow.fs as pafs


def is_s3(uri: str | os.PathLike) -> bool:
    return str(uri).startswith("s3://")


def s3_filesystem() -> pafs.S3FileSystem:
    """An S3 filesystem configured from the AWS environment variables (see module doc)."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict = {}
    if endpoint:
        u = urlparse(endpoint)
        kwargs["endpoint_override"] = u.netloc or u.path
        kwargs["scheme"] = u.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        kwargs["access_key"] = key
        kwargs["secret_key"] = secret
        if os.environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = os.environ["AWS_SESSION_TOKEN"]
    return pafs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class Location:
    """A filesystem plus a path on it; ``uri`` is what the user wrote (``s3://b/p`` or a local path)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    def join(self, *parts: str) -> Location:
        if is_s3(self.uri):
            return Location(self.fs, posixpath.join(self.path, *parts), posixpath.join(self.uri, *parts))
        p = str(Path(self.path, *parts))
        return Location(self.fs, p, p)


def locate(uri: str | os.PathLike) -> Location:
    """Resolve a local path or an ``s3://bucket/prefix`` URI."""
    s = str(uri)
    if is_s3(s):
        rest = s[len("s3://") :].rstrip("/")
        if not rest:
            raise ValueError(f"S3 URI {s!r} names no bucket (expected s3://bucket/prefix)")
        return Location(s3_filesystem(), rest, "s3://" + rest)
    p = str(Path(s).expanduser().resolve())
    return Location(pafs.LocalFileSystem(), p, p)


def list_files(uri: str | os.PathLike) -> list[str]:
    """Every file under ``uri`` (recursively), as URIs/paths, sorted; hidden files skipped.

    Raises:
        FileNotFoundError: the folder or prefix does not exist.
    """
    loc = locate(uri)
    info = loc.fs.get_file_info(loc.path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {loc.uri!r} does not exist")
    if info.type == pafs.FileType.File:
        return [loc.uri]
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True))
    out = []
    for i in infos:
        if i.type != pafs.FileType.File:
            continue
        rel = posixpath.relpath(i.path, loc.path) if is_s3(loc.uri) else os.path.relpath(i.path, loc.path)
        if any(part.startswith(".") for part in Path(rel).parts):
            continue
        out.append(loc.join(rel).uri)
    return sorted(out)


def read_bytes(uri: str | os.PathLike) -> bytes:
    loc = locate(uri)
    with loc.fs.open_input_stream(loc.path) as f:
        return f.read()


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write a whole object; locally through a temporary name and a rename (atomic)."""
    loc = locate(uri)
    if is_s3(loc.uri):
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
        return
    p = Path(loc.path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(p)


def exists(uri: str | os.PathLike) -> bool:
    loc = locate(uri)
    return loc.fs.get_file_info(loc.path).type != pafs.FileType.NotFound


def delete_dir(uri: str | os.PathLike) -> None:
    loc = locate(uri)
    if loc.fs.get_file_info(loc.path).type == pafs.FileType.Directory:
        loc.fs.delete_dir(loc.path)


def ensure_dir(uri: str | os.PathLike) -> Location:
    """Create a folder (a no-op prefix on S3) and check it can be written.

    Raises:
        ValueError: naming the location and why it cannot be written.
    """
    loc = locate(uri)
    probe = loc.join(f".write-probe-{os.getpid()}")
    try:
        loc.fs.create_dir(loc.path, recursive=True)
        with loc.fs.open_output_stream(probe.path) as f:
            f.write(b"")
        loc.fs.delete_file(probe.path)
    except OSError as e:
        raise ValueError(f"output location {loc.uri!r} is not writable: {e}") from None
    return loc
