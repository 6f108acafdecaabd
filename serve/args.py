"""The typed arguments of the Serve application (``args:`` in configs/serve.yaml)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from echoprime.api.security import check_no_auth, default_hosts
from echoprime.config import ServeCfg

APP_NAME = "echoprime"
_LIMITS = ServeCfg()


class ServeArgs(BaseModel):
    """What ``build_app`` needs; unknown keys are errors.

    Secrets never travel in these arguments (they show in the Serve config and the dashboard):
    the API key is read by the ingress replica from the file named by ``api_key_file`` or by
    ``$ECHOPRIME_API_KEY_FILE``, else from the environment variable named by ``api_key_env``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    bundle_uri: str = Field(min_length=1)
    """The model bundle: a local folder or ``s3://bucket/prefix``."""
    api_key_env: str = "ECHOPRIME_API_KEY"
    """Environment variable holding the API key (when no key file is named)."""
    api_key_file: str | None = None
    """File holding the API key (re-read when it changes: rotation without restarts)."""
    auth_disabled: bool = False
    """Serve without an API key: for local use only; the ingress logs a warning at start."""
    max_upload_mb: int = Field(default=_LIMITS.max_upload_mb, ge=1)
    max_files: int = Field(default=_LIMITS.max_files, ge=1)
    max_frames_per_file: int = Field(default=_LIMITS.max_frames_per_file, ge=1)
    request_timeout_s: float = Field(default=_LIMITS.request_timeout_s, gt=0)
    """Answer 408 once a request (its body included) took this long; keep it below the proxy's
    ``http_options.request_timeout_s``."""
    body_timeout_s: float = Field(default=_LIMITS.body_timeout_s, gt=0)
    """Answer 408 when the body has not arrived within this long (slow or stalled clients)."""
    body_idle_timeout_s: float = Field(default=_LIMITS.body_idle_timeout_s, gt=0)
    """Answer 408 when no piece of the body arrived for this long."""
    max_concurrent_uploads: int = Field(default=_LIMITS.max_concurrent_uploads, ge=1)
    """Requests with a body that one ingress replica holds at once; more are answered 503 with
    ``Retry-After`` before their body is read."""
    k: int | None = Field(default=None, ge=1)
    """Neighbours for the kNN metrics (default: the interpreter's, 50 or the bank size)."""
    n_neighbours: int = Field(default=5, ge=0, le=100)
    """Neighbour studies listed per report section."""
    device: str | None = None
    """Where the encoders run (default: CUDA when the replica was given a GPU, else CPU)."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """The view classifier's and the video encoder's arithmetic: ``bf16`` autocast is faster on a
    GPU or a CPU with AVX512-BF16 / AMX; its answers can differ slightly from fp32's
    (docs/benchmarks.md). fp32 keeps Serve bit-identical to the in-process interpreter."""
    verify_bundle: bool = True
    """Check every bundle file's sha256 when a replica loads it."""
    retries: int = Field(default=3, ge=0, le=10)
    """How often the ingress resends a call whose replica was stopped from outside while handling
    it (``ray.kill``, a health check, node loss). A call whose replica crashed (exited, killed for
    memory) is never resent: the request may have caused it."""
    dicomweb_url: str | None = None
    """A DICOMweb archive ``POST /v1/interpret/dicomweb`` reads studies from (and stores results
    to); credentials come from the ingress replica's environment (``ECHOPRIME_DICOMWEB_TOKEN``,
    or ``_USER`` and ``_PASSWORD``), never from here. Clients name a study, never a server."""
    examples: bool = True
    """Offer synthetic example studies (``GET /v1/examples/{index}``) to the viewer."""
    host: str | None = None
    """The address the HTTP proxy listens on (``echoprime serve --host`` sets it; a Serve config
    should repeat its ``http_options.host`` here). It decides the default ``allowed_hosts`` and
    whether authentication may be off; ``None`` (not stated) allows any Host, with a warning."""
    allowed_hosts: list[str] | None = Field(
        default_factory=lambda: None if _LIMITS.allowed_hosts is None else list(_LIMITS.allowed_hosts)
    )
    """Host names (or addresses) the server answers; others get 421. Default: the loopback names
    and ``host`` (this machine's name too when ``host`` is 0.0.0.0); ``["*"]`` allows any."""
    allowed_origins: list[str] = Field(default_factory=lambda: list(_LIMITS.allowed_origins))
    """Origins (``https://viewer.example.org``) whose browser pages may call ``/v1/...`` besides
    the server's own; a browser request from another origin gets 403."""
    allow_no_auth_off_loopback: bool = _LIMITS.allow_no_auth_off_loopback
    """Allow ``auth_disabled`` on a non-loopback ``host`` (refused otherwise); logged as a warning."""

    @model_validator(mode="after")
    def _no_auth_only_on_loopback(self) -> ServeArgs:
        check_no_auth(self.host, self.auth_disabled, self.allow_no_auth_off_loopback)
        return self

    @model_validator(mode="after")
    def _archive_url(self) -> ServeArgs:
        if self.dicomweb_url is not None:
            from echoprime.hospital.dicomweb import check_url

            check_url(self.dicomweb_url)
        return self

    def host_allow_list(self) -> list[str] | None:
        """The Host names to answer (``None``: any; see ``allowed_hosts``)."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        return None if self.host is None else default_hosts(self.host)


def read_serve_config(path: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Any]]:
    """A Serve config file's echoprime application: ``(args, options by deployment, http_options)``.

    Raises:
        ValueError: the file holds no application named ``echoprime``.
    """
    raw = yaml.safe_load(Path(path).read_text())
    apps = [a for a in (raw or {}).get("applications", []) if a.get("name") == APP_NAME]
    if not apps:
        raise ValueError(f"{path}: no application named {APP_NAME!r} under 'applications'")
    app = apps[0]
    opts = {d["name"]: {k: v for k, v in d.items() if k != "name"} for d in app.get("deployments", [])}
    return dict(app.get("args", {})), opts, dict(raw.get("http_options", {}))
