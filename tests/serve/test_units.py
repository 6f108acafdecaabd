"""The graph's pieces without Ray: API-key handling, request parsing, config reading, the CLI's
checks before it starts anything."""

from __future__ import annotations

import pytest

from echoprime.api.auth import ApiKeyAuth, AuthConfigError
from echoprime.api.errors import ApiError
from echoprime.api.uploads import Limits, clean_name, parse_uri_list

LIMITS = Limits(max_upload_bytes=1000, max_files=3, max_frames_per_file=10, request_timeout_s=5)


def _status(fn, *args) -> tuple[int, str]:
    with pytest.raises(ApiError) as e:
        fn(*args)
    return e.value.status, e.value.code


def test_key_from_the_environment_or_a_file_with_the_file_first(tmp_path):
    f = tmp_path / "key"
    f.write_text("  from-file \n")
    env = {"ECHOPRIME_API_KEY": "from-env", "ECHOPRIME_API_KEY_FILE": str(f)}
    ApiKeyAuth.from_env(environ=env).verify("from-file")
    assert _status(ApiKeyAuth.from_env(environ=env).verify, "from-env") == (401, "unauthorized")
    ApiKeyAuth.from_env(environ={"ECHOPRIME_API_KEY": "from-env"}).verify("from-env")
    ApiKeyAuth.from_env(environ={"MY_KEY": "k2"}, key_env="MY_KEY").verify("k2")
    ApiKeyAuth.from_env(key_file=str(f), environ={}).verify("from-file")


@pytest.mark.parametrize("presented", [None, "", "from-env ", "from-en", "from-envX", "FROM-ENV"])
def test_missing_or_wrong_keys_are_401(presented):
    auth = ApiKeyAuth.from_env(environ={"ECHOPRIME_API_KEY": "from-env"})
    if presented == "from-env ":  # surrounding whitespace is not part of a key
        auth.verify(presented)
        return
    assert _status(auth.verify, presented) == (401, "unauthorized")


def test_no_key_is_a_configuration_error_naming_what_to_set(tmp_path):
    with pytest.raises(AuthConfigError, match="ECHOPRIME_API_KEY_FILE.*ECHOPRIME_API_KEY.*--no-auth"):
        ApiKeyAuth.from_env(environ={})
    with pytest.raises(AuthConfigError, match="empty"):
        (tmp_path / "k").write_text("\n")
        ApiKeyAuth.from_env(environ={"ECHOPRIME_API_KEY_FILE": str(tmp_path / "k")})
    with pytest.raises(AuthConfigError, match="cannot be read"):
        ApiKeyAuth.from_env(environ={"ECHOPRIME_API_KEY_FILE": str(tmp_path / "missing")})
    off = ApiKeyAuth.from_env(environ={}, disabled=True)
    off.verify(None)
    assert "OFF" in off.describe()


def test_a_rotated_key_file_applies_and_the_key_is_never_shown(tmp_path):
    f = tmp_path / "key"
    f.write_text("first-secret")
    auth = ApiKeyAuth.from_env(environ={"ECHOPRIME_API_KEY_FILE": str(f)})
    auth.verify("first-secret")
    f.write_text("second-secret-longer")
    assert _status(auth.verify, "first-secret") == (401, "unauthorized")
    auth.verify("second-secret-longer")
    f.unlink()
    assert _status(auth.verify, "second-secret-longer") == (503, "auth_unavailable")
    for text in (auth.describe(), repr(auth), str(ApiError(401, "unauthorized", "x"))):
        assert "secret" not in text


