"""Interpreting an archive of many studies: grouping, one chunk of studies at a time, resumable output.

The Ray job (``ray_jobs/batch_interpret.py``) lists an archive, reads DICOM headers to group its
files into studies (:func:`group_studies`), and runs :class:`BatchInterpreter` over chunks of
studies in an actor pool. Everything here is plain Python, so it also runs (and is tested)
without Ray. The output, under a local folder or an ``s3://`` prefix (:class:`BatchOutput`)::

  _job.json                      the bundle the results come from (its manifest's sha256) and
                                 how studies and files are named (``ids``: keyed or originals)
  results/part-<key>.parquet     one row per study (RESULT_SCHEMA)
  rejects/part-<key>.parquet     one row per file of those studies that could not be used
  findings/part-<key>.parquet    one row per study and finding (FINDING_SCHEMA): the metrics
                                 flat, with grades, calibrated probabilities and intervals
  json/<name>.json               the full StudyResult of each study (optional; safe_name(study_id))
  _done/part-<key>.json          written last for its chunk: the commit record of its studies
  _summary.json                  counts of the last run

Studies and files are named as the driver hands them over: by default keyed pseudonyms
(``s-``/``f-`` + HMAC under the site secret, :mod:`echoprime.data.deid`), so the output holds no
StudyInstanceUID, folder or file name of the archive; the operator's map leads back.
A chunk's ``<key>`` is a hash of its study ids, so a retried chunk overwrites its own files.
A job holds the output from :meth:`BatchOutput.start` to :meth:`BatchOutput.close`
(``OUT/.echoprime.lock``): a second job on the same output is refused, naming the first.
A study counts as written when a ``_done`` record lists it and that record's results part exists;
a re-run skips those studies and cleans up parts no record commits (an interrupted chunk).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from echoprime import storage
from echoprime.io import EchoIOError, FileReport, dicom_header
from echoprime.io.sources import read_objects
from echoprime.io.video import VIDEO_SUFFIXES, _looks_like_video
from echoprime.locks import OutputLock

RESULT_SCHEMA = pa.schema(
    [
        ("study_id", pa.string()),
        ("status", pa.string()),  # ok | no_usable_video | error
        ("n_files", pa.int32()),
        ("n_used", pa.int32()),
        ("views", pa.string()),  # JSON: [{file, view, confidence}] per used video
        ("report_text", pa.string()),
        ("report", pa.string()),  # JSON: [{section, text, source_study, similarity}]
        ("metrics", pa.string()),  # JSON: {phenotype: {value, probability, decision, spread, ...}}
        ("evidence", pa.string()),  # JSON: {section: [{video, file, weight}]}
        ("neighbours", pa.string()),  # JSON: {section: [{study_id, similarity}]}
        ("files", pa.string()),  # JSON: one FileReport per file
        (
            "tasks",
            pa.string(),
        ),  # JSON: {task: answer} of the bundle's fine-tuned heads ({} without; null in older outputs)
        ("error", pa.string()),  # why interpretation failed (status "error"), else null
    ]
)
REJECT_SCHEMA = pa.schema(
    [("study_id", pa.string()), ("file", pa.string()), ("reason", pa.string()), ("code", pa.string())]
)
FINDING_SCHEMA = pa.schema(
    [
        ("study_id", pa.string()),
        ("finding", pa.string()),  # a phenotype of the release, or a measurement beyond them (heart_rate)
        ("kind", pa.string()),  # binary | regression
        ("unit", pa.string()),
        ("value", pa.float64()),  # the measurement, or a binary's positive vote share
        ("probability", pa.float64()),  # binaries: the raw vote share (the release's)
        ("calibrated_probability", pa.float64()),  # after the bundle's calibration map; null: none
        ("calibration", pa.string()),  # platt | isotonic | null
        ("decision", pa.bool_()),  # raw probability >= threshold
        ("threshold", pa.float64()),
        ("threshold_source", pa.string()),
        ("spread", pa.float64()),  # standard deviation over the neighbours' labels
        ("n_labelled", pa.int32()),
        ("grade", pa.int32()),  # graded binaries: index into grade_scale; null: none
        ("grade_label", pa.string()),
        ("grade_scale", pa.list_(pa.string())),
        ("grade_distribution", pa.list_(pa.float64())),  # the neighbours' share per grade
        ("n_graded", pa.int32()),
        ("report_grade_label", pa.string()),  # the grade the report text states
        ("agrees_with_report", pa.bool_()),  # false: the grade and the report text disagree
        ("interval_low", pa.float64()),  # measurements: the interval around value
        ("interval_high", pa.float64()),
        ("interval_level", pa.float64()),  # its nominal coverage (0.8)
    ]
)
"""One row per study and finding: what a cardiologist reads, as columns one can query."""
INTERPRET_COMPONENTS = ("video_encoder", "view_classifier", "mil", "bank", "heads")
"""The bundle parts a study's interpretation uses (the text encoder is not one of them)."""
HEAD_BYTES = 256 << 10
"""Bytes fetched from S3 to read a DICOM header; the whole object only when the header is longer."""


