"""The ingress deployment: authentication, limits, and the calls down the graph.

The HTTP routes live in :mod:`serve.routes`; Serve builds them in each replica from
:meth:`Ingress.__serve_build_asgi_app__`, so the FastAPI app is never pickled and its handlers
close over this replica's state. Downstream calls are awaited (the event loop never blocks)
and the whole request is bounded by the timeout. When a request ends early (timed out, its
client gone, a sibling call failed) every call it made down the graph is cancelled.

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
import hashlib
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np

from echoprime.api.auth import ApiKeyAuth
from echoprime.api.errors import ApiError
from echoprime.api.security import is_loopback
from echoprime.api.uploads import Limits, Study
from echoprime.taxonomy import VIEWS
from serve.args import ServeArgs

log = logging.getLogger("ray.serve")
DEPLOYMENTS = ("Preprocess", "ViewClassifier", "VideoEncoder", "AnatomicalAttention", "RAIRetriever")
BUSY_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 ``busy`` (all upload slots taken) or ``unavailable`` answer."""

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


def _actor_errors() -> tuple[type[BaseException], type[BaseException]]:
    from ray.exceptions import ActorUnavailableError, RayActorError

    return RayActorError, ActorUnavailableError


def replica_failure(e: BaseException) -> Literal["stopped", "crashed"] | None:
    """Whether ``e`` says a replica on the request's way died, and how (directly, or as the
    cause of Serve's error for a chained call whose upstream replica died: Serve raises
    ``RayServeException`` with the ``ActorDiedError`` as its ``__cause__``).

    Returns:
        ``"stopped"``: stopped from outside or unreachable for now (worth sending again);
        ``"crashed"``: its process died while working (maybe on this request's input);
        ``None``: no replica died (a bug or a client error; never sent again).
    """
    actor_error, unavailable = _actor_errors()
    seen = 0
    cur: BaseException | None = e
    while cur is not None and seen < 5:
        if isinstance(cur, unavailable):
            return "stopped"
        if isinstance(cur, actor_error):
            text = str(cur)
            return "stopped" if any(s in text for s in _STOPPED) else "crashed"
        cur, seen = cur.__cause__, seen + 1
    return None


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


