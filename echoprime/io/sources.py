"""A study's input, wherever it comes from, as the ``(name, source)`` items that
:func:`echoprime.io.files.load_file` reads (:func:`echoprime.inference.read_study` makes clips of
them).

The one place that lists a study folder (a local folder or an ``s3://`` prefix) and reads
object-store objects or local files into bytes. A study arrives as a folder or prefix, a list of
paths or ``s3://`` URIs, or ``(name, bytes)`` uploads; :func:`study_items` turns any of them into
items. A file that cannot be read does not stop its study: it is reported by its name with one
of two codes (the ones docs/api.md promises for the HTTP API):

* ``not_found``: no such object or file;
* ``unreadable``: the store or the disk would not give it (missing permission, the store
  unreachable, the object changed while it was read). The client sees a stable reason; the log
  gets the error, with the object's key replaced by a digest (keys may hold patient names).

Example::

    items, failed = study_items("s3://archive/study_0001/")
    [load_file(name, src, prepare) for name, src in items]
    failed  # {"s3://archive/study_0001/IM9.dcm": ("not_found", "no such object ...")}
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
from collections.abc import Sequence
from pathlib import Path
from typing import Union

import pyarrow.fs as pafs

from echoprime import storage

log = logging.getLogger(__name__)

NOT_FOUND = "not_found"
UNREADABLE = "unreadable"
STORE_REASON = "cannot be read from the object store (the server's log has the details)"
DISK_REASON = "cannot be read from disk (the log has the details)"
MISSING_REASON = "no such object in the object store"
CHANGED_REASON = "the object changed while it was being read; send it again"

Item = tuple[str, Path | bytes]
"""A file of a study under its name in reports: its local path, or its bytes."""
Failures = dict[str, tuple[str, str]]
"""``{name: (code, reason)}`` of the files that could not be read."""
StudySource = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]", tuple[str, bytes]]]]
"""A folder or ``s3://`` prefix, or a list of paths, ``s3://`` URIs and ``(name, bytes)`` uploads."""


class StudyTooLarge(ValueError):
    """The objects of a study together exceed the size the caller allows (checked before any
    object is downloaded).

    Args:
        total: their size in bytes, as the store lists it.
        limit: the most the caller takes.
    """

    def __init__(self, total: int, limit: int) -> None:
        super().__init__(f"the study's objects together is {total} bytes; the limit is {limit} bytes")
        self.total, self.limit = total, limit


def _path_key(rel: str) -> list[str]:
    # The order of pathlib's sort (part by part), so that "a/b" comes before "a-b/c".
    return rel.split("/")


def list_study(folder: str | os.PathLike[str], *, recursive: bool = True, hidden: bool = False) -> list[str]:
    """The files of a study folder, sorted by path part by part.

    Args:
        folder: a local folder or an ``s3://bucket/prefix``.
        recursive: include sub-folders.
        hidden: include files whose name starts with ``.`` (``.DS_Store``, editors' files).

    Returns:
        Local entries that are not folders, as paths written from ``folder`` as given (not
        resolved: they name the files in reports); objects as ``s3://`` URIs.

    Raises:
        FileNotFoundError: ``folder`` is not a folder (missing, or a file).
    """
    where = str(folder)
    if storage.is_s3(where):
        loc = storage.locate(where)
        if loc.fs.get_file_info(loc.path).type != pafs.FileType.Directory:
            raise FileNotFoundError(f"study folder {where!r} does not exist")
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=recursive))
        rels = [posixpath.relpath(i.path, loc.path) for i in infos if i.type == pafs.FileType.File]
        keep = [r for r in rels if hidden or not posixpath.basename(r).startswith(".")]
        return [loc.join(r).uri for r in sorted(keep, key=_path_key)]
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"study folder {str(root)!r} does not exist")
    found = root.rglob("*") if recursive else root.iterdir()
    return [str(p) for p in sorted(found) if not p.is_dir() and (hidden or not p.name.startswith("."))]