# --------------------------------------------------------------------------------- grouping
def probe_study_uid(uri: str, head_bytes: int = HEAD_BYTES) -> str | None:
    """The StudyInstanceUID in a file's DICOM header, read without pixel data.

    Returns:
        The UID, or ``None`` for a video (by name or content), a file that is not readable DICOM,
        or a header without the UID: those are grouped by folder, and an unreadable file is
        reported with its reason when its study is interpreted.
    """
    if PurePosixPath(uri).suffix.lower() in VIDEO_SUFFIXES:
        return None
    loc = storage.locate(uri)
    try:
        with loc.fs.open_input_file(loc.path) as f:
            size = f.size()
            head = f.read(head_bytes if storage.is_s3(uri) else 132)
    except OSError:
        return None
    if _looks_like_video(head[:132]):
        return None
    try:
        # Local files are parsed from disk up to the pixel data; S3 objects from their first bytes.
        meta = dicom_header(head if storage.is_s3(uri) else loc.path, name=uri)
    except EchoIOError:
        if not storage.is_s3(uri) or size <= len(head):
            return None
        try:
            meta = dicom_header(storage.read_bytes(uri), name=uri)
        except (EchoIOError, OSError):
            return None
    return str(meta.get("StudyInstanceUID") or "") or None


def group_studies(
    files: Sequence[str],
    root: str,
    uids: Mapping[str, str | None],
    videos: Mapping[str, str] | None = None,
) -> dict[str, list[str]]:
    """Group an archive's files into studies.

    A file's study is, in order: its ``study_id`` in the archive's videos table (``videos``:
    path relative to ``root`` -> study id); its DICOM StudyInstanceUID (``uids``); the one UID of
    the DICOM files in its folder (an MP4 exported next to a study's DICOM files joins that
    study); its folder's name (the relative folder path where two folders share a name); its
    file name without suffix for a file at the archive's top level.

    Args:
        files: the files (URIs or paths under ``root``).
        root: the archive's root (same form as ``files``).
        uids: StudyInstanceUID per file (``None`` or absent: not DICOM / unknown).
        videos: optional videos table, relative path -> study id.

    Returns:
        ``{study_id: [file, ...]}``, studies and files sorted.
    """
    videos = {_norm(k): str(v) for k, v in (videos or {}).items()}
    rel = {f: _norm(posixpath.relpath(f, root.rstrip("/") or "/")) for f in files}
    folder_uids: dict[str, set[str]] = {}
    for f in files:
        if uids.get(f) and rel[f] not in videos:
            folder_uids.setdefault(posixpath.dirname(rel[f]), set()).add(str(uids[f]))
    by_name: dict[str, set[str]] = {}
    for f in files:
        d = posixpath.dirname(rel[f])
        if d:
            by_name.setdefault(posixpath.basename(d), set()).add(d)

    def study_of(f: str) -> str:
        r = rel[f]
        if r in videos:
            return videos[r]
        if uids.get(f):
            return str(uids[f])
        d = posixpath.dirname(r)
        if len(folder_uids.get(d, ())) == 1:
            return next(iter(folder_uids[d]))
        if not d:
            return posixpath.splitext(posixpath.basename(r))[0]
        name = posixpath.basename(d)
        return name if len(by_name[name]) == 1 else d

    groups: dict[str, list[str]] = {}
    for f in files:
        groups.setdefault(study_of(f), []).append(f)
    return {s: sorted(groups[s]) for s in sorted(groups)}


