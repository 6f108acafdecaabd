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

from serve.args import APP_NAME, ServeArgs, read_serve_config  # noqa: F401 - re-exported
from serve.deployments import (
    DEFAULT_BATCH,
    AnatomicalAttention,
    Preprocess,
    RAIRetriever,
    VideoEncoder,
    ViewClassifier,
)
from serve.ingress import Ingress
from serve.uploads import Limits

# Laptop-sized defaults (configs/serve.yaml states the same explicitly): about 2 CPUs in all.
DEFAULTS: dict[str, dict[str, Any]] = {
    "Ingress": {"max_ongoing_requests": 32, "ray_actor_options": {"num_cpus": 0.25}},
    "Preprocess": {"max_ongoing_requests": 4, "ray_actor_options": {"num_cpus": 0.5}},
    "ViewClassifier": {
        "max_ongoing_requests": 32,
        "ray_actor_options": {"num_cpus": 0.25},
        "user_config": dict(DEFAULT_BATCH),
    },
    "VideoEncoder": {
        "max_ongoing_requests": 32,
        "ray_actor_options": {"num_cpus": 0.5},
        "user_config": dict(DEFAULT_BATCH),
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


def build_graph(
    args: ServeArgs | Mapping[str, Any], options: Mapping[str, Mapping[str, Any]] | None = None
) -> Application:
    """The application with per-deployment options over :data:`DEFAULTS`.

    Args:
        args: the application's arguments.
        options: deployment name -> ``serve.deployment`` options (``num_replicas`` or
            ``autoscaling_config``, ``max_ongoing_requests``, ``ray_actor_options``,
            ``user_config``, ...), as in a Serve config's ``deployments`` list.

    Raises:
        ValueError: options for a deployment the graph does not have.
        pydantic.ValidationError: bad ``args``.
    """
    a = args if isinstance(args, ServeArgs) else ServeArgs.model_validate(dict(args))
    options = dict(options or {})
    if unknown := set(options) - set(DEFAULTS):
        raise ValueError(
            f"options for unknown deployments {sorted(unknown)}; the graph has {sorted(DEFAULTS)}"
        )

    def deployment(cls: type, name: str) -> Any:
        return serve.deployment(cls, name=name).options(**_merge(DEFAULTS[name], options.get(name, {})))

    verify = a.verify_bundle
    pre = deployment(Preprocess, "Preprocess").bind(a.bundle_uri, Limits.from_args(a))
    views = deployment(ViewClassifier, "ViewClassifier").bind(a.bundle_uri, a.device, verify)
    enc = deployment(VideoEncoder, "VideoEncoder").bind(a.bundle_uri, a.device, verify)
    att = deployment(AnatomicalAttention, "AnatomicalAttention").bind(a.bundle_uri, a.device, verify)
    rai = deployment(RAIRetriever, "RAIRetriever").bind(a.bundle_uri, a.k, a.n_neighbours, a.device, verify)
    return deployment(serve.ingress()(Ingress), "Ingress").bind(pre, views, enc, att, rai, a)


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
