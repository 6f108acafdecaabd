"""Reading a study from a request within the limits: multipart uploads or JSON with s3:// URIs.

Every limit is checked before the work it protects: the declared ``Content-Length`` before any
byte is read, the bytes actually received while they stream in, the number of files as the
form is parsed, and S3 object sizes before any object is downloaded.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from serve.args import ServeArgs
from serve.errors import ApiError

MB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (see :class:`serve.args.ServeArgs`)."""

    max_upload_bytes: int
    max_files: int
    max_frames_per_file: int
    request_timeout_s: float
    max_texts: int = 64
    max_text_chars: int = 20_000

    @classmethod
    def from_args(cls, args: ServeArgs) -> Limits:
        return cls(args.max_upload_mb * MB, args.max_files, args.max_frames_per_file, args.request_timeout_s)


Study = list[tuple[str, bytes]] | list[str]
"""Uploaded ``(name, bytes)`` files, or ``s3://`` URIs for the Preprocess deployment to read."""


def clean_name(name: str | None, i: int) -> str:
    """The file's base name (a client's folders are not ours to echo back), or ``file<i>``."""
    base = PurePosixPath((name or "").replace("\\", "/")).name.strip()
    return base or f"file{i}"


def too_large(what: str, got: int, limit: int, unit: str = "bytes") -> ApiError:
    return ApiError(413, "payload_too_large", f"{what} is {got} {unit}; the limit is {limit} {unit}")


async def _limited(request: Any, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, "payload_too_large", f"the request body exceeds the limit of {limit} bytes")
        yield chunk


def check_declared_size(request: Any, limit: int) -> None:
    """413 at once when ``Content-Length`` already says the body is too large."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large("the request body", int(declared), limit)


async def read_body(request: Any, limit: int) -> bytes:
    """The whole body, refusing more than ``limit`` bytes."""
    check_declared_size(request, limit)
    return b"".join([c async for c in _limited(request, limit)])


async def read_json(request: Any, limit: int) -> Any:
    """The body parsed as JSON (422 with the parser's message when it is not)."""
    body = await read_body(request, limit)
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(422, "invalid_json", f"the body is not valid JSON ({e})") from None


async def read_files(request: Any, limits: Limits, field: str = "files") -> list[tuple[str, bytes]]:
    """The files of a ``multipart/form-data`` body (every file part counts, whatever its field).

    Raises:
        ApiError: 413 (body or file count over the limit), 422 (no file, or not multipart).
    """
    from starlette.formparsers import MultiPartException, MultiPartParser

    check_declared_size(request, limits.max_upload_bytes)
    # One file over the limit is enough to refuse; the parser stops counting there.
    parser = MultiPartParser(
        request.headers,
        _limited(request, limits.max_upload_bytes),
        max_files=limits.max_files + 1,
        max_fields=1000,
    )
    try:
        form = await parser.parse()
    except MultiPartException as e:
        if "files" in e.message.lower():
            raise ApiError(
                413, "too_many_files", f"a study may hold at most {limits.max_files} files ({e.message})"
            ) from None
        raise ApiError(
            422, "invalid_multipart", f"the multipart body cannot be parsed: {e.message}"
        ) from None
    try:
        uploads = [v for _, v in form.multi_items() if not isinstance(v, str)]
        if len(uploads) > limits.max_files:
            raise ApiError(
                413, "too_many_files", f"the study has {len(uploads)} files; the limit is {limits.max_files}"
            )
        if not uploads:
            raise ApiError(
                422,
                "no_files",
                f"no file in the upload: send the study's files as multipart parts named {field!r}",
            )
        return [(clean_name(u.filename, i), await u.read()) for i, u in enumerate(uploads)]
    finally:
        await form.close()


def parse_uri_list(payload: Any, limits: Limits) -> list[str]:
    """``{"files": ["s3://bucket/key", ...]}`` -> the URIs, checked.

    Raises:
        ApiError: 422 for another shape or a non-``s3://`` entry, 413 for too many files.
    """
    files = payload.get("files") if isinstance(payload, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise ApiError(422, "invalid_request", 'expected a JSON object {"files": ["s3://bucket/key", ...]}')
    if extra := sorted(set(payload) - {"files"}):
        raise ApiError(422, "invalid_request", f"unknown keys {extra}; expected only 'files'")
    if not files:
        raise ApiError(422, "no_files", "'files' is empty: list the study's s3:// URIs")
    if len(files) > limits.max_files:
        raise ApiError(
            413, "too_many_files", f"the study has {len(files)} files; the limit is {limits.max_files}"
        )
    bad = [f for f in files if not f.startswith("s3://") or len(f) <= len("s3://")]
    if bad:
        # Never read the server's own disk on a client's behalf: only object-store URIs.
        raise ApiError(422, "invalid_uri", f"only s3:// URIs are accepted, got {bad[:3]}")
    return files


def fetch_s3(uris: Sequence[str], limits: Limits) -> tuple[list[tuple[str, bytes]], dict[str, str]]:
    """Download the objects, checking their total size first.

    Returns:
        ``(name, bytes)`` for each object that exists, and ``{uri: reason}`` for those that do not.

    Raises:
        ApiError: 413 when the objects together exceed the upload limit.
    """
    import pyarrow.fs as pafs

    from echoprime import storage

    sizes, missing = {}, {}
    for uri in uris:
        loc = storage.locate(uri)
        try:
            info = loc.fs.get_file_info(loc.path)
        except OSError as e:
            missing[uri] = f"cannot be read from the object store ({e})"
            continue
        if info.type != pafs.FileType.File:
            missing[uri] = "no such object in the object store"
        else:
            sizes[uri] = info.size
    total = sum(sizes.values())
    if total > limits.max_upload_bytes:
        raise too_large("the study's objects together", total, limits.max_upload_bytes)
    return [(uri, storage.read_bytes(uri)) for uri in sizes], missing
