"""De-identification at ingest: what a shard keeps of an archive, and the keys that replace ids.

``echoprime ingest`` (with ``ingest.deidentify``, the default) writes no identifier of the archive
into the shards: each study's id (a StudyInstanceUID, a folder name or the studies table's id)
becomes a keyed study pseudonym ``s-`` + 24 hex digits, and each file's path a keyed file key
``f-`` + 24 hex digits (the row's ``source_uri`` and, with the clip's number, its ``video_id``),
both HMAC-SHA256 under the site secret of :mod:`echoprime.retrieval.pseudonyms`. The same id and
secret always give the same key, so a study's rows stay together, shards of one site made at
different times agree, and nobody without the secret can test a guessed UID against them.
Splits are drawn from the original patient id in memory, so they stay by patient.

Nothing else of a DICOM header reaches a shard: the readers copy the pixels and the few header
values they decode them with, and ingest writes only the columns listed in docs/privacy.md
(the PS3.15 table). Rejected files are named by their key, and reasons that quote a file's
name quote its key instead. The operator's map (pseudonym -> original), written only when asked
for (``echoprime ingest --id-map PATH``), is the one place the originals are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from echoprime.retrieval.pseudonyms import HEX_CHARS, site_secret

STUDY_PREFIX = "s-"
FILE_PREFIX = "f-"
SCHEME = f"hmac-sha256/{HEX_CHARS * 4}; study: s- + HMAC('study\\0' + id); file: f- + HMAC('file\\0' + path)"

_SYNTH_STUDY = re.compile(r"s(\d+)_\d{6}")
"""``echoprime synth``'s ordinary study ids (``s<seed>_<index>``; test studies carry a ``t``)."""


def _key(prefix: str, domain: str, value: str, secret: bytes) -> str:
    digest = hmac.new(secret, f"{domain}\0{value}".encode("utf-8", "surrogatepass"), hashlib.sha256)
    return prefix + digest.hexdigest()[:HEX_CHARS]


@dataclass
class Deidentifier:
    """Keys for the ids of one ingest run (``secret=None``: de-identification is off and ids
    pass through unchanged).

    Attributes:
        secret: the HMAC key, or ``None`` when off.
        source: where the secret came from: ``site`` (``ECHOPRIME_SITE_SECRET``), ``one-off``
            (drawn for this run, written nowhere) or ``off``.
        originals: ``{key: original}`` of every key handed out so far (the operator's map).
    """

    secret: bytes | None
    source: str
    originals: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, enabled: bool = True, environ: Mapping[str, str] | None = None) -> Deidentifier:
        """The site secret from the environment (or a one-off one), or an ``off`` one."""
        if not enabled:
            return cls(None, "off")
        secret, source = site_secret(environ)
        return cls(secret, source)

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def study(self, study_id: str) -> str:
        """The study's pseudonym (its id itself when off)."""
        return self._keyed(STUDY_PREFIX, "study", study_id)

    def file(self, path: str) -> str:
        """The file's key, from its path relative to the archive root (the path when off)."""
        return self._keyed(FILE_PREFIX, "file", path)

    def fingerprint_tag(self) -> str:
        """What the secret adds to an ingest's up-to-date fingerprint: a keyed tag for a secret
        that is kept (another one gives other pseudonyms, so the shards must be made again), the
        kind alone for a one-off secret (or a re-run would never be up to date) or when off."""
        if self.secret is None or self.source == "one-off":
            return self.source
        return _key("", "fingerprint", "", self.secret)

    def _keyed(self, prefix: str, domain: str, original: str) -> str:
        if self.secret is None:
            return original
        key = _key(prefix, domain, original, self.secret)
        old = self.originals.setdefault(key, original)
        if old != original:  # 96 bits: never expected, but two studies must never merge
            raise ValueError(f"two ids share the key {key}; set another ECHOPRIME_SITE_SECRET")
        return key

    def scrub(self, text: str, path: str, key: str) -> str:
        """``text`` (a reject's reason) with the file's path and name replaced by its key."""
        if self.secret is None:
            return text
        for s in sorted({path, posixpath.basename(path)}, key=len, reverse=True):
            if s:
                text = text.replace(s, key)
        return text

    def take_new(self, seen: set[str]) -> dict[str, str]:
        """The ``{key: original}`` entries not in ``seen`` (which is updated): what a decoder
        has not yet handed to the driver."""
        new = {k: v for k, v in self.originals.items() if k not in seen}
        seen.update(new)
        return new


def synthetic_seeds(study_ids: list[str] | set[str]) -> list[int]:
    """The ``echoprime synth`` seeds whose ordinary study ids are among ``study_ids``: recorded in
    the shard manifest, so that a pretraining stream drawing the same seed is refused even
    though the shards hold only pseudonyms."""
    return sorted({int(m.group(1)) for s in study_ids if (m := _SYNTH_STUDY.fullmatch(str(s)))})
