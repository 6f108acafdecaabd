"""Signatures of model bundles: HMAC-SHA256 with a shared secret, or ed25519 with a key pair.

A bundle's ``manifest.json`` lists the sha256 of every other file, so signing the manifest's
exact bytes signs the whole bundle. The signature sits beside it in ``manifest.sig``::

    {"format": "echoprime-bundle-signature", "version": 1, "manifest_sha256": "...",
     "signatures": [{"alg": "hmac-sha256", "key_id": "...", "sig": "<hex>"},
                    {"alg": "ed25519", "key_id": "...", "sig": "<hex>"}]}

Keys come from the environment only (never from a config file, which is saved with every
artifact):

* ``ECHOPRIME_BUNDLE_KEY`` (the secret itself) or ``ECHOPRIME_BUNDLE_KEY_FILE`` (a file holding
  it): HMAC-SHA256, both to sign and to verify; at least 16 bytes.
* ``ECHOPRIME_BUNDLE_SIGNING_KEY``: a PEM ed25519 private key file, to sign (and verify).
* ``ECHOPRIME_BUNDLE_PUBLIC_KEY``: a PEM ed25519 public key file, to verify only (serving and
  interpretation machines need no secret).

When any key is configured, a bundle must carry a valid signature by every configured kind of
key, or it is refused. A ``key_id`` (a digest that does not reveal the key) tells which key
signed, so an error can say "another key" without printing either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SIGNATURE = "manifest.sig"
SIGNATURE_FORMAT = "echoprime-bundle-signature"
ENV_HMAC_KEY = "ECHOPRIME_BUNDLE_KEY"
ENV_HMAC_KEY_FILE = "ECHOPRIME_BUNDLE_KEY_FILE"
ENV_PRIVATE_KEY = "ECHOPRIME_BUNDLE_SIGNING_KEY"
ENV_PUBLIC_KEY = "ECHOPRIME_BUNDLE_PUBLIC_KEY"
MIN_HMAC_KEY = 16
# Domain separation: a bundle signature can never be replayed as a signature of anything else.
_CONTEXT = b"echoprime-bundle-manifest-v1\x00"


def _hmac_key_id(key: bytes) -> str:
    return hmac.new(key, b"echoprime-bundle-key-id", hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True)
class BundleKeys:
    """The keys this process signs and verifies bundles with (none: bundles are not signed)."""

    hmac_key: bytes | None = field(default=None, repr=False)
    private_key: Any = field(default=None, repr=False)
    """An ``Ed25519PrivateKey`` (signs; its public half verifies)."""
    public_key: Any = field(default=None, repr=False)
    """An ``Ed25519PublicKey`` (verifies)."""
    sources: tuple[str, ...] = ()
    """The environment variables the keys came from (for messages)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BundleKeys:
        """The keys named by the environment (see the module doc).

        Raises:
            ValueError: a key that cannot be used (too short, unreadable file, not ed25519),
                naming the variable and never the key.
        """
        env = os.environ if environ is None else environ
        hkey, sources = None, []
        if env.get(ENV_HMAC_KEY):
            hkey, _ = env[ENV_HMAC_KEY].encode(), sources.append(ENV_HMAC_KEY)
        elif env.get(ENV_HMAC_KEY_FILE):
            path = env[ENV_HMAC_KEY_FILE]
            try:
                hkey = Path(path).read_bytes().strip()
            except OSError as e:
                raise ValueError(f"{ENV_HMAC_KEY_FILE}: cannot read {path!r} ({e.strerror})") from None
            sources.append(ENV_HMAC_KEY_FILE)
        if hkey is not None and len(hkey) < MIN_HMAC_KEY:
            raise ValueError(
                f"{sources[-1]} is too short: a bundle key needs at least {MIN_HMAC_KEY} bytes "
                "(e.g. `openssl rand -hex 32`)"
            )
        private = public = None
        if env.get(ENV_PRIVATE_KEY):
            private = _load_pem(env[ENV_PRIVATE_KEY], ENV_PRIVATE_KEY, private=True)
            sources.append(ENV_PRIVATE_KEY)
        if env.get(ENV_PUBLIC_KEY):
            public = _load_pem(env[ENV_PUBLIC_KEY], ENV_PUBLIC_KEY, private=False)
            sources.append(ENV_PUBLIC_KEY)
        if public is None and private is not None:
            public = private.public_key()
        return cls(hkey, private, public, tuple(sources))

    @property
    def configured(self) -> bool:
        """Whether bundles must be signed to be used."""
        return self.hmac_key is not None or self.public_key is not None

    @property
    def can_sign(self) -> bool:
        return self.hmac_key is not None or self.private_key is not None

    def describe(self) -> str:
        return " and ".join(f"${s}" for s in self.sources) or "no bundle key"

    def sign(self, manifest: bytes) -> bytes:
        """The ``manifest.sig`` document for these exact manifest bytes.

        Raises:
            ValueError: no key that can sign.
        """
        if not self.can_sign:
            raise ValueError(
                f"no bundle signing key: set ${ENV_HMAC_KEY} (or ${ENV_HMAC_KEY_FILE}) or ${ENV_PRIVATE_KEY}"
            )
        sigs = []
        if self.hmac_key is not None:
            mac = hmac.new(self.hmac_key, _CONTEXT + manifest, hashlib.sha256).hexdigest()
            sigs.append({"alg": "hmac-sha256", "key_id": _hmac_key_id(self.hmac_key), "sig": mac})
        if self.private_key is not None:
            sig = self.private_key.sign(_CONTEXT + manifest).hex()
            sigs.append(
                {"alg": "ed25519", "key_id": _public_key_id(self.private_key.public_key()), "sig": sig}
            )
        doc = {
            "format": SIGNATURE_FORMAT,
            "version": 1,
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "signatures": sigs,
        }
        return json.dumps(doc, indent=2).encode()

    def check(self, manifest: bytes, signature: bytes | None) -> str | None:
        """Why these manifest bytes are not acceptably signed, or ``None`` when they are (or
        when no key is configured)."""
        if not self.configured:
            return None
        if signature is None:
            return f"not signed: {SIGNATURE} is missing and a bundle key is configured ({self.describe()})"
        try:
            doc = json.loads(signature)
            by_alg = (
                {s["alg"]: s for s in doc["signatures"]} if doc.get("format") == SIGNATURE_FORMAT else None
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            by_alg = None
        if by_alg is None:
            return f"{SIGNATURE} is not an {SIGNATURE_FORMAT} document"
        checks = (
            ("hmac-sha256", self.hmac_key is not None, self._hmac_ok),
            ("ed25519", self.public_key is not None, self._ed25519_ok),
        )
        for alg, wanted, ok in checks:
            if not wanted:
                continue
            entry = by_alg.get(alg)
            if entry is None:
                return f"has no {alg} signature and a {alg} key is configured ({self.describe()})"
            if not ok(manifest, entry):
                return (
                    f"{alg} signature does not match its manifest (the manifest or a file was "
                    f"altered after signing, or another key signed it: key id {str(entry.get('key_id'))[:16]!r})"
                )
        return None

    def _hmac_ok(self, manifest: bytes, entry: Mapping[str, Any]) -> bool:
        assert self.hmac_key is not None
        want = hmac.new(self.hmac_key, _CONTEXT + manifest, hashlib.sha256).hexdigest()
        return hmac.compare_digest(want, str(entry.get("sig", "")))

    def _ed25519_ok(self, manifest: bytes, entry: Mapping[str, Any]) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            self.public_key.verify(bytes.fromhex(str(entry.get("sig", ""))), _CONTEXT + manifest)
        except (InvalidSignature, ValueError):
            return False
        return True


def _public_key_id(public: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load_pem(path: str, var: str, *, private: bool) -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - cryptography ships with the project's environment
        raise ValueError(f"${var} names an ed25519 key, which needs the 'cryptography' package") from None
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"${var}: cannot read {path!r} ({e.strerror})") from None
    try:
        key = (
            serialization.load_pem_private_key(data, password=None)
            if private
            else serialization.load_pem_public_key(data)
        )
    except (ValueError, TypeError):
        key = None
    want = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, want):
        kind = "private" if private else "public"
        raise ValueError(f"${var}: {path!r} is not a PEM ed25519 {kind} key (unencrypted)")
    return key
