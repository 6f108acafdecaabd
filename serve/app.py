"""The typed application builder of the Serve graph.

::

    Ingress (FastAPI: auth, limits) -> Preprocess (CPU: decode, mask, crop, clip)
        -> ViewClassifier and VideoEncoder (@serve.batch across requests; GPU when given one)
        -> AnatomicalAttention (per-section weights over the study's videos)
        -> RAIRetriever (bank search, report assembly, kNN metrics; report embedding/search)

``serve run configs/serve.yaml`` and ``serve deploy`` call :func:`build_app` with the config's
``args`` and apply its per-deployment settings over :data:`DEFAULTS`; ``echoprime serve`` does
the same through :func:`build_graph` (see ray_jobs/serve_app.py).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve import Application

from echoprime.api.uploads import Limits
from serve.args import APP_NAME, ServeArgs, read_serve_config  # noqa: F401 - re-exported
from serve.deployments import AnatomicalAttention, RAIRetriever, VideoEncoder, ViewClassifier
from serve.ingress import Ingress
from serve.preprocess import Preprocess

# Laptop-sized defaults, the same as configs/serve.yaml states (about 2 CPUs in all). Batch sizes
# count clips; small on CPU, where a larger batch buys no throughput (docs/benchmarks.md).
DEFAULTS: dict[str, dict[str, Any]] = {
    "Ingress": {"max_ongoing_requests": 32, "ray_actor_options": {"num_cpus": 0.25}},
    "Preprocess": {"max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.5}},
    "ViewClassifier": {
        "max_ongoing_requests": 16,
        "ray_actor_options": {"num_cpus": 0.25},
        "user_config": {"max_batch_size": 8, "batch_wait_timeout_s": 0.01},
    },
    "VideoEncoder": {
        "max_ongoing_requests": 16,
        "ray_actor_options": {"num_cpus": 0.5},
        "user_config": {"max_batch_size": 4, "batch_wait_timeout_s": 0.01},
    },
    "AnatomicalAttention": {"max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.25}},
    "RAIRetriever": {"max_ongoing_requests": 16, "ray_actor_options": {"num_cpus": 0.25}},
}


def build_app(args: ServeArgs | Mapping[str, Any]) -> Application:
    """The application for ``serve run`` / ``serve deploy`` (``import_path: serve.app:build_app``).

    Args:
        args: :class:`ServeArgs` or the config's ``args`` mapping (validated; unknown keys fail).
    """
    return build_graph(args)


CLASSES: dict[str, type] = {
    "Preprocess": Preprocess,
    "ViewClassifier": ViewClassifier,
    "VideoEncoder": VideoEncoder,
    "AnatomicalAttention": AnatomicalAttention,
    "RAIRetriever": RAIRetriever,
}


def build_graph(
    args: ServeArgs | Mapping[str, Any],
    options: Mapping[str, Mapping[str, Any]] | None = None,
    classes: Mapping[str, type] | None = None,
) -> Application:
    """The application with per-deployment options over :data:`DEFAULTS`.

    Args:
        args: the application's arguments.
        options: deployment name -> ``serve.deployment`` options (``num_replicas`` or
            ``autoscaling_config``, ``max_ongoing_requests``, ``ray_actor_options``,
            ``user_config``, ...), as in a Serve config's ``deployments`` list.
        classes: deployment name -> a subclass of its class to deploy instead (how the tests
            inject faults into a real graph: tests/serve/faults.py).

    Raises:
        ValueError: options or classes for a deployment the graph does not have, or a class
            that is not a subclass of the deployment's own.
        pydantic.ValidationError: bad ``args``.
    """
    a = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(dict(args))
    merged = deployment_options(options)
    chosen = dict(CLASSES)
    for name, cls in (classes or {}).items():
        if name not in CLASSES or not (isinstance(cls, type) and issubclass(cls, CLASSES[name])):
            raise ValueError(f"classes[{name!r}] must subclass one of the graph's classes {sorted(CLASSES)}")
        chosen[name] = cls

    def deployment(name: str, cls: type | None = None) -> Any:
        return serve.deployment(cls or chosen[name], name=name).options(**merged[name])

    verify = a.verify_bundle
    preprocess = deployment("Preprocess").bind(a.bundle_uri, Limits.from_args(a))
    view_classifier = deployment("ViewClassifier").bind(a.bundle_uri, a.device, verify, a.precision)
    video_encoder = deployment("VideoEncoder").bind(a.bundle_uri, a.device, verify, a.precision)
    attention = deployment("AnatomicalAttention").bind(a.bundle_uri, a.device, verify)
    retriever = deployment("RAIRetriever").bind(a.bundle_uri, a.k, a.n_neighbours, a.device, verify)
    return deployment("Ingress", serve.ingress()(Ingress)).bind(
        preprocess, view_classifier, video_encoder, attention, retriever, a
    )


def deployment_options(options: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """Every deployment's options: ``options`` over :data:`DEFAULTS` (``ray_actor_options`` and
    ``user_config`` merged key by key; ``autoscaling_config`` replaces ``num_replicas``).

    Raises:
        ValueError: options for a deployment the graph does not have.
    """
    options = dict(options or {})
    if unknown := set(options) - set(DEFAULTS):
        raise ValueError(
            f"options for unknown deployments {sorted(unknown)}; the graph has {sorted(DEFAULTS)}"
        )
    return {name: _merge(DEFAULTS[name], options.get(name, {})) for name in DEFAULTS}


def min_cpus(options: Mapping[str, Mapping[str, Any]]) -> float:
    """Logical CPUs the graph needs at its minimum replica counts (``options`` as merged)."""
    total = 0.0
    for o in options.values():
        replicas = o.get("autoscaling_config", {}).get("min_replicas", o.get("num_replicas", 1))
        total += float(o.get("ray_actor_options", {}).get("num_cpus", 1)) * int(replicas)
    return total


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if k in ("ray_actor_options", "user_config") and isinstance(v, Mapping):
            out[k] = {**out.get(k, {}), **v}
        else:
            out[k] = copy.deepcopy(v)
    if "autoscaling_config" in out:
        out.pop("num_replicas", None)
    return out
