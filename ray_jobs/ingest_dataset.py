"""``echoprime ingest --dataset NAME --input ROOT``: a public dataset, as published, into study shards.

The dataset's adapter (:mod:`echoprime.datasets`) reads its tables and folders into ingest's two
tables (videos, studies) and a list of rejects; the tables are written to a temporary folder and
the ordinary ingest runs on the dataset folder (:func:`ray_jobs.ingest.run_ingest`: the same Ray
Data path, de-identification, commit and rejects table), decoding only the videos the table lists
(the dataset's CSVs, cfg files, stills, masks and MetaImage data files are not videos). The
adapter's rejects (malformed rows, missing videos) join the decoder's in the rejects table.

Examples:
  echoprime ingest --dataset echonet-dynamic --input EchoNet-Dynamic --out dynamic-shards
  echoprime ingest --dataset echonet-pediatric --input pediatric --dataset-option fold=3 --out peds-shards
  echoprime ingest --dataset camus --input CAMUS_public --out camus-shards
  echoprime ingest --dataset mimic-echo --input mimic-iv-echo/1.0 --dataset-option reports=notes.csv.gz --out mimic-shards
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from echoprime.config import EchoPrimeConfig


def run_dataset_ingest(
    cfg: EchoPrimeConfig,
    dataset: str,
    input_uri: str,
    out_uri: str,
    *,
    options: Mapping[str, Any] | Iterable[str] | None = None,
    force: bool = False,
    keep_previous: int = 1,
    id_map: str | None = None,
    secret: tuple[bytes, str] | None = None,
) -> dict[str, Any]:
    """Ingest the public dataset ``dataset`` read from ``input_uri`` into shards at ``out_uri``.

    Returns:
        :func:`ray_jobs.ingest.run_ingest`'s numbers plus ``dataset``: the adapter's summary
        (videos and studies per split, rejects per code, options, notes).

    Raises:
        ValueError: an unknown dataset or option; ``DatasetLayoutError`` when the folder is not
            laid out as the dataset publishes it; no usable video at all.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from echoprime.datasets import read_dataset
    from ray_jobs.ingest import run_ingest

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
        res = run_ingest(
            cfg,
            input_uri,
            out_uri,
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


def _typed_videos(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Videos rows with a float ``fps`` column (NaN where unknown), so Parquet types it whatever
    the first rows hold."""
    return [{**r, "fps": float("nan") if r.get("fps") is None else float(r["fps"])} for r in rows]


def keyed_rejects(records: Iterable[Mapping[str, Any]], deid: Any) -> list[dict[str, str]]:
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


def run(args: argparse.Namespace) -> int:
    """``echoprime ingest --dataset``: what the ingest job's ``run`` hands over to."""
    from ray_jobs.common import resolve_config
    from ray_jobs.ingest import print_rejects

    if args.dicomweb:
        raise ValueError("--dataset reads a dataset folder: give it with --input, not --dicomweb")
    if args.manifest or args.studies:
        raise ValueError("--dataset writes the videos and studies tables itself: drop --manifest/--studies")
    cfg = resolve_config(args)
    res = run_dataset_ingest(
        cfg,
        args.dataset,
        args.input,
        args.out,
        options=args.dataset_option or None,
        force=args.force,
        keep_previous=args.keep_previous,
        id_map=args.id_map,
    )
    d = res["dataset"]
    print(
        f"ingest --dataset {d['dataset']}: the tables list videos {d['videos']}, studies {d['studies']}; "
        f"the adapter rejected {sum(d['rejects'].values())}{' ' + str(d['rejects']) if d['rejects'] else ''} "
        f"(options {d['options']})"
    )
    for k, v in (d.get("notes") or {}).items():
        print(f"ingest --dataset {d['dataset']}: {k}: {v}")
    print(
        f"ingest: {res['status']}: {res['files']} files -> rows {res['rows']}, studies {res['studies']}; "
        f"{res['rejects']} rejected; {res['out']} ({res['wall_s']} s)"
    )
    print_rejects(res["out"])
    if res.get("id_map"):
        print(
            f"ingest: the map from pseudonyms and file keys to the dataset's ids and paths: {res['id_map']} (keep it private)"
        )
    return 0
