"""``echoprime batch-interpret`` on Ray: an archive's studies interpreted in chunks by an actor
pool of :class:`echoprime.batch_interpret.BatchInterpreter`, DICOM headers of a big archive read
by Ray Data tasks.

The command's arguments are :mod:`echoprime.commands.batch_interpret`; the plan, the listing,
the studies' names and the summary are :mod:`echoprime.batch_run`, the interpretation and the
output's parts and lock :mod:`echoprime.batch_interpret`.
"""

from __future__ import annotations

import argparse
import json
import math
import posixpath
import sys
import time
from typing import Any

import ray

from echoprime import batch_run, storage
from echoprime.batch_interpret import BatchInterpreter, BatchOutput, group_studies, probe_study_uid
from echoprime.commands import command_main, config_of, dicomweb_query
from echoprime.commands.batch_interpret import add_arguments
from echoprime.config import EchoPrimeConfig
from echoprime.io.video import VIDEO_SUFFIXES
from ray_jobs.common import configure_ray_data, ray_session, require_resources


def _probe(batch: dict[str, Any]) -> dict[str, Any]:
    uris = [str(u) for u in batch["uri"]]
    return {"uri": uris, "uid": [probe_study_uid(u) or "" for u in uris]}


# Ray Data's actor pools retry for ever by default (max_restarts=-1, max_task_retries=-1): a chunk
# that kills its actor (a decoder crash, an OOM kill) would take a new one down each time. Bounded:
# an actor is replaced ACTOR_RESTARTS times, a chunk runs once more, then the job stops with the error.
ACTOR_RESTARTS = 3
CHUNK_RETRIES = 1
PROBE_RETRIES = 2

DRIVER_PROBE_MAX = 512
"""Up to this many possible DICOM files, headers are read by threads on the driver: a Ray Data
pass costs seconds of worker start-up, which only pays off on larger archives."""


def _study_uids(files: list[str]) -> dict[str, str]:
    """StudyInstanceUID of every DICOM among ``files`` (headers only; Ray Data for many files)."""
    todo = [f for f in files if posixpath.splitext(f)[1].lower() not in VIDEO_SUFFIXES]
    if len(todo) <= DRIVER_PROBE_MAX:
        return batch_run.probe_study_uids(todo)
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
    """Interpret every study of ``input_uri`` (or of the DICOMweb archive ``dicomweb``, the studies
    the QIDO-RS ``query`` finds) not yet written under ``out_uri``; returns the run's counts. The
    arguments are checked by :func:`echoprime.batch_run.plan_batch` (docs/batch-interpret.md:
    de-identification, ``id_map``, ``secret``) before Ray starts.

    Raises:
        FileNotFoundError, ValueError: the input, the arguments or the output (named).
        echoprime.locks.OutputBusy: another job is writing the same output (named in the message).
        echoprime.bundle.BundleError: the bundle is missing or incomplete.
        RuntimeError: the cluster cannot give the actors their CPUs/GPUs (after ray.resource_wait_s).
    """
    t0 = time.perf_counter()
    plan = batch_run.plan_batch(
        cfg, bundle, input_uri, out_uri, actors=actors, chunk=chunk, k=k, deidentify=deidentify,
        id_map=id_map, secret=secret, dicomweb=dicomweb,
    )  # fmt: skip
    files, videos, root = ([], {}, "") if plan.archive else batch_run.list_archive(plan.source, manifest)
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
                grouped = batch_run.archive_studies(plan, query)
            else:
                grouped = group_studies(files, root, _study_uids(files), videos)
            named = batch_run.name_studies(grouped, plan, root, id_map)
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
                    fn_constructor_kwargs=batch_run.interpreter_options(cfg, plan, write_json),
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

        res = batch_run.run_summary(
            summary, plan, studies=len(named.studies), todo=len(todo), files=len(files), out=out.loc.uri,
            started=t0, t1=t1, t2=t2, first=first, now=time.perf_counter(), recovered=recovered,
        )  # fmt: skip
        storage.write_bytes(out.uri("_summary.json"), json.dumps(res, indent=2).encode())
        return res
    finally:
        out.close()


def run(args: argparse.Namespace) -> int:
    cfg = config_of(args)
    res = run_batch_interpret(
        cfg, args.bundle, args.input, args.out, manifest=args.manifest, write_json=args.json, actors=args.actors,
        chunk=args.chunk, k=args.k, force=args.force, deidentify=not args.original_ids, id_map=args.id_map,
        dicomweb=args.dicomweb, query=dicomweb_query(args),
    )  # fmt: skip
    print("\n".join(batch_run.summary_lines(res, args.id_map)))
    return 0


def main(argv: list[str] | None = None) -> int:
    return command_main("batch-interpret", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
