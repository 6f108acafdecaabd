"""Reading a study from a request within the limits: multipart uploads or JSON with s3:// URIs.

Every limit is checked before the work it protects: the declared ``Content-Length`` before any
byte is read, the bytes actually received while they stream in (and how fast they come: a
stalled or trickling client is cut off with 408), the number of files as the form is parsed,
and S3 object sizes before any object is downloaded. Whatever a client sends, reading it
raises nothing but an :class:`~echoprime.api.errors.ApiError` with a 4xx status, whose reason names the
field or limit; what went wrong on the server's side (an S3 error, say) goes to the log, and
the client gets a stable code.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Protocol

from pydantic import BaseModel, ValidationError

from echoprime.api.errors import ApiError, describe_errors, log
from echoprime.io.sources import StudyTooLarge, read_objects

MB = 1 << 20
JSON_LIMIT = 4 << 20
"""The largest JSON body (URIs, texts, an embedding: they are small)."""
MAX_NAME = 255
"""Longest file name echoed back (a client's name beyond it is cut)."""


class LimitArgs(Protocol):
    """The fields of ``serve.args.ServeArgs`` that :meth:`Limits.from_args` reads."""

    max_upload_mb: int
    max_files: int
    max_frames_per_file: int
    request_timeout_s: float
    body_timeout_s: float
    body_idle_timeout_s: float
    max_concurrent_uploads: int


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (see ``serve.args.ServeArgs``)."""

    max_upload_bytes: int
    max_files: int
    max_frames_per_file: int
    request_timeout_s: float
    max_texts: int = 64
    max_text_chars: int = 20_000
    body_timeout_s: float = 60.0
    body_idle_timeout_s: float = 15.0
    max_concurrent_uploads: int = 16

    @classmethod
    def from_args(cls, args: LimitArgs) -> Limits:
        return cls(
            args.max_upload_mb * MB,
            args.max_files,
            args.max_frames_per_file,
            args.request_timeout_s,
            body_timeout_s=args.body_timeout_s,
            body_idle_timeout_s=args.body_idle_timeout_s,
            max_concurrent_uploads=args.max_concurrent_uploads,
        )


Study = list[tuple[str, bytes]] | list[str]
"""Uploaded ``(name, bytes)`` files, or ``s3://`` URIs for the Preprocess deployment to read."""

_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def clean_name(name: str | None, i: int) -> str:
    """The file's base name (a client's folders are not ours to echo back), without control
    characters and at most :data:`MAX_NAME` characters, or ``file<i>``."""
    base = _UNPRINTABLE.sub("", PurePosixPath((name or "").replace("\\", "/")).name).strip()
    return base[:MAX_NAME] or f"file{i}"


def too_large(what: str, got: int, limit: int, unit: str = "bytes") -> ApiError:
    return ApiError(413, "payload_too_large", f"{what} is {got} {unit}; the limit is {limit} {unit}")


def body_timeout(request: Any, why: str, seen: int, started: float) -> ApiError:
    """408 for a body that came too slowly, with a log line (no patient data: path and sizes)."""
    log.warning(
        "echoprime serve: cut off %s %s after %.1f s: %s (%d bytes received)",
        request.method,
        request.url.path,
        time.monotonic() - started,
        why,
        seen,
    )
    return ApiError(408, "body_timeout", f"the request body did not arrive in time: {why}")


async def _limited(request: Any, limit: int, limits: Limits) -> AsyncIterator[bytes]:
    """The body's pieces, refusing more than ``limit`` bytes and a client that sends too slowly:
    no piece for ``body_idle_timeout_s``, or the whole body not within ``body_timeout_s``."""
    started = time.monotonic()
    deadline = started + min(limits.body_timeout_s, limits.request_timeout_s)
    seen = 0
    stream = request.stream().__aiter__()
    while True:
        wait = min(limits.body_idle_timeout_s, deadline - time.monotonic())
        try:
            chunk = await asyncio.wait_for(stream.__anext__(), max(wait, 0.0))
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            if time.monotonic() >= deadline - 1e-3:
                raise body_timeout(
                    request,
                    f"it took longer than {min(limits.body_timeout_s, limits.request_timeout_s):g} s",
                    seen,
                    started,
                ) from None
            raise body_timeout(
                request, f"nothing arrived for {limits.body_idle_timeout_s:g} s", seen, started
            ) from None
        seen += len(chunk)
        if seen > limit:
            raise ApiError(413, "payload_too_large", f"the request body exceeds the limit of {limit} bytes")
        yield chunk


def check_declared_size(request: Any, limit: int) -> None:
    """413 at once when ``Content-Length`` already says the body is too large."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and len(declared) < 20 and int(declared) > limit:
        raise too_large("the request body", int(declared), limit)


async def read_body(request: Any, limit: int, limits: Limits) -> bytes:
    """The whole body, refusing more than ``limit`` bytes or a body that comes too slowly."""
    check_declared_size(request, limit)
    return b"".join([c async for c in _limited(request, limit, limits)])


def _number(text: str) -> int | float:
    # An integer of more digits than any field needs becomes a float (inf when huge), which the
    # models then refuse naming the field; int() would raise past 4300 digits.
    return int(text) if len(text) <= 40 else float(text)


def parse_json(body: bytes) -> Any:
    """``body`` parsed as JSON.

    ``NaN`` and ``Infinity`` parse as floats (the request models refuse non-finite numbers,
    naming the field), and so do integers of more than 40 digits.

    Raises:
        ApiError: 422 ``invalid_json`` for text that is not JSON, not UTF-8, or nested too deeply.
    """
    try:
        return json.loads(body, parse_int=_number)
    except RecursionError:
        raise ApiError(
            422, "invalid_json", "the body nests arrays or objects too deeply (the API's bodies are flat)"
        ) from None
    except json.JSONDecodeError as e:
        raise ApiError(
            422, "invalid_json", f"the body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None
    except UnicodeDecodeError:
        raise ApiError(422, "invalid_json", "the body is not valid JSON: it is not UTF-8 text") from None
    except ValueError:
        raise ApiError(422, "invalid_json", "the body is not valid JSON") from None


async def read_json(request: Any, limit: int, limits: Limits) -> Any:
    """The body parsed as JSON (see :func:`parse_json`)."""
    return parse_json(await read_body(request, limit, limits))


async def read_model(request: Any, model: type[BaseModel], limits: Limits) -> Any:
    """The JSON body validated as ``model``.

    Raises:
        ApiError: 422 ``invalid_json`` or ``invalid_request`` (naming the fields), 413, 408.
    """
    try:
        return model.model_validate(await read_json(request, JSON_LIMIT, limits))
    except ValidationError as e:
        raise ApiError(422, "invalid_request", describe_errors(e.errors())) from None


async def read_study(request: Any, limits: Limits) -> Study:
    """A study as a request sends it: uploaded files (``multipart/form-data``) or ``s3://`` URIs
    (``application/json``, :func:`parse_uri_list`).

    Raises:
        ApiError: 415 ``unsupported_media_type`` for any other content type; those of
            :func:`read_files` and :func:`parse_uri_list`.
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await read_files(request, limits)
    if kind == "application/json":
        return parse_uri_list(await read_json(request, JSON_LIMIT, limits), limits)
    shown = kind if len(kind) <= 60 else kind[:57] + "..."
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send multipart/form-data (files) or application/json (s3:// URIs), not {shown or 'no content type'!r}",
    )


async def read_files(request: Any, limits: Limits, field: str = "files") -> list[tuple[str, bytes]]:
    """The files of a ``multipart/form-data`` body (every file part counts, whatever its field).

    Raises:
        ApiError: 413 (body or file count over the limit), 408 (the body came too slowly),
            422 (no file, or a body the multipart parser refuses).
    """
    from starlette.formparsers import MultiPartException, MultiPartParser

    check_declared_size(request, limits.max_upload_bytes)
    # One file over the limit is enough to refuse; the parser stops counting there.
    parser = MultiPartParser(
        request.headers,
        _limited(request, limits.max_upload_bytes, limits),
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
    except (ApiError, asyncio.CancelledError):
        raise
    except Exception as e:  # the parser's own errors on malformed input: the client's 422
        log.info("echoprime serve: multipart parser refused a body: %s", type(e).__name__)
        raise ApiError(
            422,
            "invalid_multipart",
            "the multipart body cannot be parsed (malformed boundary or part headers)",
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
    """``{"files": ["s3://bucket/key", ...]}`` -> the URIs, checked
    (:class:`echoprime.api.schemas.InterpretByUri`).

    Raises:
        ApiError: 413 for too many files; 422 ``invalid_uri`` for a malformed or non-``s3://``
            URI, ``no_files`` for an empty list, ``invalid_request`` for another shape; each
            reason names the field (``files.3: ...``).
    """
    from echoprime.api.schemas import InterpretByUri

    files = payload.get("files") if isinstance(payload, dict) else None
    if isinstance(files, list) and len(files) > limits.max_files:  # before validating each
        raise ApiError(
            413, "too_many_files", f"the study has {len(files)} files; the limit is {limits.max_files}"
        )
    try:
        return list(InterpretByUri.model_validate(payload).files)
    except ValidationError as e:
        errors = e.errors()
        kinds = {err["type"] for err in errors}
        if kinds == {"invalid_uri"}:
            code = "invalid_uri"  # never read the server's own disk on a client's behalf
        elif kinds == {"too_short"} and isinstance(files, list):
            code = "no_files"
        else:
            code = "invalid_request"
        reason = describe_errors(errors)
        if code == "invalid_request":
            reason += '; expected a JSON object {"files": ["s3://bucket/key", ...]}'
        raise ApiError(422, code, reason) from None


def fetch_s3(
    uris: Sequence[str], limits: Limits
) -> tuple[list[tuple[str, bytes]], dict[str, tuple[str, str]]]:
    """Download a study's objects (:func:`echoprime.io.sources.read_objects`), checking
    their total size against the upload limit first.

    An object that cannot be listed or read (missing, no permission, the store unreachable) is
    reported for that file alone: ``not_found`` or ``unreadable`` with a stable reason; the log
    gets the S3 error (with the object's key replaced by a digest: keys may hold patient names).

    Returns:
        ``(name, bytes)`` for each object read, and ``{uri: (code, reason)}`` for the others.

    Raises:
        ApiError: 413 when the objects together exceed the upload limit.
    """
    try:
        return read_objects(uris, max_total_bytes=limits.max_upload_bytes)
    except StudyTooLarge as e:
        raise too_large("the study's objects together", e.total, e.limit) from None
