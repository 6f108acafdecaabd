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
from typing import Any

import pyarrow.parquet as pq

from echoprime import storage
from echoprime.commands import add_config_arguments, add_dicomweb_arguments, default_config_path
from echoprime.data.shards import read_manifest
from echoprime.datasets import dataset_names, help_text


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    add_config_arguments(p, default=default_config_path())


def check_dataset_arguments(args: argparse.Namespace) -> None:
    """``--dataset`` reads a folder and writes the tables itself.

    Raises:
        ValueError: with ``--dicomweb``, ``--manifest`` or ``--studies``.
    """
    if args.dicomweb:
        raise ValueError("--dataset reads a dataset folder: give it with --input, not --dicomweb")
    if args.manifest or args.studies:
        raise ValueError("--dataset writes the videos and studies tables itself: drop --manifest/--studies")


def print_ingest(res: dict[str, Any], id_map_asked: bool) -> None:
    """What ``echoprime ingest`` prints about a run: its numbers, the runs kept and deleted, the
    first rejects, a one-off secret, and where the id map went."""
    print(_run_line(res))
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
    elif id_map_asked and res["status"] == "up to date":
        print("ingest: up to date, so no id map was written; add --force to ingest again and write it")


def print_dataset_ingest(res: dict[str, Any]) -> None:
    """What ``echoprime ingest --dataset`` prints: the adapter's summary, then the run's numbers."""
    d = res["dataset"]
    print(
        f"ingest --dataset {d['dataset']}: the tables list videos {d['videos']}, studies {d['studies']}; "
        f"the adapter rejected {sum(d['rejects'].values())}{' ' + str(d['rejects']) if d['rejects'] else ''} "
        f"(options {d['options']})"
    )
    for k, v in (d.get("notes") or {}).items():
        print(f"ingest --dataset {d['dataset']}: {k}: {v}")
    print(_run_line(res))
    print_rejects(res["out"])
    if res.get("id_map"):
        print(
            f"ingest: the map from pseudonyms and file keys to the dataset's ids and paths: {res['id_map']} (keep it private)"
        )


def _run_line(res: dict[str, Any]) -> str:
    return (
        f"ingest: {res['status']}: {res['files']} files -> rows {res['rows']}, studies {res['studies']}; "
        f"{res['rejects']} rejected; {res['out']} ({res['wall_s']} s)"
    )


def print_rejects(out_uri: str, limit: int = 10) -> None:
    """The first ``limit`` files the committed run at ``out_uri`` rejected, with their reasons."""
    m = read_manifest(out_uri)
    if not m.rejects or not m.rejects_file:
        return
    loc = storage.locate(m.rejects_file)
    t = pq.read_table(loc.path, filesystem=loc.fs).to_pylist()
    keys = bool((m.extra.get("deidentified") or {}).get("enabled"))
    for r in t[:limit]:
        print(f"  rejected {r['source_uri']}: {r['reason']}")
    if keys:
        print("  (files are named by their keys; the map written with --id-map gives their paths)")
    if len(t) > limit:
        print(f"  ... and {len(t) - limit} more (see {m.rejects_file})")
