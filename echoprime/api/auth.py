"""API-key authentication: the key from a file or the environment, compared in constant time.

The key is read from the file named by ``api_key_file`` (or ``$ECHOPRIME_API_KEY_FILE``), else
from ``$ECHOPRIME_API_KEY``. A key file is re-read when it changes, so a rotated Kubernetes
Secret takes effect without a restart. The key never appears in a log line, an error message
or a ``repr``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections.abc import Mapping
from pathlib import Path

from echoprime.api.errors import ApiError

KEY_FILE_ENV = "ECHOPRIME_API_KEY_FILE"


class AuthConfigError(ValueError):
    """No usable API key was configured (and authentication was not explicitly disabled)."""


def _digest(s: str) -> bytes:
    # Comparing fixed-length digests keeps the comparison's time independent of both lengths.
    return hashlib.sha256(s.encode("utf-8")).digest()


class ApiKeyAuth:
    """Checks the key a request presents against the configured one.

    Args:
        key_file: the file holding the key (whitespace around it is ignored).
        key: the key itself (from the environment), used when there is no file.
        disabled: accept every request (local use only).
        source: where the key came from, for the startup log (never the key).

    Raises:
        AuthConfigError: neither a readable non-empty key file nor a non-empty key, and not
            disabled.
    """

    def __init__(
        self, *, key_file: str | None = None, key: str | None = None, disabled: bool = False, source: str = ""
    ) -> None:
        self.disabled = disabled
        self.key_file = Path(key_file) if key_file else None
        self.source = source
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._digest: bytes | None = None
        if disabled:
            return
        if self.key_file is not None:
            self._reload()
        elif key and key.strip():
            self._digest = _digest(key.strip())
        else:
            raise AuthConfigError(
                f"no API key: set {KEY_FILE_ENV} to a file holding the key, or the key in "
                f"{source or 'ECHOPRIME_API_KEY'}; or disable authentication explicitly for local use "
                "(echoprime serve --no-auth / args.auth_disabled: true)"
            )

    @classmethod
    def from_env(
        cls,
        *,
        key_file: str | None = None,
        key_env: str = "ECHOPRIME_API_KEY",
        disabled: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> ApiKeyAuth:
        """The key from ``key_file``, else ``$ECHOPRIME_API_KEY_FILE``, else ``$<key_env>``."""
        env = os.environ if environ is None else environ
        if disabled:
            return cls(disabled=True, source="disabled")
        path = key_file or env.get(KEY_FILE_ENV)
        if path:
            return cls(key_file=path, source=f"file {path}")
        return cls(key=env.get(key_env), source=f"${key_env}")

    def describe(self) -> str:
        """One line for the startup log, without the key."""
        if self.disabled:
            return (
                "authentication is OFF (explicitly disabled): every route is open to whoever reaches the port"
            )
        return f"API key required (from {self.source}; Authorization: Bearer <key> or X-API-Key)"

    def __repr__(self) -> str:
        return f"ApiKeyAuth({self.describe()!r})"

    def _reload(self) -> None:
        assert self.key_file is not None
        try:
            st = self.key_file.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp == self._stamp:
                return
            key = self.key_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise AuthConfigError(f"API key file {self.key_file} cannot be read ({e.strerror})") from None
        if not key:
            raise AuthConfigError(f"API key file {self.key_file} is empty")
        self._stamp, self._digest = stamp, _digest(key)

    def verify(self, presented: str | None) -> None:
        """Accept the request or raise a 401 :class:`ApiError` (which never echoes the key).

        Raises:
            ApiError: 401 when no key or a wrong key was presented; 503 when the key file
                became unreadable.
        """
        if self.disabled:
            return
        if self.key_file is not None:
            with self._lock:
                try:
                    self._reload()
                except AuthConfigError as e:
                    raise ApiError(503, "auth_unavailable", str(e)) from None
        if not presented:
            raise ApiError(
                401, "unauthorized", "an API key is required: Authorization: Bearer <key> or X-API-Key"
            )
        assert self._digest is not None
        if not hmac.compare_digest(_digest(presented.strip()), self._digest):
            raise ApiError(401, "unauthorized", "the API key is not valid")
