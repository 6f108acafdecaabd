"""Study shards: one Parquet row per video clip, committed by a manifest written last.

Layout of an ingest output (local folder or ``s3://`` prefix)::

    OUT/_manifest.json                 written last: the commit point (files per split, counts, spec)
    OUT/data-<run_id>/split=train/*.parquet
    OUT/data-<run_id>/split=val/*.parquet
    OUT/data-<run_id>/split=test/*.parquet
    OUT/data-<run_id>/rejects.parquet  (file, reason) for every file that could not be used

Replacing a shard set (:func:`commit_run`): a new run writes its own ``data-<run_id>`` folder,
then the manifest switches to it in one write (an object PUT on S3, a rename on local disk), so
a reader sees the old set or the new one. The folder of the run before stays
(``ShardManifest.previous_runs``) for readers that read the old manifest and are still reading
its files (a training run streams them for hours); it goes when the next run commits. A run that
dies before the manifest leaves only an unreferenced ``data-<run_id>`` folder, which no reader
ever sees and the next commit deletes. Row columns (see docs/ingestion.md):

    study_id, video_id, source_uri, view (nullable), clip (uint8 T x S x S x 3), fps,
    n_frames_src, n_valid, report, labels (JSON phenotype -> value), hidden_labels (JSON), split

With de-identification (the default; echoprime/data/deid.py) ``study_id`` is a keyed study
pseudonym and ``source_uri``/``video_id`` a keyed file key, never the archive's ids or paths.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from echoprime import storage

MANIFEST_NAME = "_manifest.json"
DATA_PREFIX = "data-"
SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = (
    "study_id",
    "video_id",
    "source_uri",
    "view",
    "clip",
    "fps",
    "n_frames_src",
    "report",
    "labels",
)


def assign_split(patient_id: str, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)) -> str:
    """Deterministic split of a patient (never of a video) from a hash of its id.

    Args:
        patient_id: the patient.
        fractions: train, val and test shares; they must be non-negative and sum to 1.

    Raises:
        ValueError: bad fractions.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three non-negative shares summing to 1, got {fractions}")
    u = int.from_bytes(hashlib.sha256(patient_id.encode()).digest()[:8], "big") / 2.0**64
    if u < fractions[0]:
        return "train"
    return "val" if u < fractions[0] + fractions[1] else "test"


class ShardError(ValueError):
    """A shard set that cannot be used: names the shard (file) and the column at fault."""


@dataclass
class ShardManifest:
    """The commit record of one ingest run."""

    run_id: str
    files: dict[str, list[str]]
    """split -> shard file URIs."""
    rows: dict[str, int]
    """split -> rows (video clips)."""
    studies: dict[str, int]
    """split -> studies."""
    rejects: int
    rejects_file: str | None
    spec: dict[str, Any]
    """Preprocessing spec of the clips (size, frames, stride, mean, std, ...)."""
    fingerprint: str
    """Hash of the inputs and settings; a re-run with the same one has nothing to do."""
    source: str
    created: float = field(default_factory=time.time)
    format_version: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    previous_runs: list[str] = field(default_factory=list)
    """Earlier committed runs whose ``data-<run>`` folders are kept for readers of their
    manifests, newest first (see :func:`commit_run`)."""

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        s = self.spec
        return (int(s["frames"]), int(s["size"]), int(s["size"]), 3)


def write_manifest(out_uri: str, manifest: ShardManifest) -> None:
    storage.write_bytes(
        storage.locate(out_uri).join(MANIFEST_NAME).uri, json.dumps(asdict(manifest), indent=2).encode()
    )


def data_runs(out_uri: str) -> list[str]:
    """Run ids of the ``data-<run>`` folders under an ingest output, committed or not."""
    loc = storage.locate(out_uri)
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True))
    names = [posixpath.basename(i.path.rstrip("/")) for i in infos if i.type == pafs.FileType.Directory]
    return sorted(n[len(DATA_PREFIX) :] for n in names if n.startswith(DATA_PREFIX))


def commit_run(out_uri: str, manifest: ShardManifest, keep_previous: int = 1) -> list[str]:
    """Make ``manifest`` the output's shard set, then delete the data no reader can still need.

    The manifest write is the switch: readers see the old set or the new one, never a mix. The
    ``keep_previous`` runs committed before this one keep their folders (recorded in
    ``manifest.previous_runs``), so a reader that read an older manifest before the switch can
    finish reading its files; older runs, and folders no manifest names (runs that died before
    their commit), are deleted after the switch. Hold the output's lock while calling this
    (``echoprime.locks``): otherwise a folder no manifest names may be another ingest's work in
    progress. An existing manifest that cannot be read leaves every folder in place.

    Args:
        out_uri: the ingest output.
        manifest: the new run's manifest (its ``previous_runs`` is filled in here).
        keep_previous: earlier runs whose data stays (0: only the new run's).

    Returns:
        The run ids whose folders were deleted.

    Raises:
        OSError: the manifest could not be written (nothing was switched or deleted).
    """
    if keep_previous < 0:
        raise ValueError(f"keep_previous must be >= 0, got {keep_previous}")
    manifest_uri = storage.locate(out_uri).join(MANIFEST_NAME).uri
    earlier: list[str] | None = []
    if storage.exists(manifest_uri):
        try:
            old = read_manifest(out_uri)
            earlier = [old.run_id, *old.previous_runs]
        except ShardError:
            earlier = None  # which folders it named is unknown: delete nothing
    manifest.previous_runs = [r for r in dict.fromkeys(earlier or []) if r != manifest.run_id][:keep_previous]
    write_manifest(out_uri, manifest)
    if earlier is None:
        return []
    keep = {manifest.run_id, *manifest.previous_runs}
    deleted = []
    for run in data_runs(out_uri):
        if run in keep:
            continue
        try:
            storage.delete_dir(storage.locate(out_uri).join(DATA_PREFIX + run).uri)
            deleted.append(run)
        except OSError as e:  # committed already; what is left is deleted by the next commit
            warnings.warn(f"could not delete {DATA_PREFIX}{run} under {out_uri}: {e}", stacklevel=2)
    return deleted


