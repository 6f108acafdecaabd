"""Interpret a whole archive of studies offline with Ray Data: the Serve graph's work without HTTP.

Lists every file under --input (local folder or s3://), groups the files into studies (the
archive's videos table when it has one, else DICOM StudyInstanceUID read from headers without
pixels, else the folder), and interprets chunks of studies in an actor pool: each actor loads the
bundle once and encodes on a GPU when the config asks for one (train.use_gpu). With --dicomweb URL
the studies are those of a DICOMweb archive that a QIDO-RS query finds (--study, --modality,
--dates), each streamed to its actor instance by instance (WADO-RS), instances named by their
SOPInstanceUID; the archive's credentials (ECHOPRIME_DICOMWEB_TOKEN, or _USER and _PASSWORD) must
be in the environment of the Ray workers (a local run's inherit this command's). Writes, under --out:

  results/part-<key>.parquet   one row per study: study_id, status, n_files, n_used, views,
                               report_text, report, metrics, evidence, neighbours, files, error
  rejects/part-<key>.parquet   every file that could not be used: study_id, file, reason, code
  findings/part-<key>.parquet  one row per study and finding: value, probability, calibrated
                               probability, decision, grade with the neighbours' vote, the
                               report's grade, interval (docs/batch-interpret.md)
  json/<name>.json             the whole result per study (--json); <name> is the study id, or
                               for an id that is not a plain lower-case file name, a readable
                               prefix + "~" + a hash of the id (two studies never share a file)
  _done/part-<key>.json        the commit record of each chunk, written last

Studies and files are named by keyed pseudonyms by default (s-/f- + HMAC under the site secret
ECHOPRIME_SITE_SECRET, as ingest names them; docs/privacy.md): the output holds no StudyInstanceUID,
folder or file name of the archive. --id-map PATH writes the operator's map back to them (local
disk, outside --out); --original-ids names them as the archive does (authorised local use).
A re-run skips the studies already written (resume after an interruption; it needs the same site
secret, so a run with a one-off secret cannot be resumed); --force starts over.
One job at a time per --out: a second is refused naming the first (OUT/.echoprime.lock); the
lock of a job that died is taken over, saying so.
Actors: --actors (default bank.encode_actors), each with 1 GPU and train.cpus_per_worker CPUs
(reader threads) when train.use_gpu, else 1 CPU. See docs/batch-interpret.md.

Examples:
  echoprime batch-interpret --bundle quickstart-out/bundle --dicomweb http://pacs:8042/dicom-web \\
      --dates 20260101-20260131 --out interpretations --id-map /secure/batch-ids.json
  echoprime batch-interpret --bundle quickstart-out/bundle --input synth-out --out interpretations \\
      --id-map /secure/batch-ids.json
  echoprime batch-interpret --bundle s3://models/bundles/v1 --input s3://data/archive \\
      --out s3://results/v1 --config configs/a6000x2.yaml --json
"""

from __future__ import annotations

import argparse
import json
import math
import posixpath
import time
from typing import Any

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="model bundle (folder or s3://)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="archive folder or s3://bucket/prefix")
    from ray_jobs.common import add_dicomweb_arguments

    add_dicomweb_arguments(p, src)
    p.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    p.add_argument(
        "--manifest",
        default=None,
        help="videos table (CSV/Parquet: path, study_id) deciding each file's study; default: "
        "manifest.parquet/.csv at the top of --input when there is one",
    )
    p.add_argument("--json", action="store_true", help="also write json/<study_id>.json per study")
    p.add_argument(
        "--actors", type=int, default=None, help="interpreter actors (default: bank.encode_actors)"
    )
    p.add_argument("--chunk", type=int, default=8, help="studies per actor call and per output part")
    p.add_argument("--k", type=int, default=None, help="neighbours for the metrics (default: interpret.k)")
    p.add_argument("--force", action="store_true", help="discard earlier results in --out and start over")
    p.add_argument(
        "--id-map",
        default=None,
        metavar="PATH",
        help="write the operator's map from the output's study and file keys back to the archive's "
        "study ids and file paths (JSON, mode 600, local disk outside --out); see docs/privacy.md",
    )
    p.add_argument(
        "--original-ids",
        action="store_true",
        help="name studies and files as the archive does (StudyInstanceUID, folder, path) instead of "
        "by keyed pseudonyms: for authorised local use only",
    )
    from echoprime.commands import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