def _norm(p: str) -> str:
    return posixpath.normpath(p.replace(os.sep, "/")).lstrip("./") if p else p


def part_key(study_ids: Iterable[str]) -> str:
    """The deterministic name of a chunk of studies (same studies, same key).

    The ids are hashed as a JSON list, so no id can pass for several (``"a\\nb"`` is not
    ``"a"`` and ``"b"``)."""
    return hashlib.sha256(json.dumps(sorted(study_ids)).encode()).hexdigest()[:16]


NAME_MAX = 100
"""Characters of a study id kept in its file name (names stay far below the usual 255 bytes)."""
_PLAIN_NAME = re.compile(r"[a-z0-9._-]+")


def safe_name(study_id: str) -> str:
    """A study id as a file name of its own: distinct ids never share a name.

    An id of lower-case letters, digits, ``.``, ``_`` and ``-`` (DICOM UIDs, most folder names)
    of at most NAME_MAX characters and not starting with a dot (a hidden file) is its own name.
    Any other id keeps a readable prefix (other characters as ``_``, at most NAME_MAX, no leading
    dot) followed by ``~`` and 16 hex digits of the id's sha256: ``~`` never occurs in a name of
    the first kind, and upper case never counts as plain, so ``echo 1``, ``echo_1`` and ``Echo_1``
    get three files even on a case-insensitive disk (barring a 64-bit hash collision).
    """
    if _PLAIN_NAME.fullmatch(study_id) and not study_id.startswith(".") and len(study_id) <= NAME_MAX:
        return study_id
    prefix = re.sub(r"[^A-Za-z0-9._-]", "_", study_id)[:NAME_MAX]
    if prefix.startswith("."):
        prefix = "_" + prefix[1:]
    digest = hashlib.sha256(study_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{prefix}~{digest}"


# ------------------------------------------------------------------------------- the output
class BatchOutput:
    """The output folder of a batch interpretation (local or ``s3://``); see the module doc."""

    def __init__(self, uri: str) -> None:
        self.loc = storage.locate(uri)
        self.lock: OutputLock | None = None

    def uri(self, *parts: str) -> str:
        return self.loc.join(*parts).uri

    def _list(self, sub: str) -> list[str]:
        try:
            return storage.list_files(self.uri(sub))
        except FileNotFoundError:
            return []

    def _delete(self, uri: str) -> None:
        loc = storage.locate(uri)
        if loc.fs.get_file_info(loc.path).type == pafs.FileType.File:
            loc.fs.delete_file(loc.path)

    def start(
        self, bundle: str, bundle_id: str, input_uri: str, *, force: bool, ids: str = "originals"
    ) -> str | None:
        """Take the output for this job until :meth:`close` (``echoprime.locks``), check it can be
        written and belongs to this bundle; ``force`` clears it first.

        ``ids`` says how this job names studies and files: ``originals``, ``one-off`` (keys no
        later job can reproduce) or a tag of the site secret (``Deidentifier.fingerprint_tag``).
        Results already written under other names would be interpreted again and kept twice, so
        such an output is refused (as is any earlier result for a one-off job).

        Returns:
            What happened to the lock of an earlier job that ended without releasing it (taken
            over), or None.

        Raises:
            OutputBusy: another job has the output (the message names it); nothing was changed.
            ValueError: not writable, or it holds results of another bundle (and not ``force``).
        """
        storage.ensure_dir(self.loc.uri)
        if self.lock is not None:  # started before by this job: it holds the output already
            self._claim(bundle, bundle_id, input_uri, force=force, ids=ids)
            return None
        lock = OutputLock(self.loc.uri, "echoprime batch-interpret").acquire()
        try:
            self._claim(bundle, bundle_id, input_uri, force=force, ids=ids)
        except BaseException:
            lock.release()
            raise
        self.lock = lock
        return lock.recovered_message

    def close(self) -> None:
        """Give the output back (the end of the job that started it)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def _claim(self, bundle: str, bundle_id: str, input_uri: str, *, force: bool, ids: str) -> None:
        job = self.uri("_job.json")
        if force:
            for sub in ("_done", "results", "rejects", "findings", "json"):
                for f in self._list(sub):
                    self._delete(f)
        elif storage.exists(job):
            old = json.loads(storage.read_bytes(job))
            if old.get("bundle_id") != bundle_id:
                raise ValueError(
                    f"output {self.loc.uri!r} holds results of bundle {old.get('bundle')!r} "
                    f"(manifest sha256 {str(old.get('bundle_id'))[:12]}), not of {bundle!r} "
                    f"({bundle_id[:12]}); use another --out, or --force to replace them"
                )
            before = str(old.get("ids", "originals"))  # written before keys existed: originals
            if self._list("_done") and (before != ids or ids == "one-off"):
                raise ValueError(f"output {self.loc.uri!r}: {_ids_clash(before, ids)}")
        record = {"bundle": bundle, "bundle_id": bundle_id, "input": input_uri, "ids": ids}
        storage.write_bytes(job, json.dumps(record, indent=2).encode())

    def committed(self, *, clean: bool = True) -> dict[str, list[str]]:
        """``{part key: studies}`` of the chunks written completely.

        With ``clean`` (what a starting job does, never while one runs): a ``_done`` record whose
        results part is gone (deleted by hand, lost) is dropped with its other parts, so those
        studies are interpreted again; results, rejects and findings parts without a record (a
        chunk interrupted before its commit) are deleted so a redo cannot duplicate rows.
        """
        results = {_key(f): f for f in self._list("results")}
        rejects = {_key(f): f for f in self._list("rejects")}
        findings = {_key(f): f for f in self._list("findings")}
        done: dict[str, list[str]] = {}
        for rec in self._list("_done"):
            key = _key(rec)
            if key in results:
                done[key] = list(json.loads(storage.read_bytes(rec))["studies"])
            elif clean:
                self._delete(rec)
        for key, f in [*results.items(), *rejects.items(), *findings.items()]:
            if clean and key not in done:
                self._delete(f)
        return done

    def write_chunk(
        self,
        key: str,
        rows: list[dict[str, Any]],
        rejects: list[dict[str, Any]],
        docs: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """Write a chunk's results, rejects, findings (from the rows' ``metrics``) and JSON
        documents, then its ``_done`` record (last)."""
        storage.write_bytes(self.uri("results", f"part-{key}.parquet"), _parquet(rows, RESULT_SCHEMA))
        storage.write_bytes(self.uri("rejects", f"part-{key}.parquet"), _parquet(rejects, REJECT_SCHEMA))
        flat = [f for r in rows for f in finding_rows(r["study_id"], json.loads(r.get("metrics") or "{}"))]
        storage.write_bytes(self.uri("findings", f"part-{key}.parquet"), _parquet(flat, FINDING_SCHEMA))
        for sid, doc in (docs or {}).items():
            storage.write_bytes(
                self.uri("json", f"{safe_name(sid)}.json"), json.dumps(doc, indent=2).encode()
            )
        record = {"part": key, "studies": [r["study_id"] for r in rows], "written": _now()}
        storage.write_bytes(self.uri("_done", f"part-{key}.json"), json.dumps(record).encode())

    def read(self, kind: str = "results") -> pa.Table:
        """Every committed part of ``results``, ``rejects`` or ``findings`` as one table (an
        output written before findings existed has none)."""
        schemas = {"results": RESULT_SCHEMA, "rejects": REJECT_SCHEMA, "findings": FINDING_SCHEMA}
        if kind not in schemas:
            raise ValueError(f"kind must be one of {sorted(schemas)}, got {kind!r}")
        schema = schemas[kind]
        keys = set(self.committed(clean=False))
        tables = [
            pq.read_table(io.BytesIO(storage.read_bytes(f)), schema=schema)
            for f in self._list(kind)
            if _key(f) in keys
        ]
        return pa.concat_tables(tables) if tables else schema.empty_table()


def _ids_clash(before: str, now: str) -> str:
    """Why a job that names studies ``now`` cannot resume an output named ``before``."""
    kinds = {"originals": "the archive's own ids", "one-off": "keys from a one-off secret"}
    was, will = kinds.get(before, "keys of another site secret"), kinds.get(now, "keys of the site secret")
    if before == now == "one-off":
        why = "its results are named by keys from a one-off secret, which no later run can reproduce"
    else:
        why = f"its results are named by {was}, and this run would name them by {will}"
    return (
        f"{why}, so every study would be interpreted again and kept twice. Set ECHOPRIME_SITE_SECRET "
        "as for the run that wrote them (or --original-ids if they were written with it), or use "
        "--force to start over or another --out"
    )


def _key(uri: str) -> str:
    name = posixpath.basename(uri)
    return name.split(".", 1)[0].removeprefix("part-")


def _parquet(rows: list[dict[str, Any]], schema: pa.Schema) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buf)
    return buf.getvalue()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# --------------------------------------------------------------------------- interpretation
def result_row(
    study_id: str, result: Any | None, files: Sequence[FileReport], error: str | None = None
) -> dict:
    """One row of RESULT_SCHEMA from a :class:`~echoprime.inference.StudyResult` (``None``: failed)."""
    d = result.to_dict() if result is not None else {}
    dump = json.dumps
    return {
        "study_id": study_id,
        "status": d.get("status", "error"),
        "n_files": len(files),
        "n_used": sum(f.status == "used" for f in files),
        "views": dump(d.get("videos", [])),
        "report_text": d.get("report_text", ""),
        "report": dump(d.get("report", [])),
        "metrics": dump(d.get("metrics", {})),
        "evidence": dump(d.get("evidence", {})),
        "neighbours": dump(d.get("neighbours", {})),
        "files": dump([asdict(f) for f in files]),
        "tasks": dump(d.get("tasks", {})),
        "error": error,
    }


def finding_rows(study_id: str, metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The rows of FINDING_SCHEMA of one study's ``metrics`` (``StudyResult.to_dict()["metrics"]``):
    one per finding, the nested grade and interval flattened; a key a result lacks (a converted
    release has no grade, interval or calibrated probability) is null."""
    rows = []
    for name, m in metrics.items():
        g = m.get("grade") or {}
        iv = m.get("interval") or {}
        rows.append(
            {
                "study_id": study_id,
                "finding": name,
                **{k: m.get(k) for k in ("kind", "unit", "value", "probability", "calibrated_probability")},
                **{k: m.get(k) for k in ("calibration", "decision", "threshold", "threshold_source")},
                "spread": m.get("spread"),
                "n_labelled": m.get("n_labelled"),
                "grade": g.get("grade"),
                "grade_label": g.get("label"),
                "grade_scale": g.get("scale"),
                "grade_distribution": g.get("distribution"),
                "n_graded": g.get("n_graded"),
                "report_grade_label": g.get("report_label"),
                "agrees_with_report": g.get("agrees_with_report"),
                "interval_low": iv.get("low"),
                "interval_high": iv.get("high"),
                "interval_level": iv.get("level"),
            }
        )
    return rows


