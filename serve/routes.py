"""The HTTP API (FastAPI): routes, security schemes and JSON errors, over an :class:`Ingress`.

Every route but ``/healthz``, ``/readyz``, the viewer (``/``, ``/static/*``) and the API's own
description (``/openapi.json``, ``/docs``) needs the API key, checked before the body is read.
Errors are ``{"code", "reason"}`` JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from echoprime import __version__
from serve import schemas
from serve.errors import ApiError
from serve.uploads import parse_uri_list, read_files, read_json

if TYPE_CHECKING:
    from serve.ingress import Ingress

STATIC = Path(__file__).resolve().parent / "static"
JSON_LIMIT = 4 << 20  # JSON bodies (URIs, texts, an embedding) are small
_bearer = HTTPBearer(auto_error=False, description="the API key as a bearer token")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the API key")


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all ``{"code", "reason"}``)."""
    return {s: {"model": schemas.Error} for s in sorted({401, 503, *statuses})}


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
    errs = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in errors]
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errs[:3]), errs


async def _validated(model: type[BaseModel], request: Request) -> Any:
    try:
        return model.model_validate(await read_json(request, JSON_LIMIT))
    except ValidationError as e:
        raise ApiError(422, "invalid_request", _describe(e.errors())[0]) from None


async def _study(ing: Ingress, request: Request) -> Any:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return await read_files(request, ing.limits)
    if kind == "application/json":
        return parse_uri_list(await read_json(request, JSON_LIMIT), ing.limits)
    raise ApiError(
        415,
        "unsupported_media_type",
        f"send multipart/form-data (files) or application/json (s3:// URIs), not {kind or 'no content type'!r}",
    )


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
    )
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    @api.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.body(), status_code=exc.status, headers=headers)

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
        return JSONResponse(
            {"status": "ready", "bundle_uri": ing.args.bundle_uri, "created": ing.model.get("created")}
        )

    @api.get(
        "/v1/model", summary="the bundle's manifest: versions, label sets, preprocessing", responses=_errors()
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
    async def interpret(key: Key, request: Request, previews: bool = False) -> JSONResponse:
        """The study's DICOM / MP4 / AVI files as multipart parts named `files`, or
        `{"files": ["s3://bucket/key", ...]}`. A file that cannot be used is listed under `files`
        with the reason, and the rest is interpreted. `?previews=true` adds each video's first
        frame (PNG data URLs, in the order of `videos`)."""
        ing.auth.verify(key)
        study = await _study(ing, request)
        timeout = request.headers.get("x-request-timeout")
        return JSONResponse(await ing.bounded(ing.interpret(study, previews), timeout))

    @api.post(
        "/v1/embed/video",
        summary="embed video files: a unit vector and the view of each",
        response_model=schemas.EmbedVideoResponse,
        responses=_errors(408, 413, 415, 422),
        openapi_extra=_body({"multipart/form-data": {"schema": _FILES_SCHEMA}}),
    )
    async def embed_video(key: Key, request: Request) -> dict[str, Any]:
        ing.auth.verify(key)
        files = await read_files(request, ing.limits)
        return await ing.bounded(ing.embed_videos(files), request.headers.get("x-request-timeout"))

    @api.post(
        "/v1/embed/text",
        summary="embed reports into the joint space (unit vectors)",
        response_model=schemas.EmbedTextResponse,
        responses=_errors(408, 413, 422, 501),
        openapi_extra=_json(schemas.EmbedTextRequest),
    )
    async def embed_text(key: Key, request: Request) -> dict[str, Any]:
        ing.auth.verify(key)
        body = await _validated(schemas.EmbedTextRequest, request)
        return await ing.bounded(ing.embed_text(body.reports), request.headers.get("x-request-timeout"))

    @api.post(
        "/v1/search/reports",
        summary="the bank reports nearest a text or an embedding",
        response_model=schemas.SearchResponse,
        responses=_errors(408, 413, 422, 501),
        openapi_extra=_json(schemas.SearchRequest),
    )
    async def search_reports(key: Key, request: Request) -> dict[str, Any]:
        ing.auth.verify(key)
        body = await _validated(schemas.SearchRequest, request)
        query = body.text if body.text is not None else body.embedding
        return await ing.bounded(ing.search(query, body.k), request.headers.get("x-request-timeout"))

    @api.get(
        "/v1/examples/{index}",
        summary="a synthetic example study's files, for the viewer",
        responses=_errors(404, 408),
    )
    async def example(key: Key, index: int, request: Request) -> dict[str, Any]:
        ing.auth.verify(key)
        return await ing.bounded(ing.example(index), request.headers.get("x-request-timeout"))

    return api
