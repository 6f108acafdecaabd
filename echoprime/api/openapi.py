"""How each route of the HTTP API describes itself in the OpenAPI document: summary, request
body, answers and errors. :mod:`serve.routes` passes these to FastAPI's route decorators, so
the description of the API lives beside its schemas, not in the Serve wiring."""

from __future__ import annotations

import inspect
from typing import Any

from pydantic import BaseModel

from echoprime.api import schemas

FILES_SCHEMA = {
    "type": "object",
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}},
    "required": ["files"],
}
"""A multipart body of the study's files, as parts named ``files``."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses (all ``{"code", "reason"}``)."""
    return {s: {"model": schemas.Error} for s in sorted({401, 500, 502, 503, *statuses})}


def body(content: dict[str, Any]) -> dict[str, Any]:
    """``openapi_extra`` for a required request body of these media types."""
    return {"requestBody": {"required": True, "content": content}}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    return body({"application/json": {"schema": model.model_json_schema()}})


READYZ: dict[str, Any] = {
    "summary": "readiness: every deployment has loaded the bundle",
    "responses": {503: {"model": schemas.Error}},
}
MODEL: dict[str, Any] = {
    "summary": "the bundle: name, version, content hash; versions, label sets, preprocessing",
    "responses": errors(),
}
INTERPRET: dict[str, Any] = {
    "summary": "interpret a study: views, report by section, metrics, evidence, neighbours",
    "description": inspect.cleandoc(
        """The study's DICOM / MP4 / AVI files as multipart parts named `files`, or
        `{"files": ["s3://bucket/key", ...]}`. A file that cannot be used is listed under `files`
        with the reason, and the rest is interpreted. `?previews=true` adds each video's first
        frame (PNG data URLs, in the order of `videos`); `?loops=true` adds each video as a
        moving loop of the frames the model saw (a WebP filmstrip of at most 64 KiB, its frame
        count, grid and frame rate, in the order of `videos`)."""
    ),
    "response_model": None,
    "responses": {200: {"model": schemas.StudyResultModel}, **errors(408, 413, 415, 422)},
    "openapi_extra": body(
        {
            "multipart/form-data": {"schema": FILES_SCHEMA},
            "application/json": {"schema": schemas.InterpretByUri.model_json_schema()},
        }
    ),
}
INTERPRET_DICOMWEB: dict[str, Any] = {
    "summary": "interpret a study of the server's DICOMweb archive by UID; JSON, DICOM SR, PDF or FHIR",
    "description": inspect.cleandoc(
        """`{"study_uid": "1.2.3...", "format": "json" | "sr" | "pdf" | "fhir", "store": false}`.
        Without `format`, the `Accept` header decides (`application/dicom`: the SR,
        `application/pdf`, `application/fhir+json`), else JSON. `store` sends the SR and PDF back
        to the archive (STOW-RS) before answering; JSON then names them under `stored`."""
    ),
    "response_model": None,
    "responses": {200: {"model": schemas.StudyResultModel}, **errors(404, 408, 413, 422, 502)},
    "openapi_extra": json_body(schemas.InterpretDicomweb),
}
EMBED_VIDEO: dict[str, Any] = {
    "summary": "embed video files: a unit vector and the view of each",
    "response_model": schemas.EmbedVideoResponse,
    "responses": errors(408, 413, 415, 422),
    "openapi_extra": body({"multipart/form-data": {"schema": FILES_SCHEMA}}),
}
EMBED_TEXT: dict[str, Any] = {
    "summary": "embed reports into the joint space (unit vectors)",
    "response_model": schemas.EmbedTextResponse,
    "responses": errors(408, 413, 422, 501),
    "openapi_extra": json_body(schemas.EmbedTextRequest),
}
SEARCH_REPORTS: dict[str, Any] = {
    "summary": "the bank reports nearest a text or an embedding",
    "response_model": schemas.SearchResponse,
    "responses": errors(408, 413, 422, 501),
    "openapi_extra": json_body(schemas.SearchRequest),
}
EXAMPLE: dict[str, Any] = {
    "summary": "a synthetic example study's files, for the viewer",
    "responses": errors(404, 408),
}
API: dict[str, Any] = {
    "title": "echoprime",
    "description": (
        "Echocardiography study interpretation (EchoPrime): views, a report by section, metrics "
        "and the evidence behind them. Send the API key as `Authorization: Bearer <key>` or "
        "`X-API-Key`."
    ),
    "docs_url": None,
    "redoc_url": None,
}
"""The app's own arguments (no ``/docs`` page: FastAPI's loads its script from a CDN, which the
Content-Security-Policy refuses)."""
