"""Ingest an echo archive into Parquet study shards with Ray Data (local folder or s3://).

Lists every file under --input, decodes them in parallel (DICOM of any transfer syntax, MP4/AVI),
masks the ultrasound sector, crops, scales and samples clips at the config's preprocessing spec
(data.size / frames / stride), joins each video with its study's report and labels, assigns
splits by patient, and writes shards of at most ingest.shard_rows rows per file. The shards
name studies and files by keyed pseudonyms, never by the archive's ids or paths
(ingest.deidentify, on by default; --id-map PATH writes the operator's map back; docs/privacy.md):

  OUT/_manifest.json                       the commit record, written last
  OUT/data-<run>/split=<split>/*.parquet   one row per clip
  OUT/data-<run>/rejects.parquet           every file that could not be used, with the reason

With --dicomweb URL the input is a DICOMweb archive instead: the studies a QIDO-RS query finds
(--study, --modality, --dates), each streamed to a decode actor instance by instance (WADO-RS);
--studies then names studies by StudyInstanceUID and --manifest videos by SOPInstanceUID.

Reports and labels come from manifest tables in the input root (manifest.parquet/studies.parquet
as `echoprime synth` writes them) or from --manifest/--studies (CSV or Parquet); see
docs/ingestion.md. A re-run on the same input and settings finds nothing to do. A new run
replaces the shards there only once it is complete (the manifest switches in one write), keeps
the run before it (--keep-previous) for readers still reading it, and then deletes older runs
and the folders of runs that died; a run that fails or yields no clip changes nothing. One
ingest at a time per --out (OUT/.echoprime.lock).

Examples:
  echoprime ingest --input synth-out --out shards --config configs/tiny-cpu.yaml
  echoprime ingest --input s3://archive/echo --out s3://bucket/shards --studies s3://archive/reports.csv
  echoprime ingest --dicomweb http://pacs:8042/dicom-web --dates 20250101-20251231 \\
      --studies reports.csv --out shards        # credentials: ECHOPRIME_DICOMWEB_TOKEN (or _USER/_PASSWORD)
  export ECHOPRIME_SITE_SECRET=$(cat /etc/echoprime/site.secret)   # the same key for every ingest
  echoprime ingest --input archive --out shards --id-map /secure/echoprime-ids.json
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import posixpath
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ray_jobs.common import add_dicomweb_arguments

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="archive folder or s3://bucket/prefix")
    add_dicomweb_arguments(p, src)
    p.add_argument("--out", required=True, help="shard output folder or s3://bucket/prefix")
    p.add_argument(
        "--manifest",
        default=None,
        help="videos table (CSV/Parquet: path, study_id[, view, patient_id, split]); with --dicomweb "
        "a video's path is its SOPInstanceUID",
    )
    p.add_argument(
        "--studies",
        default=None,
        help="studies table (CSV/Parquet: study_id, report[, labels, patient_id, split]); with "
        "--dicomweb study_id is the StudyInstanceUID",
    )
    from echoprime.datasets import dataset_names, help_text

    p.add_argument(
        "--dataset",
        choices=dataset_names(),
        default=None,
        help="read --input as this public dataset, exactly as published (its own tables, labels and "
        "official split; no --manifest/--studies); see docs/datasets/. Datasets and their options: "
        + help_text(),
    )
    p.add_argument(
        "--dataset-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="an option of --dataset, e.g. fold=3 (echonet-pediatric), release=mhd (camus), "
        "reports=notes.csv (mimic-echo); repeatable",
    )
    p.add_argument(
        "--id-map",
        default=None,
        metavar="PATH",
        help="write the operator's map from the shards' pseudonyms and file keys back to the archive's "
        "study ids and paths (JSON, mode 600, local disk outside --out); see docs/privacy.md",
    )
    p.add_argument("--force", action="store_true", help="ingest again even when the output is up to date")
    p.add_argument(
        "--keep-previous",
        type=int,
        default=1,
        help="earlier runs whose shards stay for readers still reading them (default 1; see docs/ingestion.md)",
    )
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


class _Rejects:
    """Collects reject records and the pseudonyms' originals from the decode actors (a Ray
    actor; see run_ingest).

    One record per file (the latest): a batch that Ray runs again (its actor or node was lost
    after the batch had reported) reports its rejects again, and they are not counted twice."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, str]] = {}
        self.ids: dict[str, str] = {}

    def add(self, items: list[dict[str, str]]) -> int:
        for r in items:
            self.items[r["source_uri"]] = r
        return len(self.items)

    def add_ids(self, ids: dict[str, str]) -> None:
        self.ids.update(ids)

    def get(self) -> list[dict[str, str]]:
        return list(self.items.values())

    def get_ids(self) -> dict[str, str]:
        return self.ids


