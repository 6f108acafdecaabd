"""Driver of the node-loss tests (tests/ray/test_multinode.py): a Ray cluster of several nodes on
loopback (``ray.cluster_utils.Cluster``), in a process of its own, since the test session's own
process is already joined to the session's single-node Ray.

  python -m tests.ray._multinode train  --config C --shards S --work W --result R.json
  python -m tests.ray._multinode ingest --config C --input I --work W --result R.json

``train``: the head node (1 CPU; the driver, the Ray Train controller, the Ray Data blocks) and a
second node of 1 CPU, so the two Ray Train workers land one on each. Pretraining runs twice: once
without a failure, then with every rank pausing after step ``--pause-at`` (the ``pause_at_step``
hook of echoprime/training/run.py), when the node of the worker that is not on the head is removed
(its processes killed, as a lost machine) and a replacement node joins (as an autoscaler would
bring one), so the group of two can be placed again.

``ingest``: a head of 2 CPUs (the driver) and a second node of 2 CPUs (Ray Data spreads the decode
actors over both); the node of a decode actor is removed once shards have started to appear (the
ingest is under way), a replacement joins, and the run must finish as if nothing happened (the
test compares its rows with the session's own ingest of the same cohort).

Each writes what it saw to ``--result`` (JSON) for the test to check; the cluster is shut down
before the process exits, whatever happened.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

NODE_STORE = 200 << 20  # object store per node: the clips of the test cohort are ~40 MB


@contextlib.contextmanager
def loopback_cluster(head_cpus: int, node_cpus: list[int]) -> Iterator[Any]:
    """A Ray cluster of a head and ``len(node_cpus)`` more nodes on this machine, joined by this
    process; every node is shut down on the way out."""
    import ray
    from ray.cluster_utils import Cluster

    args = {"object_store_memory": NODE_STORE, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, **args})
    try:
        for n in node_cpus:
            cluster.add_node(num_cpus=n, **args)
        cluster.wait_for_nodes()
        ray.init(
            address=cluster.address,
            logging_level="WARNING",
            runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
        )
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()


def actors() -> list[dict[str, Any]]:
    """Every actor of the cluster: class, node, state, restarts (from the GCS; no dashboard)."""
    import ray

    return [
        {
            "class": a["ActorClassName"],
            "node_id": a["Address"]["NodeID"],
            "state": a["State"],
            "restarts": a["NumRestarts"],
        }
        for a in ray._private.state.actors().values()
    ]


def node_of(cluster: Any, node_id: str) -> Any:
    return next(n for n in cluster.list_all_nodes() if n.node_id == node_id)


def lose_node(cluster: Any, node: Any, cpus: int) -> dict[str, Any]:
    """Kill every process of ``node`` at once (no draining: a machine that is gone), then start a
    replacement of ``cpus`` CPUs. Returns when each happened and the new node's id."""
    t0 = time.monotonic()
    cluster.remove_node(node, allow_graceful=False)
    t1 = time.monotonic()
    new = cluster.add_node(num_cpus=cpus, object_store_memory=NODE_STORE, include_dashboard=False)
    return {
        "removed_node_id": node.node_id,
        "remove_s": round(t1 - t0, 2),
        "replacement_node_id": new.node_id,
        "replacement_s": round(time.monotonic() - t1, 2),
    }


def while_running(run: Any, ready: Any, act: Any, timeout_s: float = 600) -> tuple[dict, dict]:
    """Run ``run()`` in a thread; here, in the main thread (Ray's node processes are started
    with signal handlers, which only the main thread may install), wait until ``ready()``
    returns something and call ``act`` with it. Returns what ``run`` and ``act`` returned, or
    the error each raised under ``"error"``."""
    ran: dict[str, Any] = {}

    def target() -> None:
        try:
            ran.update(run())
        except BaseException as e:  # noqa: BLE001 - reported to the test, which fails on it
            ran["error"] = "".join(traceback.format_exception(e))

    t = threading.Thread(target=target, daemon=True)
    t.start()
    acted: dict[str, Any] = {}
    try:
        got = _wait_for(lambda: ready() or (not t.is_alive() and "ended"), timeout_s, "trigger")
        if got == "ended":
            raise RuntimeError("the run ended before the node was lost")
        acted.update(act(got))
    except BaseException as e:  # noqa: BLE001
        acted["error"] = "".join(traceback.format_exception(e))
    t.join()
    return ran, acted


