"""Ingestion as pure functions: one archive file -> study shard rows, or a reject with its reason.

The Ray job (``ray_jobs/ingest.py``) lists files, runs :class:`FileDecoder` over them in an actor
pool with Ray Data, and writes Parquet shards; the same functions run without Ray in tests.

Which study a file belongs to, its view, the study's report, labels and split come from a
:class:`StudyIndex`, built from the archive's manifest tables when there are any:

* a *videos* table (Parquet or CSV) with ``path`` (relative to the input root) and ``study_id``,
  optionally ``view``, ``patient_id``, ``split`` and ``fps`` (the frame rate of a file that does
  not carry one) — e.g. ``manifest.parquet`` of ``echoprime synth``, or the table an adapter of
  :mod:`echoprime.datasets` writes;
* a *studies* table with ``study_id`` and ``report``, optionally ``patient_id``, ``split``,
  ``labels`` (JSON) and ``hidden_labels`` (JSON) — e.g. ``studies.parquet``.

Image-sequence volumes (NIfTI, MetaImage: CAMUS's cines) are read as videos only when the videos
table lists them (:mod:`echoprime.io.sequence`); otherwise they are rejected unread.

Without a videos entry a DICOM file's study is its StudyInstanceUID (grouping by UID, never by
folder) and other files' study is their parent folder's name. Labels missing from the studies
table are extracted from the report text. Splits are assigned by patient (a hash of the patient
id, or of the study id when no patient is known) unless the tables give them.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from echoprime.data.deid import Deidentifier
from echoprime.data.shards import SPLITS, assign_split, dump_labels
from echoprime.io import EchoIOError, UnknownFormatError, file_boundary, read_any
from echoprime.io.sequence import is_sequence_name, metaimage_data_file, read_sequence
from echoprime.preprocess import PreprocessSpec, preprocess_uint8, valid_frames

# Files in the input root that describe the archive rather than belong to it.
METADATA_FILES = frozenset(
    {"manifest.parquet", "studies.parquet", "manifest.csv", "studies.csv", "config.yaml"}
)


def _hash_key(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:16]


@dataclass
class StudyInfo:
    report: str = ""
    labels: dict[str, float] = field(default_factory=dict)
    hidden_labels: dict[str, float] = field(default_factory=dict)
    patient_id: str | None = None
    split: str | None = None


@dataclass
class VideoInfo:
    study_id: str
    view: str | None = None
    patient_id: str | None = None
    split: str | None = None
    fps: float | None = None


@dataclass
class StudyIndex:
    """What the manifest tables say about videos (by relative path) and studies (by id)."""

    videos: dict[str, VideoInfo] = field(default_factory=dict)
    studies: dict[str, StudyInfo] = field(default_factory=dict)
    split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)

    @classmethod
    def from_tables(
        cls,
        videos: Iterable[Mapping[str, Any]] = (),
        studies: Iterable[Mapping[str, Any]] = (),
        split_fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
        source: str = "<tables>",
    ) -> StudyIndex:
        """Build from row dicts of the videos and studies tables.

        Raises:
            ValueError: a row lacks a required column, a split name is unknown, or labels are not JSON.
        """
        from echoprime.reports import extract_labels

        idx = cls(split_fractions=split_fractions)
        for i, r in enumerate(videos):
            if not r.get("path") or not r.get("study_id"):
                raise ValueError(f"{source}: videos row {i} needs 'path' and 'study_id', got {sorted(r)}")
            idx.videos[_norm(str(r["path"]))] = VideoInfo(
                study_id=str(r["study_id"]),
                view=(str(r["view"]) if r.get("view") else None),
                patient_id=(str(r["patient_id"]) if r.get("patient_id") else None),
                split=_check_split(r.get("split"), source, i),
                fps=_fps(r.get("fps")),
            )
        for i, r in enumerate(studies):
            if not r.get("study_id"):
                raise ValueError(f"{source}: studies row {i} needs 'study_id', got {sorted(r)}")
            report = str(r.get("report") or "")
            labels = _json_dict(r.get("labels"), source, i, "labels")
            if not labels and report:
                labels = extract_labels(report)
            idx.studies[str(r["study_id"])] = StudyInfo(
                report=report,
                labels=labels,
                hidden_labels=_json_dict(r.get("hidden_labels"), source, i, "hidden_labels"),
                patient_id=(str(r["patient_id"]) if r.get("patient_id") else None),
                split=_check_split(r.get("split"), source, i),
            )
        return idx

    def listed(self, rel_path: str) -> VideoInfo | None:
        """The videos table's entry of a file (``None`` when the table does not list it)."""
        return self.videos.get(_norm(rel_path))

    def resolve(
        self, rel_path: str, meta: Mapping[str, Any], patient_hint: str | None
    ) -> tuple[str, str | None, str, StudyInfo]:
        """(study_id, view, split, study info) of one decoded file."""
        v = self.videos.get(_norm(rel_path))
        if v is not None:
            study_id, view = v.study_id, v.view
        elif meta.get("StudyInstanceUID"):
            study_id, view = str(meta["StudyInstanceUID"]), None
        else:
            parent = posixpath.basename(posixpath.dirname(_norm(rel_path)))
            study_id, view = parent or posixpath.splitext(posixpath.basename(rel_path))[0], None
        info = self.studies.get(study_id, StudyInfo())
        split = (v.split if v else None) or info.split
        if split is None:
            patient = (v.patient_id if v else None) or info.patient_id or patient_hint or study_id
            split = assign_split(patient, self.split_fractions)
        return study_id, view, split, info


