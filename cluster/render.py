"""Write the KubeRay manifests from the one cluster spec and the Serve config.

The RayCluster, the RayJob's ``rayClusterSpec`` and the RayService's ``rayClusterConfig`` are
the same cluster, and the RayService's ``serveConfigV2`` is ``configs/serve.yaml``; copying them
by hand drifts, so this script generates the three manifests from

  cluster/kuberay/cluster-spec.yaml   the RayCluster spec (image, groups, secrets, volumes)
  configs/serve.yaml                  the Serve config, embedded verbatim
  cluster/job-env.yaml                the jobs' runtime_env (upload excludes, env_vars)

into cluster/kuberay/{raycluster,rayjob-pretrain,rayservice}.yaml, which are committed so that
``kubectl apply -f`` works from a checkout. ``--check`` (run by the unit tests) writes nothing
and exits 1 when a committed manifest differs from what it would write. ``--job`` prints a
RayJob for any other stage.

Example:
  python cluster/render.py            # rewrite the manifests after editing the sources
  python cluster/render.py --check    # exit 1 if they are stale
  python cluster/render.py --job ingest -- --config configs/a6000x2.yaml --input s3://b/archive \\
      --out s3://b/shards | kubectl apply -f -
"""

from __future__ import annotations

import argparse
import difflib
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SPEC = Path("cluster/kuberay/cluster-spec.yaml")
SERVE = Path("configs/serve.yaml")
JOB_ENV = Path("cluster/job-env.yaml")
OUTPUTS = {
    "RayCluster": Path("cluster/kuberay/raycluster.yaml"),
    "RayJob": Path("cluster/kuberay/rayjob-pretrain.yaml"),
    "RayService": Path("cluster/kuberay/rayservice.yaml"),
}
NAME = "echoprime"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": NAME}

# The paper-scale pretraining job: the same command an operator passes to `ray job submit`.
PRETRAIN_ARGS = [
    "--config",
    "configs/a6000x2.yaml",
    "--shards",
    "s3://echoprime-data/shards",
    "--bundle",
    "s3://echoprime-models/bundles/v1",
]
# The image's WORKDIR holds the checkout (Dockerfile); shipping it as the job's working_dir makes
# a RayJob run exactly like `ray job submit --working-dir . --runtime-env cluster/job-env.yaml`
# from a laptop: relative paths such as configs/a6000x2.yaml resolve the same way on the driver
# and on every worker.
IMAGE_WORKDIR = "/app"

_STAGE = re.compile(r"^[a-z][a-z0-9_]*$")


class _Dumper(yaml.SafeDumper):
    """Block style, no anchors, multi-line strings as ``|`` blocks (readable serveConfigV2)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str)


def dump(doc: dict[str, Any]) -> str:
    # A wide line limit keeps each entrypoint on one line, as an operator would type it.
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, width=4096, default_flow_style=False)


def load_cluster_spec(root: Path = ROOT) -> dict[str, Any]:
    """The RayCluster spec in ``cluster/kuberay/cluster-spec.yaml``.

    Raises:
        ValueError: the file is missing or is not a mapping with a head group.
    """
    path = root / SPEC
    if not path.is_file():
        raise ValueError(f"cluster spec not found: {path}")
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or "headGroupSpec" not in spec:
        raise ValueError(
            f"{path}: expected a RayCluster spec mapping with headGroupSpec, got {type(spec).__name__}"
        )
    return spec


def _metadata(name: str, component: str) -> dict[str, Any]:
    return {"name": name, "labels": {**LABELS, "app.kubernetes.io/component": component}}


def raycluster(spec: dict[str, Any]) -> dict[str, Any]:
    """A long-lived cluster for `ray job submit` work (docs/operations.md).

    Named apart from the RayService: KubeRay names a cluster's head Service ``<name>-head-svc``
    for both kinds, and two objects called ``echoprime`` in one namespace would collide.
    """
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": _metadata(f"{NAME}-jobs", "cluster"),
        "spec": spec,
    }


def job_runtime_env(root: Path = ROOT) -> dict[str, Any]:
    """``cluster/job-env.yaml`` with the image's checkout as working_dir (what a RayJob ships)."""
    path = root / JOB_ENV
    env = yaml.safe_load(path.read_text()) if path.is_file() else None
    if not isinstance(env, dict):
        raise ValueError(
            f"{path}: expected a runtime_env mapping (excludes, env_vars), got {type(env).__name__}"
        )
    return {"working_dir": IMAGE_WORKDIR, **{k: v for k, v in env.items() if k != "working_dir"}}