def _fingerprint(text: str) -> str:
    """A short digest that names an object in the log without its key (keys may hold names)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _log_failure(uri: str, what: str, e: BaseException) -> str:
    """Log why ``uri`` cannot be ``what`` (listed, read) and return the client's reason."""
    if not storage.is_s3(uri):
        detail = str(e).replace(uri, "<path>")
        log.warning(
            "echoprime: file %s cannot be %s: %s: %s", _fingerprint(uri), what, type(e).__name__, detail
        )
        return DISK_REASON
    bucket, _, key = uri[len("s3://") :].partition("/")
    detail = str(e).replace(key, "<key>") if key else str(e)
    log.warning(
        "echoprime: S3 object %s in bucket %s cannot be %s: %s: %s",
        _fingerprint(uri),
        bucket,
        what,
        type(e).__name__,
        detail[:500],
    )
    return STORE_REASON


def read_objects(
    sources: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    max_total_bytes: int | None = None,
) -> tuple[list[tuple[str, bytes]], Failures]:
    """Read objects (``s3://`` URIs) or local files into bytes, checking their total size first.

    A source that cannot be listed or read is reported for itself alone (see the module doc);
    an object replaced while it is read is never read past the size it was listed with.

    Args:
        sources: ``s3://bucket/key`` URIs or local paths.
        names: the name of each source in the answer (default: the source itself).
        max_total_bytes: refuse a study whose objects together are larger (``None``: no limit).

    Returns:
        ``(name, bytes)`` of each source read, in order, and ``{name: (code, reason)}`` of the
        others.

    Raises:
        StudyTooLarge: the sources together exceed ``max_total_bytes``.
        ValueError: ``names`` and ``sources`` differ in length.
    """
    names = list(sources) if names is None else list(names)
    if len(names) != len(sources):
        raise ValueError(f"{len(sources)} sources need as many names, got {len(names)}")
    sizes: dict[str, tuple[str, int]] = {}
    failed: Failures = {}
    for uri, name in zip(sources, names, strict=True):
        try:
            loc = storage.locate(uri)
            info = loc.fs.get_file_info(loc.path)
        except Exception as e:  # the store's failure, not the client's: log it, report the file
            failed[name] = (UNREADABLE, _log_failure(uri, "listed", e))
            continue
        if info.type != pafs.FileType.File:
            failed[name] = (NOT_FOUND, MISSING_REASON)
        else:
            sizes[name] = (uri, int(info.size))
    total = sum(size for _, size in sizes.values())
    if max_total_bytes is not None and total > max_total_bytes:
        raise StudyTooLarge(total, max_total_bytes)
    out = []
    for name, (uri, size) in sizes.items():
        try:
            loc = storage.locate(uri)
            with loc.fs.open_input_stream(loc.path) as f:
                data = f.read(size + 1)  # never more than was listed (an object replaced meanwhile)
        except Exception as e:
            failed[name] = (UNREADABLE, _log_failure(uri, "read", e))
            continue
        if len(data) != size:
            failed[name] = (UNREADABLE, CHANGED_REASON)
            continue
        out.append((name, data))
    return out, failed


def study_items(study: StudySource, *, max_total_bytes: int | None = None) -> tuple[list[Item], Failures]:
    """Any study input as the ``(name, source)`` items :func:`echoprime.io.files.load_file` reads.

    Args:
        study: a folder or ``s3://`` prefix (its files, :func:`list_study`), or a list of local
            paths, ``s3://`` URIs and ``(name, bytes)`` uploads. Local files are named by their
            path as given, objects by their URI.
        max_total_bytes: refuse a study whose objects together are larger (local files and
            uploads do not count: they are read already or read one at a time).

    Returns:
        The items in the order of the input (the objects downloaded), and the ``{name: (code,
        reason)}`` of the objects that could not be read.

    Raises:
        FileNotFoundError: a folder or prefix that does not exist.
        StudyTooLarge: the objects together exceed ``max_total_bytes``.
    """
    entries = list_study(study) if isinstance(study, (str, os.PathLike)) else list(study)
    uris = [e for e in entries if isinstance(e, str) and storage.is_s3(e)]
    read, failed = read_objects(uris, max_total_bytes=max_total_bytes) if uris else ([], {})
    got = dict(read)
    items: list[Item] = []
    for e in entries:
        if isinstance(e, tuple):
            items.append((e[0], e[1]))
        elif isinstance(e, str) and storage.is_s3(e):
            if e in got:
                items.append((e, got[e]))
        else:
            items.append((str(e), Path(e)))
    return items, failed