def _norm(p: str) -> str:
    return posixpath.normpath(p.replace(os.sep, "/")).lstrip("./") if p else p


def video_clips(
    frames: np.ndarray, spec: PreprocessSpec, clips_per_video: int = 1
) -> list[tuple[int, np.ndarray]]:
    """``(offset, clip)`` of one decoded video: ``clips_per_video`` evenly spaced windows, each
    masked to the detected sector, cropped and scaled (:func:`preprocess_uint8`), uint8 ``T x S x S x 3``.

    The one place where a video becomes training clips: ingest (from files) and the synthetic
    stream (from rendered frames) both call it, so they make the same clips of the same frames.
    """
    from echoprime.sector import sector_mask

    window = (spec.frames - 1) * spec.stride + 1
    last = max(0, int(frames.shape[0]) - window)
    offsets = sorted({int(round(x)) for x in np.linspace(0, last, clips_per_video)})
    sector = sector_mask(frames) if spec.mask else None
    return [(off, preprocess_uint8(frames, spec, offset=off, sector=sector)) for off in offsets]


def _fps(value: Any) -> float | None:
    """A videos table's frame rate (``None`` when absent, not positive or not a number)."""
    try:
        fps = float(value)
    except (TypeError, ValueError):
        return None
    return fps if math.isfinite(fps) and fps > 0 else None


def _check_split(value: Any, source: str, i: int) -> str | None:
    if value in (None, ""):
        return None
    if value not in SPLITS:
        raise ValueError(f"{source}: row {i} has split {value!r}; expected one of {list(SPLITS)}")
    return str(value)


def _json_dict(value: Any, source: str, i: int, col: str) -> dict[str, float]:
    if value in (None, ""):
        return {}
    if isinstance(value, Mapping):
        d = dict(value)
    else:
        try:
            d = json.loads(value)
        except (TypeError, json.JSONDecodeError) as e:
            raise ValueError(f"{source}: row {i} column {col!r} is not JSON ({e})") from None
    return {k: (math.nan if v is None else float(v)) for k, v in d.items()}


