"""One ingest run, all but the decoding: what to read, whether it is up to date, the commit.

``echoprime ingest`` (``ray_jobs/ingest.py``) hands :func:`ingest` a ``decode`` function that
runs :class:`~echoprime.data.ingest.FileDecoder` (or, from a DICOMweb archive,
:class:`~echoprime.hospital.ingest.ArchiveDecoder`) over the plan's units in a Ray Data actor
pool and writes the clips as Parquet under the run's data folder; everything around it is here:
listing the input and its tables, the fingerprint that makes a re-run "up to date", the lock,
de-identification and the id map, counting what was written, the rejects table and the commit
(:func:`echoprime.data.shards.commit_run`), and a public dataset's tables (``--dataset``,
:func:`ingest_dataset`). :func:`ingest_command` is the whole command but the decoding.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import posixpath
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from echoprime import storage
from echoprime.commands import config_of, dicomweb_query
from echoprime.commands.ingest import check_dataset_arguments, print_dataset_ingest, print_ingest
from echoprime.config import EchoPrimeConfig
from echoprime.data.deid import SCHEME, Deidentifier, synthetic_seeds
from echoprime.data.ingest import METADATA_FILES, StudyIndex, load_table
from echoprime.data.shards import SPLITS, ShardManifest, commit_run, read_manifest
from echoprime.datasets import read_dataset
from echoprime.hospital.dicomweb import Archive, check_url
from echoprime.locks import OutputLock
from echoprime.preprocess import PreprocessSpec
from echoprime.retrieval.pseudonyms import check_map_outside, write_id_map
from echoprime.storage import Location


@dataclass(frozen=True)
class IngestPlan:
    """What the decode actors of one run take, and what they decode it with."""

    units: list[str]
    """Files (URIs under ``root``), or with ``archive`` the StudyInstanceUIDs of a DICOMweb archive."""
    root: str
    """The input folder's URI, or the archive's checked URL."""
    index: StudyIndex
    spec: PreprocessSpec
    archive: bool


Decode = Callable[
    [EchoPrimeConfig, IngestPlan, Location, Deidentifier], tuple[list[dict[str, str]], dict[str, str]]
]
"""Decodes a plan's units with the config's ``ingest`` settings into Parquet shards under the
run's data folder (``split=<split>/``); returns the reject records and the pseudonyms'
originals that the decoders collected."""


def input_blocks(n_files: int, n_actors: int) -> int:
    """Blocks to cut the file list into: about 16 files each, at least 4 per decode actor (so a
    small archive still keeps every actor busy), at most 400.

    Each block is one task for a decode actor; with 4 files per block the gaps between tasks left
    ~20 % of 2 cores idle (bench/ingest_scaling.py: 90-95 % busy with ~16, the 1772-file archive
    10-20 % faster).
    """
    return min(400, max(n_files // 16, min(n_files, 4 * n_actors), 1))


def ingest(
    cfg: EchoPrimeConfig,
    input_uri: str | None,
    out_uri: str,
    *,
    decode: Decode,
    manifest: str | None = None,
    studies: str | None = None,
    force: bool = False,
    keep_previous: int = 1,
    id_map: str | None = None,
    secret: tuple[bytes, str] | None = None,
    dicomweb: str | None = None,
    query: dict[str, Any] | None = None,
    videos_only: bool = False,
    extra_rejects: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """Ingest ``input_uri`` (or, with ``dicomweb``, the studies of that DICOMweb archive that the
    QIDO-RS ``query`` finds, ``Archive.search_studies`` arguments) into shards at ``out_uri``;
    returns headline numbers. ``decode`` turns the files (or studies) into clips and writes
    them (:data:`Decode`; ``ray_jobs.ingest.run_ingest`` binds the Ray Data actor pool).

    From an archive, each study is streamed to a decode actor instance by instance (WADO-RS;
    echoprime/hospital/ingest.py); ``manifest`` names videos by SOPInstanceUID, ``studies``
    names studies by StudyInstanceUID, and the fingerprint that makes a re-run "up to date" is
    the archive's URL and the studies' instance UIDs.

    With ``cfg.ingest.deidentify`` (the default) the shards hold keyed pseudonyms of the study
    ids and file paths (echoprime/data/deid.py); ``id_map`` (a local file outside the output)
    receives the operator's map back to the originals. ``secret`` (``(key, kind)``) replaces
    the site secret of the environment: the quickstart keys its synthetic cohort with one made
    from the seed, so that its runs repeat exactly.

    The new run is written beside the shards already there and replaces them only once it is
    complete (:func:`echoprime.data.shards.commit_run`); the ``keep_previous`` runs before it
    keep their data for readers still reading them. A run that fails, or that yields no clip at
    all, changes nothing and leaves nothing. One ingest at a time per output
    (``echoprime.locks``).

    ``videos_only`` decodes only the files the videos table lists (a public dataset's folder holds
    tables and annotations beside its videos: ``echoprime ingest --dataset``, :func:`ingest_dataset`);
    ``extra_rejects`` (``{source, reason, code, path}``: a dataset adapter's) join the rejects table.

    Raises:
        FileNotFoundError: the input does not exist.
        ValueError: the input holds no files to ingest (or the query found no study), every
            file was rejected, or the output is not writable.
        echoprime.hospital.dicomweb.DicomwebError: the archive cannot be reached or refuses the query.
        echoprime.locks.OutputBusy: another ingest is writing the same output (named).
    """
    t0 = time.perf_counter()
    if (input_uri is None) == (dicomweb is None):
        raise ValueError("ingest reads --input or --dicomweb (one of them)")
    deid = Deidentifier.from_env(cfg.ingest.deidentify)
    if secret is not None and deid.enabled:
        deid = Deidentifier(*secret)
    if id_map is not None:
        if not deid.enabled:
            raise ValueError(
                "--id-map needs ingest.deidentify: true (with it off the shards hold the originals)"
            )
        check_map_outside(id_map, out_uri, "the shard output")
    out = storage.ensure_dir(out_uri)
    with OutputLock(out.uri, "echoprime ingest") as lock:
        if lock.recovered_message:
            print(f"ingest: {lock.recovered_message}")
        res = _ingest(
            cfg,
            input_uri,
            out,
            manifest,
            studies,
            force,
            keep_previous,
            t0,
            lock.check,
            deid,
            decode,
            dicomweb,
            query,
            videos_only,
            extra_rejects,
        )
        if id_map is not None and res["status"] == "ingested":
            write_id_map(id_map, {v: k for k, v in deid.originals.items()}, source=deid.source)
            res["id_map"] = id_map
        res["lock_taken_over"] = lock.recovered_message
        return res


def _ingest(
    cfg: EchoPrimeConfig,
    input_uri: str,
    out: Location,
    manifest: str | None,
    studies: str | None,
    force: bool,
    keep_previous: int,
    t0: float,
    still_held: Callable[[], None],
    deid: Deidentifier,
    decode: Decode,
    dicomweb: str | None = None,
    query: dict[str, Any] | None = None,
    videos_only: bool = False,
    extra_rejects: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """ingest's work, under the output's lock (``still_held`` raises if it was lost)."""
    units: list[str]  # what the decode actors take: files, or an archive's studies
    if dicomweb is not None:
        root = input_uri = check_url(dicomweb)
        listing = Archive(root).study_instances(**dict(query or {}))
        if not listing:
            raise ValueError(f"the DICOMweb query {query or {}} found no study on {root}")
        units = list(listing)
        files = [f"{root}/studies/{s}/instances/{i}" for s, ii in listing.items() for i in ii]
        infos = [(f, 0, 0.0) for f in files]  # instances do not change under their UID
        index, tables = _index(cfg, None, manifest, studies, [])
    else:
        infos = _file_infos(input_uri)
        all_files = [f for f, _, _ in infos]
        index, tables = _index(cfg, input_uri, manifest, studies, all_files)
        root = storage.locate(input_uri).uri.rstrip("/")
        files = units = [
            f
            for f, _, _ in infos
            if not (posixpath.basename(f) in METADATA_FILES and posixpath.dirname(f).rstrip("/") == root)
            and f not in tables
            and (not videos_only or index.listed(f[len(root) + 1 :]) is not None)
        ]
    if not files:
        raise ValueError(f"input {input_uri!r} holds no files to ingest (expected DICOM, MP4 or AVI files)")
    fingerprint = _fingerprint(cfg, infos, tables, deid.fingerprint_tag())
    if not force and storage.exists(out.join("_manifest.json").uri):
        old = read_manifest(out.uri)
        if old.fingerprint == fingerprint:
            return {
                "status": "up to date",
                "files": len(files),
                "rows": old.rows,
                "studies": old.studies,
                "rejects": old.rejects,
                "out": out.uri,
                "wall_s": round(time.perf_counter() - t0, 2),
            }
    spec = PreprocessSpec.from_dict(cfg.data.model_dump(mode="json"))
    run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
    data_dir = out.join(f"data-{run_id}")
    try:
        plan = IngestPlan(units, root, index, spec, archive=dicomweb is not None)
        rejects, originals = decode(cfg, plan, data_dir, deid)
        if extra_rejects:
            rejects = keyed_rejects(extra_rejects, deid) + rejects
        deid.originals.update(originals)
        still_held()  # S3: a job stalled past the lock's staleness must not commit over another's
        res = _commit(
            cfg,
            input_uri,
            out,
            data_dir,
            run_id,
            spec,
            fingerprint,
            files,
            rejects,
            keep_previous,
            deid,
            index,
        )
    except BaseException:
        # Not committed (unless the manifest write failed only on its way back): the shards
        # already there stay as they were, and this run's half-written folder goes.
        committed = False
        with contextlib.suppress(Exception):
            committed = read_manifest(out.uri).run_id == run_id
        if not committed:
            with contextlib.suppress(Exception):
                storage.delete_dir(data_dir.uri)
        raise
    res["wall_s"] = round(time.perf_counter() - t0, 2)
    res["videos_per_s"] = round(sum(res["rows"].values()) / max(time.perf_counter() - t0, 1e-9), 1)
    return res


def _index(
    cfg: EchoPrimeConfig, input_uri: str | None, manifest: str | None, studies: str | None, files: list[str]
) -> tuple[StudyIndex, list[str]]:
    """The study index of the tables given, or (for a folder) found in its root."""
    auto = {}
    if input_uri is not None:
        root = storage.locate(input_uri)
        auto = {
            posixpath.basename(f): f
            for f in files
            if posixpath.dirname(f).rstrip("/") == root.uri.rstrip("/")
        }
    mpath = manifest or auto.get("manifest.parquet") or auto.get("manifest.csv")
    spath = studies or auto.get("studies.parquet") or auto.get("studies.csv")
    vids = load_table(storage.read_bytes(mpath), mpath) if mpath else []
    stds = load_table(storage.read_bytes(spath), spath) if spath else []
    src = ", ".join(p for p in (mpath, spath) if p) or "<no manifest>"
    return StudyIndex.from_tables(vids, stds, tuple(cfg.ingest.split_fractions), source=src), [
        p for p in (mpath, spath) if p
    ]


def _fingerprint(
    cfg: EchoPrimeConfig, infos: list[tuple[str, int, float]], tables: list[str], secret_tag: str = ""
) -> str:
    h = hashlib.sha256()
    h.update(secret_tag.encode())
    h.update(
        json.dumps(
            {"data": cfg.data.model_dump(mode="json"), "ingest": cfg.ingest.model_dump(mode="json")},
            sort_keys=True,
        ).encode()
    )
    for uri, size, mtime in infos:
        h.update(f"{uri}\0{size}\0{mtime}\n".encode())
    for t in tables:
        h.update(hashlib.sha256(storage.read_bytes(t)).digest())
    return h.hexdigest()


def _file_infos(input_uri: str) -> list[tuple[str, int, float]]:
    files = storage.list_files(input_uri)
    out = []
    for f in files:
        loc = storage.locate(f)
        info = loc.fs.get_file_info(loc.path)
        mtime = info.mtime.timestamp() if info.mtime is not None and info.type == pafs.FileType.File else 0.0
        out.append((f, int(info.size or 0), mtime))
    return out


def _commit(
    cfg: EchoPrimeConfig,
    input_uri: str,
    out: Location,
    data_dir: Location,
    run_id: str,
    spec: PreprocessSpec,
    fingerprint: str,
    files: list[str],
    rejects: list[dict[str, str]],
    keep_previous: int,
    deid: Deidentifier,
    index: StudyIndex,
) -> dict[str, Any]:
    """Count what a run wrote, write its rejects table and commit it (or refuse an empty run)."""
    # What was written, per split (from the files' footers; the clips are not read again).
    split_files: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    nstudies: dict[str, int] = {}
    for split in SPLITS:
        loc = data_dir.join(f"split={split}")
        if loc.fs.get_file_info(loc.path).type != pafs.FileType.Directory:
            split_files[split], rows[split], nstudies[split] = [], 0, 0
            continue
        sel = sorted(
            i.path for i in loc.fs.get_file_info(pafs.FileSelector(loc.path)) if i.path.endswith(".parquet")
        )
        uris = [loc.join(posixpath.basename(p)).uri for p in sel]
        split_files[split] = uris
        rows[split] = sum(pq.read_metadata(p, filesystem=loc.fs).num_rows for p in sel)
        ids = set()
        for p in sel:
            ids.update(
                pq.read_table(p, filesystem=loc.fs, columns=["study_id"]).column("study_id").to_pylist()
            )
        nstudies[split] = len(ids)
    if not sum(rows.values()):
        # Committing would replace good shards with none (a wrong --input, an unreadable mount).
        prev = read_manifest(out.uri).run_id if storage.exists(out.join("_manifest.json").uri) else None
        what = (
            f"all {len(files)} files were rejected"
            if len(rejects) == len(files)
            else f"{len(rejects)} of {len(files)} files were rejected and the rest gave no clip"
        )
        examples = "; ".join(f"{posixpath.basename(r['source_uri'])}: {r['reason']}" for r in rejects[:3])
        if deid.enabled:
            examples += " (files named by their keys: ingest.deidentify=false names them)"
        kept = f"the shards already there are kept: run {prev}" if prev else "there were no shards before"
        raise ValueError(
            f"ingest of {input_uri} found no usable clip: {what} (e.g. {examples or 'none'}); nothing was "
            f"committed to {out.uri}, {kept}"
        )
    rej_loc = data_dir.join("rejects.parquet")
    rej_table = pa.table(
        {
            "source_uri": [r["source_uri"] for r in rejects],
            "reason": [r["reason"] for r in rejects],
            "code": [r["code"] for r in rejects],
        }
    )
    with rej_loc.fs.open_output_stream(rej_loc.path) as f:
        pq.write_table(rej_table, f)
    manifest_obj = ShardManifest(
        run_id=run_id,
        files=split_files,
        rows=rows,
        studies=nstudies,
        rejects=len(rejects),
        rejects_file=rej_loc.uri,
        spec=spec.to_dict(),
        fingerprint=fingerprint,
        source=input_uri,
        extra={"config": cfg.to_dict(), "files_seen": len(files), "deidentified": _deid_record(deid, index)},
    )
    # The switch, then the runs no reader can need any more go (the previous one stays).
    retired = commit_run(out.uri, manifest_obj, keep_previous=keep_previous)
    return {
        "status": "ingested",
        "files": len(files),
        "rows": rows,
        "studies": nstudies,
        "rejects": len(rejects),
        "out": out.uri,
        "kept_runs": manifest_obj.previous_runs,
        "deleted_runs": retired,
    }


def _deid_record(deid: Deidentifier, index: StudyIndex) -> dict[str, Any]:
    """What the manifest says about de-identification: whether it was on, the key scheme, the
    secret's kind, and the ``echoprime synth`` seeds among the original study ids (so that a
    pretraining stream drawing the same seed is still refused; ray_jobs.common)."""
    ids = set(index.studies) | {v.study_id for v in index.videos.values()}
    rec: dict[str, Any] = {"enabled": deid.enabled, "synthetic_seeds": synthetic_seeds(ids)}
    if deid.enabled:
        rec.update(scheme=SCHEME, secret=deid.source)
    return rec


def keyed_rejects(records: Iterable[Mapping[str, Any]], deid: Deidentifier) -> list[dict[str, str]]:
    """The adapter's rejects as rejects-table records: a reject about a video is named by the
    video's file key when ingest de-identifies (its path scrubbed from the reason, as the
    decoder's rejects are); a table row is named by ``<table> line <n>``."""
    out = []
    for r in records:
        source, reason, path = str(r["source"]), str(r["reason"]), r.get("path")
        if path and deid.enabled:
            key = deid.file(str(path))
            source, reason = key, deid.scrub(reason, str(path), key)
        elif path:
            source = str(path)
        out.append({"source_uri": source, "reason": reason, "code": str(r["code"])})
    return out


