"""The HTTP API (FastAPI): routes, security schemes and JSON errors, over an :class:`Ingress`.

Every route but ``/healthz``, ``/readyz``, the viewer (``/``, ``/static/*``) and the API's own
description (``/openapi.json``) needs the API key, checked before the body is read. Before any
route, :mod:`echoprime.api.security` checks the Host (and a browser's Origin on ``/v1/...``) and adds the
security headers to every answer. There is no ``/docs`` page: FastAPI's loads its script from a
CDN, which the Content-Security-Policy (nothing from outside the server) refuses.
A route with a body takes one of the replica's upload slots before reading it (503 ``busy``
when none is free) and reads it within the body timeouts (408 ``body_timeout``). Errors are
``{"code", "reason"}`` JSON whose reason is written for the client; an error of the server's own
is logged with its traceback and answered 500 ``internal_error`` without one.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from echoprime import __version__
from echoprime.api import schemas
from echoprime.api.errors import ApiError
from echoprime.api.security import HostPolicy, SecurityMiddleware
from echoprime.api.uploads import describe_errors, parse_uri_list, read_files, read_json

if TYPE_CHECKING:
    from serve.ingress import Ingress

STATIC = Path(__file__).resolve().parent / "static"
JSON_LIMIT = 4 << 20  # JSON bodies (URIs, texts, an embedding) are small
log = logging.getLogger("ray.serve")
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all ``{"code", "reason"}``)."""
    return {s: {"model": schemas.Error} for s in sorted({401, 500, 502, 503, *statuses})}


_FILES_SCHEMA = {
    "type": "object",
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
    "required": ["files"],
}


def presented_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> str | None:
    """The key the request presents (``X-API-Key`` first, then a bearer token)."""
    return header or (bearer.credentials if bearer else None)


Key = Annotated[str | None, Depends(presented_key)]


def _body(content: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": content}}


def _json(model: type[BaseModel]) -> dict[str, Any]:
    return _body({"application/json": {"schema": model.model_json_schema()}})


def _describe(errors: Any) -> tuple[str, list[dict[str, Any]]]:
    errs = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in list(errors)[:20]]
    return describe_errors(errors), errs


async def _validated(ing: Ingress, model: type[BaseModel], request: Request) -> Any:
    try:
        return model.model_validate(await read_json(request, JSON_LIMIT, ing.limits))
    except ValidationError as e:
        raise ApiError(422, "invalid_request", describe_errors(e.errors())) from None


