"""Studies in from a DICOMweb archive (QIDO-RS, WADO-RS), results back to it (STOW-RS).

A thin layer over ``dicomweb-client`` that adds what an operator needs around it:

- **credentials from the environment, never in logs or messages**: a bearer token in
  ``ECHOPRIME_DICOMWEB_TOKEN``, or basic auth in ``ECHOPRIME_DICOMWEB_USER`` and
  ``ECHOPRIME_DICOMWEB_PASSWORD`` (a token wins); a URL with ``user:password@`` is refused;
- **retries with backoff** on connection errors and on 429/502/503/504 answers (urllib3's
  ``Retry``: :data:`RETRIES` tries, 0.5 s doubling), then a clear :class:`DicomwebError` naming
  the URL and the status, with no traceback;
- **streaming**: :func:`iter_instances` yields a study's instances one at a time as WADO-RS
  sends them (multipart, parsed part by part), so a study is never held twice in memory;
  callers decode each instance and let its bytes go.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydicom.dataset import Dataset

TOKEN_ENV = "ECHOPRIME_DICOMWEB_TOKEN"
USER_ENV = "ECHOPRIME_DICOMWEB_USER"
PASSWORD_ENV = "ECHOPRIME_DICOMWEB_PASSWORD"
RETRIES = 4
TIMEOUT_S = 60.0


class DicomwebError(ValueError):
    """The archive could not be reached or refused the request (the message names the URL and
    the HTTP status, never the credentials)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StudyNotFound(DicomwebError):
    """The archive does not hold the study asked for."""


@dataclass(frozen=True)
class Instance:
    """One instance of a study as WADO-RS sent it.

    Attributes:
        name: its SOPInstanceUID (the name its file report and evidence carry).
        data: the instance as a DICOM Part 10 file.
        header: its attributes without pixel data (for the SR's references); ``None`` for a
            part that is not DICOM.
    """

    name: str
    data: bytes
    header: Dataset | None


