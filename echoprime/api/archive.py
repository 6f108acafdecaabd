"""``POST /v1/interpret/dicomweb``'s library side: a study of the server's DICOMweb archive
read within the upload limits, and the interpretation answered as JSON, DICOM SR, PDF or FHIR
(stored back to the archive first when asked).

The archive's address never reaches the client (it is the server's); what went wrong does, in
words, and the archive's own error goes to the log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from echoprime.api.errors import ApiError, log
from echoprime.api.uploads import Limits

ACCEPT = {"application/dicom": "sr", "application/pdf": "pdf", "application/fhir+json": "fhir"}
"""The media types an ``Accept`` header may ask for, and the format each names."""
ATTACHMENTS = {"application/dicom": "sr.dcm", "application/pdf": "report.pdf"}
"""The file name an answer of these media types is sent under (``Content-Disposition``)."""


def format_of(accept: str) -> str:
    """The format an ``Accept`` header asks for (the first type it lists that we make), else json."""
    for part in accept.split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in ACCEPT:
            return ACCEPT[kind]
    return "json"


class ArchiveStudies:
    """Studies of one DICOMweb archive, read and answered for the API.

    Args:
        url: the archive (``args.dicomweb_url``); credentials come from the environment.
        limits: a study is an upload by other means: the same file count and size limits.
        bundle: the bundle's public summary (``answers.bundle_summary()["bundle"]``), which
            names the algorithm in the SR.
    """

    def __init__(self, url: str, limits: Limits, bundle: Mapping[str, Any]) -> None:
        from echoprime.hospital.dicomweb import Archive

        self.archive = Archive(url)
        self.limits, self.bundle = limits, bundle

    def fetch(self, study_uid: str) -> list[Any]:
        """The study's instances (``hospital.dicomweb.Instance``), within the upload limits.

        Raises:
            ApiError: 404 ``study_not_found``, 413 ``payload_too_large``, 502 ``archive_error``.
        """
        from echoprime.hospital.dicomweb import DicomwebError, StudyNotFound

        out, total = [], 0
        try:
            for inst in self.archive.iter_instances(study_uid):
                total += len(inst.data)
                if len(out) >= self.limits.max_files or total > self.limits.max_upload_bytes:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"study {study_uid} is larger than this server takes ({self.limits.max_files} "
                        f"files, {self.limits.max_upload_bytes // 2**20} MB)",
                    )
                out.append(inst)
        except StudyNotFound:
            raise ApiError(404, "study_not_found", f"the archive holds no study {study_uid}") from None
        except DicomwebError as e:
            log.warning("echoprime serve: DICOMweb: %s", e)
            status = f" (HTTP {e.status})" if e.status else ""
            raise ApiError(
                502, "archive_error", f"the DICOMweb archive failed{status}; see the server log"
            ) from None
        return out

    def answer(
        self, study_uid: str, result: dict[str, Any], instances: list[Any], fmt: str, store: bool
    ) -> tuple[Any, str]:
        """The interpretation ``result`` of the study's ``instances`` as ``(content, media type)``
        in ``fmt`` (json, sr, pdf, fhir); with ``store`` the SR and PDF go to the archive first
        and JSON names them under ``stored``.

        Raises:
            ApiError: 422 ``no_usable_video`` (naming up to five files' reasons) or ``not_dicom``;
                502 ``archive_error`` when the archive refuses the SR/PDF.
        """
        from echoprime.hospital.dicomweb import DicomwebError, part10_bytes

        if result.get("status") != "ok":
            raise ApiError(
                422,
                "no_usable_video",
                f"study {study_uid} holds no usable echo video: "
                + "; ".join(f"{f['path']}: {f['reason']}" for f in result.get("files", [])[:5]),
            )
        if fmt == "json" and not store:
            return result, "application/json"
        headers = {i.name: i.header for i in instances if i.header is not None}
        data = {i.name: i.data for i in instances}
        out = self._outputs(result, headers, data.__getitem__, fmt, store)
        del data
        if store:
            try:
                self.archive.store([d for d in (out.sr, out.pdf_dicom) if d is not None])
            except DicomwebError as e:
                log.warning("echoprime serve: DICOMweb store: %s", e)
                raise ApiError(
                    502, "archive_error", "the DICOMweb archive refused the SR/PDF; see the server log"
                ) from None
        if fmt == "json":
            return result | {
                "stored": {"sr": str(out.sr.SOPInstanceUID), "pdf": str(out.pdf_dicom.SOPInstanceUID)}
            }, "application/json"
        if fmt == "sr":
            return part10_bytes(out.sr), "application/dicom"
        if fmt == "pdf":
            return out.pdf, "application/pdf"
        return out.fhir, "application/fhir+json"

    def _outputs(
        self,
        result: dict[str, Any],
        headers: dict[str, Any],
        data: Callable[[str], bytes],
        fmt: str,
        store: bool,
    ) -> Any:
        from echoprime import __version__
        from echoprime.hospital.outputs import hospital_outputs, key_frames
        from echoprime.hospital.sr import Algorithm, SRError

        alg = Algorithm("echoprime", __version__, self.bundle["sha256"], self.bundle["name"])
        pdf = fmt == "pdf" or store
        try:
            return hospital_outputs(
                result,
                headers,
                alg,
                sr=fmt == "sr" or store,
                pdf=pdf,
                fhir=fmt == "fhir",
                frames=key_frames(result, data) if pdf else None,
            )
        except SRError as e:
            raise ApiError(422, "not_dicom", str(e)) from None
