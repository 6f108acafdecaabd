"""Keyed pseudonyms for the bank's study ids, and the operator-only map back to the originals.

A bank built by ``build-bank`` stores, for every candidate report, ``pseudonym(study_id, secret)``
instead of the study id (a folder name or a StudyInstanceUID of another patient): interpretation
results name their neighbours and each section's source by pseudonym, and the bank and the bundle
hold no original identifier. The pseudonym is HMAC-SHA256 of the id under a site secret, so the
same id and secret always give the same pseudonym (bundles rebuilt at one site stay comparable),
and without the secret nobody can test a guessed id against a bundle.

The secret comes from the environment (:data:`SECRET_ENV`). Without one, ``build-bank`` draws a
one-off secret that is used for that build and never written anywhere: the bundle's pseudonyms
are then stable for that bundle (they are stored, not recomputed) but differ from any other
build's. Only the map file (:func:`write_id_map`, written when the operator asks) leads back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from os import PathLike
from pathlib import Path
from typing import Any

SECRET_ENV = "ECHOPRIME_SITE_SECRET"
"""Environment variable holding the site secret (at least :data:`MIN_SECRET_CHARS` characters)."""
MIN_SECRET_CHARS = 16
PREFIX = "p-"
HEX_CHARS = 24
"""96 bits of the HMAC: a collision among a billion ids has odds below 1e-10 (and is refused)."""
SCHEME = f"hmac-sha256/{HEX_CHARS * 4}"
MAP_FORMAT = "echoprime-id-map"
MAP_VERSION = 1


def site_secret(environ: Mapping[str, str] | None = None) -> tuple[bytes, str]:
    """The secret pseudonyms are keyed with, and where it came from.

    Args:
        environ: where to look for :data:`SECRET_ENV` (default ``os.environ``).

    Returns:
        ``(secret, "site")`` from the environment, or ``(random 32 bytes, "one-off")`` when the
        variable is unset or empty.

    Raises:
        ValueError: the variable is set but shorter than :data:`MIN_SECRET_CHARS` characters.
    """
    value = (os.environ if environ is None else environ).get(SECRET_ENV, "")
    if not value:
        return secrets.token_bytes(32), "one-off"
    if len(value) < MIN_SECRET_CHARS:
        raise ValueError(
            f"{SECRET_ENV} holds {len(value)} characters; a site secret needs at least {MIN_SECRET_CHARS} "
            f"(e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return value.encode("utf-8"), "site"


def pseudonym(study_id: Any, secret: bytes) -> str:
    """``p-`` and the first 24 hex digits of HMAC-SHA256(secret, study id as UTF-8 text)."""
    if not secret:
        raise ValueError("the pseudonym secret is empty")
    digest = hmac.new(secret, str(study_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return PREFIX + digest[:HEX_CHARS]


def pseudonymise(study_ids: Iterable[Any], secret: bytes) -> dict[str, str]:
    """Pseudonyms of distinct study ids: ``{original: pseudonym}`` in first-seen order.

    Raises:
        ValueError: two different ids got one pseudonym (never expected; refused rather than
            merging two studies' labels).
    """
    out: dict[str, str] = {}
    seen: set[str] = set()
    for sid in study_ids:
        sid = str(sid)
        if sid in out:
            continue
        p = pseudonym(sid, secret)
        if p in seen:
            raise ValueError(f"two study ids share the pseudonym {p}; use another {SECRET_ENV}")
        out[sid] = p
        seen.add(p)
    return out


def write_id_map(
    path: str | PathLike[str],
    originals: Mapping[str, str],
    *,
    source: str,
    keyed: Mapping[str, str] | None = None,
) -> Path:
    """Write the operator-only map ``{pseudonym: original}`` as JSON, readable by the owner only.

    Args:
        path: the file (its folder is created); written whole or not at all.
        originals: ``{original: pseudonym}`` as :func:`pseudonymise` returns it.
        source: where the secret came from (``site`` or ``one-off``), recorded in the file.
        keyed: more entries, already ``{pseudonym: original}`` (keys of several kinds whose
            originals may coincide, e.g. a study and a file of the same name).
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": MAP_FORMAT,
        "version": MAP_VERSION,
        "scheme": SCHEME,
        "secret": source,
        "pseudonyms": {p: sid for sid, p in originals.items()} | dict(keyed or {}),
    }
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
    os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply to a file left over from an earlier try
    os.replace(tmp, out)
    return out


def check_map_outside(path: str | PathLike[str], output: str | PathLike[str], what: str) -> None:
    """Refuse an id map that is not a local file, or that lies inside ``output`` (a bundle, a
    shard output): whoever gets that output would get the originals with it.

    Args:
        path: where the map would be written.
        output: the folder (or ``s3://`` prefix) the job writes for others to read.
        what: the output's name in the message ("the bundle", "the shard output").

    Raises:
        ValueError: naming the map and the output.
    """
    if "://" in str(path):
        raise ValueError(
            f"--id-map must be a local path (the map leads back to the patients), got {str(path)!r}"
        )
    if "://" in str(output):
        return
    where, root = Path(path).resolve(), Path(output).resolve()
    if where == root or root in where.parents:
        raise ValueError(f"--id-map {str(path)!r} is inside {what} {str(output)!r}; write it outside {what}")


def read_id_map(path: str | PathLike[str]) -> dict[str, str]:
    """``{pseudonym: original}`` from a file :func:`write_id_map` wrote.

    Raises:
        ValueError: not such a file (another format or version, or not JSON).
    """
    try:
        doc = json.loads(Path(path).read_text("utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a readable id map: {e}") from e
    if not isinstance(doc, dict) or doc.get("format") != MAP_FORMAT or doc.get("version") != MAP_VERSION:
        raise ValueError(f"{str(path)!r}: expected format {MAP_FORMAT!r} version {MAP_VERSION}")
    return {str(k): str(v) for k, v in doc["pseudonyms"].items()}


def chain_id_maps(*maps: Mapping[str, str]) -> dict[str, str]:
    """One map from several read in order: the bank's map (``build-bank --id-map``) leads from a
    bank pseudonym to the shards' study key, the ingest map (``ingest --id-map``) from that key
    to the archive's own id. Each pseudonym of the first map is followed through the others as
    far as they lead (a value a later map does not hold, such as a stream study's id, stays)."""
    if not maps:
        return {}
    out = dict(maps[0])
    for later in maps[1:]:
        out = {k: later.get(v, v) for k, v in out.items()}
    return out


def reidentify(result: Mapping[str, Any], id_map: Mapping[str, str]) -> dict[str, Any]:
    """A copy of a ``StudyResult.to_dict()`` with the bank's pseudonyms replaced by the originals.

    For an operator's authorised local use with the map file in hand; nothing calls it on a
    result that leaves the process. A pseudonym missing from the map is left as it is.
    """
    out = dict(result)
    out["report"] = [
        {**s, "source_study": id_map.get(s.get("source_study"), s.get("source_study"))}
        for s in result.get("report", [])
    ]
    out["neighbours"] = {
        sec: [{**n, "study_id": id_map.get(n["study_id"], n["study_id"])} for n in ns]
        for sec, ns in result.get("neighbours", {}).items()
    }
    return out