def read_manifest(out_uri: str) -> ShardManifest:
    """Read the commit record of a shard set.

    Raises:
        ShardError: no committed shards there (never ingested, or the run did not finish).
    """
    loc = storage.locate(out_uri).join(MANIFEST_NAME)
    if not storage.exists(loc.uri):
        raise ShardError(
            f"no committed shards at {out_uri!r}: {MANIFEST_NAME} is missing (run `echoprime ingest` first, "
            f"or the last ingest did not finish)"
        )
    try:
        d = json.loads(storage.read_bytes(loc.uri))
        return ShardManifest(**d)
    except (json.JSONDecodeError, TypeError) as e:
        raise ShardError(f"{loc.uri}: not a valid shard manifest ({e})") from None


def split_files(out_uri: str, split: str) -> list[str]:
    """Shard files of one split.

    Raises:
        ShardError: the split does not exist or is empty.
    """
    m = read_manifest(out_uri)
    files = m.files.get(split, [])
    if not files or m.rows.get(split, 0) == 0:
        raise ShardError(
            f"split {split!r} of {out_uri!r} is empty (splits: {dict(m.rows)}); ingest more studies or change ingest.split_fractions"
        )
    return files


def validate_schema(schema: pa.Schema, file: str, clip_shape: tuple[int, ...] | None = None) -> None:
    """Check one shard file's columns (and clip shape) before any training starts.

    Raises:
        ShardError: naming the file and the missing or malformed column.
    """
    names = set(schema.names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ShardError(
            f"shard {file}: missing column(s) {missing}; expected columns {list(REQUIRED_COLUMNS)}"
        )
    if clip_shape is not None:
        fld = schema.field("clip")
        meta = fld.metadata or {}
        raw = meta.get(b"ARROW:extension:metadata")
        shape = tuple(json.loads(raw)) if raw else None
        if shape is None and hasattr(fld.type, "shape"):
            shape = tuple(fld.type.shape)
        if shape is None or tuple(shape) != tuple(clip_shape):
            raise ShardError(
                f"shard {file}: column 'clip' has shape {shape}, expected {tuple(clip_shape)} (T x S x S x 3 uint8)"
            )


def validate_split(out_uri: str, split: str) -> list[str]:
    """Validate every file of a split against the manifest's clip shape; returns the files."""
    m = read_manifest(out_uri)
    files = split_files(out_uri, split)
    for f in files:
        loc = storage.locate(f)
        try:
            schema = pq.read_schema(loc.path, filesystem=loc.fs)
        except (OSError, pa.ArrowInvalid) as e:
            raise ShardError(f"shard {f}: cannot be read ({e})") from None
        except Exception as e:  # an extension type another Ray/pyarrow version wrote, unreadable here
            raise ShardError(f"shard {f}: its schema cannot be decoded ({type(e).__name__}: {e})") from None
        validate_schema(schema, f, m.clip_shape)
    return files


def clips_to_numpy(col: pa.ChunkedArray | pa.Array, shape: tuple[int, ...]) -> np.ndarray:
    """A ``clip`` column (Ray tensor extension or its large_list storage) -> uint8 N x T x S x S x 3."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    storage_arr = col.storage if isinstance(col, pa.ExtensionArray) else col
    flat = np.asarray(storage_arr.flatten().to_numpy(zero_copy_only=False), dtype=np.uint8)
    return flat.reshape(len(storage_arr), *shape)  # N x T x S x S x 3


def read_split(out_uri: str, split: str, columns: list[str] | None = None) -> pa.Table:
    """Read one split as a pyarrow table (no Ray), e.g. for evaluation or building a bank."""
    files = split_files(out_uri, split)
    tables = []
    for f in files:
        loc = storage.locate(f)
        tables.append(pq.read_table(loc.path, filesystem=loc.fs, columns=columns))
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def parse_labels(text: str | None) -> dict[str, float]:
    """A ``labels`` JSON cell -> {phenotype: value} (``null`` -> NaN)."""
    if not text:
        return {}
    return {k: (float("nan") if v is None else float(v)) for k, v in json.loads(text).items()}


def dump_labels(labels: dict[str, float]) -> str:
    """{phenotype: value} -> JSON (NaN written as ``null`` so any JSON reader accepts it)."""
    return json.dumps(
        {
            k: (None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v))
            for k, v in labels.items()
        },
        sort_keys=False,
    )
