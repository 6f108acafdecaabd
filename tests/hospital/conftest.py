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
from typing import Any

import pydicom
import pytest

from tests.conftest import DICOMWEB_PASSWORD, DICOMWEB_USER, free_port

REAL_DICOM = (
    "examples_ybr_color.dcm",
    "US-PAL-8-10x-echo.dcm",
    "IM00001.implicit_little_endian.dcm",
    "OBXXXX1A_rle_2frame.dcm",
)
"""The real DICOM videos (YBR, palette colour, implicit VR, RLE; headers as scanners wrote them)."""
REAL_STILL = "US1_J2KR.dcm"
"""A real still image (JPEG 2000): reported as not a video."""
PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = DICOMWEB_USER, DICOMWEB_PASSWORD


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


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    import torch

    from tests.fixtures_bundle import make_random_bundle

    torch.set_num_threads(1)
    return make_random_bundle(tmp_path_factory.mktemp("dw") / "bundle", n_bank=60)


@pytest.fixture(scope="session")
def study(tmp_path_factory) -> tuple[str, list[Path]]:
    """A synthetic DICOM study on disk: its StudyInstanceUID and files."""
    from echoprime.synth.cohort import make_study, write_study

    root = tmp_path_factory.mktemp("dw") / "archive"
    write_study(make_study(9, 0, min_videos=3, max_videos=4, frames=32, size=64), root, fmt="dicom")
    files = sorted(root.rglob("*.dcm"))
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID), files


@pytest.fixture(scope="session")
def archive(orthanc, study, real_echo_dir) -> Any:
    """Orthanc holding the synthetic study and the real DICOM files, sent with STOW-RS."""
    from echoprime.hospital.dicomweb import Archive

    arc = Archive(orthanc.dicomweb, environ=orthanc.env)
    sent = [pydicom.dcmread(f) for f in study[1]]
    sent += [pydicom.dcmread(real_echo_dir / n) for n in (*REAL_DICOM, REAL_STILL)]
    stored = arc.store(sent)
    assert sorted(stored) == sorted(str(ds.SOPInstanceUID) for ds in sent)
    return arc
