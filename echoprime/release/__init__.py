"""Drop-in compatibility with the published EchoPrime release (docs/release-compat.md).

* :class:`EchoPrime`: the published class's methods (``process_dicoms``, ``process_mp4s``,
  ``encode_study``, ``predict_metrics``, ``generate_report``) with the same inputs and outputs,
  on a user's copy of the release or on a bundle.
* :func:`load_release_parts`: the release's files -> :class:`~echoprime.inference.InterpreterParts`
  (``StudyInterpreter(load_release_parts(...))`` interprets with them).
* :func:`import_release`: convert a trusted copy once into a pickle-free bundle
  (``echoprime import-release``).

Pickles in the release are read only with ``trust_pickles=True``.
"""

from __future__ import annotations

from echoprime.release.compat import EchoPrime
from echoprime.release.convert import import_release, release_file_digests, write_release_bundle
from echoprime.release.files import (
    RELEASE_FILES,
    ReleaseFile,
    ReleaseFormatError,
    UntrustedPickleError,
    locate,
)
from echoprime.release.load import RELEASE_FORMAT, load_release_parts

__all__ = [
    "RELEASE_FILES",
    "RELEASE_FORMAT",
    "EchoPrime",
    "ReleaseFile",
    "ReleaseFormatError",
    "UntrustedPickleError",
    "import_release",
    "load_release_parts",
    "locate",
    "release_file_digests",
    "write_release_bundle",
]