def check_url(url: str) -> str:
    """``url`` without a trailing slash; refuses credentials in it (they would reach logs)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomwebError(f"a DICOMweb URL is http:// or https:// with a host, got {url!r}")
    if parts.username or parts.password:
        raise DicomwebError(
            f"the DICOMweb URL must not hold credentials (they would reach logs); set {TOKEN_ENV}, "
            f"or {USER_ENV} and {PASSWORD_ENV}, instead"
        )
    return url.rstrip("/")


def _session(environ: Mapping[str, str]) -> Any:
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    s = requests.Session()
    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        backoff_factor=0.5,
        status_forcelist=(429, 502, 503, 504),
        allowed_methods=frozenset({"GET", "POST"}),  # STOW of the same SOP instance is idempotent
        raise_on_status=False,
    )
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    if environ.get(TOKEN_ENV):
        s.headers["Authorization"] = f"Bearer {environ[TOKEN_ENV]}"
    elif environ.get(USER_ENV):
        s.auth = (environ[USER_ENV], environ.get(PASSWORD_ENV, ""))
    return s


class Archive:
    """A DICOMweb archive at ``url`` (QIDO, WADO and STOW under the same root).

    Args:
        url: the DICOMweb root, e.g. ``http://pacs:8042/dicom-web``.
        environ: where the credentials are read (default ``os.environ``).
    """

    def __init__(self, url: str, environ: Mapping[str, str] | None = None) -> None:
        from dicomweb_client.api import DICOMwebClient

        self.url = check_url(url)
        self.session = _session(os.environ if environ is None else environ)
        self.client = DICOMwebClient(self.url, session=self.session, timeout=TIMEOUT_S)
        # One retry policy, the session's (the client's own would retry each of its retries).
        self.client.set_http_retry_params(retry=False)

    def _call(self, what: str, fn: Any, *args: Any, uid: str | None = None, **kw: Any) -> Any:
        import requests

        try:
            return fn(*args, **kw)
        except requests.exceptions.HTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status == 404 and uid is not None:
                raise StudyNotFound(f"{self.url} holds no study {uid} (404)", status) from None
            reason = e.response.reason if e.response is not None else ""
            hint = " (check the credentials)" if status in (401, 403) else ""
            raise DicomwebError(f"{self.url} refused {what}: HTTP {status} {reason}{hint}", status) from None
        except requests.exceptions.RetryError as e:
            raise DicomwebError(
                f"{self.url} kept failing {what} after {RETRIES} retries: {_short(e)}"
            ) from None
        except requests.exceptions.RequestException as e:
            raise DicomwebError(f"cannot reach {self.url} for {what}: {_short(e)}") from None

    def search_studies(
        self,
        *,
        modality: str | None = "US",
        date_range: tuple[str, str] | None = None,
        uids: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[str]:
        """StudyInstanceUIDs matching a QIDO-RS query: modality (in the study), a study date range
        ``(YYYYMMDD, YYYYMMDD)``, or a list of UIDs (each looked up)."""
        filters: dict[str, Any] = {}
        if modality:
            filters["ModalitiesInStudy"] = modality
        if date_range:
            filters["StudyDate"] = f"{date_range[0]}-{date_range[1]}"
        found: list[str] = []
        for uid in uids or [None]:
            f = dict(filters, StudyInstanceUID=uid) if uid else filters
            rows = self._call(
                "the study search (QIDO-RS)",
                self.client.search_for_studies,
                search_filters=f,
                limit=limit,
                get_remaining=limit is None,
            )
            found += [str(r["0020000D"]["Value"][0]) for r in rows if r.get("0020000D", {}).get("Value")]
        return list(dict.fromkeys(found))

    def study_instances(
        self,
        *,
        modality: str | None = "US",
        date_range: tuple[str, str] | None = None,
        uids: Sequence[str] | None = None,
    ) -> dict[str, list[str]]:
        """``{StudyInstanceUID: [SOPInstanceUID, ...]}`` of the studies a QIDO-RS query finds
        (:meth:`search_studies`' arguments), each study's instances sorted."""
        return {
            uid: self.instance_uids(uid)
            for uid in self.search_studies(modality=modality, date_range=date_range, uids=uids)
        }

    def iter_instances(self, study_uid: str) -> Iterator[Instance]:
        """The study's instances, one at a time, as WADO-RS streams them (original transfer syntax).

        A part that is DICOM without the Part 10 preamble (archives keep what senders sent) is
        read all the same; a part that is not DICOM at all comes as an instance named
        ``part-<n>`` without a header, so the interpreter reports it with its reason.

        Raises:
            StudyNotFound: the archive does not hold the study.
            DicomwebError: the archive cannot be reached or refuses.
        """
        # A QIDO lookup first: WADO answers an unknown study with an empty body on some servers.
        if not self.search_studies(modality=None, uids=[study_uid]):
            raise StudyNotFound(f"{self.url} holds no study {study_uid}", 404)
        what = f"study {study_uid} (WADO-RS)"
        resp = self._call(what, self._get_study, study_uid, uid=study_uid)
        # dicomweb-client's multipart decoder (streamed, part by part; a private helper of the
        # pinned version, used because its public iterator cannot skip a part it fails to parse)
        parts = self.client._decode_multipart_message(resp, stream=True)
        n = 0
        while True:
            part = self._call(what, next, parts, None, uid=study_uid)
            if part is None:
                return
            n += 1
            yield _instance(bytes(part), n)

    def _get_study(self, study_uid: str) -> Any:
        resp = self.session.get(
            f"{self.url}/studies/{study_uid}",
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
            stream=True,
            timeout=TIMEOUT_S,
        )
        resp.raise_for_status()
        return resp

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance as a DICOM Part 10 file (WADO-RS), for a key frame."""
        ds = self._call(
            f"instance {sop_uid} (WADO-RS)",
            self.client.retrieve_instance,
            study_uid,
            series_uid,
            sop_uid,
            uid=study_uid,
            media_types=(("application/dicom", "*"),),
        )
        return part10_bytes(ds)

    def instance_uids(self, study_uid: str) -> list[str]:
        """The SOPInstanceUIDs of a study (QIDO-RS), sorted."""
        rows = self._call(
            f"study {study_uid} (QIDO-RS)",
            self.client.search_for_instances,
            study_instance_uid=study_uid,
            get_remaining=True,
        )
        return sorted(str(r["00080018"]["Value"][0]) for r in rows if r.get("00080018", {}).get("Value"))

    def store(self, datasets: Sequence[Dataset]) -> list[str]:
        """Send instances with STOW-RS; returns their SOPInstanceUIDs as the archive stored them.

        Raises:
            DicomwebError: refused, or some instance failed (named in the message).
        """
        # As Part 10 files (preamble, full file meta): the client writes a dataset as it is.
        files = [_part10(ds) for ds in datasets]
        resp = self._call("the upload (STOW-RS)", self.client.store_instances, files)
        failed = resp.get("FailedSOPSequence") or []
        if failed:
            raise DicomwebError(
                f"{self.url} refused {len(failed)} of {len(datasets)} instances (STOW-RS): "
                + ", ".join(str(f.get("ReferencedSOPInstanceUID", "?")) for f in failed)
            )
        return [str(r.ReferencedSOPInstanceUID) for r in resp.get("ReferencedSOPSequence") or []]


def part10_bytes(ds: Dataset) -> bytes:
    """``ds`` as the bytes of a DICOM Part 10 file (preamble, file meta with its group length)."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _part10(ds: Dataset) -> Dataset:
    """``ds`` read back from :func:`part10_bytes` (what ``store_instances`` then writes whole)."""
    from pydicom import dcmread

    return dcmread(io.BytesIO(part10_bytes(ds)))


def _instance(data: bytes, n: int) -> Instance:
    """One WADO part as an :class:`Instance` (read without its pixel data)."""
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    try:
        header = dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        uid = str(header.SOPInstanceUID)
    except (InvalidDicomError, AttributeError, ValueError, EOFError, OSError):
        return Instance(f"part-{n}", data, None)
    if data[128:132] != b"DICM":  # a readable data set without the preamble: make it a file
        full = dcmread(io.BytesIO(data), force=True)
        full.file_meta = getattr(full, "file_meta", None) or _meta(header)
        data = part10_bytes(full)
    return Instance(uid, data, header)


def _meta(header: Dataset) -> Any:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ImplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = header.get("SOPClassUID", "")
    meta.MediaStorageSOPInstanceUID = header.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return meta


def _short(e: Exception) -> str:
    """A connection error in words, without the library's nesting (or any header)."""
    text = str(e)
    for marker in ("Connection refused", "Name or service not known", "timed out", "Max retries exceeded"):
        if marker in text:
            return marker.lower()
    return type(e).__name__
