"""The one error type of the HTTP API: a status, a machine-readable code and a reason.

Raised anywhere in the graph (a deployment's exception reaches the ingress as a subclass of
both ``RayTaskError`` and :class:`ApiError`) and turned into ``{"code", "reason"}`` JSON there.
A reason is written for the client: it names the field, file or limit at fault and never
carries server internals (paths, hosts, library messages); those go to the server log.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("ray.serve")
"""The API's log lines go where the Serve replica's own do, where operators read them (a
logger's name, not an import: nothing in echoprime imports Ray)."""


class ApiError(Exception):
    """An error the client can act on, answered with ``status`` and ``{"code", "reason"}``.

    Args:
        status: the HTTP status (4xx for the client's input, 5xx for the service).
        code: a stable identifier (``payload_too_large``, ``invalid_request``, ...).
        reason: what was wrong and what is allowed, naming the file or field.
        retry_after_s: seconds after which the same request may succeed (sent as
            ``Retry-After``; for 503s such as ``busy``).
    """

    def __init__(self, status: int, code: str, reason: str, retry_after_s: int | None = None) -> None:
        # All of them go to Exception.args so that the error pickles between Ray processes.
        super().__init__(status, code, reason, retry_after_s)
        self.status, self.code, self.reason = status, code, reason
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.reason}"

    def body(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}

    def headers(self) -> dict[str, str] | None:
        """The response headers this error needs (``WWW-Authenticate``, ``Retry-After``)."""
        out = {}
        if self.status == 401:
            out["WWW-Authenticate"] = "Bearer"
        if self.retry_after_s is not None:
            out["Retry-After"] = str(max(0, int(self.retry_after_s)))
        return out or None


def describe_errors(errors: Sequence[Any]) -> str:
    """``loc: message`` of the first three validation errors, e.g. ``k: Input should be a valid
    integer``: the field and what it expects (pydantic's messages, never the input)."""
    out = []
    for e in list(errors)[:3]:
        loc = ".".join(map(str, e.get("loc", ()))) or "body"
        out.append(f"{loc}: {str(e.get('msg', '')).removeprefix('Value error, ')}")
    return "; ".join(out)


def validation_error(errors: Sequence[Any]) -> dict[str, Any]:
    """422 ``invalid_request``'s body for FastAPI's own validation (query and path parameters):
    the reason, and up to 20 errors as ``{"loc", "msg"}``."""
    errs = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in list(errors)[:20]]
    return {"code": "invalid_request", "reason": describe_errors(errors), "errors": errs}


def http_error(status: int, detail: Any) -> dict[str, str]:
    """The body of an HTTP error the router raises itself (an unknown route, a wrong method)."""
    code = {404: "not_found", 405: "method_not_allowed"}.get(status, f"http_{status}")
    return {"code": code, "reason": str(detail)}


def internal_error(method: str, path: str, exc: BaseException) -> dict[str, str]:
    """500 ``internal_error``'s body for a bug of ours, never the client's input: the traceback
    goes to the log under an id the client can quote; the answer carries neither it nor any
    exception text."""
    incident = uuid.uuid4().hex[:12]
    log.error("echoprime serve: internal error %s on %s %s", incident, method, path, exc_info=exc)
    return {"code": "internal_error", "reason": f"the server failed on this request (incident {incident})"}
