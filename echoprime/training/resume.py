"""A training run's folder under ``train.storage_path``: naming it, and finding the checkpoint a
(re)started or resumed run goes on from.

Ray Train writes each reported checkpoint to ``<storage>/<run name>/checkpoint_<timestamp>/``;
the files inside are ours (:mod:`echoprime.training.checkpoint`). What a run resumes from is
read from that folder, not from Ray Train's registry (:func:`newest_checkpoint` says why), so
this module needs no Ray and works the same on local disk and S3.
"""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from echoprime import storage
from echoprime.training.checkpoint import STATE_FILE, is_complete


def run_folder(storage_path: str, run_name: str, *, resume: bool, rename_hint: str) -> tuple[str, str]:
    """The run's storage root and its own folder, ``(storage URI, run URI)``; both are created or
    checked writable.

    Args:
        storage_path: ``train.storage_path`` (local folder, made absolute, or ``s3://``).
        run_name: the run's name (``train.run_name``).
        resume: the caller continues the run, so an existing folder is expected.
        rename_hint: how the user names another run (the command's own flag or override).

    Raises:
        ValueError: a run of that name exists and ``resume`` is False.
    """
    storage_uri = storage_path if storage.is_s3(storage_path) else str(Path(storage_path).resolve())
    storage.ensure_dir(storage_uri)
    run_uri = storage.locate(storage_uri).join(run_name).uri
    if storage.exists(run_uri) and not resume:
        raise ValueError(
            f"a run named {run_name!r} already exists at {storage_uri}; pass --resume to continue it, "
            f"or {rename_hint}"
        )
    return storage_uri, run_uri


def run_checkpoints(run_uri: str) -> list[tuple[str, dict[str, Any]]]:
    """The run's complete checkpoints, oldest first, as (folder URI, its ``state.json``).

    Ray Train names checkpoints ``checkpoint_<timestamp>``, so name order is the order they were
    written in. A folder whose files are not all there at their written size (an upload cut off
    by a dying worker) is left out (:func:`echoprime.training.checkpoint.is_complete`).
    """
    run = storage.locate(run_uri)
    if run.fs.get_file_info(run.path).type != pafs.FileType.Directory:
        return []
    folders: dict[str, dict[str, int]] = {}
    for info in run.fs.get_file_info(pafs.FileSelector(run.path, recursive=True)):
        parts = posixpath.relpath(info.path, run.path).split("/")
        if info.type == pafs.FileType.File and len(parts) == 2 and parts[0].startswith("checkpoint_"):
            folders.setdefault(parts[0], {})[parts[1]] = int(info.size or 0)
    out = []
    for name in sorted(folders):
        if STATE_FILE not in folders[name]:
            continue
        try:
            st = json.loads(storage.read_bytes(run.join(name, STATE_FILE).uri))
        except (OSError, ValueError):  # a state.json cut short
            continue
        if is_complete(st, folders[name]):
            out.append((run.join(name).uri, st))
    return out


def newest_checkpoint(run_uri: str) -> tuple[str, dict[str, Any]] | None:
    """The complete checkpoint a (re)started run goes on from: the highest step, the latest
    written among equals; None for a run with none.

    The run's folder decides, not only Ray Train's latest registered checkpoint: Ray registers a
    reported checkpoint when its controller next polls the workers (every ~2 s), so one written
    just before a worker died may never be registered, and the restarted group would silently
    go back to an older checkpoint, or to step 0 (as it did before this was read from storage).
    """
    cks = run_checkpoints(run_uri)
    return max(cks, key=lambda c: (int(c[1].get("step", 0)), c[0])) if cks else None


def finished_checkpoint(run_uri: str, epochs: int, total_steps: int) -> str | None:
    """The run's latest complete checkpoint (a folder URI) when it has nothing left to train, else None.

    A run is finished when that checkpoint reached ``total_steps`` or its last epoch (a run
    stopped on its time budget records the last epoch).
    """
    cks = run_checkpoints(run_uri)
    if not cks:
        return None
    latest, st = cks[-1]
    done = st.get("step", 0) >= total_steps or st.get("epoch", 0) >= epochs
    return latest if done else None


def local_copy(folder_uri: str, dest: Path) -> Path:
    """A checkpoint folder on local disk (S3 objects are downloaded to ``dest``)."""
    if not storage.is_s3(folder_uri):
        return Path(folder_uri)
    for f in storage.list_files(folder_uri):
        target = dest / f[len(folder_uri) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(f))
    return dest
