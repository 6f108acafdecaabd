"""``batch-interpret`` on the driver, without Ray: the run's plan, its inputs, its names, its summary.

The job (``ray_jobs/batch_interpret.py``) checks its arguments (:func:`plan_batch`), lists the
archive (:func:`list_archive`; or queries a DICOMweb archive, :func:`archive_studies`), groups
the files into studies (:func:`echoprime.batch_interpret.group_studies`, DICOM headers read by
threads, :func:`probe_study_uids`, or by Ray Data tasks on a big archive), names them
(:func:`name_studies`: keyed pseudonyms by default) and runs
:class:`echoprime.batch_interpret.BatchInterpreter` (:func:`interpreter_options`) over chunks in
an actor pool; :func:`run_summary` counts what came back and :func:`summary_lines` is what it
prints.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from echoprime import storage
from echoprime.batch_interpret import probe_study_uid
from echoprime.bundle import manifest_sha256
from echoprime.config import EchoPrimeConfig
from echoprime.data.deid import Deidentifier
from echoprime.data.ingest import METADATA_FILES, load_table
from echoprime.hospital.dicomweb import Archive, check_url
from echoprime.retrieval.pseudonyms import check_map_outside, write_id_map


@dataclass(frozen=True)
class BatchPlan:
    """A checked batch-interpret request: how studies are named (``deid``; ``ids``, the tag a
    resumed run must match), the actor pool (``n_actors`` actors of ``cpus`` CPUs and ``gpus``
    GPUs), the neighbours ``k``, the bundle's id (its manifest's sha256) and the ``source`` read
    (the input URI, or the DICOMweb base URL when ``archive``)."""

    deid: Deidentifier
    ids: str
    n_actors: int
    cpus: float
    gpus: int
    k: int
    bundle_id: str
    source: str
    archive: bool


def plan_batch(
    cfg: EchoPrimeConfig,
    bundle: str,
    input_uri: str | None,
    out_uri: str,
    *,
    actors: int | None,
    chunk: int,
    k: int | None,
    deidentify: bool,
    id_map: str | None,
    secret: tuple[bytes, str] | None,
    dicomweb: str | None,
) -> BatchPlan:
    """Check a batch-interpret request before anything is read or written.

    With ``deidentify`` (the default) the output names each study by a keyed pseudonym and each
    file by a keyed file key (:class:`echoprime.data.deid.Deidentifier`: the site secret of the
    environment, or ``secret`` = ``(key, kind)``); ``id_map`` (a local file outside the output)
    receives the map back to the archive's study ids and paths. An archive study's instances
    (``dicomweb``) are named by SOPInstanceUID, keyed like files.

    Raises:
        ValueError: ``id_map`` without keyed names or inside the output, fewer than one actor
            or study per chunk, both or neither of ``input_uri`` and ``dicomweb``, a bad URL, a
            site secret that is too short.
        echoprime.bundle.BundleError: the bundle is missing or incomplete.
    """
    deid = Deidentifier(*secret) if secret is not None and deidentify else Deidentifier.from_env(deidentify)
    if id_map is not None:
        if not deid.enabled:
            raise ValueError(
                "--id-map needs keyed names (drop --original-ids: the output then holds the originals)"
            )
        check_map_outside(id_map, out_uri, "the output")
    # How the output names studies: a resumed run must name them alike (BatchOutput.start).
    ids = deid.fingerprint_tag() if deid.enabled else "originals"
    n_actors = cfg.bank.encode_actors if actors is None else actors
    if n_actors < 1 or chunk < 1:
        raise ValueError(f"--actors and --chunk must be >= 1, got {n_actors} and {chunk}")
    gpus = 1 if cfg.train.use_gpu else 0
    cpus = cfg.train.cpus_per_worker if cfg.train.use_gpu else 1.0
    k = cfg.interpret.k if k is None else k
    bundle_id = manifest_sha256(bundle)
    if (input_uri is None) == (dicomweb is None):
        raise ValueError("batch-interpret reads --input or --dicomweb (one of them)")
    source = check_url(dicomweb) if dicomweb is not None else str(input_uri)
    return BatchPlan(deid, ids, n_actors, cpus, gpus, k, bundle_id, source, dicomweb is not None)


def list_archive(input_uri: str, manifest: str | None) -> tuple[list[str], dict[str, str], str]:
    """(files to interpret, videos table path -> study id, root URI) of an archive folder.

    Raises:
        FileNotFoundError: the input does not exist.
        ValueError: a videos table row without ``path`` or ``study_id``, or no study files.
    """
    root = storage.locate(input_uri).uri.rstrip("/")
    listed = storage.list_files(input_uri)
    top = {posixpath.basename(f): f for f in listed if posixpath.dirname(f).rstrip("/") == root}
    table = manifest or top.get("manifest.parquet") or top.get("manifest.csv")
    videos: dict[str, str] = {}
    if table:
        for i, r in enumerate(load_table(storage.read_bytes(table), table)):
            if not r.get("path") or not r.get("study_id"):
                raise ValueError(f"{table}: videos row {i} needs 'path' and 'study_id', got {sorted(r)}")
            videos[str(r["path"])] = str(r["study_id"])
    files = [
        f
        for f in listed
        if f != table
        and not (posixpath.basename(f) in METADATA_FILES and top.get(posixpath.basename(f)) == f)
    ]
    if not files:
        found = "it is empty" if not listed else f"only archive tables ({', '.join(sorted(top))})"
        raise ValueError(
            f"input {input_uri!r} holds no studies: {found}; expected folders of DICOM, MP4 or AVI files"
        )
    return files, videos, root


def archive_studies(plan: BatchPlan, query: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """``{StudyInstanceUID: [SOPInstanceUID, ...]}`` of the studies the QIDO-RS ``query``
    (``Archive.search_studies`` arguments) finds on the DICOMweb archive ``plan.source``.

    Raises:
        ValueError: the query found no study.
    """
    grouped = Archive(plan.source).study_instances(**dict(query or {}))
    if not grouped:
        raise ValueError(f"the DICOMweb query {query or {}} found no study on {plan.source}")
    return grouped


def probe_study_uids(files: Sequence[str]) -> dict[str, str]:
    """StudyInstanceUID of each of ``files`` that has one (headers only), read by threads on the
    driver: S3 range reads wait on the network, not the CPU."""
    with ThreadPoolExecutor(8) as pool:
        return {f: u for f, u in zip(files, pool.map(probe_study_uid, files), strict=True) if u}


@dataclass
class NamedStudies:
    """The studies as the output names them: ``studies`` (output name -> the files),
    ``originals`` (output name -> the archive's study id), ``names`` (file -> output name)."""

    studies: dict[str, list[str]]
    originals: dict[str, str]
    names: dict[str, str]

    def rows(self, todo: Sequence[str], archive: bool) -> list[dict[str, Any]]:
        """The actor pool's input rows for the studies ``todo`` (``source``: the archive's
        study UID, which a DICOMweb actor fetches by; empty for files)."""
        return [
            {
                "study_id": s,
                "files": self.studies[s],
                "names": [self.names[f] for f in self.studies[s]],
                "source": self.originals[s] if archive else "",
            }
            for s in todo
        ]


def name_studies(
    grouped: Mapping[str, list[str]], plan: BatchPlan, root: str, id_map: str | None
) -> NamedStudies:
    """Name the ``grouped`` studies and their files as the output will: with keys, the originals
    stay on the driver (and in ``id_map``, written here). A file's key keeps its suffix: readers
    decide by content, then by name."""
    deid = plan.deid
    studies = {deid.study(s): fs for s, fs in grouped.items()}
    originals = dict(zip(studies, grouped, strict=True))
    names = {f: f for fs in grouped.values() for f in fs}
    if deid.enabled:
        keyed = {k: s for k, s in zip(studies, grouped, strict=True)}
        for f in names:
            rel = f if plan.archive else posixpath.relpath(f, root.rstrip("/") or "/")
            suffix = ".dcm" if plan.archive else posixpath.splitext(rel)[1].lower()[:8]
            names[f] = deid.file(rel) + suffix
            keyed[names[f]] = rel
        if id_map is not None:
            write_id_map(id_map, {}, source=deid.source, keyed=keyed)
    return NamedStudies(studies, originals, names)


def interpreter_options(cfg: EchoPrimeConfig, plan: BatchPlan, write_json: bool) -> dict[str, Any]:
    """The keyword arguments of each actor's :class:`~echoprime.batch_interpret.BatchInterpreter`
    (after the bundle and the output)."""
    return {
        "device": "cuda" if plan.gpus else "cpu",
        "readers": max(1, int(plan.cpus)),
        "write_json": write_json,
        "k": plan.k,
        "batch_size": cfg.interpret.batch_size,
        "precision": cfg.interpret.precision,
        "archive_url": plan.source if plan.archive else None,
    }


def run_summary(
    rows: list[dict[str, Any]],
    plan: BatchPlan,
    *,
    studies: int,
    todo: int,
    files: int,
    out: str,
    started: float,
    t1: float,
    t2: float,
    first: float | None,
    now: float,
    recovered: str | None,
) -> dict[str, Any]:
    """The counts of a run (what OUT/_summary.json holds) from the actors' summary ``rows``:
    ``studies`` named, ``todo`` of them not written before, ``files`` listed; times are
    ``time.perf_counter()`` values (``started``, interpreting from ``t1`` to ``t2``, ``now``)
    and ``first``, seconds to the first chunk."""
    status = [r["status"] for r in rows]
    span = max(r["chunk_end"] for r in rows) - min(r["chunk_start"] for r in rows) if rows else 0.0
    return {
        "studies": studies,
        "skipped": studies - todo,
        "interpreted": len(rows),
        "ok": status.count("ok"),
        "no_usable_video": status.count("no_usable_video"),
        "error": status.count("error"),
        "rejected_files": sum(r["n_rejected"] for r in rows),
        "files": files,
        "actors": plan.n_actors,
        "gpus_per_actor": plan.gpus,
        "out": out,
        "interpret_s": round(t2 - t1, 2),
        # Until the first chunk was written: mostly actor start-up (imports, loading the bundle).
        "first_result_s": round(first or 0.0, 2),
        "wall_s": round(now - started, 2),
        "studies_per_s": round(len(rows) / max(t2 - t1, 1e-9), 3),
        # Seconds the actors spent interpreting (no start-up): studies/s of one busy actor.
        "actor_busy_s": round(sum(r["seconds"] for r in rows), 2),
        # From the first chunk's start to the last chunk's end, on any actor: the pool's rate
        # once started, which is what a long archive sees.
        "processing_s": round(span, 2),
        "processing_studies_per_s": round(len(rows) / span, 3) if span > 0 else 0.0,
        "lock_taken_over": recovered,  # the earlier job that had died holding the output, if any
        "ids": "originals" if not plan.deid.enabled else plan.deid.source,  # site | one-off | originals
    }


def summary_lines(res: Mapping[str, Any], id_map: str | None) -> list[str]:
    """What ``echoprime batch-interpret`` prints of :func:`run_summary`'s counts."""
    lines = [
        f"batch-interpret: {res['studies']} studies: {res['interpreted']} interpreted "
        f"({res['ok']} ok, {res['no_usable_video']} without a usable video, {res['error']} failed), "
        f"{res['skipped']} already written; {res['rejected_files']} files rejected; "
        f"{res['studies_per_s']} studies/s; {res['out']} ({res['wall_s']} s)"
    ]
    if res["ids"] == "one-off":
        lines.append(
            "batch-interpret: ECHOPRIME_SITE_SECRET is unset: studies and files are named by keys from a "
            "one-off secret, which no later run reproduces (an interrupted run cannot be resumed)"
            + ("" if id_map else "; only --id-map relates them to the archive")
        )
    if id_map:
        lines.append(
            f"batch-interpret: the map from the output's keys to the archive's ids and paths: {id_map} (keep it private)"
        )
    return lines