class BatchInterpreter:
    """Interpret chunks of studies with one bundle loaded once (a Ray Data actor's body).

    Args:
        bundle: the model bundle (folder or ``s3://``).
        out: the output (see :class:`BatchOutput`); each chunk is written and committed there.
        device: ``cpu``/``cuda`` (default: CUDA when present).
        readers: threads reading and preprocessing a chunk's studies while the encoder waits.
        write_json: also write ``json/<study_id>.json`` per study.
        k: neighbours for the metrics (default: the interpreter's; at most the bank's size).
        batch_size: clips per encoder forward pass.
    """

    def __init__(
        self,
        bundle: str,
        out: str,
        *,
        device: str | None = None,
        readers: int = 1,
        write_json: bool = False,
        k: int | None = None,
        batch_size: int = 50,
        archive_url: str | None = None,
        precision: str = "fp32",
    ) -> None:
        from echoprime.inference import StudyInterpreter

        # k through the constructor, which caps it at the bank's size; no text encoder (unused).
        extra = {"k": k} if k is not None else {}
        self.interp = StudyInterpreter.from_bundle(
            bundle,
            device=device,
            batch_size=batch_size,
            components=INTERPRET_COMPONENTS,
            precision=precision,
            **extra,
        )
        self.out = BatchOutput(out)
        self.readers = max(1, int(readers))
        self.write_json = write_json
        # A DICOMweb archive the studies come from (credentials from this process's environment).
        self.archive: Any = None
        if archive_url is not None:
            from echoprime.hospital.dicomweb import Archive

            self.archive = Archive(archive_url)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, list[Any]]:
        """A Ray Data batch (``study_id``, ``files``, optionally ``names``) -> one summary row per study."""
        ids = [str(s) for s in batch["study_id"]]
        files = [[str(f) for f in fs] for fs in batch["files"]]
        names = [[str(n) for n in ns] for ns in batch["names"]] if "names" in batch else None
        sources = [str(x) for x in batch["source"]] if "source" in batch else None
        return self.interpret_chunk(ids, files, names, sources)

    def interpret_chunk(
        self,
        study_ids: Sequence[str],
        files: Sequence[Sequence[str]],
        names: Sequence[Sequence[str]] | None = None,
        sources: Sequence[str] | None = None,
    ) -> dict[str, list[Any]]:
        """Interpret, write and commit one chunk; returns per study its status and counts, and the
        chunk's seconds (shared equally) and wall-clock span, so that a driver can tell the
        interpretation's own rate from the actors' start-up.

        ``names``: per study, the name each file goes by in the output (its key when the output
        is de-identified); default the files' own paths or URIs. ``sources``: per study, its
        StudyInstanceUID on the DICOMweb archive (``files`` are then its SOPInstanceUIDs)."""
        t0, started = time.perf_counter(), time.time()
        names = files if names is None else names
        failed: dict[int, str] = {}  # studies whose archive failed: recorded as errors
        if self.archive is not None and sources is not None:
            loaded = []
            for i, (u, fs, ns) in enumerate(zip(sources, files, names, strict=True)):
                try:
                    loaded.append(self.load_archive(u, fs, ns))
                except RuntimeError as e:
                    failed[i] = str(e)
                    spec = self.interp.spec
                    loaded.append(
                        (
                            np.zeros((0, spec.frames, spec.size, spec.size, 3), np.uint8),
                            np.zeros(0, np.int64),
                            [],
                        )
                    )
        elif self.readers > 1:
            with ThreadPoolExecutor(self.readers) as pool:
                loaded = list(pool.map(self.load, files, names))
        else:
            loaded = [self.load(fs, ns) for fs, ns in zip(files, names, strict=True)]
        results, errors = self._interpret(loaded)
        for i, why in failed.items():
            results[i], errors[i] = None, why
        rows, rejects, docs = [], [], {}
        for sid, (_, _, reports), res, err in zip(study_ids, loaded, results, errors, strict=True):
            rows.append(result_row(sid, res, reports, err))
            rejects += [
                {"study_id": sid, "file": r.path, "reason": r.reason, "code": r.code}
                for r in reports
                if r.status != "used"
            ]
            if self.write_json:
                docs[sid] = {"study_id": sid} | (
                    res.to_dict() if res is not None else {"status": "error", "error": err}
                )
        key = part_key(study_ids)
        self.out.write_chunk(key, rows, rejects, docs)
        return {
            "study_id": list(study_ids),
            "status": [r["status"] for r in rows],
            "n_files": [r["n_files"] for r in rows],
            "n_used": [r["n_used"] for r in rows],
            "n_rejected": [r["n_files"] - r["n_used"] for r in rows],
            "part": [key] * len(rows),
            "seconds": [(time.perf_counter() - t0) / len(rows)] * len(rows),
            "chunk_start": [started] * len(rows),
            "chunk_end": [time.time()] * len(rows),
        }

    def load(
        self, files: Sequence[str], names: Sequence[str] | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[FileReport]]:
        """Read and preprocess one study's files (local paths or ``s3://``) into uint8 clips and
        their real-frame counts (:meth:`StudyInterpreter.read_study`: a chunk's clips held
        at a quarter of their float32 size, normalised a batch at a time); bad files reported,
        each file under its name in ``names`` (default: its path)."""
        names = files if names is None else names
        if len(names) != len(files) or len(set(names)) != len(names):
            raise ValueError(
                f"a study's {len(files)} files need as many distinct names, got {len(set(names))}"
            )
        s3 = [(f, n) for f, n in zip(files, names, strict=True) if storage.is_s3(f)]
        read, failed = read_objects([f for f, _ in s3], names=[n for _, n in s3]) if s3 else ([], {})
        got = dict(read)
        items = [
            (n, got[n] if storage.is_s3(f) else Path(f))
            for f, n in zip(files, names, strict=True)
            if n in got or not storage.is_s3(f)
        ]
        clips, n_valid, reports = self.interp.read_study(items)
        by_name = {r.path: r for r in reports}
        by_name |= {n: FileReport(n, "skipped", why, code=code) for n, (code, why) in failed.items()}
        return clips, n_valid, [by_name[n] for n in names]

    def load_archive(
        self, study_uid: str, sops: Sequence[str], names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, list[FileReport]]:
        """One study of the DICOMweb archive as it streams in
        (:func:`echoprime.hospital.outputs.load_archive_study`), each instance under its name in
        ``names`` (by SOPInstanceUID in ``sops``). An archive that fails is the study's error."""
        from echoprime.hospital.dicomweb import DicomwebError
        from echoprime.hospital.outputs import load_archive_study

        try:
            u8, nv, reports, _ = load_archive_study(
                self.interp, self.archive, study_uid, dict(zip(sops, names, strict=True))
            )
        except DicomwebError as e:
            # The study is recorded as failed with the reason in words (no URL: it is the job's).
            raise RuntimeError(
                f"the DICOMweb archive failed for this study ({type(e).__name__}, HTTP {e.status})"
            ) from None
        return u8, nv, reports

    def _interpret(
        self, loaded: list[tuple[np.ndarray, np.ndarray, list[FileReport]]]
    ) -> tuple[list[Any], list[str | None]]:
        from echoprime.inference import StudyClips  # with the interpreter: torch on the actor only

        try:
            return self.interp.interpret_many([StudyClips(*one) for one in loaded]), [None] * len(loaded)
        except (ValueError, RuntimeError):
            # One study broke the shared batch (say a GPU out of memory on a huge study): redo
            # the chunk study by study so only that study is recorded as failed, with its error.
            pass
        results: list[Any] = []
        errors: list[str | None] = []
        for one in loaded:
            try:
                results.append(self.interp.interpret(StudyClips(*one)))
                errors.append(None)
            except (ValueError, RuntimeError) as e:
                results.append(None)
                errors.append(f"{type(e).__name__}: {e}")
        return results, errors
