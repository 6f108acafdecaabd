"""What every dataset adapter shares: the tables it returns, its rejects, its errors, the root it reads.

An adapter reads a public dataset's folder *as published* and returns :class:`DatasetTables`: the
rows of ingest's *videos* table (``path``, ``study_id``, ``view``, ``patient_id``, ``split``,
``fps``) and *studies* table (``study_id``, ``report`` (empty), ``labels`` (JSON), ``patient_id``,
``split``), plus a :class:`DatasetReject` for every malformed table row and every video a table
names that is not on disk (or on disk and named by no table). Two kinds of trouble, two answers:

* a file whose *layout* is not the published one (a missing column, a file that is not there)
  raises :class:`DatasetLayoutError` naming the file and what was expected: nothing can be read
  from it row by row;
* a *row* whose values are wrong (not a number, an unknown split, the quirk of another dataset
  such as a ``.avi`` suffix where the dataset has none) becomes a reject with its reason; the
  other rows go on. A table none of whose rows can be used raises :class:`DatasetLayoutError`
  with the first reasons.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from echoprime.data.shards import SPLITS


class DatasetLayoutError(ValueError):
    """A dataset folder or table that is not laid out as the dataset publishes it (the message
    names the dataset, the file and what was expected)."""


class DatasetOptionError(ValueError):
    """An unknown dataset option or a bad option value (the message lists the accepted ones)."""


@dataclass(frozen=True)
class DatasetReject:
    """One thing an adapter could not use.

    Attributes:
        source: what is rejected: a video's path relative to the root, or ``<table>:<line>``
            for a table row that names no usable video.
        reason: why, in words a person can act on (names the table, the line and the column).
        code: ``missing_video`` (a table names a video that is not on disk), ``unlisted_video`` (a
            video no table names), ``bad_row`` (a malformed row), ``conflict`` (a row that
            contradicts an earlier one about the same study or patient).
        path: the video's path relative to the root when the reject is about a video (it is
            then named by its file key when ingest de-identifies), else ``None``.
    """

    source: str
    reason: str
    code: str
    path: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "reason": self.reason, "code": self.code, "path": self.path}


@dataclass
class DatasetTables:
    """What an adapter read: ingest's two tables, the rejects and a few counts.

    Attributes:
        dataset: the registry name (``echonet-dynamic``, ...).
        root: the dataset folder as given (local path or ``s3://`` URI).
        videos: videos-table rows (``path``, ``study_id``, ``view``, ``patient_id``, ``split``, ``fps``).
        studies: studies-table rows (``study_id``, ``report``, ``labels`` (JSON), ``patient_id``, ``split``).
        rejects: what could not be used, with reasons.
        options: the options the adapter ran with (defaults filled in).
        notes: counts and facts worth printing (e.g. files skipped on purpose).
    """

    dataset: str
    root: str
    videos: list[dict[str, Any]] = field(default_factory=list)
    studies: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[DatasetReject] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Videos and studies per split, rejects per code, and the notes."""
        vids = Counter(v["split"] for v in self.videos)
        studs = Counter(s["split"] for s in self.studies)
        return {
            "dataset": self.dataset,
            "videos": {s: vids.get(s, 0) for s in SPLITS},
            "studies": {s: studs.get(s, 0) for s in SPLITS},
            "rejects": dict(sorted(Counter(r.code for r in self.rejects).items())),
            "options": dict(self.options),
            **({"notes": dict(self.notes)} if self.notes else {}),
        }

    def labels_of(self, study_id: str) -> dict[str, float]:
        """The labels of one study (a test and debugging convenience)."""
        for s in self.studies:
            if s["study_id"] == study_id:
                return json.loads(s["labels"])
        raise KeyError(study_id)


class DatasetRoot:
    """A dataset folder (local or ``s3://``): its files listed once, read on demand.

    Paths are relative to the root with ``/`` separators, as the datasets' tables write them.
    """

    def __init__(self, uri: str, name: str) -> None:
        from echoprime import storage

        self.name = name
        loc = storage.locate(uri)
        self.uri = loc.uri.rstrip("/")
        try:
            listed = storage.list_files(self.uri)
        except FileNotFoundError:
            raise DatasetLayoutError(f"{name}: the dataset folder {uri!r} does not exist") from None
        self.files = {
            f[len(self.uri) + 1 :].replace("\\", "/") for f in listed if f.startswith(self.uri + "/")
        }
        if not self.files:
            raise DatasetLayoutError(f"{name}: the dataset folder {uri!r} holds no files")

    @classmethod
    def of_file(cls, uri: str, name: str, what: str) -> tuple[DatasetRoot, str]:
        """The folder of one table a user named by path (local or ``s3://``), and its file name.

        Raises:
            DatasetLayoutError: the file does not exist.
        """
        from echoprime import storage

        loc = storage.locate(uri)
        if not storage.exists(loc.uri):
            raise DatasetLayoutError(f"{name}: the {what} table {uri!r} does not exist")
        folder, base = posixpath.split(loc.uri.replace("\\", "/"))
        self = cls.__new__(cls)
        self.name, self.uri, self.files = name, folder, {base}
        return self, base

    def join(self, rel: str) -> str:
        """The URI of a file under the root."""
        return f"{self.uri}/{rel}"

    def has(self, rel: str) -> bool:
        return rel in self.files

    def under(self, folder: str) -> list[str]:
        """Every file under ``folder`` (relative paths, sorted)."""
        prefix = folder.rstrip("/") + "/"
        return sorted(f for f in self.files if f.startswith(prefix))

    def folders(self, folder: str = "") -> list[str]:
        """The names of the folders directly under ``folder`` that hold files."""
        prefix = folder.rstrip("/") + "/" if folder else ""
        return sorted(
            {
                f[len(prefix) :].split("/", 1)[0]
                for f in self.files
                if f.startswith(prefix) and "/" in f[len(prefix) :]
            }
        )

    def read(self, rel: str) -> bytes:
        from echoprime import storage

        return storage.read_bytes(self.join(rel))

    def text(self, rel: str) -> str:
        """A text file (UTF-8; a byte-order mark is dropped; gzip content inflated)."""
        data = self.read(rel)
        if data[:2] == b"\x1f\x8b":  # pyarrow's streams already inflate ".gz" files; others may not
            import gzip

            data = gzip.decompress(data)
        return data.decode("utf-8-sig")

    def require(self, rel: str, what: str) -> None:
        """Raise :class:`DatasetLayoutError` unless ``rel`` exists."""
        if not self.has(rel):
            raise DatasetLayoutError(f"{self.name}: {rel} is missing under {self.uri} ({what})")


@dataclass
class Table:
    """A CSV table: its header as written and its rows with their line numbers."""

    name: str
    header: list[str]
    rows: list[tuple[int, dict[str, str]]]

    def where(self, line: int) -> str:
        return f"{self.name} line {line}"


def read_csv(
    root: DatasetRoot,
    rel: str,
    required: Sequence[str],
    *,
    published: str | None = None,
    leading_unnamed: bool = False,
) -> Table:
    """Read a dataset's CSV table and check its header.

    Args:
        root: the dataset folder.
        rel: the table's path under it.
        required: columns that must be in the header, exactly as spelled (case matters).
        published: the published header, quoted in errors.
        leading_unnamed: the first column must be an unnamed index column (written as an empty
            name; ``Unnamed: 0`` is how pandas names it once read back, accepted too).

    Raises:
        DatasetLayoutError: the file is missing, empty, or lacks a required column.
    """
    root.require(rel, f"expected {published or ', '.join(required)}")
    text = root.text(rel)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetLayoutError(
            f"{root.name}: {rel} is empty (expected the header {published or ','.join(required)})"
        ) from None
    expect = f"; the published header is {published!r}" if published else ""
    if leading_unnamed:
        if not header or header[0].strip() not in ("", "Unnamed: 0"):
            raise DatasetLayoutError(
                f"{root.name}: {rel} has no unnamed index column first (its header starts {header[:2]}){expect}"
            )
        header = ["#index", *header[1:]]
    missing = [c for c in required if c not in header]
    if missing:
        near = {c: [h for h in header if h.lower() == c.lower()] for c in missing}
        hint = "; ".join(f"{c!r} is spelled {v[0]!r} here" for c, v in near.items() if v)
        raise DatasetLayoutError(
            f"{root.name}: {rel} has no column {missing[0]!r}"
            + (f" (nor {missing[1:]})" if len(missing) > 1 else "")
            + f"; its columns are {header}{expect}"
            + (f" ({hint}: column names are case-sensitive)" if hint else "")
        )
    rows = []
    for rec in reader:
        if not rec or all(not x.strip() for x in rec):
            continue
        row = {h: (rec[i].strip() if i < len(rec) else "") for i, h in enumerate(header)}
        if len(rec) != len(header):
            row["#fields"] = str(len(rec))
        rows.append((reader.line_num, row))
    return Table(rel, header, rows)


def number(value: str, column: str) -> float:
    """A table cell as a finite float.

    Raises:
        ValueError: naming the column and the value.
    """
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{column} {value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{column} {value!r} is not a finite number")
    return x


def optional_number(value: str, column: str) -> float | None:
    """A table cell as a float, or ``None`` when empty (or ``nan``, as pandas writes a missing value)."""
    if value == "" or value.lower() in ("nan", "na", "none"):
        return None
    return number(value, column)


def sex_female(value: str) -> float | None:
    """``F`` -> 1.0, ``M`` -> 0.0, anything else (empty, unknown) -> ``None``."""
    return {"F": 1.0, "M": 0.0}.get(value.strip().upper())


def check_fields(row: Mapping[str, str], header: Sequence[str]) -> str | None:
    """Why a row has a different number of fields than its header (``None`` when it has the same)."""
    n = row.get("#fields")
    return f"has {n} fields, the header {len(header)}" if n is not None else None


def dump_labels(labels: Mapping[str, float | None]) -> str:
    """A study's labels as the studies table holds them: JSON, keys sorted, missing values left out."""
    return json.dumps({k: float(v) for k, v in sorted(labels.items()) if v is not None}, sort_keys=True)


def parse_options(
    given: Mapping[str, Any] | Iterable[str] | None, known: Mapping[str, str], dataset: str
) -> dict[str, str]:
    """Options as ``{key: value}`` from a mapping or ``key=value`` strings, checked against ``known``
    (``{key: help}``).

    Raises:
        DatasetOptionError: an option that is not ``key=value`` or not known to the dataset.
    """
    if given is None:
        return {}
    pairs: dict[str, str] = {}
    if isinstance(given, Mapping):
        pairs = {str(k): str(v) for k, v in given.items()}
    else:
        for item in given:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise DatasetOptionError(f"{dataset}: dataset option {item!r} is not key=value")
            pairs[key.strip()] = value.strip()
    unknown = sorted(set(pairs) - set(known))
    if unknown:
        accepted = ", ".join(f"{k} ({h})" for k, h in known.items()) or "none"
        raise DatasetOptionError(
            f"{dataset}: unknown dataset option {unknown[0]!r}; {dataset} accepts: {accepted}"
        )
    return pairs


def require_usable(name: str, table: Table, used: int, rejects: Sequence[DatasetReject]) -> None:
    """Raise when none of a table's rows could be used (its first reasons say why)."""
    if table.rows and not used:
        mine = [r.reason for r in rejects if table.name in r.reason][:3]
        raise DatasetLayoutError(
            f"{name}: none of the {len(table.rows)} rows of {table.name} could be used, e.g. "
            + "; ".join(mine or ["(no reason recorded)"])
        )


def unlisted(
    on_disk: Iterable[str],
    used: set[str],
    table: str,
    named: set[str] | None = None,
    covered: Iterable[str | None] = (),
) -> Iterator[DatasetReject]:
    """A reject for every video on disk that is not used: ``named`` (videos some row of ``table``
    names, usable or not) tells "every row naming it was rejected" from "no row names it";
    ``covered`` are the paths a reject already names (not named twice)."""
    for rel in sorted(set(on_disk) - used - set(covered)):
        if named is not None and rel in named:
            yield DatasetReject(rel, f"{rel}: every row of {table} naming it was rejected", "bad_row", rel)
        else:
            yield DatasetReject(
                rel, f"{rel} is not named in {table}, so it has no labels or split", "unlisted_video", rel
            )


def basename(rel: str) -> str:
    return posixpath.basename(rel)
