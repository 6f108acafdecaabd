"""``echoprime ingest`` on Ray: an archive's files (or DICOMweb studies) decoded by a Ray Data
actor pool into Parquet study shards.

The command's arguments and output are :mod:`echoprime.commands.ingest`; everything around the
decoding (listing, the up-to-date fingerprint, the lock, de-identification, the commit, a public
dataset's tables) is :mod:`echoprime.commands.ingest_run`. Here: the decode actors, the rejects
collector beside the driver, and the Parquet writer.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from echoprime.commands import command_main
from echoprime.commands.ingest import add_arguments
from echoprime.commands.ingest_run import IngestPlan, ingest, ingest_command, ingest_dataset, input_blocks
from echoprime.config import EchoPrimeConfig
from echoprime.data.deid import Deidentifier
from echoprime.data.ingest import FileDecoder
from echoprime.hospital.ingest import ArchiveDecoder
from echoprime.storage import Location
from ray_jobs.common import POOL_RETRIES, configure_ray_data, ray_session


class _Rejects:
    """Collects reject records and the pseudonyms' originals from the decode actors (a Ray
    actor on the driver's node; see decode_on_ray).

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


def decode_on_ray(
    cfg: EchoPrimeConfig, plan: IngestPlan, data_dir: Location, deid: Deidentifier
) -> tuple[list[dict[str, str]], dict[str, str]]:
    """The plan's units through a pool of decode actors into Parquet under ``data_dir``;
    returns the rejects and the pseudonyms' originals (:data:`~echoprime.commands.ingest_run.Decode`)."""
    with ray_session(cfg.ray):
        configure_ray_data()
        # On the driver's node: what it collects exists nowhere else, so it must not be on a
        # node the run can lose (a decoder that reached it there failed the ingest,
        # tests/ray/test_multinode.py); losing the driver's node ends the run anyway.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        collector = ray.remote(num_cpus=0, scheduling_strategy=here)(_Rejects).remote()
        base: Any = ArchiveDecoder if plan.archive else FileDecoder
        lead: tuple[str, ...] = (plan.root,) if plan.archive else ()

        class _Decoder(base):  # type: ignore[misc,valid-type]
            def __init__(self) -> None:
                torch.set_num_threads(1)
                super().__init__(
                    *lead,
                    plan.spec,
                    plan.index,
                    plan.root,
                    clips_per_video=cfg.ingest.clips_per_video,
                    max_frames=cfg.ingest.max_frames,
                    max_pixels=cfg.ingest.max_pixels,
                    on_reject=lambda items: ray.get(collector.add.remote(items)),
                    deid=type(deid)(deid.secret, deid.source),
                    on_ids=lambda ids: ray.get(collector.add_ids.remote(ids)),
                )

        units = plan.units
        n_actors = max(1, min(cfg.ingest.decode_actors, len(units)))
        # A study is dozens of files: one per task, so that every actor stays busy.
        blocks = min(400, len(units)) if plan.archive else input_blocks(len(units), n_actors)
        ds = ray.data.from_items([{"uri": u} for u in units], override_num_blocks=blocks)
        ds = ds.map_batches(
            _Decoder,
            batch_size=1 if plan.archive else 4,
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
        return ray.get(collector.get.remote()), ray.get(collector.get_ids.remote())


run_ingest = partial(ingest, decode=decode_on_ray)
"""``run_ingest(cfg, input_uri, out_uri, **options)``: :func:`echoprime.commands.ingest_run.ingest`
(its options, numbers and errors) decoding on Ray."""

run_dataset_ingest = partial(ingest_dataset, decode=decode_on_ray)
"""``run_dataset_ingest(cfg, dataset, input_uri, out_uri, **options)``: a public dataset through
:func:`echoprime.commands.ingest_run.ingest_dataset`, decoding on Ray."""

run = partial(ingest_command, decode=decode_on_ray)
"""``echoprime ingest``: :func:`echoprime.commands.ingest_run.ingest_command` decoding on Ray."""


def main(argv: list[str] | None = None) -> int:
    return command_main("ingest", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