def _wait_for(pred: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if got := pred():
            return got
        time.sleep(0.1)
    raise TimeoutError(f"no {what} after {timeout_s:.0f} s")


# ------------------------------------------------------------------------------------ training
def train(args: argparse.Namespace) -> dict[str, Any]:
    import ray
    import ray.data
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from echoprime.config import load_config
    from ray_jobs.pretrain import run_pretrain

    cfg = load_config(args.config)
    work = Path(args.work)
    out: dict[str, Any] = {}
    with loopback_cluster(1, [1]) as cluster:
        head = cluster.head_node.node_id
        out["head_node_id"] = head
        # Ray Data's tasks (reading and tokenising the shards, held in memory) run on the head: the
        # node lost is then the node of a training worker and nothing else. Blocks held by a lost
        # node are recomputed by Ray from their lineage, which needs a free CPU; on these 1-CPU
        # nodes, all taken by the workers, the restarted group waited for them for ever (tried
        # with --data-anywhere; docs/training.md, "Losing a node").
        if args.data_on_head:
            with warnings.catch_warnings():  # deprecated in 2.60, still honoured (ray/data/context.py)
                warnings.simplefilter("ignore")
                ray.data.DataContext.get_current().scheduling_strategy = NodeAffinitySchedulingStrategy(
                    head, soft=False
                )

        def run(name: str, fault: dict[str, Any] | None = None) -> dict[str, Any]:
            c = cfg.replace(train={**cfg.train.model_dump(), "run_name": name})
            t0 = time.monotonic()
            res = run_pretrain(c, args.shards, str(work / name / "model"), fault=fault)
            return {"result": res, "wall_s": round(time.monotonic() - t0, 1)}

        pause, probe, probe_clean = work / "paused", work / "probe", work / "probe-clean"
        for d in (pause, probe, probe_clean):
            d.mkdir(parents=True)
        if args.clean:
            out["clean"] = run("clean", {"probe": str(probe_clean)})
        world = cfg.train.num_workers

        def paused() -> list[dict[str, Any]] | None:
            marks = sorted(pause.glob("paused-rank*.json"))
            return [json.loads(m.read_text()) for m in marks] if len(marks) == world else None

        def lose_the_other_node(marks: list[dict[str, Any]]) -> dict[str, Any]:
            seen = {"paused": marks, "nodes_before": [n["NodeID"] for n in ray.nodes() if n["Alive"]]}
            seen["actors_before"] = actors()
            (victim,) = [m for m in marks if m["node_id"] != head]
            seen["lost_rank"] = victim["rank"]
            seen.update(lose_node(cluster, node_of(cluster, victim["node_id"]), cpus=1))
            return seen

        fault = {"pause_at_step": args.pause_at, "pause_dir": str(pause), "probe": str(probe)}
        out["fault"], out["loss"] = while_running(lambda: run("fault", fault), paused, lose_the_other_node)
        out["actors_after"] = actors()
        out["nodes_after"] = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
    return out


# ------------------------------------------------------------------------------------ ingest
def ingest(args: argparse.Namespace) -> dict[str, Any]:
    from echoprime.config import load_config
    from ray_jobs.ingest import run_ingest

    cfg = load_config(args.config)
    work = Path(args.work)
    secret = (b"multinode-test-secret", "test")  # the same pseudonyms in both runs
    out: dict[str, Any] = {}
    with loopback_cluster(2, [2]) as cluster:
        head = cluster.head_node.node_id
        out["head_node_id"] = head

        def run(name: str) -> dict[str, Any]:
            t0 = time.monotonic()
            res = run_ingest(cfg, args.input, str(work / name), secret=secret)
            return {"result": res, "wall_s": round(time.monotonic() - t0, 1)}

        if args.clean:
            out["clean"] = run("clean")
        shards = work / "fault"

        def started() -> bool:
            # Under way: shard files have started to appear (and the manifest is not there yet).
            return bool(list(shards.glob("data-*/split=*/*.parquet")))

        def lose_a_decoder_node(_: Any) -> dict[str, Any]:
            seen: dict[str, Any] = {"actors_before": actors()}
            decoders = [
                a
                for a in seen["actors_before"]
                if "_Decoder" in a["class"] and a["state"] == "ALIVE" and a["node_id"] != head
            ]
            if not decoders:
                raise RuntimeError(f"no decode actor outside the head: {seen['actors_before']}")
            seen["files_before"] = len(list(shards.glob("data-*/split=*/*.parquet")))
            seen["committed_before"] = (shards / "_manifest.json").exists()
            seen.update(lose_node(cluster, node_of(cluster, decoders[0]["node_id"]), cpus=2))
            return seen

        out["fault"], out["loss"] = while_running(lambda: run("fault"), started, lose_a_decoder_node)
        out["actors_after"] = actors()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["train", "ingest"])
    p.add_argument("--config", required=True, help="the resolved config (YAML)")
    p.add_argument("--shards", help="train: the shards to pretrain on")
    p.add_argument("--input", help="ingest: the archive folder")
    p.add_argument("--work", required=True, help="an empty folder for runs, shards and markers")
    p.add_argument("--result", required=True, help="the JSON written at the end")
    p.add_argument("--pause-at", type=int, default=5, help="train: the step after which the ranks pause")
    p.add_argument(
        "--clean",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="first a run without a failure (default: train yes, ingest no: its test compares with "
        "the session's own ingest)",
    )
    p.add_argument(
        "--data-anywhere",
        dest="data_on_head",
        action="store_false",
        help="train: Ray Data's tasks on any node",
    )
    args = p.parse_args(argv)
    if args.clean is None:
        args.clean = args.what == "train"
    t0 = time.monotonic()
    res: dict[str, Any] = {}
    try:
        res = (train if args.what == "train" else ingest)(args)
    except BaseException as e:
        res["error"] = "".join(traceback.format_exception(e))
        raise
    finally:
        res["wall_s"] = round(time.monotonic() - t0, 1)
        Path(args.result).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
