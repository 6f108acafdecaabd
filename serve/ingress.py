"""The ingress deployment: authentication, limits, and the calls down the graph.

The HTTP routes live in :mod:`serve.routes`; Serve builds them in each replica from
:meth:`Ingress.__serve_build_asgi_app__`, so the FastAPI app is never pickled and its handlers
close over this replica's state. Downstream calls are awaited (the event loop never blocks),
retried when the replica holding them died, and the whole request is bounded by the timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from echoprime.taxonomy import VIEWS
from serve.args import ServeArgs
from serve.auth import ApiKeyAuth
from serve.errors import ApiError
from serve.uploads import Limits, Study

log = logging.getLogger("ray.serve")
DEPLOYMENTS = ("Preprocess", "ViewClassifier", "VideoEncoder", "AnatomicalAttention", "RAIRetriever")


def _retryable() -> tuple[type[BaseException], ...]:
    from ray.exceptions import ActorUnavailableError, RayActorError

    return (RayActorError, ActorUnavailableError)


def replica_died(e: BaseException) -> bool:
    """Whether ``e`` says a replica died (worth sending the request again), directly or as the
    cause of Serve's error for a chained call whose upstream replica died (Serve raises
    ``RayServeException`` with the ``ActorDiedError`` as its ``__cause__``)."""
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 5:
        if isinstance(cur, _retryable()):
            return True
        cur, seen = cur.__cause__, seen + 1
    return False


def bundle_summary(uri: str) -> dict[str, Any]:
    """The bundle manifest without its file list: format, versions, label sets, spec, models."""
    from echoprime import storage
    from echoprime.bundle import MANIFEST

    raw = json.loads(storage.read_bytes(storage.locate(uri).join(MANIFEST).uri))
    comps = {
        k: {kk: v[kk] for kk in ("model", "overrides", "kind") if kk in v}
        for k, v in raw["components"].items()
    }
    keep = ("format", "format_version", "created", "versions", "spec", "label_sets", "extra")
    return {"bundle_uri": uri, **{k: raw.get(k) for k in keep}, "components": comps}


class Ingress:
    """The graph's entry (wrapped with ``serve.ingress()`` at build time).

    Args:
        preprocess, views, encoder, attention, retriever: handles of the other deployments.
        args: the application's arguments.

    Raises:
        serve.auth.AuthConfigError: no API key configured and authentication not disabled.
    """

    def __init__(
        self, preprocess: Any, views: Any, encoder: Any, attention: Any, retriever: Any, args: ServeArgs
    ) -> None:
        self.handles = dict(zip(DEPLOYMENTS, (preprocess, views, encoder, attention, retriever), strict=True))
        self.pre, self.views, self.enc, self.att, self.rai = self.handles.values()
        self.args = args
        self.limits = Limits.from_args(args)
        self.auth = ApiKeyAuth.from_env(
            key_file=args.api_key_file, key_env=args.api_key_env, disabled=args.auth_disabled
        )
        (log.warning if self.auth.disabled else log.info)("echoprime serve: %s", self.auth.describe())
        self.model = bundle_summary(args.bundle_uri)

    def __serve_build_asgi_app__(self) -> Any:
        from serve.routes import create_api

        return create_api(self)

    # ---------------------------------------------------------------------------- plumbing
    async def call(self, method: Any, *args: Any) -> tuple[Any, Any]:
        """``(response, value)`` of a downstream call, retried if its replica died meanwhile.

        Raises:
            ApiError: the deployment's answer to a bad request; 503 once the retries are spent.
        """
        return await self.retrying(lambda: method.remote(*args))

    async def retrying(self, send: Callable[[], Any]) -> tuple[Any, Any]:
        """``(response, value)`` of the downstream call (or chain of calls) that ``send()`` makes,
        made again from the start if a replica on the way died meanwhile.

        Raises:
            ApiError: the deployment's answer to a bad request; 503 once the retries are spent.
        """
        attempt = 0
        while True:
            resp = send()
            try:
                value = await resp
            except Exception as e:
                if not replica_died(e):
                    raise
                if attempt >= self.args.retries:
                    raise ApiError(
                        503, "unavailable", f"a back-end replica kept failing: {type(e).__name__}"
                    ) from None
                log.warning("echoprime serve: retrying after %s (attempt %d)", type(e).__name__, attempt + 1)
                await asyncio.sleep(min(2.0, 0.25 * 2**attempt))
                attempt += 1
                continue
            if isinstance(value, ApiError):
                raise value  # a client error, answered as a value (deployments.answers_errors)
            return resp, value

    async def bounded(self, coro: Any, asked_timeout: str | None = None) -> Any:
        """Await ``coro`` within the request timeout (or the client's shorter ``X-Request-Timeout``).

        Raises:
            ApiError: 408 when it takes longer; 422 for a malformed header value.
        """
        timeout = self.limits.request_timeout_s
        if asked_timeout is not None:
            try:
                timeout = min(timeout, float(asked_timeout))
            except ValueError:
                coro.close()
                raise ApiError(
                    422, "invalid_header", f"X-Request-Timeout must be seconds, got {asked_timeout!r}"
                ) from None
        try:
            return await asyncio.wait_for(coro, timeout)
        except asyncio.TimeoutError:
            raise ApiError(408, "request_timeout", f"the request took longer than {timeout:g} s") from None

    async def ready(self) -> list[str]:
        """The deployments that did not answer within 5 s (empty: all are ready)."""
        calls = [asyncio.wait_for(h.ready.remote(), 5.0) for h in self.handles.values()]
        got = await asyncio.gather(*calls, return_exceptions=True)
        return [n for n, g in zip(self.handles, got, strict=True) if isinstance(g, BaseException)]

    async def _encode(self, pre_resp: Any) -> tuple[np.ndarray, np.ndarray]:
        # Both towers read the clips straight from Preprocess's response in the object store.
        (_, emb), (_, probs) = await asyncio.gather(
            self.call(self.enc.embed, pre_resp), self.call(self.views.classify, pre_resp)
        )
        return emb, probs

    # ------------------------------------------------------------------------------- work
    async def interpret(self, study: Study, previews: bool = False) -> dict[str, Any]:
        """The study's ``StudyResult`` JSON (plus ``previews`` when asked for)."""
        pre_resp, pre = await self.call(self.pre.load, study, previews)
        if pre["clips"].shape[0] == 0:
            no_views = np.zeros((0, len(VIEWS)), np.float32)
            _, result = await self.call(self.rai.assemble, None, None, no_views, pre["files"])
        else:

            def chain() -> Any:
                # Each deployment gets the previous one's response as it is (Serve hands the result
                # on through the object store): this replica awaits only the report, not the
                # embeddings, view probabilities and section weights on the way.
                probs = self.views.classify.remote(pre_resp)
                attended = self.att.attend.remote(self.enc.embed.remote(pre_resp), probs)
                return self.rai.report.remote(attended, probs, pre["files"])

            _, result = await self.retrying(chain)
        if previews:
            result["previews"] = pre["previews"]
        return result

    async def embed_videos(self, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        """Each usable video's embedding and view, plus every file's status."""
        pre_resp, pre = await self.call(self.pre.load, files, False)
        reports = [asdict(f) for f in pre["files"]]
        if pre["clips"].shape[0] == 0:
            return {"files": reports, "videos": []}
        emb, probs = await self._encode(pre_resp)
        used = [f["path"] for f in reports if f["status"] == "used"]
        videos = [
            {
                "file": name,
                "view": VIEWS[int(p.argmax())],
                "confidence": float(p.max()),
                "embedding": e.tolist(),
            }
            for name, e, p in zip(used, emb, probs, strict=True)
        ]
        return {"files": reports, "videos": videos}

    async def embed_text(self, reports: list[str]) -> dict[str, Any]:
        if long := [i for i, r in enumerate(reports) if len(r) > self.limits.max_text_chars]:
            raise ApiError(
                413, "payload_too_large", f"reports {long[:5]} exceed {self.limits.max_text_chars} characters"
            )
        _, emb = await self.call(self.rai.embed_text, reports)
        return {"embeddings": emb.tolist(), "dim": int(emb.shape[1])}

    async def search(self, query: str | list[float], k: int) -> dict[str, Any]:
        _, hits = await self.call(self.rai.search, query, k)
        return {"results": hits}

    async def example(self, index: int) -> dict[str, Any]:
        if not self.args.examples:
            raise ApiError(404, "not_found", "synthetic examples are switched off (args.examples: false)")
        _, ex = await self.call(self.pre.example, index)
        return ex