def input_blocks(n_files: int, n_actors: int) -> int:
    """Blocks to cut the file list into: about 16 files each, at least 4 per decode actor (so a
    small archive still keeps every actor busy), at most 400.

    Each block is one task for a decode actor; with 4 files per block the gaps between tasks left
    ~20 % of 2 cores idle (bench/ingest_scaling.py: 90-95 % busy with ~16, the 1772-file archive
    10-20 % faster).
    """
    return min(400, max(n_files // 16, min(n_files, 4 * n_actors), 1))


def _index(
    cfg: EchoPrimeConfig, input_uri: str | None, manifest: str | None, studies: str | None, files: list[str]
):
    """The study index of the tables given, or (for a folder) found in its root."""
    from echoprime import storage
    from echoprime.data.ingest import StudyIndex, load_table

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
    from echoprime import storage

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
    import pyarrow.fs as pafs

    from echoprime import storage

    files = storage.list_files(input_uri)
    out = []
    for f in files:
        loc = storage.locate(f)
        info = loc.fs.get_file_info(loc.path)
        mtime = info.mtime.timestamp() if info.mtime is not None and info.type == pafs.FileType.File else 0.0
        out.append((f, int(info.size or 0), mtime))
    return out


def run_ingest(
    cfg: EchoPrimeConfig,
    input_uri: str | None,
    out_uri: str,
    *,
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
    returns headline numbers.

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
    tables and annotations beside its videos: ``echoprime ingest --dataset``, ray_jobs/ingest_dataset.py);
    ``extra_rejects`` (``{source, reason, code, path}``: a dataset adapter's) join the rejects table.

    Raises:
        FileNotFoundError: the input does not exist.
        ValueError: the input holds no files to ingest (or the query found no study), every
            file was rejected, or the output is not writable.
        echoprime.hospital.dicomweb.DicomwebError: the archive cannot be reached or refuses the query.
        echoprime.locks.OutputBusy: another ingest is writing the same output (named).
    """
    from echoprime import storage
    from echoprime.data.deid import Deidentifier
    from echoprime.locks import OutputLock
    from echoprime.retrieval.pseudonyms import check_map_outside

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
            dicomweb,
            query,
            videos_only,
            extra_rejects,
        )
        if id_map is not None and res["status"] == "ingested":
            from echoprime.retrieval.pseudonyms import write_id_map

            write_id_map(id_map, {v: k for k, v in deid.originals.items()}, source=deid.source)
            res["id_map"] = id_map
        res["lock_taken_over"] = lock.recovered_message
        return res


def _ingest(
    cfg: EchoPrimeConfig,
    input_uri: str,
    out: Any,
    manifest: str | None,
    studies: str | None,
    force: bool,
    keep_previous: int,
    t0: float,
    still_held: Callable[[], None],
    deid: Any,
    dicomweb: str | None = None,
    query: dict[str, Any] | None = None,
    videos_only: bool = False,
    extra_rejects: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """run_ingest's work, under the output's lock (``still_held`` raises if it was lost)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from echoprime import storage
    from echoprime.data.ingest import METADATA_FILES, FileDecoder
    from echoprime.data.shards import read_manifest
    from echoprime.preprocess import PreprocessSpec
    from ray_jobs.common import POOL_RETRIES, configure_ray_data, ray_session

    units: list[str]  # what the decode actors take: files, or an archive's studies
    if dicomweb is not None:
        from echoprime.hospital.dicomweb import Archive, check_url

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
        with ray_session(cfg.ray):
            configure_ray_data()
            # On the driver's node: what it collects exists nowhere else, so it must not be on a
            # node the run can lose (a decoder that reached it there failed the ingest,
            # tests/ray/test_multinode.py); losing the driver's node ends the run anyway.
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            collector = ray.remote(num_cpus=0, scheduling_strategy=here)(_Rejects).remote()

            base: Any = FileDecoder
            lead: tuple[str, ...] = ()
            if dicomweb is not None:
                from echoprime.hospital.ingest import ArchiveDecoder

                base, lead = ArchiveDecoder, (root,)

            class _Decoder(base):  # type: ignore[misc,valid-type]
                def __init__(self) -> None:
                    import torch

                    torch.set_num_threads(1)
                    super().__init__(
                        *lead,
                        spec,
                        index,
                        root,
                        clips_per_video=cfg.ingest.clips_per_video,
                        max_frames=cfg.ingest.max_frames,
                        max_pixels=cfg.ingest.max_pixels,
                        on_reject=lambda items: ray.get(collector.add.remote(items)),
                        deid=type(deid)(deid.secret, deid.source),
                        on_ids=lambda ids: ray.get(collector.add_ids.remote(ids)),
                    )

            n_actors = max(1, min(cfg.ingest.decode_actors, len(units)))
            # A study is dozens of files: one per task, so that every actor stays busy.
            blocks = input_blocks(len(units), n_actors) if dicomweb is None else min(400, len(units))
            ds = ray.data.from_items([{"uri": u} for u in units], override_num_blocks=blocks)
            ds = ds.map_batches(
                _Decoder,
                batch_size=4 if dicomweb is None else 1,
                num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=n_actors),
                # A batch whose actor is lost is retried until a restarted actor runs it
                # (POOL_RETRIES says why: tests/ray/test_multinode.py lost a node mid-ingest).
                **POOL_RETRIES,
            )
            # A filesystem plus a bare path (no "s3://") is what Ray's writer wants (docs/ray-notes.md).
            # min_rows_per_file groups blocks into files of about shard_rows rows per split (without
            # it every block becomes its own tiny file). Ray 2.60 deprecates it with partition_cols in
            # favour of a hash repartition, which would shuffle every clip once more; revisit when the
            # replacement streams.
            ds.write_parquet(
                data_dir.path,
                filesystem=data_dir.fs,
                partition_cols=["split"],
                min_rows_per_file=cfg.ingest.shard_rows,
            )
            rejects = ray.get(collector.get.remote())
            if extra_rejects:
                from ray_jobs.ingest_dataset import keyed_rejects

                rejects = keyed_rejects(extra_rejects, deid) + rejects
            deid.originals.update(ray.get(collector.get_ids.remote()))
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


def _commit(
    cfg: EchoPrimeConfig,
    input_uri: str,
    out: Any,
    data_dir: Any,
    run_id: str,
    spec: Any,
    fingerprint: str,
    files: list[str],
    rejects: list[dict[str, str]],
    keep_previous: int,
    deid: Any,
    index: Any,
) -> dict[str, Any]:
    """Count what a run wrote, write its rejects table and commit it (or refuse an empty run)."""
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from echoprime import storage
    from echoprime.data.shards import SPLITS, ShardManifest, commit_run, read_manifest

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


def _deid_record(deid: Any, index: Any) -> dict[str, Any]:
    """What the manifest says about de-identification: whether it was on, the key scheme, the
    secret's kind, and the ``echoprime synth`` seeds among the original study ids (so that a
    pretraining stream drawing the same seed is still refused; ray_jobs.common)."""
    from echoprime.data.deid import SCHEME, synthetic_seeds

    ids = set(index.studies) | {v.study_id for v in index.videos.values()}
    rec: dict[str, Any] = {"enabled": deid.enabled, "synthetic_seeds": synthetic_seeds(ids)}
    if deid.enabled:
        rec.update(scheme=SCHEME, secret=deid.source)
    return rec


def print_rejects(out_uri: str, limit: int = 10) -> None:
    from echoprime import storage
    from echoprime.data.shards import read_manifest

    m = read_manifest(out_uri)
    if not m.rejects or not m.rejects_file:
        return
    import pyarrow.parquet as pq

    loc = storage.locate(m.rejects_file)
    t = pq.read_table(loc.path, filesystem=loc.fs).to_pylist()
    keys = bool((m.extra.get("deidentified") or {}).get("enabled"))
    for r in t[:limit]:
        print(f"  rejected {r['source_uri']}: {r['reason']}")
    if keys:
        print("  (files are named by their keys; the map written with --id-map gives their paths)")
    if len(t) > limit:
        print(f"  ... and {len(t) - limit} more (see {m.rejects_file})")


def run(args: argparse.Namespace) -> int:
    from echoprime.data.shards import read_manifest
    from ray_jobs.common import dicomweb_query, resolve_config

    if getattr(args, "dataset", None):
        from ray_jobs.ingest_dataset import run as run_dataset

        return run_dataset(args)

    cfg = resolve_config(args)
    res = run_ingest(
        cfg,
        args.input,
        args.out,
        dicomweb=args.dicomweb,
        query=dicomweb_query(args),
        manifest=args.manifest,
        studies=args.studies,
        force=args.force,
        keep_previous=args.keep_previous,
        id_map=args.id_map,
    )
    print(
        f"ingest: {res['status']}: {res['files']} files -> rows {res['rows']}, studies {res['studies']}; "
        f"{res['rejects']} rejected; {res['out']} ({res['wall_s']} s)"
    )
    if res.get("kept_runs") or res.get("deleted_runs"):
        print(
            f"ingest: kept the data of earlier run(s) {res['kept_runs']} for their readers; "
            f"deleted {res['deleted_runs'] or 'nothing'}"
        )
    print_rejects(res["out"])
    secret = (read_manifest(res["out"]).extra.get("deidentified") or {}).get("secret")
    if res["status"] == "ingested" and secret == "one-off":
        print(
            "ingest: ECHOPRIME_SITE_SECRET is unset: the shards' pseudonyms come from a one-off secret "
            "(stable in these shards, different in any other ingest); set it to make them repeatable"
        )
    if res.get("id_map"):
        print(
            f"ingest: the map from pseudonyms and file keys to the archive's ids and paths: {res['id_map']} (keep it private)"
        )
    elif args.id_map and res["status"] == "up to date":
        print("ingest: up to date, so no id map was written; add --force to ingest again and write it")
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["ingest", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
