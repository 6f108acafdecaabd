"""The HTTP API (FastAPI): routes, security schemes and JSON errors, over an :class:`Ingress`.

Every route but ``/healthz``, ``/readyz``, the viewer (``/``, ``/static/*``) and the API's own
description (``/openapi.json``) needs the API key, checked before the body is read. Before any
route, :class:`echoprime.api.security.SecurityMiddleware` checks the Host (and a browser's
Origin on ``/v1/...``) and adds the security headers to every answer. A route with a body takes
one of the replica's upload slots before reading it (503 ``busy`` when none is free) and reads
it within the body timeouts (408 ``body_timeout``). Errors are ``{"code", "reason"}`` JSON
(:mod:`echoprime.api.errors`); each route's OpenAPI description is in :mod:`echoprime.api.openapi`.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from echoprime import __version__
from echoprime.api import errors, openapi, schemas
from echoprime.api.archive import ATTACHMENTS, format_of
from echoprime.api.errors import ApiError
from echoprime.api.security import HostPolicy, SecurityMiddleware
from echoprime.api.uploads import read_files, read_model, read_study

if TYPE_CHECKING:
    from serve.ingress import Ingress

STATIC = Path(__file__).resolve().parent / "static"
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def presented_key(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> str | None:
    """The key the request presents (``X-API-Key`` first, then a bearer token)."""
    return header or (bearer.credentials if bearer else None)


Key = Annotated[str | None, Depends(presented_key)]


def create_api(ing: Ingress) -> FastAPI:
    """The FastAPI app of one ingress replica."""
    api = FastAPI(version=__version__, **openapi.API)
    open_without_key = ing.auth.disabled and not ing.args.allow_no_auth_off_loopback
    policy = HostPolicy(ing.args.host_allow_list(), ing.args.allowed_origins, open_without_key)
    api.add_middleware(SecurityMiddleware, policy=policy)
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers())

    @api.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(errors.internal_error(request.method, request.url.path, exc), status_code=500)

    @api.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(errors.validation_error(exc.errors()), status_code=422)

    @api.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(errors.http_error(exc.status_code, exc.detail), status_code=exc.status_code)

    async def guarded(key: str | None, request: Request, work: Any, upload: bool = True) -> Any:
        """Check the key, take an upload slot, and run ``work()`` (which reads the body and
        returns the coroutine to await) within the request's time budget."""
        started = time.monotonic()
        ing.auth.verify(key)
        async with ing.uploads.slot() if upload else contextlib.nullcontext():
            return await ing.bounded(await work(), request.headers.get("x-request-timeout"), started)

    @api.get("/", include_in_schema=False)
    async def viewer() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @api.get("/healthz", summary="liveness: the ingress answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", **openapi.READYZ)
    async def readyz() -> JSONResponse:
        if waiting := await ing.ready():
            return JSONResponse({"code": "not_ready", "reason": f"waiting for {waiting}"}, status_code=503)
        return JSONResponse({"status": "ready", "bundle": ing.model["bundle"]})

    @api.get("/v1/model", **openapi.MODEL)
    async def model(key: Key) -> dict[str, Any]:
        ing.auth.verify(key)
        return ing.model

    @api.post("/v1/interpret", **openapi.INTERPRET)
    async def interpret(
        key: Key, request: Request, previews: bool = False, loops: bool = False
    ) -> JSONResponse:
        async def work() -> Any:
            return ing.interpret(await read_study(request, ing.limits), previews, loops)

        return JSONResponse(await guarded(key, request, work))

    @api.post("/v1/interpret/dicomweb", **openapi.INTERPRET_DICOMWEB)
    async def interpret_dicomweb(key: Key, request: Request) -> Response:
        started = time.monotonic()
        ing.auth.verify(key)
        body = await read_model(request, schemas.InterpretDicomweb, ing.limits)
        fmt = body.format or format_of(request.headers.get("accept", ""))
        async with ing.uploads.slot():
            timeout = request.headers.get("x-request-timeout")
            content, media = await ing.bounded(
                ing.interpret_dicomweb(body.study_uid, fmt, body.store), timeout, started
            )
        if media in ("application/json", "application/fhir+json"):
            return JSONResponse(content, media_type=media)
        disposition = f'attachment; filename="{ATTACHMENTS[media]}"'
        return Response(content, media_type=media, headers={"Content-Disposition": disposition})

    @api.post("/v1/embed/video", **openapi.EMBED_VIDEO)
    async def embed_video(key: Key, request: Request) -> dict[str, Any]:
        async def work() -> Any:
            return ing.embed_videos(await read_files(request, ing.limits))

        return await guarded(key, request, work)

    @api.post("/v1/embed/text", **openapi.EMBED_TEXT)
    async def embed_text(key: Key, request: Request) -> dict[str, Any]:
        async def work() -> Any:
            return ing.embed_text((await read_model(request, schemas.EmbedTextRequest, ing.limits)).reports)

        return await guarded(key, request, work)

    @api.post("/v1/search/reports", **openapi.SEARCH_REPORTS)
    async def search_reports(key: Key, request: Request) -> dict[str, Any]:
        async def work() -> Any:
            body = await read_model(request, schemas.SearchRequest, ing.limits)
            return ing.search(body.text if body.text is not None else body.embedding, body.k)

        return await guarded(key, request, work)

    @api.get("/v1/examples/{index}", **openapi.EXAMPLE)
    async def example(key: Key, index: int, request: Request) -> dict[str, Any]:
        async def work() -> Any:
            return ing.example(index)

        return await guarded(key, request, work, upload=False)

    return api
