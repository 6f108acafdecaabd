"""Who may reach the app, and what browsers are told about its answers.

* **No auth off loopback.** Authentication may be switched off only on a loopback address, unless
  the operator forces it (``allow_no_auth_off_loopback``), which logs a warning at start. Where
  the address was not stated (a Serve config without ``args.host``), a server without
  authentication answers only clients on this machine (403 ``loopback_only`` to the others).
* **Host allow-list.** A request whose ``Host`` is not on the list gets 421 ``misdirected_request``
  before any route runs: a page on another site that rebinds its DNS name to this server (DNS
  rebinding) cannot talk to it, even with authentication off. The default list is the loopback
  names plus the address the server listens on (and this machine's name when it listens on
  every address). ``/healthz`` and ``/readyz`` answer any Host (probes address a pod by IP).
* **Origin check.** A browser request to the API (``/v1/...``) that carries an ``Origin`` must
  come from the server's own origin or one of ``allowed_origins``, else 403 ``origin_not_allowed``.
  Clients that are not browsers send no ``Origin`` and are not affected.
* **Security headers** on every answer: a Content-Security-Policy that loads nothing from
  anywhere but the server itself (the viewer has no inline script or style; previews and
  loops are ``data:`` images), framing refused (``frame-ancestors 'none'``, ``X-Frame-Options: DENY``),
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``, and
  ``Cache-Control: no-store`` on everything but the viewer's static files (results hold
  patient data and must not stay in shared caches or the browser's).
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from echoprime.api.errors import log

if TYPE_CHECKING:
    from echoprime.api.auth import ApiKeyAuth

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARDS = ("", "0.0.0.0", "::")
ANY_HOST_PATHS = ("/healthz", "/readyz")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) can only be reached from this machine."""
    h = host.strip().strip("[]").lower().rstrip(".")
    if h == "localhost" or h.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def check_no_auth(host: str | None, auth_disabled: bool, allow_off_loopback: bool) -> None:
    """Refuse to serve without authentication on an address others can reach.

    Raises:
        ValueError: ``auth_disabled`` on a non-loopback ``host`` without ``allow_off_loopback``,
            naming the address and both ways out.
    """
    if auth_disabled and host is not None and not is_loopback(host) and not allow_off_loopback:
        raise ValueError(
            f"authentication is off (--no-auth / args.auth_disabled) but the server would listen on "
            f"{host!r}, which other machines can reach: set an API key ($ECHOPRIME_API_KEY_FILE or "
            "$ECHOPRIME_API_KEY), listen on 127.0.0.1, or force it with --allow-no-auth-off-loopback "
            "(args.allow_no_auth_off_loopback: true)"
        )


def default_hosts(bind_host: str | None) -> list[str]:
    """The loopback names, the address the server listens on, and this machine's name when it
    listens on every address."""
    hosts = list(LOOPBACK_NAMES)
    if bind_host is not None and bind_host.strip("[]") not in WILDCARDS:
        hosts.append(bind_host)
    elif bind_host is not None:
        hosts.append(socket.gethostname())
    return hosts


def log_exposure(auth: ApiKeyAuth, host: str | None, hosts: Sequence[str] | None) -> None:
    """Say at start who can reach the server: whether a key is needed (a warning when not, and
    another when that is on an address other machines can reach), and which Host names are
    answered (a warning when any is).

    Args:
        auth: the replica's authentication.
        host: the address the server listens on (``None``: not stated).
        hosts: the Host allow-list (``None``: any Host).
    """
    (log.warning if auth.disabled else log.info)("echoprime serve: %s", auth.describe())
    if auth.disabled and host is not None and not is_loopback(host):
        log.warning(
            "echoprime serve: authentication is OFF on %s, an address other machines can reach "
            "(forced by allow_no_auth_off_loopback)",
            host,
        )
    if hosts is None:
        log.warning(
            "echoprime serve: no Host allow-list (args.host and args.allowed_hosts unset): "
            "any Host is answered; set args.allowed_hosts to the names clients use"
        )
    else:
        log.info("echoprime serve: answering Host %s", ", ".join(hosts))


_HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9._-]+|\*)(:[0-9]{1,5})?$")


