"""The one error type of the HTTP API: a status, a machine-readable code and a reason.

Raised anywhere in the graph (a deployment's exception reaches the ingress as a subclass of
both ``RayTaskError`` and :class:`ApiError`) and turned into ``{"code", "reason"}`` JSON there.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error the client can act on, answered with ``status`` and ``{"code", "reason"}``.

    Args:
        status: the HTTP status (4xx for the client's input, 5xx for the service).
        code: a stable identifier (``payload_too_large``, ``invalid_request``, ...).
        reason: what was wrong and what is allowed, naming the file or field.
    """

    def __init__(self, status: int, code: str, reason: str) -> None:
        # All three go to Exception.args so that the error pickles between Ray processes.
        super().__init__(status, code, reason)
        self.status, self.code, self.reason = status, code, reason

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.reason}"

    def body(self) -> dict[str, str]:
        return {"code": self.code, "reason": self.reason}