def _probe(batch: dict[str, Any]) -> dict[str, Any]:
    from echoprime.batch_interpret import probe_study_uid

    uris = [str(u) for u in batch["uri"]]
    return {"uri": uris, "uid": [probe_study_uid(u) or "" for u in uris]}


# Ray Data's actor pools default to max_restarts=-1 and max_task_retries=-1: a chunk whose
# actor is killed (a decoder crash, the memory monitor's OOM kill, which for actors counts
# against these limits and not RAY_task_oom_retries) would be retried for ever, taking a new
# actor down each time. Bounded here: an actor is replaced at most ACTOR_RESTARTS times, a chunk
# that lost its actor is run once more (a node short of memory may pass the second time), and
# then the job stops with Ray Data's error instead of looping; header-probe tasks likewise.
ACTOR_RESTARTS = 3
CHUNK_RETRIES = 1
PROBE_RETRIES = 2

DRIVER_PROBE_MAX = 512
"""Up to this many possible DICOM files, headers are read by threads on the driver: a Ray Data
pass costs seconds of worker start-up, which only pays off on larger archives."""


def _study_uids(files: list[str]) -> dict[str, str]:
    """StudyInstanceUID of every DICOM among ``files`` (headers only; Ray Data for many files)."""
    import ray

    from echoprime.batch_interpret import probe_study_uid
    from echoprime.io.video import VIDEO_SUFFIXES

    todo = [f for f in files if posixpath.splitext(f)[1].lower() not in VIDEO_SUFFIXES]
    if len(todo) <= DRIVER_PROBE_MAX:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(8) as pool:  # S3 range reads wait on the network, not the CPU
            return {f: u for f, u in zip(todo, pool.map(probe_study_uid, todo), strict=True) if u}
    ds = ray.data.from_items(
        [{"uri": f} for f in todo], override_num_blocks=max(1, min(len(todo) // 64, 200))
    )
    out: dict[str, str] = {}
    for b in ds.map_batches(_probe, batch_size=64, num_cpus=0.5, max_retries=PROBE_RETRIES).iter_batches(
        batch_size=None, batch_format="pyarrow"
    ):
        out.update((u, d) for u, d in zip(b["uri"].to_pylist(), b["uid"].to_pylist(), strict=True) if d)
    return out


def run_batch_interpret(
    cfg: EchoPrimeConfig,
    bundle: str,
    input_uri: str | None,
    out_uri: str,
    *,
    manifest: str | None = None,
    write_json: bool = False,
    actors: int | None = None,
    chunk: int = 8,
    k: int | None = None,
    force: bool = False,
    deidentify: bool = True,
    id_map: str | None = None,
    secret: tuple[bytes, str] | None = None,
    dicomweb: str | None = None,
    query: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Interpret every study of ``input_uri`` (or, with ``dicomweb``, of that archive: the studies
    the QIDO-RS ``query`` finds, ``Archive.search_studies`` arguments) not yet written under
    ``out_uri``; returns counts. An archive study's instances are named by SOPInstanceUID (keyed,
    like files) and streamed to the actors one at a time.

    With ``deidentify`` (the default) the output names each study by a keyed pseudonym and each
    file by a keyed file key (:class:`echoprime.data.deid.Deidentifier`, the site secret of the
    environment, or ``secret`` = ``(key, kind)``); ``id_map`` (a local file outside the output)
    receives the map back to the archive's study ids and paths relative to ``input_uri``.

    Raises:
        FileNotFoundError: the input does not exist.
        ValueError: the input holds no studies, bad arguments, the output is not writable or holds
            another bundle's results.
        echoprime.locks.OutputBusy: another job is writing the same output (named in the message).
        echoprime.bundle.BundleError: the bundle is missing or incomplete.
        RuntimeError: the cluster cannot give the actors their CPUs/GPUs (after ray.resource_wait_s).
    """
    import ray

    from echoprime import storage
    from echoprime.batch_interpret import BatchInterpreter, BatchOutput, group_studies
    from echoprime.batch_run import list_archive, name_studies, plan_batch, run_summary
    from ray_jobs.common import configure_ray_data, ray_session, require_resources

    t0 = time.perf_counter()
    plan = plan_batch(
        cfg, bundle, input_uri, out_uri, actors=actors, chunk=chunk, k=k, deidentify=deidentify,
        id_map=id_map, secret=secret, dicomweb=dicomweb,
    )  # fmt: skip
    files, videos, root = ([], {}, "") if plan.archive else list_archive(plan.source, manifest)
    out = BatchOutput(out_uri)
    # Held until the summary is written: a second job on this output is refused, naming this one.
    recovered = out.start(bundle, plan.bundle_id, plan.source, force=force, ids=plan.ids)
    if recovered:
        print(f"batch-interpret: {recovered}")
    try:
        with ray_session(cfg.ray):
            configure_ray_data()
            # Fail now, naming what was asked, rather than wait forever for GPUs that never come.
            n_actors, cpus, gpus = plan.n_actors, plan.cpus, plan.gpus
            require_resources(n_actors * cpus, n_actors * gpus, cfg.ray.resource_wait_s, "batch-interpret")
            if plan.archive:
                from echoprime.hospital.dicomweb import Archive

                grouped = Archive(plan.source).study_instances(**dict(query or {}))
                if not grouped:
                    raise ValueError(f"the DICOMweb query {query or {}} found no study on {plan.source}")
            else:
                grouped = group_studies(files, root, _study_uids(files), videos)
            named = name_studies(grouped, plan, root, id_map)
            done = {s for part in out.committed().values() for s in part}
            todo = [s for s in named.studies if s not in done]
            t1 = time.perf_counter()
            summary: list[dict[str, Any]] = []
            first = None
            if todo:
                ds = ray.data.from_items(
                    named.rows(todo, plan.archive), override_num_blocks=math.ceil(len(todo) / chunk)
                )
                ds = ds.map_batches(
                    BatchInterpreter,
                    fn_constructor_args=(bundle, out.loc.uri),
                    fn_constructor_kwargs={
                        "device": "cuda" if gpus else "cpu",
                        "readers": max(1, int(cpus)),
                        "write_json": write_json,
                        "k": plan.k,
                        "batch_size": cfg.interpret.batch_size,
                        "precision": cfg.interpret.precision,
                        "archive_url": plan.source if plan.archive else None,
                    },
                    batch_size=chunk,
                    num_cpus=cpus,
                    num_gpus=gpus,
                    compute=ray.data.ActorPoolStrategy(size=min(n_actors, math.ceil(len(todo) / chunk))),
                    max_restarts=ACTOR_RESTARTS,
                    max_task_retries=CHUNK_RETRIES,
                )
                for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
                    summary += b.to_pylist()
                    first = first or time.perf_counter() - t1
                    out.lock.check()  # S3: stop if another job took the output over
            t2 = time.perf_counter()

        res = run_summary(
            summary, plan, studies=len(named.studies), todo=len(todo), files=len(files), out=out.loc.uri,
            started=t0, t1=t1, t2=t2, first=first, now=time.perf_counter(), recovered=recovered,
        )  # fmt: skip
        storage.write_bytes(out.uri("_summary.json"), json.dumps(res, indent=2).encode())
        return res
    finally:
        out.close()


def run(args: argparse.Namespace) -> int:
    from echoprime.batch_run import summary_lines
    from ray_jobs.common import dicomweb_query, resolve_config

    cfg = resolve_config(args)
    res = run_batch_interpret(
        cfg, args.bundle, args.input, args.out, manifest=args.manifest, write_json=args.json, actors=args.actors,
        chunk=args.chunk, k=args.k, force=args.force, deidentify=not args.original_ids, id_map=args.id_map,
        dicomweb=args.dicomweb, query=dicomweb_query(args),
    )  # fmt: skip
    print("\n".join(summary_lines(res, args.id_map)))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.commands import command_main

    return command_main("batch-interpret", add_arguments, run, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