async def _study(ing: Ingress, request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await read_files(request, ing.limits)
    if kind == "application/json":
        return parse_uri_list(await read_json(request, JSON_LIMIT, ing.limits), ing.limits)
    shown = kind if len(kind) <= 60 else kind[:57] + "..."
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send multipart/form-data (files) or application/json (s3:// URIs), not {shown or 'no content type'!r}",
    )


_ACCEPT = {"application/dicom": "sr", "application/pdf": "pdf", "application/fhir+json": "fhir"}


def _format_of(accept: str) -> str:
    """The format an ``Accept`` header asks for (the first type it lists that we make)."""
    for part in accept.split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in _ACCEPT:
            return _ACCEPT[kind]
    return "json"


def create_api(ing: Ingress) -> FastAPI:
    """The FastAPI app of one ingress replica."""
    api = FastAPI(
        title="echoprime",
        version=__version__,
        description=(
            "Echocardiography study interpretation (EchoPrime): views, a report by section, metrics "
            "and the evidence behind them. Send the API key as `Authorization: Bearer <key>` or "
            "`X-API-Key`."
        ),
        docs_url=None,
        redoc_url=None,
    )
    open_without_key = ing.auth.disabled and not ing.args.allow_no_auth_off_loopback
    policy = HostPolicy(ing.args.host_allow_list(), ing.args.allowed_origins, open_without_key)
    api.add_middleware(SecurityMiddleware, policy=policy)
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        # A bug of ours, never the client's input: the traceback goes to the log under an id the
        # client can quote; the answer carries neither it nor any exception text.
        incident = uuid.uuid4().hex[:12]
        log.error(
            "echoprime serve: internal error %s on %s %s",
            incident,
            request.method,
            request.url.path,
            exc_info=exc,
        )
        return JSONResponse(
            {"code": "internal_error", "reason": f"the server failed on this request (incident {incident})"},
            status_code=500,
        )

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        reason, errs = _describe(exc.errors())
        return JSONResponse({"code": "invalid_request", "reason": reason, "errors": errs}, status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, f"http_{exc.status_code}")
        return JSONResponse({"code": code, "reason": str(exc.detail)}, status_code=exc.status_code)

    @api.get("/", include_in_schema=False)
    async def viewer() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @api.get("/healthz", summary="liveness: the ingress answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get(
        "/readyz",
        summary="readiness: every deployment has loaded the bundle",
        responses={503: {"model": schemas.Error}},
    )
    async def readyz() -> JSONResponse:
        if waiting := await ing.ready():
            return JSONResponse({"code": "not_ready", "reason": f"waiting for {waiting}"}, status_code=503)
        return JSONResponse({"status": "ready", "bundle": ing.model["bundle"]})

    @api.get(
        "/v1/model",
        summary="the bundle: name, version, content hash; versions, label sets, preprocessing",
        responses=_errors(),
    )
    async def model(key: Key) -> dict[str, Any]:
        ing.auth.verify(key)
        return ing.model

    @api.post(
        "/v1/interpret",
        summary="interpret a study: views, report by section, metrics, evidence, neighbours",
        response_model=None,
        responses={200: {"model": schemas.StudyResultModel}, **_errors(408, 413, 415, 422)},
        openapi_extra=_body(
            {
                "multipart/form-data": {"schema": _FILES_SCHEMA},
                "application/json": {"schema": schemas.InterpretByUri.model_json_schema()},
            }
        ),
    )
    async def interpret(
        key: Key, request: Request, previews: bool = False, loops: bool = False
    ) -> JSONResponse:
        """The study's DICOM / MP4 / AVI files as multipart parts named `files`, or
        `{"files": ["s3://bucket/key", ...]}`. A file that cannot be used is listed under `files`
        with the reason, and the rest is interpreted. `?previews=true` adds each video's first
        frame (PNG data URLs, in the order of `videos`); `?loops=true` adds each video as a
        moving loop of the frames the model saw (a WebP filmstrip of at most 64 KiB, its frame
        count, grid and frame rate, in the order of `videos`)."""
        started = time.monotonic()
        ing.auth.verify(key)
        async with ing.uploads.slot():
            study = await _study(ing, request)
            timeout = request.headers.get("x-request-timeout")
            return JSONResponse(await ing.bounded(ing.interpret(study, previews, loops), timeout, started))

    @api.post(
        "/v1/interpret/dicomweb",
        summary="interpret a study of the server's DICOMweb archive by UID; JSON, DICOM SR, PDF or FHIR",
        response_model=None,
        responses={200: {"model": schemas.StudyResultModel}, **_errors(404, 408, 413, 422, 502)},
        openapi_extra=_body({"application/json": {"schema": schemas.InterpretDicomweb.model_json_schema()}}),
    )
    async def interpret_dicomweb(key: Key, request: Request) -> Response:
        """`{"study_uid": "1.2.3...", "format": "json" | "sr" | "pdf" | "fhir", "store": false}`.
        Without `format`, the `Accept` header decides (`application/dicom`: the SR,
        `application/pdf`, `application/fhir+json`), else JSON. `store` sends the SR and PDF back
        to the archive (STOW-RS) before answering; JSON then names them under `stored`."""
        started = time.monotonic()
        ing.auth.verify(key)
        body = await _validated(ing, schemas.InterpretDicomweb, request)
        fmt = body.format or _format_of(request.headers.get("accept", ""))
        async with ing.uploads.slot():
            timeout = request.headers.get("x-request-timeout")
            content, media = await ing.bounded(
                ing.interpret_dicomweb(body.study_uid, fmt, body.store), timeout, started
            )
        if media in ("application/json", "application/fhir+json"):
            return JSONResponse(content, media_type=media)
        name = {"application/dicom": "sr.dcm", "application/pdf": "report.pdf"}[media]
        return Response(
            content, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'}
        )

    @api.post(
        "/v1/embed/video",
        summary="embed video files: a unit vector and the view of each",
        response_model=schemas.EmbedVideoResponse,
        responses=_errors(408, 413, 415, 422),
        openapi_extra=_body({"multipart/form-data": {"schema": _FILES_SCHEMA}}),
    )
    async def embed_video(key: Key, request: Request) -> dict[str, Any]:
        started = time.monotonic()
        ing.auth.verify(key)
        async with ing.uploads.slot():
            files = await read_files(request, ing.limits)
            timeout = request.headers.get("x-request-timeout")
            return await ing.bounded(ing.embed_videos(files), timeout, started)

    @api.post(
        "/v1/embed/text",
        summary="embed reports into the joint space (unit vectors)",
        response_model=schemas.EmbedTextResponse,
        responses=_errors(408, 413, 422, 501),
        openapi_extra=_json(schemas.EmbedTextRequest),
    )
    async def embed_text(key: Key, request: Request) -> dict[str, Any]:
        started = time.monotonic()
        ing.auth.verify(key)
        async with ing.uploads.slot():
            body = await _validated(ing, schemas.EmbedTextRequest, request)
            timeout = request.headers.get("x-request-timeout")
            return await ing.bounded(ing.embed_text(body.reports), timeout, started)

    @api.post(
        "/v1/search/reports",
        summary="the bank reports nearest a text or an embedding",
        response_model=schemas.SearchResponse,
        responses=_errors(408, 413, 422, 501),
        openapi_extra=_json(schemas.SearchRequest),
    )
    async def search_reports(key: Key, request: Request) -> dict[str, Any]:
        started = time.monotonic()
        ing.auth.verify(key)
        async with ing.uploads.slot():
            body = await _validated(ing, schemas.SearchRequest, request)
            query = body.text if body.text is not None else body.embedding
            timeout = request.headers.get("x-request-timeout")
            return await ing.bounded(ing.search(query, body.k), timeout, started)

    @api.get(
        "/v1/examples/{index}",
        summary="a synthetic example study's files, for the viewer",
        responses=_errors(404, 408),
    )
    async def example(key: Key, index: int, request: Request) -> dict[str, Any]:
        started = time.monotonic()
        ing.auth.verify(key)
        return await ing.bounded(ing.example(index), request.headers.get("x-request-timeout"), started)

    return api