def bundle_summary(uri: str) -> dict[str, Any]:
    """What clients may know of the bundle: its name, version and content hash, and the
    manifest without its file list or anything of the server's (no path, no URI).

    ``bundle.sha256`` is the manifest's digest: the manifest lists every file's sha256, so it
    identifies the bundle's content (batch-interpret records the same digest)."""
    from echoprime import storage
    from echoprime.bundle import MANIFEST

    blob = storage.read_bytes(storage.locate(uri).join(MANIFEST).uri)
    raw = json.loads(blob)
    comps = {
        k: {kk: v[kk] for kk in ("model", "overrides", "kind", "task") if kk in v}
        for k, v in raw["components"].items()
    }
    keep = ("format", "format_version", "created", "versions", "spec", "label_sets")
    extra = {  # counts and settings only: a producer may have put paths there
        k: v
        for k, v in (raw.get("extra") or {}).items()
        if isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v))
    }
    bundle = {
        "name": PurePosixPath(str(uri).rstrip("/")).name or "bundle",
        "version": raw.get("created"),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    return {"bundle": bundle, **{k: raw.get(k) for k in keep}, "extra": extra, "components": comps}


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


Send = Callable[[Callable[..., Any]], Any]
"""Makes one attempt's downstream calls through the ``remote(method, *args)`` it is given (which
records them) and returns the awaitable of the attempt's answer."""


class Ingress:
    """The graph's entry (wrapped with ``serve.ingress()`` at build time).

    Args:
        preprocess, views, encoder, attention, retriever: handles of the other deployments.
        args: the application's arguments.

    Raises:
        echoprime.api.auth.AuthConfigError: no API key configured and authentication not disabled.
    """

    def __init__(
        self, preprocess: Any, views: Any, encoder: Any, attention: Any, retriever: Any, args: ServeArgs
    ) -> None:
        self.handles = dict(zip(DEPLOYMENTS, (preprocess, views, encoder, attention, retriever), strict=True))
        self.pre, self.views, self.enc, self.att, self.rai = self.handles.values()
        self.args = args
        self.limits = Limits.from_args(args)
        self.uploads = UploadSlots(self.limits.max_concurrent_uploads)
        self.auth = ApiKeyAuth.from_env(
            key_file=args.api_key_file, key_env=args.api_key_env, disabled=args.auth_disabled
        )
        (log.warning if self.auth.disabled else log.info)("echoprime serve: %s", self.auth.describe())
        if self.auth.disabled and args.host is not None and not is_loopback(args.host):
            log.warning(
                "echoprime serve: authentication is OFF on %s, an address other machines can reach "
                "(forced by allow_no_auth_off_loopback)",
                args.host,
            )
        if (hosts := args.host_allow_list()) is None:
            log.warning(
                "echoprime serve: no Host allow-list (args.host and args.allowed_hosts unset): "
                "any Host is answered; set args.allowed_hosts to the names clients use"
            )
        else:
            log.info("echoprime serve: answering Host %s", ", ".join(hosts))
        self.model = bundle_summary(args.bundle_uri)
        log.info("echoprime serve: bundle %s (sha256 %s)", args.bundle_uri, self.model["bundle"]["sha256"])

    def __serve_build_asgi_app__(self) -> Any:
        from serve.routes import create_api

        return create_api(self)

    # ---------------------------------------------------------------------------- plumbing
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
                resp = method.remote(*args)
                _sent.append(resp)
                return resp

            try:
                value = await send(remote)
            except BaseException as e:
                for resp in sent:
                    try:
                        resp.cancel()  # the rest of the chain: nobody will read its answer
                    except Exception:  # noqa: BLE001  (a response whose replica died can raise that death
                        pass  # again on cancel; the failure being handled is `e`, not this one)
                failure = replica_failure(e) if isinstance(e, Exception) else None
                if failure is None:
                    raise
                if failure == "crashed":
                    raise self._crashed(e, study) from None
                if attempt >= self.args.retries:
                    log.error("echoprime serve: a back-end replica kept stopping; %d retries spent", attempt)
                    raise ApiError(
                        503,
                        "unavailable",
                        f"a back-end replica stopped {attempt + 1} times while handling the request; "
                        f"send it again in {BUSY_RETRY_AFTER_S} s",
                        retry_after_s=BUSY_RETRY_AFTER_S,
                    ) from None
                log.warning("echoprime serve: retrying after %s (attempt %d)", type(e).__name__, attempt + 1)
                await asyncio.sleep(min(2.0, 0.25 * 2**attempt))
                attempt += 1
                continue
            if isinstance(value, ApiError):
                raise value  # a client error, answered as a value (deployments.answers_errors)
            if isinstance(value, list) and any(isinstance(v, ApiError) for v in value):
                raise next(v for v in value if isinstance(v, ApiError))
            return (sent[-1] if sent else None), value

    def _crashed(self, e: BaseException, study: Sequence[Any] | None) -> ApiError:
        m = _DEPLOYMENT.search(str(e)) or _DEPLOYMENT.search(str(e.__cause__ or ""))
        stage = m.group(1) if m else "a back-end"
        log.error(
            "echoprime serve: the %s replica died while holding a request; not retried (the input may "
            "have caused it). Input: %s. Ray: %s",
            stage,
            input_digests(study),
            str(e).splitlines()[-1][:300] if str(e) else type(e).__name__,
        )
        return ApiError(
            502,
            "replica_crashed",
            f"the server's worker stopped while handling this request's {describe_input(study)}; it "
            "was not retried, in case this input caused it. Check these files; other requests are "
            "not affected",
        )

    async def bounded(self, coro: Any, asked_timeout: str | None = None, started: float | None = None) -> Any:
        """Await ``coro`` within what is left of the request timeout since ``started`` (the
        request's arrival; the body's upload counts), or the client's shorter
        ``X-Request-Timeout``. On timeout ``coro`` is cancelled, and with it its calls.

        Raises:
            ApiError: 408 when it takes longer; 422 for a malformed header value.
        """
        timeout = self.limits.request_timeout_s
        if started is not None:
            timeout -= time.monotonic() - started
        if asked_timeout is not None:
            try:
                asked = float(asked_timeout)
            except ValueError:
                asked = math.nan
            if not (math.isfinite(asked) and asked > 0):
                coro.close()
                shown = asked_timeout if len(asked_timeout) <= 40 else asked_timeout[:37] + "..."
                raise ApiError(
                    422,
                    "invalid_header",
                    f"X-Request-Timeout must be a positive number of seconds, got {shown!r}",
                )
            timeout = min(timeout, asked)
        try:
            return await asyncio.wait_for(coro, max(timeout, 0.0))
        except asyncio.TimeoutError:
            budget = (
                self.limits.request_timeout_s
                if asked_timeout is None
                else min(asked, self.limits.request_timeout_s)
            )
            raise ApiError(408, "request_timeout", f"the request took longer than {budget:g} s") from None

    async def ready(self) -> list[str]:
        """The deployments that did not answer within 5 s (empty: all are ready)."""
        sent = {n: h.ready.remote() for n, h in self.handles.items()}

        async def one(resp: Any) -> Any:
            try:
                return await asyncio.wait_for(resp, 5.0)
            except Exception as e:
                with contextlib.suppress(Exception):  # cancel may raise the replica's death again
                    resp.cancel()
                return e

        got = await asyncio.gather(*(one(r) for r in sent.values()))
        return [n for n, g in zip(sent, got, strict=True) if isinstance(g, BaseException)]

    # ------------------------------------------------------------------------------- work
    async def interpret(self, study: Study, previews: bool = False, loops: bool = False) -> dict[str, Any]:
        """The study's ``StudyResult`` JSON (plus ``previews`` and ``loops`` when asked for)."""
        pre_resp, pre = await self.call(self.pre.load, study, previews, loops, study=study)
        if pre["clips"].shape[0] == 0:
            no_views = np.zeros((0, len(VIEWS)), np.float32)
            _, result = await self.call(self.rai.assemble, None, None, no_views, pre["files"], study=study)
        else:

            def chain(remote: Callable[..., Any]) -> Any:
                # Each deployment gets the previous one's response as it is (Serve hands the result
                # on through the object store): this replica awaits only the report, not the
                # embeddings, view probabilities and section weights on the way.
                probs = remote(self.views.classify, pre_resp)
                encoded = remote(self.enc.encode, pre_resp)  # embeddings, then the heads' logits
                attended = remote(self.att.attend, encoded, probs)
                return remote(self.rai.report, attended, probs, pre["files"], encoded)

            _, result = await self.retrying(chain, study)
        if previews:
            result["previews"] = pre["previews"]
        if loops:
            result["loops"] = pre["loops"]
        return result

    async def interpret_dicomweb(self, study_uid: str, fmt: str, store: bool) -> tuple[Any, str]:
        """Study ``study_uid`` of the configured archive through the graph, as ``(content, media
        type)``: the result JSON, or its SR / PDF / FHIR Bundle; with ``store`` the SR and PDF go
        back to the archive first. The archive's address never reaches the client (it is the
        server's); what went wrong does, in words."""
        from echoprime.hospital.dicomweb import DicomwebError, StudyNotFound

        if not self.args.dicomweb_url:
            raise ApiError(404, "no_archive", "this server has no DICOMweb archive (args.dicomweb_url)")
        try:
            instances = await asyncio.to_thread(self._fetch_study, study_uid)
        except StudyNotFound:
            raise ApiError(404, "study_not_found", f"the archive holds no study {study_uid}") from None
        except DicomwebError as e:
            log.warning("echoprime serve: DICOMweb: %s", e)
            status = f" (HTTP {e.status})" if e.status else ""
            raise ApiError(
                502, "archive_error", f"the DICOMweb archive failed{status}; see the server log"
            ) from None
        study = [(i.name, i.data) for i in instances]
        result = await self.interpret(study)
        if result.get("status") != "ok":
            raise ApiError(
                422,
                "no_usable_video",
                f"study {study_uid} holds no usable echo video: "
                + "; ".join(f"{f['path']}: {f['reason']}" for f in result.get("files", [])[:5]),
            )
        if fmt == "json" and not store:
            return result, "application/json"
        headers = {i.name: i.header for i in instances if i.header is not None}
        data = {i.name: i.data for i in instances}
        out = await asyncio.to_thread(self._hospital_outputs, result, headers, data, fmt, store)
        del data, study, instances
        if store:
            try:
                await asyncio.to_thread(
                    self._archive().store, [d for d in (out.sr, out.pdf_dicom) if d is not None]
                )
            except DicomwebError as e:
                log.warning("echoprime serve: DICOMweb store: %s", e)
                raise ApiError(
                    502, "archive_error", "the DICOMweb archive refused the SR/PDF; see the server log"
                ) from None
        if fmt == "json":
            return result | {
                "stored": {"sr": str(out.sr.SOPInstanceUID), "pdf": str(out.pdf_dicom.SOPInstanceUID)}
            }, "application/json"
        if fmt == "sr":
            from echoprime.hospital.dicomweb import part10_bytes

            return part10_bytes(out.sr), "application/dicom"
        if fmt == "pdf":
            return out.pdf, "application/pdf"
        return out.fhir, "application/fhir+json"

    def _archive(self) -> Any:
        from echoprime.hospital.dicomweb import Archive

        if getattr(self, "_dicomweb", None) is None:
            self._dicomweb = Archive(str(self.args.dicomweb_url))
        return self._dicomweb

    def _fetch_study(self, study_uid: str) -> list[Any]:
        """The study's instances, within the upload limits (a study is an upload by other means)."""
        out, total = [], 0
        for inst in self._archive().iter_instances(study_uid):
            total += len(inst.data)
            if len(out) >= self.limits.max_files or total > self.limits.max_upload_bytes:
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"study {study_uid} is larger than this server takes ({self.limits.max_files} files, "
                    f"{self.limits.max_upload_bytes // 2**20} MB)",
                )
            out.append(inst)
        return out

    def _hospital_outputs(
        self, result: dict[str, Any], headers: dict[str, Any], data: dict[str, bytes], fmt: str, store: bool
    ) -> Any:
        from echoprime.hospital.outputs import hospital_outputs, key_frames
        from echoprime.hospital.sr import Algorithm, SRError

        b = self.model["bundle"]
        from echoprime import __version__

        alg = Algorithm("echoprime", __version__, b["sha256"], b["name"])
        pdf = fmt == "pdf" or store
        try:
            return hospital_outputs(
                result,
                headers,
                alg,
                sr=fmt == "sr" or store,
                pdf=pdf,
                fhir=fmt == "fhir",
                frames=key_frames(result, data.__getitem__) if pdf else None,
            )
        except SRError as e:
            raise ApiError(422, "not_dicom", str(e)) from None

    async def embed_videos(self, files: list[tuple[str, bytes]]) -> dict[str, Any]:
        """Each usable video's embedding and view, plus every file's status."""
        pre_resp, pre = await self.call(self.pre.load, files, False, study=files)
        reports = [asdict(f) for f in pre["files"]]
        if pre["clips"].shape[0] == 0:
            return {"files": reports, "videos": []}
        _, (emb, probs) = await self.retrying(
            lambda remote: asyncio.gather(
                remote(self.enc.embed, pre_resp), remote(self.views.classify, pre_resp)
            ),
            files,
        )
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
