"""Training shards from a DICOMweb archive: a decoder of whole studies, streamed by WADO-RS.

``echoprime ingest --dicomweb URL`` (ray_jobs/ingest.py) lists the studies a QIDO-RS query
finds and hands each to a decode actor holding an :class:`ArchiveDecoder`. The actor streams the
study's instances one at a time (:meth:`Archive.iter_instances`), turns each into clips through
the same per-file step as a folder's files (:meth:`FileDecoder.decode_bytes`), and lets the
instance's bytes go before the next arrives, so an actor holds one instance and the clips made
so far, never a whole study.

An instance is known by its SOPInstanceUID: that is the ``path`` a videos table (``--manifest``)
names it by, and what its key is made from when de-identifying (the same key batch-interpret
gives it under the same site secret). Studies join their reports by StudyInstanceUID.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from echoprime.data.ingest import FileDecoder
from echoprime.io.errors import EchoIOError, file_boundary


class ArchiveDecoder(FileDecoder):
    """Decode the studies of a DICOMweb archive into shard rows (``__call__`` takes a column
    batch of StudyInstanceUIDs in ``uri`` and returns clip rows).

    Args:
        archive_url: the DICOMweb root; credentials come from this process's environment
            (echoprime/hospital/dicomweb.py).
        *args, **kw: as :class:`FileDecoder` (``root`` is the archive URL).
    """

    def __init__(self, archive_url: str, *args: Any, **kw: Any) -> None:
        from echoprime.hospital.dicomweb import Archive

        super().__init__(*args, **kw)
        self.archive = Archive(archive_url)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        rows: list[dict[str, Any]] = []
        rejects: list[dict[str, str]] = []
        for uid in batch["uri"]:
            got, bad = self.decode_study(str(uid))
            rows += got
            rejects += bad
        return self._emit(rows, rejects)

    def decode_study(self, study_uid: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Rows and rejects of one study, instance by instance as the archive streams them.

        An instance that cannot be used is a reject naming it; an archive that fails part way
        keeps the rows made so far and adds a reject for the study that says how far it got.
        """
        from echoprime.hospital.dicomweb import DicomwebError

        rows: list[dict[str, Any]] = []
        rejects: list[dict[str, str]] = []
        n = 0
        try:
            for inst in self.archive.iter_instances(study_uid):
                n += 1
                uri = self._uri(study_uid, inst)
                try:
                    with file_boundary(uri):
                        if inst.header is None:
                            raise EchoIOError(uri, "is not a DICOM instance (a part the archive sent)")
                        rows += self.decode_bytes(inst.data, uri, inst.name)
                except EchoIOError as e:
                    rejects.append(self._reject(uri, e, rel=inst.name))
        except DicomwebError as e:
            rejects.append(self._study_reject(study_uid, e, n))
        return rows, rejects

    def _uri(self, study_uid: str, inst: Any) -> str:
        """The instance's WADO-RS address (what the shards name it by when not de-identifying)."""
        series = str(inst.header.get("SeriesInstanceUID", "")) if inst.header is not None else ""
        if not series:
            return f"{self.root}/studies/{study_uid}/{inst.name}"
        return f"{self.root}/studies/{study_uid}/series/{series}/instances/{inst.name}"

    def _study_reject(self, study_uid: str, e: Exception, n_read: int) -> dict[str, str]:
        got = f" after {n_read} instances" if n_read else ""
        reason = f"the archive failed while sending the study{got}: {e}"
        if not self.deid.enabled:
            return {
                "source_uri": f"{self.root}/studies/{study_uid}",
                "reason": reason,
                "code": "archive_error",
            }
        key = self.deid.study(study_uid)
        return {"source_uri": key, "reason": reason.replace(study_uid, key), "code": "archive_error"}
