"""A bundle is untrusted input until checked: paths stay inside it, every file matches its hash,
and with a key configured the manifest must carry a valid signature (issue 18, Bundles)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from echoprime import storage
from echoprime.bundle import MANIFEST, BundleError, BundleWriter, fetch, read_manifest, sign_bundle
from echoprime.signing import ENV_HMAC_KEY, ENV_PRIVATE_KEY, ENV_PUBLIC_KEY, SIGNATURE, BundleKeys

KEY = "k" * 32
SPEC = {"frames": 4, "size": 32}


@pytest.fixture(autouse=True)
def _no_keys(monkeypatch):
    for name in (ENV_HMAC_KEY, ENV_HMAC_KEY + "_FILE", ENV_PRIVATE_KEY, ENV_PUBLIC_KEY):
        monkeypatch.delenv(name, raising=False)


def small_bundle(root: Path) -> Path:
    w = BundleWriter(root)
    w.save_module("mil", torch.nn.Linear(3, 2), model="tiny_linear")
    (root / "bank").mkdir()
    (root / "bank" / "manifest.json").write_text("{}")
    (root / "thresholds.json").write_text("{}")
    return w.commit(spec=SPEC, config=None)


def rewrite_manifest(root: Path, change) -> None:
    m = json.loads((root / MANIFEST).read_text())
    change(m)
    (root / MANIFEST).write_text(json.dumps(m, indent=2))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_an_unsigned_bundle_loads_without_a_key(tmp_path):
    root = small_bundle(tmp_path / "b")
    assert not (root / SIGNATURE).exists()
    assert set(read_manifest(root)["files"]) == {
        "mil.safetensors",
        "bank/manifest.json",
        "thresholds.json",
        "preprocess.json",
    }


@pytest.mark.parametrize("bad", ["../outside.txt", "bank/../../outside.txt", "/etc/hostname", "a\\..\\..\\x"])
def test_a_manifest_path_outside_the_bundle_is_refused(tmp_path, bad):
    root = small_bundle(tmp_path / "b")
    outside = tmp_path / "outside.txt"
    outside.write_text("not the bundle's")
    rewrite_manifest(root, lambda m: m["files"].update({bad: sha(outside.read_bytes())}))
    with pytest.raises(BundleError, match="outside the bundle") as e:
        read_manifest(root)
    assert str(root) in str(e.value) and repr(bad) in str(e.value)


def test_a_component_file_outside_the_bundle_is_refused(tmp_path):
    root = small_bundle(tmp_path / "b")
    rewrite_manifest(root, lambda m: m["components"]["mil"].update(file="../weights.safetensors"))
    with pytest.raises(BundleError, match="outside the bundle"):
        read_manifest(root, verify=False)


def test_a_symlink_escaping_the_bundle_is_refused(tmp_path):
    root = small_bundle(tmp_path / "b")
    secret = tmp_path / "secret.json"
    secret.write_text("{}")  # the same bytes as the file it replaces: the hash alone would pass
    (root / "thresholds.json").unlink()
    os.symlink(secret, root / "thresholds.json")
    with pytest.raises(BundleError, match="thresholds.json.*outside the bundle"):
        read_manifest(root)


class FakeS3:
    """``s3://bucket/...`` served from a local folder, through echoprime.storage's functions."""

    def __init__(self, base: Path, monkeypatch) -> None:
        self.base = base
        real_locate = storage.locate

        def locate(uri):
            s = str(uri)
            if s.startswith("s3://"):
                return storage.Location(None, s[5:].rstrip("/"), s.rstrip("/"))
            return real_locate(uri)

        monkeypatch.setattr(storage, "locate", locate)
        monkeypatch.setattr(storage, "exists", lambda uri: self.path(uri).exists())
        monkeypatch.setattr(storage, "read_bytes", lambda uri: self.path(uri).read_bytes())
        monkeypatch.setattr(storage, "write_bytes", self.write)

    def path(self, uri) -> Path:
        # Resolved like an object store would: the key is the literal string, never a path walk.
        return self.base / str(uri)[5:].replace("/", "%2F")

    def write(self, uri, data: bytes) -> None:
        self.path(uri).write_bytes(data)

    def upload(self, root: Path, prefix: str) -> str:
        for p in root.rglob("*"):
            if p.is_file():
                self.write(f"s3://{prefix}/{p.relative_to(root).as_posix()}", p.read_bytes())
        return f"s3://{prefix}"


def test_fetch_never_writes_outside_its_cache(tmp_path, monkeypatch):
    s3 = FakeS3(tmp_path / "objects", monkeypatch)
    s3.base.mkdir()
    root = small_bundle(tmp_path / "b")
    evil = b"planted"
    rewrite_manifest(root, lambda m: m["files"].update({"../../../planted.txt": sha(evil)}))
    uri = s3.upload(root, "bucket/bundle")
    s3.write(uri + "/../../../planted.txt", evil)
    cache = tmp_path / "deep" / "cache" / "dir"
    with pytest.raises(BundleError, match="outside the bundle"):
        fetch(uri, cache)
    assert not list(tmp_path.rglob("planted.txt"))


