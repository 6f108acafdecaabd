"""The API's answers shaped from what the graph computes: the bundle's public summary
(``/v1/model``), video embeddings (``/v1/embed/video``) and text embeddings (``/v1/embed/text``).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from echoprime.api.errors import ApiError
from echoprime.taxonomy import VIEWS

if TYPE_CHECKING:  # the ingress replica never loads torch or the decoders
    from echoprime.io import FileReport


def bundle_summary(uri: str) -> dict[str, Any]:
    """What clients may know of the bundle: its name, version and content hash, and the
    manifest without its file list or anything of the server's (no path, no URI).

    ``bundle.sha256`` is the manifest's digest: the manifest lists every file's sha256, so it
    identifies the bundle's content (batch-interpret records the same digest)."""
    from echoprime import storage
    from echoprime.bundle import MANIFEST

    blob = storage.read_bytes(storage.locate(uri).join(MANIFEST).uri)
    raw = json.loads(blob)
    comps = {
        k: {kk: v[kk] for kk in ("model", "overrides", "kind", "task") if kk in v}
        for k, v in raw["components"].items()
    }
    keep = ("format", "format_version", "created", "versions", "spec", "label_sets")
    extra = {  # counts and settings only: a producer may have put paths there
        k: v
        for k, v in (raw.get("extra") or {}).items()
        if isinstance(v, (bool, int)) or (isinstance(v, float) and math.isfinite(v))
    }
    bundle = {
        "name": PurePosixPath(str(uri).rstrip("/")).name or "bundle",
        "version": raw.get("created"),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    return {"bundle": bundle, **{k: raw.get(k) for k in keep}, "extra": extra, "components": comps}


def no_views() -> np.ndarray:
    """The view probabilities of a study without a usable video (``0 x 11``)."""
    return np.zeros((0, len(VIEWS)), np.float32)


def video_embeddings(
    files: Sequence[FileReport], emb: Sequence[np.ndarray], probs: Sequence[np.ndarray]
) -> dict[str, Any]:
    """``/v1/embed/video``'s answer: every file's status, and each used file's embedding and view.

    Args:
        files: one report per uploaded file; the ``used`` ones are the rows of ``emb``/``probs``.
        emb: ``N x D`` unit embeddings; ``probs``: ``N x 11`` view probabilities.
    """
    reports = [asdict(f) for f in files]
    used = [f["path"] for f in reports if f["status"] == "used"]
    videos = [
        {
            "file": name,
            "view": VIEWS[int(p.argmax())],
            "confidence": float(p.max()),
            "embedding": e.tolist(),
        }
        for name, e, p in zip(used, emb, probs, strict=True)
    ]
    return {"files": reports, "videos": videos}


def check_texts(reports: Sequence[str], max_chars: int) -> None:
    """Refuse reports longer than ``max_chars`` before they reach the text encoder.

    Raises:
        ApiError: 413 naming (up to five of) the reports by index.
    """
    if long := [i for i, r in enumerate(reports) if len(r) > max_chars]:
        raise ApiError(413, "payload_too_large", f"reports {long[:5]} exceed {max_chars} characters")


def text_embeddings(emb: np.ndarray) -> dict[str, Any]:
    """``/v1/embed/text``'s answer for ``B x D`` embeddings."""
    return {"embeddings": emb.tolist(), "dim": int(emb.shape[1])}
