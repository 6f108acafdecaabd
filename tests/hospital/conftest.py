"""A real DICOMweb archive for the tests: Debian's Orthanc with its DICOMweb plugin, started on
127.0.0.1 with basic auth (``make test`` installs both when missing, like chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port

PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "echo", "orthanc-test-password"


@dataclass(frozen=True)
class Orthanc:
    url: str
    """The server's root (REST API)."""
    dicomweb: str
    """The DICOMweb root."""
    log: Path

    @property
    def env(self) -> dict[str, str]:
        """The environment that lets echoprime in."""
        return {"ECHOPRIME_DICOMWEB_USER": USER, "ECHOPRIME_DICOMWEB_PASSWORD": PASSWORD}


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory) -> Iterator[Orthanc]:
    import requests

    binary = shutil.which("Orthanc") or shutil.which("Orthanc", path="/usr/sbin")
    if binary is None or not PLUGIN.is_file():
        pytest.fail(
            "Orthanc with its DICOMweb plugin is needed: `make test` installs orthanc and orthanc-dicomweb"
        )
    root = tmp_path_factory.mktemp("orthanc")
    port = free_port()
    config = {
        "Name": "echoprime-test",
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "StableAge": 1,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    log = root / "orthanc.log"
    with log.open("w") as out:
        proc = subprocess.Popen([binary, str(root / "orthanc.json")], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/system", auth=(USER, PASSWORD), timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Orthanc did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield Orthanc(url, f"{url}/dicom-web", log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
