"""Calls down the graph from the ingress: resent when a replica was stopped from outside, never
when one crashed, cancelled together when the request ends early, bounded by its time budget.

A downstream replica that dies while holding a request is handled by why it died:

* stopped from outside (``ray.kill`` by an operator or Serve's health check, its node lost):
  the request is sent again, at most ``args.retries`` times;
* crashed (its process exited, or was killed for memory): the request is **not** sent again,
  since its own input may have caused the crash and would crash the next replica too. The
  client gets one 502 ``replica_crashed`` naming its files; the log gets the input's digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from echoprime.api.errors import ApiError, log
from echoprime.api.guards import replica_crashed, time_budget, timed_out, unavailable

# How Ray words the death of an actor that was stopped from outside (GCS's death causes); any
# other death, above all "its worker process has died" (a crash, an out-of-memory kill), counts
# as a crash that the request in flight may have caused.
_STOPPED = (
    "killed by `ray.kill`",
    "its node has died",
    "its owner has died",
    "references to the actor were removed",
    "never ran",
    "Worker exit type: INTENDED_",
)
_DEPLOYMENT = re.compile(r"ServeReplica:[^:\s]+:(\w+)")

Send = Callable[[Callable[..., Any]], Any]
"""Makes one attempt's downstream calls through the ``remote(method, *args)`` it is given (which
records them) and returns the awaitable of the attempt's answer."""


def replica_failure(e: BaseException) -> Literal["stopped", "crashed"] | None:
    """Whether ``e`` says a replica on the request's way died, and how (directly, or as the
    cause of Serve's error for a chained call whose upstream replica died: Serve raises
    ``RayServeException`` with the ``ActorDiedError`` as its ``__cause__``).

    Returns:
        ``"stopped"``: stopped from outside or unreachable for now (worth sending again);
        ``"crashed"``: its process died while working (maybe on this request's input);
        ``None``: no replica died (a bug or a client error; never sent again).
    """
    from ray.exceptions import ActorUnavailableError, RayActorError

    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 5:
        if isinstance(cur, ActorUnavailableError):
            return "stopped"
        if isinstance(cur, RayActorError):
            return "stopped" if any(s in str(cur) for s in _STOPPED) else "crashed"
        cur, seen = cur.__cause__, seen + 1
    return None


def _cancel(sent: Sequence[Any]) -> None:
    for resp in sent:  # the rest of the chain: nobody will read its answer
        with contextlib.suppress(Exception):  # a response whose replica died can raise that death
            resp.cancel()  # again on cancel; the failure being handled is another one


class GraphCalls:
    """The ingress's calls to its deployments (``self.handles``: name -> handle), within
    ``self.args.retries`` and ``self.limits.request_timeout_s``."""

    handles: dict[str, Any]
    args: Any
    limits: Any

    async def call(self, method: Any, *args: Any, study: Sequence[Any] | None = None) -> tuple[Any, Any]:
        """``(response, value)`` of one downstream call (see :meth:`retrying`)."""
        return await self.retrying(lambda remote: remote(method, *args), study)

    async def retrying(self, send: Send, study: Sequence[Any] | None = None) -> tuple[Any, Any]:
        """``(response of the last call, value)`` of the downstream calls that ``send`` makes,
        made again from the start when a replica on the way was stopped from outside (at most
        ``args.retries`` times), never when one crashed. However an attempt ends early
        (cancelled by a timeout or a client gone, or failed), every call it made is cancelled.

        Args:
            send: makes the calls (see :data:`Send`).
            study: the request's input, named in the answer when a replica crashed on it.

        Raises:
            ApiError: the deployment's answer to a bad request; 502 ``replica_crashed`` when a
                replica died while holding the request; 503 ``unavailable`` once the retries
                are spent.
        """
        attempt = 0
        while True:
            sent: list[Any] = []

            def remote(method: Any, *args: Any, _sent: list[Any] = sent) -> Any:
                _sent.append(method.remote(*args))
                return _sent[-1]

            try:
                value = await send(remote)
            except BaseException as e:
                _cancel(sent)
                failure = replica_failure(e) if isinstance(e, Exception) else None
                if failure is None:
                    raise
                if failure == "crashed":
                    m = _DEPLOYMENT.search(str(e)) or _DEPLOYMENT.search(str(e.__cause__ or ""))
                    detail = str(e).splitlines()[-1][:300] if str(e) else type(e).__name__
                    raise replica_crashed(m.group(1) if m else "a back-end", study, detail) from None
                if attempt >= self.args.retries:
                    raise unavailable(attempt + 1) from None
                log.warning("echoprime serve: retrying after %s (attempt %d)", type(e).__name__, attempt + 1)
                await asyncio.sleep(min(2.0, 0.25 * 2**attempt))
                attempt += 1
                continue
            if isinstance(value, ApiError):
                raise value  # a client error, answered as a value (deployments.answers_errors)
            if isinstance(value, list) and any(isinstance(v, ApiError) for v in value):
                raise next(v for v in value if isinstance(v, ApiError))
            return (sent[-1] if sent else None), value

    async def bounded(self, coro: Any, asked_timeout: str | None = None, started: float | None = None) -> Any:
        """Await ``coro`` within the request's time budget (:func:`echoprime.api.guards.time_budget`).
        On timeout ``coro`` is cancelled, and with it its calls.

        Raises:
            ApiError: 408 when it takes longer; 422 for a malformed ``X-Request-Timeout``.
        """
        try:
            timeout, budget = time_budget(self.limits.request_timeout_s, asked_timeout, started)
        except ApiError:
            coro.close()
            raise
        try:
            return await asyncio.wait_for(coro, max(timeout, 0.0))
        except asyncio.TimeoutError:
            raise timed_out(budget) from None

    async def ready(self) -> list[str]:
        """The deployments that did not answer within 5 s (empty: all are ready)."""
        sent = {n: h.ready.remote() for n, h in self.handles.items()}

        async def one(resp: Any) -> Any:
            try:
                return await asyncio.wait_for(resp, 5.0)
            except Exception as e:
                _cancel([resp])
                return e

        got = await asyncio.gather(*(one(r) for r in sent.values()))
        return [n for n, g in zip(sent, got, strict=True) if isinstance(g, BaseException)]