def load_table(data: bytes, name: str) -> list[dict[str, Any]]:
    """Rows of a CSV or Parquet table given as bytes (from a local file or S3)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if name.endswith(".parquet"):
        return pq.read_table(io.BytesIO(data)).to_pylist()
    if name.endswith(".csv"):
        return pacsv.read_csv(io.BytesIO(data)).to_pylist()
    raise ValueError(f"manifest table {name!r}: expected a .parquet or .csv file")


def _patient_hint(data: bytes, meta: Mapping[str, Any]) -> str | None:
    """A hashed PatientID for DICOM files (split by patient without storing the identifier)."""
    if meta.get("format") != "dicom":
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(
            io.BytesIO(data), stop_before_pixels=True, specific_tags=["PatientID"], force=True
        )
    except Exception:  # noqa: BLE001 - the pixels decoded already; a header quirk only loses the hint
        return None
    pid = str(getattr(ds, "PatientID", "") or "")
    return _hash_key(pid) if pid else None


class FileDecoder:
    """Decode archive files into shard rows (``__call__`` takes and returns column batches).

    Good files become rows (one per clip); every failure becomes a reject ``{source_uri, reason,
    code}`` handed to ``on_reject`` — a file never takes its batch down with it.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        index: StudyIndex,
        root: str,
        *,
        clips_per_video: int = 1,
        max_frames: int | None = 512,
        max_pixels: int | None = None,
        read_bytes: Any = None,
        on_reject: Any = None,
        deid: Deidentifier | None = None,
        on_ids: Any = None,
    ) -> None:
        self.spec, self.index, self.root = spec, index, root.rstrip("/")
        self.clips_per_video = clips_per_video
        self.limits = {"max_frames": max_frames, **({"max_pixels": max_pixels} if max_pixels else {})}
        if read_bytes is None:
            from echoprime.storage import read_bytes as _rb

            read_bytes = _rb
        self.read_bytes = read_bytes
        self.on_reject = on_reject
        self.rejects: list[dict[str, str]] = []
        # De-identification (echoprime/data/deid.py): keys for study ids and file paths; the
        # originals go to ``on_ids`` (the driver's map), never into a row.
        self.deid = deid if deid is not None else Deidentifier(None, "off")
        self.on_ids = on_ids
        self._sent: set[str] = set()

    def relpath(self, uri: str) -> str:
        return uri[len(self.root) + 1 :] if uri.startswith(self.root + "/") else posixpath.basename(uri)

    def decode(self, uri: str) -> list[dict[str, Any]]:
        """Rows of one file.

        Raises:
            EchoIOError: the file cannot be used (reason and code say why).
        """
        try:
            data = self.read_bytes(uri)
        except OSError as e:
            raise EchoIOError(uri, f"cannot be read: {e}") from None
        companions: dict[str, bytes] = {}
        if uri.lower().endswith(".mhd") and self.index.listed(self.relpath(uri)) is not None:
            name = metaimage_data_file(data, uri)  # a MetaImage header: its data file lies beside it
            if name is not None:
                try:
                    companions[name] = self.read_bytes(posixpath.join(posixpath.dirname(uri), name))
                except OSError as e:
                    raise EchoIOError(uri, f"its data file {name} cannot be read: {e}") from None
        return self.decode_bytes(data, uri, self.relpath(uri), companions=companions)

    def decode_bytes(
        self, data: bytes, uri: str, rel: str, *, companions: Mapping[str, bytes] | None = None
    ) -> list[dict[str, Any]]:
        """Rows of one file's bytes: ``uri`` names it in the shards when not de-identifying,
        ``rel`` is what the manifest and the keys know it by; ``companions`` are the files a
        MetaImage header refers to.

        Raises:
            EchoIOError: the file cannot be used (reason and code say why).
        """
        listed = self.index.listed(rel)
        if is_sequence_name(rel):
            if listed is None:
                raise UnknownFormatError(
                    uri,
                    "an image volume (NIfTI/MetaImage) is read as a video only when the videos table lists "
                    "it (e.g. echoprime ingest --dataset camus)",
                )
            vid = read_sequence(data, name=uri, fps=listed.fps, companions=companions, **self.limits)
        else:
            vid = read_any(data, name=uri, **self.limits)
        study_id, view, split, info = self.index.resolve(rel, vid.meta, _patient_hint(data, vid.meta))
        fps = vid.fps or (listed.fps if listed is not None else None)
        n_src = int(vid.frames.shape[0])
        if self.deid.enabled:
            study_id, base = self.deid.study(study_id), self.deid.file(rel)
            source = base
        else:
            base, source = posixpath.splitext(rel)[0].replace("/", "__"), uri
        clips = video_clips(vid.frames, self.spec, self.clips_per_video)
        rows = []
        for k, (off, clip) in enumerate(clips):
            rows.append(
                {
                    "study_id": study_id,
                    "video_id": base if len(clips) == 1 else f"{base}#{k}",
                    "source_uri": source,
                    "view": view,
                    "clip": clip,
                    "fps": float(fps) if fps else math.nan,
                    "n_frames_src": n_src,
                    "n_valid": valid_frames(n_src, self.spec, off),
                    "report": info.report,
                    "labels": dump_labels(info.labels),
                    "hidden_labels": dump_labels(info.hidden_labels),
                    "split": split,
                }
            )
        return rows

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        rejects: list[dict[str, str]] = []
        for uri in batch["uri"]:
            uri = str(uri)
            try:
                # The file boundary: whatever one file makes a decoder raise is its reject, not the batch's.
                with file_boundary(uri):
                    rows.extend(self.decode(uri))
            except EchoIOError as e:
                rejects.append(self._reject(uri, e))
        return self._emit(rows, rejects)

    def _emit(self, rows: list[dict[str, Any]], rejects: list[dict[str, str]]) -> dict[str, np.ndarray]:
        """Hand on a batch's rejects and new pseudonyms; the rows as a column batch."""
        if rejects:
            self.rejects.extend(rejects)
            if self.on_reject is not None:
                self.on_reject(rejects)
        if self.on_ids is not None and (new := self.deid.take_new(self._sent)):
            self.on_ids(new)
        return rows_to_batch(rows, self.spec)

    def _reject(self, uri: str, e: EchoIOError, rel: str | None = None) -> dict[str, str]:
        """The rejects-table record of a file (named by its key when de-identifying)."""
        if not self.deid.enabled:
            return {"source_uri": uri, "reason": e.reason, "code": e.code}
        rel = self.relpath(uri) if rel is None else rel
        key = self.deid.file(rel)
        return {"source_uri": key, "reason": self.deid.scrub(e.reason, rel, key), "code": e.code}


def rows_to_batch(rows: list[dict[str, Any]], spec: PreprocessSpec) -> dict[str, np.ndarray]:
    """Row dicts -> a column batch (``clip`` stacked ``N x T x S x S x 3``; empty but typed when no rows)."""
    shape = (spec.frames, spec.size, spec.size, 3)
    cols: dict[str, np.ndarray] = {}
    for key in ("study_id", "video_id", "source_uri", "view", "report", "labels", "hidden_labels", "split"):
        cols[key] = np.array([r[key] for r in rows], dtype=object)
    cols["clip"] = np.stack([r["clip"] for r in rows]) if rows else np.zeros((0, *shape), np.uint8)
    cols["fps"] = np.array([r["fps"] for r in rows], dtype=np.float64)
    cols["n_frames_src"] = np.array([r["n_frames_src"] for r in rows], dtype=np.int64)
    cols["n_valid"] = np.array([r["n_valid"] for r in rows], dtype=np.int64)
    return cols
