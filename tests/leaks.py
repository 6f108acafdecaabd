"""Searching written files for identifiers that must not be there (tests of docs/privacy.md)."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq


def files_under(*roots: Path) -> list[Path]:
    """Every file under ``roots``, sorted."""
    return sorted(p for r in roots for p in Path(r).rglob("*") if p.is_file())


def _strings(doc: Any) -> list[str]:
    """Every key and string value of a JSON document (not its numbers)."""
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in (str(k), *_strings(v))]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return [doc] if isinstance(doc, str) else []


def _text(path: Path) -> tuple[bytes, bool]:
    """What of a file can hold text, less the numbers of weight and array files; and whether
    that text can be UTF-32 (NumPy's unicode arrays) rather than UTF-8 alone."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":  # a JSON header (names, offsets), then numbers
        header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
        return "\n".join(_strings(header)).encode(), False
    if path.suffix == ".npy" and np.load(path, mmap_mode="r", allow_pickle=False).dtype.kind in "biufc":
        return data[:4096], False  # a numeric array: text only in its header
    if data[:4] == b"PAR1":  # compressed: a string need not appear in the bytes; search what they decode to
        t = pq.read_table(path)
        meta = {
            k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (t.schema.metadata or {}).items()
        }
        t = t.drop([c for c in t.column_names if c == "clip"])  # uint8 frames
        # Every value, column name and key-value metadata; Parquet and JSON write strings in UTF-8.
        doc = {"columns": t.column_names, "metadata": meta, "rows": t.to_pylist()}
        return json.dumps(doc, default=str).encode(), False
    if zipfile.is_zipfile(path) and path.suffix == ".pt":
        # torch.save's archive: the pickle (names, hyper-parameters, any string: UTF-8) and small
        # records; each tensor's storage is a member under data/ and holds only numbers. Searching
        # those took 70 s per optimizer checkpoint.
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            kept = [n for n in names if "/data/" not in n]
            return "\n".join(names).encode() + b"".join(z.read(n) for n in kept), False
    # Any text in UTF-32 has two zero bytes in every character: a file without them (a log,
    # JSON) is searched in UTF-8 alone.
    return data, b"\x00\x00" in data


def _alnum(char: bytes) -> bool:
    return bool(char) and chr(char[0]).isalnum() and not any(char[1:])


def _found(data: bytes, needle: bytes, width: int) -> bool:
    """``needle`` in ``data`` as a whole token: not inside a longer run of letters and digits
    (a 7-digit id inside a hex digest is chance, not a leak). ``width``: bytes per character."""
    start = 0
    while (i := data.find(needle, start)) >= 0:
        before, after = data[max(i - width, 0) : i], data[i + len(needle) : i + len(needle) + width]
        if not (_alnum(before) or _alnum(after)):
            return True
        start = i + 1
    return False


def held(path: Path, needles: Iterable[str]) -> list[str]:
    """The needles ``path`` holds as whole tokens, in UTF-8 or UTF-32 (NumPy's unicode arrays)."""
    data, wide = _text(path)
    return [
        s for s in needles if _found(data, s.encode(), 1) or (wide and _found(data, s.encode("utf-32-le"), 4))
    ]


def leaks(paths: Iterable[Path], needles: Iterable[str]) -> dict[str, list[str]]:
    """``{file: first needles it holds}`` for the files that hold any."""
    needles = sorted(set(needles))
    return {str(p): h[:3] for p in paths if (h := held(p, needles))}