def rayjob(stage: str, args: list[str], spec: dict[str, Any], runtime_env: dict[str, Any]) -> dict[str, Any]:
    """A RayJob that brings up its own cluster, runs ``python -m ray_jobs.<stage> ARGS`` and goes away.

    Raises:
        ValueError: ``stage`` is not a module name.
    """
    if not _STAGE.match(stage):
        raise ValueError(f"stage {stage!r} is not a module name under ray_jobs/ (e.g. pretrain, ingest)")
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": _metadata(f"{NAME}-{stage.replace('_', '-')}", stage),
        "spec": {
            "entrypoint": shlex.join(["python", "-m", f"ray_jobs.{stage}", *args]),
            "runtimeEnvYAML": dump(runtime_env),
            "submissionMode": "K8sJobMode",
            # A failed run is resumed by submitting it again (same run name + storage_path), not by
            # the operator retrying it blindly: Ray Train already retries failed workers
            # (train.max_failures) inside one submission.
            "backoffLimit": 0,
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": 3600,  # an hour to read logs from the finished cluster
            "rayClusterSpec": spec,
        },
    }


def rayservice(spec: dict[str, Any], serve_text: str) -> dict[str, Any]:
    """The Serve app on its own cluster; a changed cluster spec rolls out to a new cluster first."""
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _metadata(NAME, "serve"),
        "spec": {
            # NewCluster: a changed rayClusterConfig (image, bundle baked in, resources) starts a
            # second cluster, waits until its Serve app is healthy, then moves traffic and deletes
            # the old one. A change to serveConfigV2 alone is applied in place by Serve.
            "upgradeStrategy": {"type": "NewCluster"},
            "serveConfigV2": serve_text,
            "rayClusterConfig": spec,
        },
    }


def _header(sources: list[Path]) -> str:
    src = " and ".join(str(s) for s in sources)
    return (
        f"# GENERATED by cluster/render.py from {src}: do not edit.\n"
        "# Edit the source(s), then run `python cluster/render.py` (the tests run `--check`).\n"
    )


def render(root: Path = ROOT) -> dict[Path, str]:
    """The text of every generated manifest, keyed by its path relative to ``root``."""
    spec = load_cluster_spec(root)
    serve_path = root / SERVE
    if not serve_path.is_file():
        raise ValueError(f"Serve config not found: {serve_path}")
    serve_text = serve_path.read_text()
    return {
        OUTPUTS["RayCluster"]: _header([SPEC]) + dump(raycluster(spec)),
        OUTPUTS["RayJob"]: _header([SPEC, JOB_ENV])
        + dump(rayjob("pretrain", PRETRAIN_ARGS, spec, job_runtime_env(root))),
        OUTPUTS["RayService"]: _header([SPEC, SERVE]) + dump(rayservice(spec, serve_text)),
    }


def stale(root: Path = ROOT) -> list[str]:
    """A unified diff per committed manifest that differs from what :func:`render` writes."""
    problems = []
    for rel, text in render(root).items():
        path = root / rel
        have = path.read_text() if path.is_file() else ""
        if have != text:
            diff = difflib.unified_diff(
                have.splitlines(keepends=True),
                text.splitlines(keepends=True),
                f"{rel} (committed)",
                f"{rel} (rendered)",
            )
            problems.append("".join(list(diff)[:40]) if have else f"{rel}: missing\n")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a committed manifest is stale"
    )
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    p.add_argument(
        "--job", metavar="STAGE", help="print a RayJob running `python -m ray_jobs.STAGE ARGS` to stdout"
    )
    p.add_argument("args", nargs="*", help="the job's arguments (after --)")
    a = p.parse_args(argv)
    if a.job:
        sys.stdout.write(dump(rayjob(a.job, a.args, load_cluster_spec(a.root), job_runtime_env(a.root))))
        return 0
    if a.args:
        p.error(f"unexpected arguments {a.args} (job arguments go with --job STAGE -- ARGS)")
    if a.check:
        problems = stale(a.root)
        for problem in problems:
            sys.stderr.write(problem)
        if problems:
            sys.stderr.write(f"{len(problems)} manifest(s) stale: run `python cluster/render.py`\n")
            return 1
        print(f"{len(OUTPUTS)} manifests up to date")
        return 0
    for rel, text in render(a.root).items():
        (a.root / rel).write_text(text)
        print(f"wrote {rel}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
