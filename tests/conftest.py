"""Shared fixtures: one local Ray and one real S3 server (moto) per test session.

Ray starts at most once per session (about 6 s and 1 GB) and only when a test asks for it;
the S3 server starts first so that Ray's worker processes inherit its endpoint and keys.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REAL_ECHO = (ROOT / ".." / "shared" / "data" / "real-echo").resolve()

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "120")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The test archive's credentials (tests/hospital/conftest.py starts it with them), set before
# Ray starts so that its workers inherit them, as a local `echoprime batch-interpret` run's do.
DICOMWEB_USER, DICOMWEB_PASSWORD = "echo", "orthanc-test-password"
os.environ.setdefault("ECHOPRIME_DICOMWEB_USER", DICOMWEB_USER)
os.environ.setdefault("ECHOPRIME_DICOMWEB_PASSWORD", DICOMWEB_PASSWORD)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def real_echo_dir() -> Path:
    if not REAL_ECHO.is_dir():
        pytest.fail(
            f"real echo test data missing: {REAL_ECHO} (expected ../shared/data/real-echo beside the repo)"
        )
    return REAL_ECHO


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto in server mode) on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ENDPOINT_URL_S3": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield url
    server.stop()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_cluster(s3_server, tmp_path_factory):
    """One local Ray for the whole session (4 logical CPUs on 2 cores; see docs/ray-notes.md)."""
    import ray

    ray.init(
        address="local",
        num_cpus=4,
        include_dashboard=False,
        object_store_memory=512 << 20,
        logging_level="WARNING",
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_cfg():
    from echoprime.config import load_config

    return load_config(ROOT / "configs" / "tiny-cpu.yaml")
