"""One study, four ways in: the in-process interpreter, the Serve graph over HTTP, batch-interpret
(Ray Data) and evaluate's embedding pipeline (Ray Data actors) all run the same towers
(echoprime.inference.Towers) on the same clips, so the clip embeddings are equal bit for bit on a
CPU, and the findings agree."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import ray
import requests

from echoprime.batch_interpret import BatchOutput
from echoprime.eval.ablation import mil_sections
from echoprime.eval.studies import StudySet
from echoprime.retrieval import predict_metrics_batch
from ray_jobs._embed import embed_dataset
from ray_jobs.batch_interpret import run_batch_interpret
from ray_jobs.evaluate import EmbedForEval
from tests.serve.conftest import read_study

pytestmark = pytest.mark.usefixtures("ray_cluster")


def _values(metrics: dict) -> dict[str, float]:
    return {p: (math.nan if m["value"] is None else m["value"]) for p, m in metrics.items()}


def test_every_path_gives_the_same_embeddings_and_findings(
    served, serve_bundle, study_dirs, interpreter, tiny_cfg, tmp_path
):
    folder = study_dirs[1]
    items = read_study(folder)
    # In process: the clips interpret reads, and the embeddings its towers make of them.
    clips = interpreter.read_study(items)
    assert clips.clips.shape[0] == len(items) >= 3
    emb, probs = interpreter.towers.encode_uint8(clips.clips, clips.n_valid, tasks=False)
    want = interpreter.interpret(items).to_dict()
    assert want["status"] == "ok"

    # The Serve graph: embeddings over HTTP (JSON floats carry float32 exactly), then the answer.
    r = requests.post(
        f"{served.url}/v1/embed/video",
        files=[("files", it) for it in items],
        headers=served.headers(),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    served_emb = np.array([v["embedding"] for v in r.json()["videos"]], np.float32)
    np.testing.assert_array_equal(served_emb, emb.numpy())
    r = requests.post(
        f"{served.url}/v1/interpret",
        files=[("files", it) for it in items],
        headers=served.headers(),
        timeout=120,
    )
    assert r.status_code == 200, r.text
    assert r.json()["metrics"] == want["metrics"] and r.json()["report"] == want["report"]

    # batch-interpret over a folder holding only this study: the same findings, exactly.
    archive = tmp_path / "archive"
    archive.mkdir()
    for name, data in items:
        (archive / name).write_bytes(data)
    out = tmp_path / "batch"
    k = interpreter.k
    run_batch_interpret(tiny_cfg, str(serve_bundle), str(archive), str(out), actors=1, chunk=1, k=k)
    (row,) = BatchOutput(str(out)).read().to_pylist()
    assert row["status"] == "ok" and json.loads(row["metrics"]) == json.loads(json.dumps(want["metrics"]))

    # evaluate's pipeline: its Ray Data actors (EmbedForEval) on the study's clips as shard rows.
    rows = [
        {
            "clip": c,
            "n_valid": int(n),
            "study_id": "s",
            "video_id": str(i),
            "view": "A4C",
            "labels": "{}",
            "report": "",
        }
        for i, (c, n) in enumerate(zip(clips.clips, clips.n_valid, strict=True))
    ]
    columns = ("study_id", "video_id", "view", "labels", "report")
    cols = embed_dataset(
        tiny_cfg,
        ray.data.from_items(rows),
        str(serve_bundle),
        with_views=True,
        udf=EmbedForEval,
        udf_args=(str(serve_bundle), columns, False),
    )
    order = np.argsort(cols["video_id"].astype(int))
    np.testing.assert_array_equal(cols["emb"][order], emb.numpy())
    np.testing.assert_array_equal(cols["view_probs"][order], probs.numpy())
    # ...and evaluate's findings (its padded attention, then the bank's kNN) agree.
    cols = {c: v[order] for c, v in cols.items()}
    secs = mil_sections(interpreter.parts.mil, StudySet.from_columns(cols).padded())
    (got,) = predict_metrics_batch(secs, interpreter.parts.bank, k, thresholds=interpreter.parts.thresholds)
    values = _values(want["metrics"])
    assert len(got) >= 21 and set(got) <= set(values)  # the 21 phenotypes (the answer adds measurements)
    for p, m in got.items():
        assert m.value == pytest.approx(values[p], abs=1e-5, nan_ok=True), p
