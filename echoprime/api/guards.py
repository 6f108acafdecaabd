"""What keeps one request from taking more than its share: upload slots, the request's time
budget, and how a failed request names its input (to the client by name, to the log by digest).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from echoprime.api.errors import ApiError, log

BUSY_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 ``busy`` (all upload slots taken) or ``unavailable`` answer."""


class UploadSlots:
    """At most ``limit`` requests with a body in this replica at once; the next one is refused
    at once with 503 ``busy`` and ``Retry-After`` (before its body is read), and the refusal is
    logged (at most one line per 10 s, with the count since)."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active, self.refused = limit, 0, 0
        self._logged = 0.0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self.active >= self.limit:
            self.refused += 1
            now = time.monotonic()
            if now - self._logged >= 10.0:
                log.warning(
                    "echoprime serve: %d uploads in progress, the limit (max_concurrent_uploads); "
                    "refused %d with 503 since the last such line",
                    self.active,
                    self.refused,
                )
                self._logged, self.refused = now, 0
            raise ApiError(
                503,
                "busy",
                f"this server is handling {self.limit} uploads, its limit; send the request again "
                f"in {BUSY_RETRY_AFTER_S} s",
                retry_after_s=BUSY_RETRY_AFTER_S,
            )
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1


def time_budget(limit_s: float, asked_timeout: str | None, started: float | None) -> tuple[float, float]:
    """``(seconds left, the budget in seconds)`` of a request: what is left of ``limit_s`` since
    ``started`` (the request's arrival; the body's upload counts), or the client's shorter
    ``X-Request-Timeout`` (``asked_timeout``, the header's text).

    Raises:
        ApiError: 422 ``invalid_header`` for a header value that is not a positive number.
    """
    timeout = limit_s if started is None else limit_s - (time.monotonic() - started)
    if asked_timeout is None:
        return timeout, limit_s
    try:
        asked = float(asked_timeout)
    except ValueError:
        asked = math.nan
    if not (math.isfinite(asked) and asked > 0):
        shown = asked_timeout if len(asked_timeout) <= 40 else asked_timeout[:37] + "..."
        raise ApiError(
            422, "invalid_header", f"X-Request-Timeout must be a positive number of seconds, got {shown!r}"
        )
    return min(timeout, asked), min(asked, limit_s)


def timed_out(budget_s: float) -> ApiError:
    """408 for a request that took longer than its budget (:func:`time_budget`)."""
    return ApiError(408, "request_timeout", f"the request took longer than {budget_s:g} s")


def describe_input(study: Sequence[Any] | None, limit: int = 5) -> str:
    """The input as the client named it, for a reason: ``files a.dcm, b.mp4 and 3 more``."""
    if not study:
        return "input"
    names = [s[0] if isinstance(s, tuple) else str(s) for s in study]
    shown = ", ".join(n if len(n) <= 80 else n[:77] + "..." for n in names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"files {shown}{more}"


def input_digests(study: Sequence[Any] | None, limit: int = 10) -> str:
    """The input for the log, without names (they may hold patient identifiers): each file's
    size and sha256 prefix, or each URI's digest."""
    if not study:
        return "-"
    out = []
    for s in list(study)[:limit]:
        data = s[1] if isinstance(s, tuple) else str(s).encode("utf-8", "surrogatepass")
        out.append(f"{len(data)}B:{hashlib.sha256(data).hexdigest()[:16]}")
    more = f" +{len(study) - limit}" if len(study) > limit else ""
    return " ".join(out) + more


def replica_crashed(stage: str, study: Sequence[Any] | None, detail: str) -> ApiError:
    """502 ``replica_crashed`` naming the request's files, and the log line with their digests
    (the ``stage`` deployment's replica died while holding them; ``detail``: Ray's words)."""
    log.error(
        "echoprime serve: the %s replica died while holding a request; not retried (the input may "
        "have caused it). Input: %s. Ray: %s",
        stage,
        input_digests(study),
        detail,
    )
    return ApiError(
        502,
        "replica_crashed",
        f"the server's worker stopped while handling this request's {describe_input(study)}; it "
        "was not retried, in case this input caused it. Check these files; other requests are "
        "not affected",
    )


def unavailable(attempts: int) -> ApiError:
    """503 ``unavailable`` once a back-end replica stopped on each of ``attempts`` tries."""
    log.error("echoprime serve: a back-end replica kept stopping; %d retries spent", attempts - 1)
    return ApiError(
        503,
        "unavailable",
        f"a back-end replica stopped {attempts} times while handling the request; "
        f"send it again in {BUSY_RETRY_AFTER_S} s",
        retry_after_s=BUSY_RETRY_AFTER_S,
    )
