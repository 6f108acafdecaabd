"""Property-based tests of the request models and the JSON body path (hypothesis).

Whatever JSON a client sends, validating it against a request model raises nothing but a
``pydantic.ValidationError``, and the route's whole path (bytes -> JSON -> model) ends in a
valid model or an :class:`ApiError` with a 4xx status whose reason names a field or the body.
"""

from __future__ import annotations

import json
import math
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from echoprime.api.errors import ApiError, describe_errors
from echoprime.api.schemas import EmbedTextRequest, InterpretByUri, SearchRequest, s3_uri_problem
from echoprime.api.uploads import Limits, parse_json, parse_uri_list

MODELS: list[type[BaseModel]] = [InterpretByUri, EmbedTextRequest, SearchRequest]
LIMITS = Limits(max_upload_bytes=1 << 20, max_files=8, max_frames_per_file=64, request_timeout_s=5)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**30, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["s3://", "s3:///x", "s3://bucket//double", "s3://studies/a.dcm", "/etc/passwd"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=6)
    ),
    max_leaves=40,
)
# Bodies shaped like the real ones, so that validation gets past the top level.
KEYS = ["files", "reports", "text", "embedding", "k", "extra"]
shaped = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=4)


def _validate(model: type[BaseModel], value: object) -> None:
    try:
        model.model_validate(value)
    except ValidationError as e:
        reason = describe_errors(e.errors())
        assert reason and all(": " in part for part in reason.split("; "))


@FUZZ
@given(value=st.one_of(json_values, shaped))
def test_any_json_value_validates_or_raises_only_a_validation_error(value):
    for model in MODELS:
        _validate(model, value)


def _route(model: type[BaseModel], body: bytes) -> None:
    """What a JSON route does with a body (echoprime.api.uploads.read_model / read_study)."""
    try:
        payload = parse_json(body)
        if model is InterpretByUri:
            parse_uri_list(payload, LIMITS)
        else:
            try:
                model.model_validate(payload)
            except ValidationError as e:
                raise ApiError(422, "invalid_request", describe_errors(e.errors())) from None
    except ApiError as e:
        assert 400 <= e.status < 500 and e.code and e.reason


@FUZZ
@given(value=st.one_of(json_values, shaped), model=st.sampled_from(MODELS))
def test_any_json_body_is_a_model_or_a_4xx(value, model):
    body = json.dumps(value, allow_nan=True).encode()  # NaN and Infinity too, as a client may send
    _route(model, body)


@FUZZ
@given(body=st.binary(max_size=200), model=st.sampled_from(MODELS))
def test_any_bytes_are_a_model_or_a_4xx(body, model):
    _route(model, body)


@FUZZ
@given(depth=st.integers(min_value=1, max_value=60_000), opener=st.sampled_from(["[", '{"a":']))
def test_nesting_of_any_depth_is_a_model_or_a_4xx(depth, opener):
    closer = "]" if opener == "[" else "}"
    body = (opener * depth + "1" + closer * depth).encode()
    _route(SearchRequest, body)


uri_text = st.text(alphabet=string.ascii_letters + string.digits + "/.-_:% \x00\n", max_size=60)


@FUZZ
@given(uri=st.one_of(uri_text, uri_text.map(lambda t: "s3://" + t)))
def test_an_accepted_uri_names_a_bucket_and_a_clean_key(uri):
    problem = s3_uri_problem(uri)
    try:
        InterpretByUri.model_validate({"files": [uri]})
    except ValidationError as e:
        assert problem is not None and e.errors()[0]["type"] == "invalid_uri"
        return
    assert problem is None
    bucket, _, key = uri[len("s3://") :].partition("/")
    assert 3 <= len(bucket) <= 63 and key and "//" not in uri[len("s3://") :]
    assert not any(part in ("", ".", "..") for part in key.split("/"))


@FUZZ
@given(k=st.one_of(st.integers(), st.floats(), st.text(max_size=5), st.booleans(), st.none()))
def test_k_is_an_integer_from_1_to_100_and_nothing_else(k):
    try:
        got = SearchRequest.model_validate({"text": "a", "k": k}).k
    except ValidationError as e:
        assert e.errors()[0]["loc"] == ("k",)
        return
    assert type(k) is int and 1 <= got <= 100 and got == k


@FUZZ
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=20))
def test_an_accepted_embedding_is_finite(values):
    try:
        got = SearchRequest.model_validate({"embedding": values}).embedding
    except ValidationError as e:
        assert all(err["loc"][0] == "embedding" for err in e.errors())
        return
    assert got is not None and all(math.isfinite(v) for v in got)


@pytest.mark.parametrize("model", MODELS)
def test_the_models_refuse_unknown_keys(model):
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        model.model_validate({"files": ["s3://studies/a.dcm"], "reports": ["r"], "text": "t", "zzz": 1})
