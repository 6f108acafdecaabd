"""One Serve deployment of the graph for the whole tests/serve package, over real HTTP.

The bundle is the fast random-weights one (tests/fixtures_bundle.py); studies are small
synthetic ones (64 px, 3-4 videos, MP4 and DICOM mixed). The app runs on the session's local
Ray with fractional CPUs and test-sized limits; its answers are compared with
``StudyInterpreter.interpret`` in this process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Small replicas: the whole graph asks for 1 logical CPU of the session's 4.
TEST_OPTIONS: dict[str, dict[str, Any]] = {
    "Ingress": {"ray_actor_options": {"num_cpus": 0.1}},
    "Preprocess": {"ray_actor_options": {"num_cpus": 0.3}},
    "ViewClassifier": {
        "ray_actor_options": {"num_cpus": 0.1},
        "user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
    },
    "VideoEncoder": {
        "ray_actor_options": {"num_cpus": 0.3},
        "user_config": {"max_batch_size": 16, "batch_wait_timeout_s": 0.05},
    },
    "AnatomicalAttention": {"ray_actor_options": {"num_cpus": 0.1}},
    "RAIRetriever": {"ray_actor_options": {"num_cpus": 0.1}},
}
LIMITS = {
    "max_upload_mb": 3,
    "max_files": 8,
    "max_frames_per_file": 64,
    "request_timeout_s": 150.0,
    # Short enough for tests/serve/test_abuse.py to see slow clients cut off, long enough for a
    # 3 MB upload on a loaded 2-core machine; 6 uploads at once (the suite's busiest test has 5).
    "body_timeout_s": 12.0,
    "body_idle_timeout_s": 4.0,
    "max_concurrent_uploads": 6,
}
STUDY_SEED = 11


def read_study(folder: Path) -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir())]


@pytest.fixture(scope="session")
def serve_bundle(tmp_path_factory) -> Path:
    import torch

    from tests.fixtures_bundle import add_test_heads, make_random_bundle

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve")
    # With fine-tuning heads (one with its own tuned tower): the graph answers with them too.
    return add_test_heads(make_random_bundle(root / "plain"), root / "bundle")


@pytest.fixture(scope="session")
def study_dirs(tmp_path_factory) -> list[Path]:
    """Six synthetic studies (3-4 videos at 64 px): MP4 and DICOM mixed, the last all DICOM."""
    from echoprime.synth.cohort import make_study, write_study

    out = tmp_path_factory.mktemp("studies")
    dirs = []
    for i in range(6):
        st = make_study(STUDY_SEED, i, min_videos=3, max_videos=4, size=64)
        write_study(st, out, fmt="dicom" if i == 5 else "both")
        dirs.append(out / "videos" / st.study_id)
    return dirs


@pytest.fixture(scope="session")
def interpreter(serve_bundle):
    """The in-process reference the graph's answers must equal."""
    import torch

    from echoprime.inference import StudyInterpreter

    torch.set_num_threads(1)
    return StudyInterpreter.from_bundle(serve_bundle, device="cpu")


@pytest.fixture(scope="package")
def served(ray_cluster, serve_bundle):
    """The graph on the session's Ray, its HTTP proxy on a free 127.0.0.1 port (the same code
    that serves the quickstart's bundle: ray_jobs.serve_query.served_app)."""
    from ray_jobs.serve_query import served_app

    with served_app(str(serve_bundle), options=TEST_OPTIONS, args=LIMITS) as app:
        yield app


def equal_results(got: Any, want: Any, path: str = "", rel: float = 1e-4) -> list[str]:
    """Where two result JSONs differ: exact for strings, ids and structure; floats to ``rel``
    (clips batched with other requests' clips differ from a lone forward pass in the last bits)."""
    out: list[str] = []
    if isinstance(want, dict) and isinstance(got, dict):
        if got.keys() != want.keys():
            out.append(f"{path}: keys {sorted(set(got) ^ set(want))}")
        for k in want.keys() & got.keys():
            out += equal_results(got[k], want[k], f"{path}.{k}", rel)
    elif isinstance(want, list) and isinstance(got, list):
        if len(got) != len(want):
            out.append(f"{path}: {len(got)} items, want {len(want)}")
        for i, (g, w) in enumerate(zip(got, want, strict=False)):
            out += equal_results(g, w, f"{path}[{i}]", rel)
    elif isinstance(want, float) and isinstance(got, (float, int)) and not isinstance(got, bool):
        if abs(got - want) > rel * max(1.0, abs(want)):
            out.append(f"{path}: {got} != {want}")
    elif got != want or type(got) is not type(want):
        out.append(f"{path}: {got!r} != {want!r}")
    return out
