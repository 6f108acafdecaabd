"""Request and response models of the HTTP API (they make the OpenAPI document).

The request models are strict (no ``"5"`` for a number, no ``true`` for an integer), refuse
unknown keys and non-finite numbers, and bound every list and string: whatever JSON a client
sends, validating it raises nothing but a :class:`pydantic.ValidationError`, whose errors name
the field and what it expects (tests/serve/test_schemas_fuzz.py checks this with hypothesis).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

MAX_URIS = 10_000
"""Hard bound on a URI list, whatever ``max_files`` says (the limit is checked before this)."""
MAX_EMBEDDING = 8192
"""Widest embedding accepted (the release's joint space is 512)."""
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def s3_uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as ``s3://bucket/key`` (``None``: nothing).

    Checked here, not left to the S3 client, so that a malformed URI is the client's 422 and
    never reaches the object store: a bucket name of 3-63 lowercase letters, digits, dots and
    hyphens; a key of at most 1024 bytes without empty, ``.`` or ``..`` segments or control
    characters.
    """
    if not uri.startswith("s3://"):
        return "only s3://bucket/key URIs are accepted (never a server path)"
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        return "the bucket must be 3-63 lowercase letters, digits, dots and hyphens"
    if not key:
        return "the URI names no object key (expected s3://bucket/key)"
    if len(key.encode("utf-8", "surrogatepass")) > 1024:
        return "the object key is longer than 1024 bytes"
    if _CONTROL.search(key):
        return "the object key holds control characters"
    if any(part in ("", ".", "..") for part in key.split("/")):
        return "the object key has an empty, '.' or '..' segment (e.g. '//' or a trailing '/')"
    return None


def _s3_uri(uri: str) -> str:
    if problem := s3_uri_problem(uri):
        shown = uri if len(uri) <= 80 else uri[:77] + "..."
        raise PydanticCustomError("invalid_uri", "{problem}, got '{uri}'", {"problem": problem, "uri": shown})
    return uri


S3Uri = Annotated[str, AfterValidator(_s3_uri)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class InterpretByUri(_Strict):
    """A study held in an object store."""

    files: list[S3Uri] = Field(
        min_length=1, max_length=MAX_URIS, description="the study's files as s3://bucket/key URIs"
    )


class InterpretDicomweb(_Strict):
    """A study of the server's DICOMweb archive, by its StudyInstanceUID."""

    study_uid: str = Field(
        min_length=1, max_length=64, pattern=r"^[0-9]+(\.[0-9]+)*$", description="the StudyInstanceUID"
    )
    format: Literal["json", "sr", "pdf", "fhir"] | None = Field(
        default=None,
        description="json (the result), sr (DICOM SR), pdf, fhir (FHIR R4 Bundle); default: from the "
        "Accept header (application/dicom, application/pdf, application/fhir+json), else json",
    )
    store: bool = Field(
        default=False, description="also send the SR and the PDF back to the archive (STOW-RS)"
    )


class EmbedTextRequest(_Strict):
    reports: list[str] = Field(min_length=1, max_length=64, description="report texts")


class SearchRequest(_Strict):
    """Exactly one of ``text`` and ``embedding``."""

    text: str | None = Field(default=None, min_length=1, max_length=20_000)
    embedding: list[float] | None = Field(
        default=None, min_length=1, max_length=MAX_EMBEDDING, description="a vector in the joint space"
    )
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
    source_study: str | None = Field(
        description="the bank study this section's text came from, by its keyed pseudonym"
    )
    similarity: float | None


class Grade(BaseModel):
    """A graded finding (issue 23): the neighbours' vote over the severity grades their reports
    state, the predicted grade, and whether the generated report text states the same grade."""

    scale: list[str] = Field(
        description="the grades of this finding, mildest first (e.g. none, trace, mild, moderate, severe)"
    )
    positive_from: int = Field(
        description="index into scale of the first grade at which the binary finding is positive "
        "(the release's 'moderate or worse')"
    )
    distribution: list[float | None] = Field(
        description="the neighbours' vote share per grade, one per entry of scale, summing to 1; "
        "all null when no neighbour's report states a grade (n_graded 0)"
    )
    n_graded: int = Field(description="how many neighbours' reports state a grade of this finding")
    grade: int | None = Field(
        description="the predicted grade, an index into scale; always on the same side of "
        "positive_from as the binary decision; null when no neighbour is graded"
    )
    label: str | None = Field(description="the predicted grade's name (scale[grade])")
    report_grade: int | None = Field(
        description="the grade the generated report text of this finding's section states (index into "
        "scale); null when the text states none"
    )
    report_label: str | None = Field(description="the name of report_grade")
    agrees_with_report: bool | None = Field(
        description="false: the predicted grade and the report text disagree (the text is the "
        "retrieved text, left as it is); null when either is missing"
    )


class Interval(BaseModel):
    """An interval around a measurement, e.g. EF 35 % (30-41)."""

    low: float | None = Field(description="lower end, in the measurement's unit")
    high: float | None = Field(description="upper end, in the measurement's unit")
    level: float = Field(description="nominal coverage, e.g. 0.8 for an 80 % interval")
    method: str = Field(description="how it was made: conformal (fitted on the validation split)")


class Metric(BaseModel):
    """One finding of a result. The keys added by issue 23 (calibrated_probability, calibration,
    grade, interval) default to null, so a result of an older bundle or of a converted published
    release, which has none of them, validates as it is."""

    value: float | None = Field(description="in the unit for regressions; the positive fraction for binaries")
    probability: float | None = Field(
        description="binaries: the raw neighbour vote share (the release's probability)"
    )
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
    calibrated_probability: float | None = Field(
        None,
        description="binaries: probability after the bundle's calibration map (fitted on the validation "
        "split); null when the bundle has no map for this finding (e.g. a converted release). The "
        "decision stays the raw probability compared with the threshold",
    )
    calibration: Literal["identity", "platt", "isotonic"] | None = Field(
        None, description="which calibration map made calibrated_probability (null: none)"
    )
    grade: Grade | None = Field(
        None,
        description="graded binaries (regurgitation, stenosis, dilation, RV function, effusion): the "
        "severity grade; null for other findings or when the bank holds no grades",
    )
    interval: Interval | None = Field(
        None,
        description="measurements (EF, PASP, heart rate): an interval around value; null when the "
        "bundle has none",
    )


class Evidence(BaseModel):
    video: int = Field(description="index into videos")
    file: str
    weight: float


class Neighbour(BaseModel):
    study_id: str
    similarity: float


class Loop(BaseModel):
    """One video as a loop (echoprime/api/previews.py::clip_loop): a WebP filmstrip of its frames."""

    image: str = Field(description="data:image/webp;base64 URL: the frames in a grid, row by row")
    frames: int = Field(description="frames in the loop (the clip's frames from its file)")
    columns: int = Field(description="frames per row of the grid")
    size: int = Field(description="side of one frame in pixels")
    fps: float | None = Field(description="real-time frame rate (the file's over the stride); null: unknown")
    source_fps: float | None = Field(description="the file's frame rate")
    stride: int = Field(description="every stride-th frame of the file is in the loop")
    lossless: bool = Field(description="whether the pixels are exactly those the model saw")
    bytes: int = Field(description="the WebP's size (at most 65536)")


class VideoTaskAnswer(BaseModel):
    file: str
    view: str = Field(description="the head's most likely view of this video")
    probabilities: dict[str, float]


class TaskAnswer(BaseModel):
    """A fine-tuned head's answer (``echoprime finetune``; echoprime.training.heads)."""

    task: str = Field(
        description="the task as it was fine-tuned, e.g. ef, aortic_stenosis, mitral_regurgitation:grade, views"
    )
    kind: Literal["regression", "binary", "graded", "views"]
    target: str = Field(description="the finding it predicts (taxonomy name), or view")
    value: float | None = Field(None, description="regressions: the value in unit")
    unit: str | None = None
    probability: float | None = Field(None, description="binaries: the head's probability of the finding")
    grade: str | None = Field(None, description="graded tasks: the most likely grade")
    probabilities: dict[str, float] | None = Field(None, description="graded tasks: each grade's probability")
    pooled_by: str | None = Field(
        None, description="the report section whose attention weights pooled the videos' outputs"
    )
    videos: list[VideoTaskAnswer] | None = Field(None, description="views: one answer per video")


class StudyResultModel(BaseModel):
    """``StudyResult.to_dict()`` of echoprime.inference (plus ``previews`` and ``loops`` when asked for)."""

    status: Literal["ok", "no_usable_video"]
    files: list[FileStatus]
    videos: list[Video]
    report: list[ReportSection]
    report_text: str
    metrics: dict[str, Metric] = Field(
        description="per finding: the release's 21 phenotypes and measurements beyond them (heart_rate)"
    )
    evidence: dict[str, list[Evidence]] = Field(description="per report section, videos by weight")
    neighbours: dict[str, list[Neighbour]]
    tasks: dict[str, TaskAnswer] = Field(
        default_factory=dict, description="the bundle's fine-tuned heads' answers by task (empty: no heads)"
    )
    previews: list[str] | None = Field(
        default=None, description="with ?previews=true: each video's first frame as a PNG data URL"
    )
    loops: list[Loop] | None = Field(
        default=None, description="with ?loops=true: each video as a moving loop of the frames the model saw"
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