def _host_only(value: str) -> str:
    """``example.org:8000`` -> ``example.org``; ``[::1]:8000`` -> ``::1``; lower case; ``""``
    for anything that is not a host with an optional port (``a@b``, ``a:b:c``, spaces)."""
    m = _HOST.match(value.strip().lower())
    return m.group(1).strip("[]").rstrip(".") if m else ""


class HostPolicy:
    """Which ``Host`` and ``Origin`` headers the app answers.

    Args:
        hosts: allowed host names or addresses (no port); ``"*"`` allows any; ``None`` allows any
            (a deployment that did not say where it listens: the ingress warns).
        origins: origins (``scheme://host[:port]``) whose browser pages may call the API, besides
            the server's own.
        loopback_clients_only: answer only clients connected from this machine (authentication
            is off and was not forced open).
    """

    def __init__(
        self, hosts: Iterable[str] | None, origins: Iterable[str] = (), loopback_clients_only: bool = False
    ) -> None:
        self.loopback_clients_only = loopback_clients_only
        # A bare IPv6 address on the list ("::1") is written with brackets in a Host header.
        bracket = lambda h: f"[{h.strip()}]" if h.count(":") > 1 and "[" not in h else h  # noqa: E731
        self.hosts = None if hosts is None else {_host_only(bracket(h)) for h in hosts}
        if self.hosts is not None and "*" in self.hosts:
            self.hosts = None
        self.origins = {o.strip().rstrip("/").lower() for o in origins}

    def host_allowed(self, host: str | None) -> bool:
        if self.hosts is None:
            return True
        return host is not None and _host_only(host) in self.hosts - {""}

    def origin_allowed(self, origin: str, host: str | None) -> bool:
        o = origin.strip().rstrip("/").lower()
        if o in self.origins:
            return True
        parts = urlsplit(o)
        # Same origin: the page was served by this server under the Host the request names.
        return parts.scheme in ("http", "https") and host is not None and parts.netloc == host.strip().lower()


class SecurityMiddleware:
    """ASGI middleware: the Host and Origin checks, then the security headers on every answer.

    Pure ASGI (not Starlette's BaseHTTPMiddleware), so request bodies still stream to the routes
    and their timeouts and cancellation work as before.
    """

    def __init__(self, app: Any, policy: HostPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope.get("headers", ()))
        path = scope.get("path", "")
        host, origin = headers.get("host"), headers.get("origin")
        if path not in ANY_HOST_PATHS and not self.policy.host_allowed(host):
            shown = (host or "")[:80]
            await _refuse(
                send,
                421,
                "misdirected_request",
                f"this server does not answer for Host {shown!r}; add it to args.allowed_hosts "
                "(echoprime serve --allowed-host) if it should",
            )
            return
        if path.startswith("/v1/") and origin is not None and not self.policy.origin_allowed(origin, host):
            await _refuse(
                send,
                403,
                "origin_not_allowed",
                f"browser pages from {origin[:80]!r} may not call this API; add the origin to "
                "args.allowed_origins if they should",
            )
            return
        client = scope.get("client") or ("", 0)
        if (
            self.policy.loopback_clients_only
            and path not in ANY_HOST_PATHS
            and not is_loopback(str(client[0]))
        ):
            await _refuse(
                send,
                403,
                "loopback_only",
                "authentication is off on this server, so it answers only clients on its own machine",
            )
            return
        cacheable = path.startswith("/static/")

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = _with_security(message.get("headers", []), cacheable)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _headers(raw: Iterable[Sequence[bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in raw:
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


def _with_security(headers: Iterable[Sequence[bytes]], cacheable: bool) -> list[tuple[bytes, bytes]]:
    out = [(bytes(k), bytes(v)) for k, v in headers]
    names = {k.lower() for k, _ in out}
    out += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
    if not cacheable:
        out = [(k, v) for k, v in out if k.lower() not in (b"cache-control", b"pragma")]
        out.append((b"cache-control", b"no-store"))
    return out


async def _refuse(send: Any, status: int, code: str, reason: str) -> None:
    body = json.dumps({"code": code, "reason": reason}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _with_security(
                [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], False
            ),
        }
    )
    await send({"type": "http.response.body", "body": body})