def test_uri_lists_are_checked_and_each_refusal_names_the_field():
    ok = ["s3://studies/s1/IM0001.dcm", "s3://my.bucket-2/a b/c"]
    assert parse_uri_list({"files": ok}, LIMITS) == ok
    for bad in (
        "/etc/passwd",
        "file:///etc/passwd",
        "s3://",
        "s3:///x",
        "s3://bucket//double",
        "s3://bucket/",
        "s3://bucket/a/../../etc",
        "s3://bucket/./x",
        "s3://b/k",
        "s3://Bucket/k",
        "s3://bucket/k\nx",
        "s3://bucket/" + "k" * 1025,
    ):
        with pytest.raises(ApiError) as e:
            parse_uri_list({"files": ["s3://studies/ok.dcm", bad]}, LIMITS)
        assert (e.value.status, e.value.code) == (422, "invalid_uri"), bad
        assert e.value.reason.startswith("files.1: "), e.value.reason
    assert _status(parse_uri_list, {"files": []}, LIMITS) == (422, "no_files")
    assert _status(parse_uri_list, {"files": "s3://bkt/k"}, LIMITS) == (422, "invalid_request")
    assert _status(parse_uri_list, {"files": [7]}, LIMITS) == (422, "invalid_request")
    assert _status(parse_uri_list, [1], LIMITS) == (422, "invalid_request")
    assert _status(parse_uri_list, {"files": ["s3://bkt/k"], "x": 1}, LIMITS) == (422, "invalid_request")
    assert _status(parse_uri_list, {"files": ["s3://bkt/k"] * 4}, LIMITS) == (413, "too_many_files")


def test_upload_names_lose_client_folders():
    assert clean_name("C:\\Users\\jane\\study\\IM0001.dcm", 0) == "IM0001.dcm"
    assert clean_name("/home/jane/a.mp4", 0) == "a.mp4"
    assert clean_name("", 3) == "file3" and clean_name(None, 1) == "file1"


def test_the_serve_config_names_the_graphs_deployments_and_valid_args(root):
    from ray_jobs.serve_query import QUERY_OPTIONS
    from serve.app import DEFAULTS, deployment_options, min_cpus
    from serve.args import ServeArgs, read_serve_config

    args, options, http = read_serve_config(root / "configs" / "serve.yaml")
    assert set(options) == set(DEFAULTS)
    ServeArgs.model_validate(args)
    assert http["request_timeout_s"] > ServeArgs.model_validate(args).request_timeout_s
    for name in ("VideoEncoder", "ViewClassifier"):
        assert options[name]["user_config"]["max_batch_size"] <= options[name]["max_ongoing_requests"]
    assert min_cpus(deployment_options(options)) <= 2.0  # a 2-core laptop
    assert min_cpus(deployment_options(QUERY_OPTIONS)) == pytest.approx(1.2)
    assert min_cpus(deployment_options()) == pytest.approx(2.0)


def test_bad_app_arguments_and_options_fail_clearly():
    from pydantic import ValidationError

    from serve.app import build_graph

    with pytest.raises(ValidationError, match="bundel_uri"):
        build_graph({"bundel_uri": "x"})
    with pytest.raises(ValueError, match="unknown deployments.*Encoder"):
        build_graph({"bundle_uri": "x"}, {"Encoder": {"num_replicas": 2}})


def test_echoprime_serve_refuses_to_start_without_a_key(monkeypatch, capsys, tmp_path):
    from echoprime.cli import main

    monkeypatch.delenv("ECHOPRIME_API_KEY", raising=False)
    monkeypatch.delenv("ECHOPRIME_API_KEY_FILE", raising=False)
    assert main(["serve", "--bundle", str(tmp_path)]) == 2
    assert "no API key" in capsys.readouterr().err
    monkeypatch.setenv("ECHOPRIME_API_KEY", "k")
    assert main(["serve", "--bundle", str(tmp_path / "nothing")]) == 2
    assert "manifest.json is missing" in capsys.readouterr().err


def test_serve_run_builds_the_app_from_the_configs_args(root):
    """What `serve run configs/serve.yaml` / `serve deploy` do with import_path and args."""
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from serve.app import build_app
    from serve.args import read_serve_config

    args, _, _ = read_serve_config(root / "configs" / "serve.yaml")
    assert isinstance(call_user_app_builder_with_args_if_necessary(build_app, args), Application)
    with pytest.raises(Exception, match="max_files"):
        call_user_app_builder_with_args_if_necessary(build_app, {**args, "max_files": 0})


def test_the_builders_defaults_are_what_the_serve_config_states(root):
    from serve.app import DEFAULTS
    from serve.args import read_serve_config

    _, options, _ = read_serve_config(root / "configs" / "serve.yaml")
    for name, d in DEFAULTS.items():
        o = options[name]
        assert o["max_ongoing_requests"] == d["max_ongoing_requests"], name
        assert o["ray_actor_options"]["num_cpus"] == d["ray_actor_options"]["num_cpus"], name
        assert o.get("user_config") == d.get("user_config"), name