def ingest_dataset(
    cfg: EchoPrimeConfig,
    dataset: str,
    input_uri: str,
    out_uri: str,
    *,
    decode: Decode,
    options: Mapping[str, Any] | Iterable[str] | None = None,
    force: bool = False,
    keep_previous: int = 1,
    id_map: str | None = None,
    secret: tuple[bytes, str] | None = None,
) -> dict[str, Any]:
    """Ingest the public dataset ``dataset`` read from ``input_uri`` into shards at ``out_uri``.

    The dataset's adapter (:mod:`echoprime.datasets`) reads its tables and folders into ingest's
    two tables (videos, studies) and a list of rejects; the tables are written to a temporary
    folder and the ordinary ingest runs on the dataset folder (:func:`ingest`: the same
    decoding, de-identification, commit and rejects table), decoding only the videos the table
    lists (the dataset's CSVs, cfg files, stills, masks and MetaImage data files are not
    videos). The adapter's rejects (malformed rows, missing videos) join the decoder's in the
    rejects table.

    Returns:
        :func:`ingest`'s numbers plus ``dataset``: the adapter's summary (videos and studies per
        split, rejects per code, options, notes).

    Raises:
        ValueError: an unknown dataset or option; ``DatasetLayoutError`` when the folder is not
            laid out as the dataset publishes it; no usable video at all.
    """
    tables = read_dataset(dataset, input_uri, options, split_fractions=tuple(cfg.ingest.split_fractions))
    if not tables.videos:
        examples = "; ".join(r.reason for r in tables.rejects[:3]) or "no video found"
        raise ValueError(
            f"{dataset}: no usable video in {input_uri} ({len(tables.rejects)} rejects, e.g. {examples})"
        )
    with tempfile.TemporaryDirectory(prefix="echoprime-dataset-") as tmp:
        videos, studies = Path(tmp, "videos.parquet"), Path(tmp, "studies.parquet")
        pq.write_table(pa.Table.from_pylist(_typed_videos(tables.videos)), videos)
        pq.write_table(pa.Table.from_pylist(tables.studies), studies)
        res = ingest(
            cfg,
            input_uri,
            out_uri,
            decode=decode,
            manifest=str(videos),
            studies=str(studies),
            force=force,
            keep_previous=keep_previous,
            id_map=id_map,
            secret=secret,
            videos_only=True,
            extra_rejects=[r.to_dict() for r in tables.rejects],
        )
    res["dataset"] = tables.summary()
    return res


def ingest_command(args: argparse.Namespace, decode: Decode) -> int:
    """``echoprime ingest`` (``--dataset`` included) with ``decode`` doing the decoding; prints
    what :mod:`echoprime.commands.ingest` prints and returns the exit status."""
    if getattr(args, "dataset", None):
        check_dataset_arguments(args)
        res = ingest_dataset(
            config_of(args),
            args.dataset,
            args.input,
            args.out,
            decode=decode,
            options=args.dataset_option or None,
            force=args.force,
            keep_previous=args.keep_previous,
            id_map=args.id_map,
        )
        print_dataset_ingest(res)
        return 0
    cfg = config_of(args)
    res = ingest(
        cfg,
        args.input,
        args.out,
        decode=decode,
        dicomweb=args.dicomweb,
        query=dicomweb_query(args),
        manifest=args.manifest,
        studies=args.studies,
        force=args.force,
        keep_previous=args.keep_previous,
        id_map=args.id_map,
    )
    print_ingest(res, bool(args.id_map))
    return 0


def _typed_videos(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Videos rows with a float ``fps`` column (NaN where unknown), so Parquet types it whatever
    the first rows hold."""
    return [{**r, "fps": float("nan") if r.get("fps") is None else float(r["fps"])} for r in rows]
