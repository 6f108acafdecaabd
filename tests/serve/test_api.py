"""The HTTP API over real HTTP on 127.0.0.1: answers equal ``StudyInterpreter``, auth, limits,
bad files, S3 input, concurrency and batching across requests."""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from tests.fixtures_bundle import original_ids
from tests.serve.conftest import STUDY_SEED, equal_results, read_study

pytestmark = pytest.mark.ray
TIMEOUT = 240


def post_study(app, items, headers=None, **kw) -> requests.Response:
    files = [("files", (name, data)) for name, data in items]
    h = app.headers() if headers is None else headers
    return requests.post(f"{app.url}/v1/interpret", files=files, headers=h, timeout=TIMEOUT, **kw)


def test_query_study_answers_like_interpret(served, serve_bundle, study_dirs, interpreter):
    """serve_and_query (the quickstart's last stage) is served_app (the fixture) + query_study."""
    from echoprime.commands.serve import query_study

    folder = study_dirs[0]
    got = query_study(served.url, served.key, folder)
    want = interpreter.interpret([(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]).to_dict()
    assert got["status"] == "ok" and len(got["videos"]) == len(list(folder.iterdir()))
    assert equal_results(got, want) == []
    with pytest.raises(RuntimeError, match="already running"):
        from ray_jobs.serve_query import serve_and_query

        serve_and_query(str(serve_bundle), folder)
    with pytest.raises(RuntimeError, match="401"):
        query_study(served.url, "wrong", folder)


def test_interpret_equals_the_in_process_interpreter(served, study_dirs, interpreter):
    for folder in study_dirs[1:3]:
        items = read_study(folder)
        r = post_study(served, items)
        assert r.status_code == 200, r.text
        got, want = r.json(), interpreter.interpret(items).to_dict()
        assert got["status"] == "ok" and [f["status"] for f in got["files"]] == ["used"] * len(items)
        # the bundle's fine-tuning heads answer through the graph as in process (tasks included)
        assert set(got["tasks"]) == {"ef", "mitral_regurgitation:grade", "views"}
        assert equal_results(got, want) == []


def test_health_readiness_viewer_and_docs_need_no_key(served):
    assert requests.get(f"{served.url}/healthz", timeout=30).json() == {"status": "ok"}
    ready = requests.get(f"{served.url}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    page = requests.get(f"{served.url}/", timeout=30)
    assert page.status_code == 200 and "echoprime" in page.text and "/static/viewer.js" in page.text
    js = requests.get(f"{served.url}/static/viewer.js", timeout=30)
    assert js.status_code == 200 and "v1/interpret" in js.text
    spec = requests.get(f"{served.url}/openapi.json", timeout=30).json()
    assert {"/v1/interpret", "/v1/embed/video", "/v1/embed/text", "/v1/search/reports", "/v1/model"} <= set(
        spec["paths"]
    )
    assert set(spec["components"]["securitySchemes"]) == {"HTTPBearer", "APIKeyHeader"}


@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/v1/model"),
        ("post", "/v1/interpret"),
        ("post", "/v1/embed/video"),
        ("post", "/v1/embed/text"),
        ("post", "/v1/search/reports"),
        ("get", "/v1/examples/0"),
    ],
)
def test_every_api_route_needs_the_key(served, method, path):
    for headers in (
        {},
        {"X-API-Key": "wrong"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic eA=="},
    ):
        r = getattr(requests, method)(f"{served.url}{path}", headers=headers, timeout=30)
        assert r.status_code == 401, (headers, r.text)
        assert r.json()["code"] == "unauthorized" and r.headers["WWW-Authenticate"] == "Bearer"


def test_bearer_and_header_keys_both_work_and_a_rotated_key_file_takes_effect(served):
    url = f"{served.url}/v1/model"
    assert requests.get(url, headers={"Authorization": f"Bearer {served.key}"}, timeout=30).status_code == 200
    assert requests.get(url, headers={"X-API-Key": served.key}, timeout=30).status_code == 200
    new = served.key + "-rotated"
    served.key_file.write_text(new + "\n")
    try:
        assert requests.get(url, headers={"X-API-Key": served.key}, timeout=30).status_code == 401
        assert requests.get(url, headers={"X-API-Key": new}, timeout=30).status_code == 200
    finally:
        served.key_file.write_text(served.key + "\n")
    assert requests.get(url, headers={"X-API-Key": served.key}, timeout=30).status_code == 200


def test_the_key_never_reaches_a_log(served):
    import ray

    requests.get(f"{served.url}/v1/model", headers={"X-API-Key": served.key}, timeout=30)
    requests.get(f"{served.url}/v1/model", headers={"X-API-Key": "wrong-key-in-a-log?"}, timeout=30)
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    texts = [
        p.read_text(errors="ignore") for p in logs.rglob("*") if p.is_file() and p.stat().st_size < 50 << 20
    ]
    assert texts and not any(served.key in t or "wrong-key-in-a-log?" in t for t in texts)


def test_model_manifest(served, serve_bundle):
    from echoprime.bundle import read_manifest

    got = requests.get(f"{served.url}/v1/model", headers=served.headers(), timeout=30).json()
    man = read_manifest(serve_bundle, verify=False)
    assert got["versions"] == man["versions"] and got["label_sets"] == man["label_sets"]
    assert got["spec"] == man["spec"] and "files" not in got
    assert got["components"]["video_encoder"]["model"] == man["components"]["video_encoder"]["model"]


def test_a_corrupt_file_is_reported_while_the_rest_is_interpreted(served, study_dirs, interpreter):
    good = read_study(study_dirs[3])
    mp4 = next(d for n, d in good if n.endswith(".mp4"))
    items = [
        good[0],
        ("broken.dcm", b"\x00" * 300 + b"not a dicom"),
        ("cut.mp4", mp4[: len(mp4) // 3]),
        *good[1:],
    ]
    r = post_study(served, items)
    assert r.status_code == 200, r.text
    got = r.json()
    status = {f["path"]: (f["status"], f["reason"]) for f in got["files"]}
    assert status["broken.dcm"][0] == "skipped" and status["broken.dcm"][1]
    assert status["cut.mp4"][0] == "skipped" and status["cut.mp4"][1]
    assert got["status"] == "ok" and len(got["videos"]) == len(good)
    assert equal_results(got, interpreter.interpret(items).to_dict()) == []


def test_a_study_without_a_usable_file_says_so(served, interpreter):
    items = [("a.mp4", b"garbage"), ("b.txt", b"hello")]
    r = post_study(served, items)
    assert r.status_code == 200 and r.json()["status"] == "no_usable_video"
    assert equal_results(r.json(), interpreter.interpret(items).to_dict()) == []


def test_answers_carry_no_patient_identifiers(served, study_dirs):
    import pydicom

    folder = study_dirs[5]  # all DICOM
    items = read_study(folder)
    ds = pydicom.dcmread(io.BytesIO(items[0][1]))
    identifiers = {str(ds.PatientID), str(ds.PatientName), str(ds.StudyInstanceUID), str(ds.PatientBirthDate)}
    identifiers |= {str(ds.AccessionNumber), str(ds.OtherPatientIDs)}
    assert str(ds.PatientID) == f"p{STUDY_SEED}_000005"
    r = post_study(served, items, params={"previews": "true"})
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert not [i for i in identifiers if i in r.text]
    # Nor the bank's studies (other patients'): they are named by the bank's pseudonyms only.
    named = {n["study_id"] for ns in r.json()["neighbours"].values() for n in ns}
    named |= {c["source_study"] for c in r.json()["report"]} - {None}
    assert named and all(n.startswith("p-") for n in named)
    assert not [i for i in original_ids(300) if i in r.text]


def test_previews_are_first_frames(served, study_dirs, interpreter):
    import base64

    import cv2

    items = read_study(study_dirs[1])
    got = post_study(served, items, params={"previews": "true"}).json()
    assert len(got["previews"]) == len(got["videos"])
    u8, _, _ = interpreter.read_study(items)
    for preview, clip in zip(got["previews"], u8, strict=True):
        png = base64.b64decode(preview.split(",", 1)[1])
        img = cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        f = img.shape[0] // clip.shape[1]  # upscaled by a whole factor to at least 128 px
        assert img.shape[0] >= 128 and img.std() > 1  # an echo frame, not a blank
        np.testing.assert_array_equal(img[::f, ::f], clip[0])  # exactly the clip's first frame


def test_s3_uris_equal_uploads_and_a_missing_object_is_reported(served, study_dirs, interpreter, s3_server):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server)
    s3.create_bucket(Bucket="serve-studies")
    items = read_study(study_dirs[4])
    for name, data in items:
        s3.put_object(Bucket="serve-studies", Key=f"s/{name}", Body=data)
    uris = [f"s3://serve-studies/s/{n}" for n, _ in items]
    r = requests.post(
        f"{served.url}/v1/interpret", json={"files": uris}, headers=served.headers(), timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    want = interpreter.interpret([(u, d) for u, (_, d) in zip(uris, items, strict=True)]).to_dict()
    assert equal_results(r.json(), want) == []
    missing = "s3://serve-studies/s/nope.dcm"
    r = requests.post(
        f"{served.url}/v1/interpret",
        json={"files": [*uris, missing]},
        headers=served.headers(),
        timeout=TIMEOUT,
    )
    assert r.status_code == 200 and r.json()["files"][-1]["path"] == missing
    assert (
        r.json()["files"][-1]["status"] == "skipped" and "no such object" in r.json()["files"][-1]["reason"]
    )
    s3.put_object(Bucket="serve-studies", Key="big.bin", Body=b"\0" * (4 << 20))
    r = requests.post(
        f"{served.url}/v1/interpret",
        json={"files": ["s3://serve-studies/big.bin"]},
        headers=served.headers(),
        timeout=60,
    )
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def _expect(r: requests.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["code"] == code and r.json()["reason"], r.text


def test_limits_and_malformed_input_are_4xx_with_a_json_reason(served, study_dirs, tmp_path):
    from echoprime.io.writers import write_video

    url, h = f"{served.url}/v1/interpret", served.headers()
    items = read_study(study_dirs[1])
    _expect(post_study(served, [("big.mp4", b"\0" * (4 << 20))]), 413, "payload_too_large")
    # No Content-Length (chunked): refused while the body streams in.
    chunks = (b" " * (1 << 20) for _ in range(6))
    _expect(
        requests.post(url, data=chunks, headers={**h, "Content-Type": "application/json"}, timeout=60),
        413,
        "payload_too_large",
    )
    _expect(post_study(served, [(f"f{i}.mp4", items[0][1]) for i in range(9)]), 413, "too_many_files")
    frames = np.random.default_rng(0).integers(0, 255, (80, 48, 48, 3), dtype=np.uint8)
    write_video(frames, tmp_path / "long.avi", fps=30.0)
    # A file over max_frames_per_file is that file's problem, not the study's.
    r = post_study(served, [items[0], ("long.avi", (tmp_path / "long.avi").read_bytes())])
    assert r.status_code == 200, r.text
    used, long = r.json()["files"]
    assert used["status"] == "used" and (long["status"], long["code"]) == ("skipped", "too_many_frames")
    assert long["reason"] == "the file has 80 frames; the limit is 64 (max_frames_per_file)"
    _expect(
        requests.post(url, data=b"{nope", headers={**h, "Content-Type": "application/json"}, timeout=30),
        422,
        "invalid_json",
    )
    _expect(requests.post(url, json={"files": ["/etc/passwd"]}, headers=h, timeout=30), 422, "invalid_uri")
    _expect(requests.post(url, json={"files": []}, headers=h, timeout=30), 422, "no_files")
    _expect(requests.post(url, json={"uris": ["s3://a/b"]}, headers=h, timeout=30), 422, "invalid_request")
    _expect(requests.post(url, files={"note": (None, "text only")}, headers=h, timeout=30), 422, "no_files")
    _expect(
        requests.post(url, data=b"x", headers={**h, "Content-Type": "text/plain"}, timeout=30),
        415,
        "unsupported_media_type",
    )
    slow = post_study(served, items, headers={**h, "X-Request-Timeout": "0.001"})
    _expect(slow, 408, "request_timeout")
    text = f"{served.url}/v1/embed/text"
    _expect(requests.post(text, json={"reports": []}, headers=h, timeout=30), 422, "invalid_request")
    _expect(
        requests.post(text, json={"reports": ["x" * 20_001]}, headers=h, timeout=30), 413, "payload_too_large"
    )
    search = f"{served.url}/v1/search/reports"
    _expect(
        requests.post(search, json={"text": "a", "embedding": [0.0]}, headers=h, timeout=30),
        422,
        "invalid_request",
    )
    _expect(
        requests.post(search, json={"embedding": [0.1] * 7}, headers=h, timeout=30), 422, "invalid_embedding"
    )
    _expect(requests.post(search, json={"text": "a", "k": 0}, headers=h, timeout=30), 422, "invalid_request")
    _expect(requests.get(f"{served.url}/v1/examples/5000", headers=h, timeout=30), 404, "not_found")
    _expect(requests.get(f"{served.url}/v1/nothing", headers=h, timeout=30), 404, "not_found")
    # None of it hurt a worker: the next study is answered.
    assert post_study(served, items).status_code == 200


def test_embed_video_text_and_search_equal_the_library(served, study_dirs, interpreter):
    import torch

    items = read_study(study_dirs[2])
    r = requests.post(
        f"{served.url}/v1/embed/video",
        files=[("files", it) for it in items] + [("files", ("bad.mp4", b"zz"))],
        headers=served.headers(),
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    got = r.json()
    clips, _ = interpreter.load_study(items)
    emb, probs = interpreter.embed_and_classify(clips)
    assert [v["file"] for v in got["videos"]] == [n for n, _ in items]
    assert got["files"][-1]["status"] == "skipped"
    np.testing.assert_allclose(np.array([v["embedding"] for v in got["videos"]]), emb.numpy(), atol=1e-5)
    assert [v["view"] for v in got["videos"]] == [interpreter_view(p) for p in probs]
    np.testing.assert_allclose(
        np.linalg.norm([v["embedding"] for v in got["videos"]], axis=1), 1.0, atol=1e-5
    )

    reports = [interpreter.parts.bank.report_text(3), "Left Ventricle: normal size. [SEP]"]
    r = requests.post(
        f"{served.url}/v1/embed/text", json={"reports": reports}, headers=served.headers(), timeout=60
    )
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(np.array(r.json()["embeddings"]), interpreter.embed_text(reports), atol=1e-5)
    assert r.json()["dim"] == interpreter.parts.bank.dim

    want = interpreter.search_reports(reports[0], k=4)
    r = requests.post(
        f"{served.url}/v1/search/reports",
        json={"text": reports[0], "k": 4},
        headers=served.headers(),
        timeout=60,
    )
    assert [h["study_id"] for h in r.json()["results"]] == [w["study_id"] for w in want]
    assert r.json()["results"][0]["study_id"] == interpreter.parts.bank.study_id(3)
    vec = torch.tensor(interpreter.embed_text([reports[1]]))[0].tolist()
    r = requests.post(
        f"{served.url}/v1/search/reports",
        json={"embedding": vec, "k": 2},
        headers=served.headers(),
        timeout=60,
    )
    assert [h["study_id"] for h in r.json()["results"]] == [
        w["study_id"] for w in interpreter.search_reports(np.array(vec), k=2)
    ]


def interpreter_view(p) -> str:
    from echoprime.taxonomy import VIEWS

    return VIEWS[int(p.argmax())]


def test_concurrent_clients_are_all_answered_correctly(served, study_dirs, interpreter):
    studies = [read_study(d) for d in study_dirs[:5]]
    want = [interpreter.interpret(s).to_dict() for s in studies]
    results: dict[tuple[int, int], tuple[int, dict]] = {}

    def client(c: int) -> None:
        with requests.Session() as s:
            for rep in range(2):
                i = (c + rep) % len(studies)
                files = [("files", it) for it in studies[i]]
                r = s.post(
                    f"{served.url}/v1/interpret", files=files, headers=served.headers(), timeout=TIMEOUT
                )
                results[(c, rep)] = (i, r.status_code, r.json())

    threads = [threading.Thread(target=client, args=(c,)) for c in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 10
    for (c, rep), (i, code, got) in results.items():
        assert code == 200, (c, rep, got)
        assert equal_results(got, want[i]) == [], (c, rep)


def test_the_encoder_batches_clips_across_requests(served, interpreter):
    from ray import serve

    enc = serve.get_deployment_handle("VideoEncoder", app_name="echoprime")
    rng = np.random.default_rng(0)
    spec = interpreter.spec
    # Preprocess's answer: uint8 clips and how many of each clip's frames are real (the rest padding).
    studies = [
        {
            "clips": rng.integers(0, 256, (2, spec.frames, spec.size, spec.size, 3), dtype=np.uint8),
            "n_valid": rng.integers(1, spec.frames + 1, 2),
        }
        for _ in range(8)
    ]
    before = len(enc.stats.remote().result(timeout_s=60)["batches"])
    responses = [enc.embed.remote(x) for x in studies]
    got = [r.result(timeout_s=120) for r in responses]
    batches = enc.stats.remote().result(timeout_s=60)["batches"][before:]
    for x, g in zip(studies, got, strict=True):
        want = interpreter.towers.embed(interpreter.normalise_clips(x["clips"], x["n_valid"]))
        np.testing.assert_allclose(g, want.numpy(), atol=1e-5)
    assert sum(batches) == 16 and max(batches) > 2, batches  # clips of several requests in one forward pass


def test_the_answer_is_json_serialisable_without_nan(served, study_dirs):
    r = post_study(served, read_study(study_dirs[1]))
    json.loads(r.text, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
