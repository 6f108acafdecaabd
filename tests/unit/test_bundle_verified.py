"""A bundle file hashed at an earlier load and unchanged since is not hashed again; any change to
it (content, replacement, metadata) makes the next load hash it, and a tampered file is refused."""

from __future__ import annotations

import json
import os
import time

import pytest

from echoprime import bundle as bundle_mod
from echoprime.bundle import BundleError, VerifiedFiles, read_manifest
from tests.fixtures_bundle import make_random_bundle


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Hashes counted; the record in a folder of this test; files count as settled at once."""
    monkeypatch.setenv("ECHOPRIME_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(bundle_mod.VERIFY_ENV, raising=False)
    monkeypatch.setattr(VerifiedFiles, "racy_ns", 0)
    calls: list[str] = []
    real = bundle_mod.sha256_file

    def sha(path):
        calls.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(bundle_mod, "sha256_file", sha)
    return calls


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    return make_random_bundle(tmp_path_factory.mktemp("vb") / "bundle", n_bank=20)


def _copy(made, tmp_path):
    import shutil

    return shutil.copytree(made, tmp_path / "b")


def test_an_unchanged_bundle_is_hashed_once(made, tmp_path, counted, monkeypatch):
    root = _copy(made, tmp_path)
    files = json.loads((root / "manifest.json").read_text())["files"]
    read_manifest(root)
    assert len(counted) == len(files) > 3
    record = json.loads((tmp_path / "cache" / "verified-files.json").read_text())
    assert len(record) == len(files)
    counted.clear()
    read_manifest(root)
    assert counted == []  # nothing read again
    monkeypatch.setenv(bundle_mod.VERIFY_ENV, "always")
    read_manifest(root)
    assert len(counted) == len(files)  # hashed every time when asked


def test_a_changed_file_is_hashed_again_and_refused(made, tmp_path, counted):
    root = _copy(made, tmp_path)
    read_manifest(root)
    victim = root / "thresholds.json"
    data = bytearray(victim.read_bytes())
    time.sleep(0.05)  # past the kernel's ctime tick
    data[-2] ^= 0x01  # same size, one bit
    victim.write_bytes(bytes(data))
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))  # mtime set back; ctime cannot be
    counted.clear()
    with pytest.raises(BundleError, match="thresholds.json does not match"):
        read_manifest(root)
    assert "thresholds.json" in counted


def test_a_replaced_file_is_hashed_again(made, tmp_path, counted):
    root = _copy(made, tmp_path)
    read_manifest(root)
    victim = root / "thresholds.json"
    body = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(body)  # the same bytes, a new inode
    counted.clear()
    read_manifest(root)
    assert counted == ["thresholds.json"]


def test_files_changed_just_now_are_not_recorded(made, tmp_path, counted, monkeypatch):
    monkeypatch.setattr(VerifiedFiles, "racy_ns", 3600 * 10**9)  # everything is "just written"
    root = _copy(made, tmp_path)
    read_manifest(root)
    counted.clear()
    read_manifest(root)
    assert counted  # hashed again: a write in the same clock tick would not have moved ctime


def test_an_unreadable_record_means_hashing_again(made, tmp_path, counted):
    root = _copy(made, tmp_path)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "verified-files.json").write_text("{not json")
    read_manifest(root)
    counted.clear()
    read_manifest(root)
    assert counted == []  # the broken record was replaced by a good one