def test_a_dead_replica_is_told_apart_by_how_it_died_directly_or_behind_serves_chained_call_error():
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError
    from ray.serve.exceptions import RayServeException

    from serve.calls import replica_failure

    def chained(cause: BaseException) -> RayServeException:
        # What Serve raises when a DeploymentResponse passed on as an argument failed because
        # its replica died (router._make_upstream_crash_error).
        e = RayServeException(
            "Request to deployment 'AnatomicalAttention' failed because an upstream actor died"
        )
        e.__cause__ = cause
        return e

    def died(why: str) -> RayActorError:
        # Ray's wording of the death cause, as measured on Ray 2.60 (serve/calls.py _STOPPED).
        return RayActorError(
            error_msg=f"{ActorDiedError.BASE_ERROR_MSG}\n\tclass_name: ServeReplica:echoprime:Preprocess\n{why}"
        )

    killed = died("The actor is dead because it was killed by `ray.kill`.")
    crashed = died("The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR")
    oom = died("The actor is dead because its worker process has died. Worker exit type: NODE_OUT_OF_MEMORY")
    assert replica_failure(killed) == "stopped" and replica_failure(chained(killed)) == "stopped"
    assert replica_failure(died("The actor died because its node has died. Node Id: 12")) == "stopped"
    assert replica_failure(ActorUnavailableError("gone for now", b"\0" * 16)) == "stopped"
    assert replica_failure(crashed) == "crashed" and replica_failure(chained(crashed)) == "crashed"
    assert replica_failure(oom) == "crashed"
    assert replica_failure(ActorDiedError()) == "crashed"  # no cause given: assume the worst
    assert replica_failure(RayServeException("a bug in a deployment")) is None
    assert replica_failure(chained(ValueError("bad input"))) is None
    assert replica_failure(ValueError("bad input")) is None


def test_the_result_schema_documents_grades_intervals_and_calibration():
    """Issue 23's keys are typed in the OpenAPI document, a result holding them validates, and so
    does one of a converted release (every new key null) or of an older bundle (no new key)."""
    from echoprime.api.schemas import StudyResultModel
    from tests.fixtures_graded import ISSUE_23_KEYS, graded_result, release_result
    from tests.serve.test_security import client

    spec = client().get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    metric = schemas["Metric"]["properties"]
    assert set(ISSUE_23_KEYS) <= set(metric)
    assert all(metric[k].get("description") for k in ISSUE_23_KEYS)
    assert {"$ref": "#/components/schemas/Grade"} in metric["grade"]["anyOf"]
    assert {"$ref": "#/components/schemas/Interval"} in metric["interval"]["anyOf"]
    assert {"enum": ["identity", "platt", "isotonic"], "type": "string"} in metric["calibration"]["anyOf"]
    grade = schemas["Grade"]["properties"]
    assert set(grade) == {
        "scale", "positive_from", "distribution", "n_graded", "grade", "label",
        "report_grade", "report_label", "agrees_with_report",
    }  # fmt: skip
    assert set(schemas["Interval"]["properties"]) == {"low", "high", "level", "method"}
    assert all(v.get("description") for v in [*grade.values(), *schemas["Interval"]["properties"].values()])

    got = StudyResultModel.model_validate(graded_result())
    mr = got.metrics["mitral_regurgitation"]
    assert (mr.calibrated_probability, mr.calibration) == (0.25, "isotonic")
    assert mr.grade is not None and (mr.grade.label, mr.grade.report_label, mr.grade.agrees_with_report) == (
        "mild",
        "moderate",
        False,
    )
    assert got.metrics["right_atrium_dilation"].grade.distribution == [None] * 4
    ef = got.metrics["ejection_fraction"].interval
    assert ef is not None and (ef.low, ef.high, ef.level) == (30.0, 41.0, 0.8)
    assert got.metrics["heart_rate"].unit == "bpm"
    # Nothing is dropped on the way through the model (what the API answers is the result).
    assert got.model_dump(exclude={"previews"})["metrics"] == graded_result()["metrics"]

    release = StudyResultModel.model_validate(release_result())
    assert all(getattr(m, k) is None for m in release.metrics.values() for k in ISSUE_23_KEYS)
    old = release_result()
    for m in old["metrics"].values():
        for k in ISSUE_23_KEYS:
            del m[k]
    assert StudyResultModel.model_validate(old).metrics["ejection_fraction"].interval is None
