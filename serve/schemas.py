"""Request and response models of the HTTP API (they make the OpenAPI document)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InterpretByUri(_Strict):
    """A study held in an object store."""

    files: list[str] = Field(min_length=1, description="the study's files as s3:// URIs")


class EmbedTextRequest(_Strict):
    reports: list[str] = Field(min_length=1, max_length=64, description="report texts")


class SearchRequest(_Strict):
    """Exactly one of ``text`` and ``embedding``."""

    text: str | None = Field(default=None, min_length=1, max_length=20_000)
    embedding: list[float] | None = Field(default=None, description="a vector in the joint space")
    k: int = Field(default=10, ge=1, le=100, description="how many reports")

    @model_validator(mode="after")
    def _one_query(self) -> SearchRequest:
        if (self.text is None) == (self.embedding is None):
            raise ValueError("give exactly one of 'text' and 'embedding'")
        return self


class Error(BaseModel):
    code: str = Field(description="stable identifier, e.g. payload_too_large")
    reason: str = Field(description="what was wrong, naming the file or field")


class FileStatus(BaseModel):
    path: str = Field(description="the uploaded file's name (or its s3:// URI)")
    status: Literal["used", "skipped"]
    reason: str = Field(description="why it was skipped; empty when used")
    n_frames: int
    fps: float | None
    code: str | None = Field(description="the reader's error code when skipped (not_a_video, ...)")


class Video(BaseModel):
    file: str
    view: str
    confidence: float


class ReportSection(BaseModel):
    section: str
    text: str
    source_study: str | None = Field(description="the bank study this section's text came from")
    similarity: float | None


class Metric(BaseModel):
    value: float | None = Field(description="in the unit for regressions; the positive fraction for binaries")
    probability: float | None
    decision: bool | None = Field(description="value compared with the threshold (binaries)")
    spread: float | None = Field(description="standard deviation over the neighbours' labels")
    n_labelled: int
    kind: str
    unit: str
    threshold: float | None
    threshold_source: str | None = Field(
        None,
        description="where the threshold came from: youden (fitted on validation studies), release "
        "(the published roc_thresholds.csv), default (0.5: nothing to fit or no row); given: a plain mapping passed in code",
    )


class Evidence(BaseModel):
    video: int = Field(description="index into videos")
    file: str
    weight: float


class Neighbour(BaseModel):
    study_id: str
    similarity: float


class StudyResultModel(BaseModel):
    """``StudyResult.to_dict()`` of echoprime.interpret (plus ``previews`` when asked for)."""

    status: Literal["ok", "no_usable_video"]
    files: list[FileStatus]
    videos: list[Video]
    report: list[ReportSection]
    report_text: str
    metrics: dict[str, Metric]
    evidence: dict[str, list[Evidence]] = Field(description="per report section, videos by weight")
    neighbours: dict[str, list[Neighbour]]
    previews: list[str] | None = Field(
        default=None, description="with ?previews=true: each video's first frame as a PNG data URL"
    )


class VideoEmbedding(Video):
    embedding: list[float]


class EmbedVideoResponse(BaseModel):
    files: list[FileStatus]
    videos: list[VideoEmbedding]


class EmbedTextResponse(BaseModel):
    embeddings: list[list[float]]
    dim: int


class SearchHit(BaseModel):
    study_id: str
    similarity: float
    report: str


class SearchResponse(BaseModel):
    results: list[SearchHit]