def test_fetch_checks_each_download_against_its_hash(tmp_path, monkeypatch):
    s3 = FakeS3(tmp_path / "objects", monkeypatch)
    s3.base.mkdir()
    uri = s3.upload(small_bundle(tmp_path / "b"), "bucket/bundle")
    s3.write(uri + "/thresholds.json", b'{"changed": 1}')
    with pytest.raises(BundleError, match="thresholds.json does not match its sha256"):
        fetch(uri, tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob(MANIFEST))  # nothing half-checked is left as a cached bundle


def test_a_signed_bundle_verifies_and_an_altered_one_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    root = small_bundle(tmp_path / "b")
    assert (root / SIGNATURE).is_file()
    read_manifest(root)
    rewrite_manifest(root, lambda m: m["extra"].update(k=1))
    with pytest.raises(BundleError, match="signature does not match") as e:
        read_manifest(root)
    assert str(root) in str(e.value) and KEY not in str(e.value)


def test_an_altered_file_with_its_hash_updated_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    root = small_bundle(tmp_path / "b")
    (root / "thresholds.json").write_text('{"x": 0.0}')
    rewrite_manifest(root, lambda m: m["files"].update({"thresholds.json": sha(b'{"x": 0.0}')}))
    with pytest.raises(BundleError, match="signature does not match"):
        read_manifest(root)


def test_an_unsigned_bundle_is_refused_when_a_key_is_configured(tmp_path, monkeypatch):
    root = small_bundle(tmp_path / "b")
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    with pytest.raises(BundleError, match=f"not signed.*{ENV_HMAC_KEY}") as e:
        read_manifest(root)
    assert str(root) in str(e.value) and KEY not in str(e.value)
    sign_bundle(root)
    assert read_manifest(root)["files"]


def test_a_bundle_signed_with_another_key_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HMAC_KEY, "another key, long enough to use")
    root = small_bundle(tmp_path / "b")
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    with pytest.raises(BundleError, match="signature does not match"):
        read_manifest(root)


def test_ed25519_signs_with_the_private_key_and_verifies_with_the_public_one(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    (tmp_path / "signing.pem").write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (tmp_path / "public.pem").write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    monkeypatch.setenv(ENV_PRIVATE_KEY, str(tmp_path / "signing.pem"))
    root = small_bundle(tmp_path / "b")
    monkeypatch.delenv(ENV_PRIVATE_KEY)
    monkeypatch.setenv(ENV_PUBLIC_KEY, str(tmp_path / "public.pem"))
    read_manifest(root)
    rewrite_manifest(root, lambda m: m.update(created="2000-01-01T00:00:00Z"))
    with pytest.raises(BundleError, match="ed25519 signature does not match"):
        read_manifest(root)


def test_a_signed_bundle_fetched_from_s3_is_verified(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    s3 = FakeS3(tmp_path / "objects", monkeypatch)
    s3.base.mkdir()
    uri = s3.upload(small_bundle(tmp_path / "b"), "bucket/bundle")
    local = fetch(uri, tmp_path / "cache")
    assert (local / SIGNATURE).is_file() and read_manifest(local)["files"]
    s3.write(uri + "/" + SIGNATURE, b'{"format": "echoprime-bundle-signature", "signatures": []}')
    with pytest.raises(BundleError, match="signature"):
        fetch(uri, tmp_path / "cache2")


def test_keys_describe_themselves_without_the_secret(monkeypatch):
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    keys = BundleKeys.from_env()
    assert keys.configured and keys.can_sign
    assert KEY not in keys.describe() and KEY not in repr(keys)
    monkeypatch.setenv(ENV_HMAC_KEY, "short")
    with pytest.raises(ValueError, match=f"{ENV_HMAC_KEY} is too short") as e:
        BundleKeys.from_env()
    assert "short'" not in str(e.value)


def test_the_sign_bundle_command_signs_and_checks(tmp_path, monkeypatch, capsys):
    from echoprime.cli import main

    root = small_bundle(tmp_path / "b")
    assert main(["sign-bundle", str(root)]) == 2  # no key: one line naming the variables
    assert ENV_HMAC_KEY in capsys.readouterr().err
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    assert main(["sign-bundle", "--check", str(root)]) == 2
    assert "not signed" in capsys.readouterr().err
    assert main(["sign-bundle", str(root)]) == 0
    assert main(["sign-bundle", "--check", str(root)]) == 0
    out = capsys.readouterr()
    assert "verified" in out.out and KEY not in out.out + out.err


def test_publish_carries_the_signature_to_a_folder_and_to_s3(tmp_path, monkeypatch):
    from echoprime.bundle import publish

    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    root = small_bundle(tmp_path / "b")
    copy = Path(publish(root, str(tmp_path / "published")))
    assert (copy / SIGNATURE).read_bytes() == (root / SIGNATURE).read_bytes()
    read_manifest(copy)
    s3 = FakeS3(tmp_path / "objects", monkeypatch)
    s3.base.mkdir()
    uri = publish(root, "s3://bucket/published")
    assert read_manifest(fetch(uri, tmp_path / "cache"))["files"]


def test_a_commit_without_a_key_drops_a_stale_signature(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_HMAC_KEY, KEY)
    root = small_bundle(tmp_path / "b")
    monkeypatch.delenv(ENV_HMAC_KEY)
    BundleWriter(root).commit(spec=SPEC, config=None)
    assert not (root / SIGNATURE).exists()
