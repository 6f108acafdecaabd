"""The files of a user's copy of the published EchoPrime release, and careful readers for each.

Layout (paths relative to the two folders the user passes; see docs/release-compat.md)::

    MODEL_DATA/weights/echo_prime_encoder.pt           video encoder state dict (mvit_v2_s)
    MODEL_DATA/weights/view_classifier.pt              view classifier state dict (convnext_base)
    MODEL_DATA/weights/echo_prime_text_encoder.pt      text encoder state dict (optional here)
    MODEL_DATA/candidates_data/candidate_studies.csv   column ``Study``: bank order
    MODEL_DATA/candidates_data/candidate_embeddings_p1.pt, _p2.pt   the bank, split in two
    MODEL_DATA/candidates_data/candidate_reports.pkl   pickle: triples per candidate
    MODEL_DATA/candidates_data/candidate_labels.pkl    pickle: {phenotype: {study_id: value}}
    ASSETS/all_phr.json                                phrase vocabulary
    ASSETS/MIL_weights.csv                             15 x 11 section x view weights
    ASSETS/section_to_phenotypes.pkl                   pickle: {section: [phenotype, ...]}
    ASSETS/roc_thresholds.csv                          ``,feature,threshold``

Every reader raises :class:`ReleaseFormatError` naming the file and what was expected. Pickles
are opened only through :func:`load_trusted_pickle`, which refuses unless the caller said the
copy is trusted: unpickling runs whatever code the file names.
"""

from __future__ import annotations

import csv
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from echoprime import taxonomy


class ReleaseFormatError(ValueError):
    """A release copy that cannot be used: a missing, unreadable or malformed file, named."""


class UntrustedPickleError(ReleaseFormatError):
    """A pickle of the release was about to be read without ``trust_pickles=True``."""


@dataclass(frozen=True)
class ReleaseFile:
    """One file of the release.

    Attributes:
        key: short name used in code (``video_encoder``).
        root: ``model_data`` or ``assets``: which of the two folders holds it.
        path: path inside that folder.
        required: False only for files without which interpretation still works.
        pickle: the file is a Python pickle (read only when trusted).
    """

    key: str
    root: str
    path: str
    required: bool = True
    pickle: bool = False

    @property
    def display(self) -> str:
        """``model_data/weights/...`` as the release's own layout names it."""
        return f"{self.root}/{self.path}"


RELEASE_FILES: tuple[ReleaseFile, ...] = (
    ReleaseFile("video_encoder", "model_data", "weights/echo_prime_encoder.pt"),
    ReleaseFile("view_classifier", "model_data", "weights/view_classifier.pt"),
    # Interpretation (encode, metrics, report) never uses the text tower, so a copy without it
    # still works; only text embedding and search become unavailable.
    ReleaseFile("text_encoder", "model_data", "weights/echo_prime_text_encoder.pt", required=False),
    ReleaseFile("candidate_studies", "model_data", "candidates_data/candidate_studies.csv"),
    ReleaseFile("candidate_embeddings_p1", "model_data", "candidates_data/candidate_embeddings_p1.pt"),
    ReleaseFile("candidate_embeddings_p2", "model_data", "candidates_data/candidate_embeddings_p2.pt"),
    ReleaseFile("candidate_reports", "model_data", "candidates_data/candidate_reports.pkl", pickle=True),
    ReleaseFile("candidate_labels", "model_data", "candidates_data/candidate_labels.pkl", pickle=True),
    ReleaseFile("vocabulary", "assets", "all_phr.json"),
    ReleaseFile("mil_weights", "assets", "MIL_weights.csv"),
    ReleaseFile("section_to_phenotypes", "assets", "section_to_phenotypes.pkl", pickle=True),
    ReleaseFile("roc_thresholds", "assets", "roc_thresholds.csv"),
)
RELEASE_FILE_BY_KEY: dict[str, ReleaseFile] = {f.key: f for f in RELEASE_FILES}

TRUST_HINT = (
    "Pickles can run arbitrary code when they are loaded, so they are read only when you say this "
    "copy of the release comes from a source you trust: pass trust_pickles=True (command line: "
    "`echoprime import-release --model-data DIR --assets DIR --out BUNDLE --trust-pickles`) once, "
    "which converts the release into a pickle-free bundle, and load that bundle from then on "
    "(StudyInterpreter.from_bundle / EchoPrime.from_bundle)."
)


@dataclass(frozen=True)
class ReleasePaths:
    """Where each file of one release copy is (:func:`locate` checks they exist)."""

    model_data: Path
    assets: Path
    files: dict[str, Path]

    def __getitem__(self, key: str) -> Path:
        return self.files[key]

    def has(self, key: str) -> bool:
        return self.files[key].is_file()


def locate(model_data_dir: str | os.PathLike, assets_dir: str | os.PathLike) -> ReleasePaths:
    """Resolve and check the release's files, all at once.

    Raises:
        ReleaseFormatError: a folder does not exist, or required files are missing (every
            missing file is named, with where it was expected).
    """
    roots = {"model_data": Path(model_data_dir).expanduser(), "assets": Path(assets_dir).expanduser()}
    for name, folder in roots.items():
        if not folder.is_dir():
            raise ReleaseFormatError(
                f"release {name} folder {str(folder)!r} does not exist or is not a folder "
                f"(expected the release's `{name}` directory)"
            )
    files = {f.key: roots[f.root] / f.path for f in RELEASE_FILES}
    missing = [f for f in RELEASE_FILES if f.required and not files[f.key].is_file()]
    if missing:
        listed = "; ".join(f"{f.display} (expected at {str(files[f.key])!r})" for f in missing)
        hint = ""
        nested = roots["model_data"] / "model_data"
        if nested.is_dir():
            hint = f" Did you mean --model-data {str(nested)!r}?"
        raise ReleaseFormatError(
            f"release file{'s' if len(missing) > 1 else ''} missing: {listed}.{hint} "
            "A complete copy of the published release has every file listed in docs/release-compat.md."
        )
    return ReleasePaths(roots["model_data"], roots["assets"], files)


def check_trust(paths: ReleasePaths, trust_pickles: bool) -> None:
    """Refuse, before anything is read, to go on with pickles unless they are trusted.

    Raises:
        UntrustedPickleError: ``trust_pickles`` is False; names the pickles and how to proceed.
    """
    if trust_pickles:
        return
    names = ", ".join(f.display for f in RELEASE_FILES if f.pickle)
    raise UntrustedPickleError(
        f"the release stores part of its data as Python pickles ({names}). {TRUST_HINT}"
    )


def load_trusted_pickle(path: Path, display: str, *, trust_pickles: bool) -> Any:
    """Unpickle a release file the user trusts.

    Raises:
        UntrustedPickleError: ``trust_pickles`` is False.
        ReleaseFormatError: the file is not a readable pickle.
    """
    if not trust_pickles:
        raise UntrustedPickleError(f"{display} is a Python pickle. {TRUST_HINT}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f)  # noqa: S301 - the caller passed trust_pickles=True (see TRUST_HINT)
    except (
        pickle.UnpicklingError,
        EOFError,
        AttributeError,
        ImportError,
        IndexError,
        TypeError,
        ValueError,
    ) as e:
        raise ReleaseFormatError(
            f"{display} ({str(path)!r}) is not a readable pickle: {type(e).__name__}: {e}"
        ) from None


def load_tensor_file(path: Path, display: str) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with errors that name the file.

    Raises:
        ReleaseFormatError: truncated, corrupt, or holding objects other than tensors and containers.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError, OSError, ValueError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ReleaseFormatError(
            f"{display} ({str(path)!r}) cannot be read as a torch file of tensors (corrupt, truncated, "
            f"or not the release's file): {first}"
        ) from None


def read_study_ids(path: Path, display: str) -> list[str]:
    """The ``Study`` column of ``candidate_studies.csv`` as strings, in bank order.

    A leading unnamed index column (what ``DataFrame.to_csv`` writes by default) is ignored.

    Raises:
        ReleaseFormatError: no ``Study`` column, an empty id, or no rows.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or "Study" not in rows[0]:
        raise ReleaseFormatError(
            f"{display}: expected a header with a column 'Study', got {rows[0] if rows else '<empty file>'}"
        )
    col = rows[0].index("Study")
    ids = []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if col >= len(row) or not row[col].strip():
            raise ReleaseFormatError(f"{display} line {line_no}: empty study id")
        ids.append(row[col].strip())
    if not ids:
        raise ReleaseFormatError(f"{display}: no candidate studies (header only)")
    return ids


def read_bank_embeddings(parts: Sequence[tuple[Path, str]]) -> np.ndarray:
    """Load the embedding parts and concatenate them along dim 0 into ``N x D`` float32.

    Raises:
        ReleaseFormatError: a part that is not a 2-D float tensor, parts of different widths, or
            non-finite values (naming the part and row).
    """
    arrays = []
    for path, display in parts:
        t = load_tensor_file(path, display)
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or not torch.is_floating_point(t):
            desc = f"tensor {tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ReleaseFormatError(f"{display}: expected a 2-D float tensor (candidates x dim), got {desc}")
        a = t.detach().to(torch.float32).numpy()
        finite = np.isfinite(a).all(axis=1)
        if not finite.all():
            raise ReleaseFormatError(f"{display}: row {int(np.flatnonzero(~finite)[0])} holds NaN or inf")
        arrays.append(a)
    widths = {a.shape[1] for a in arrays}
    if len(widths) != 1:
        raise ReleaseFormatError(
            "candidate embedding parts have different widths: "
            + ", ".join(f"{d} {a.shape}" for (_, d), a in zip(parts, arrays, strict=True))
        )
    return np.ascontiguousarray(np.concatenate(arrays, axis=0))  # (N1 + N2) x D


def check_reports(reports: Any, n: int, display: str) -> list[Sequence[Any]]:
    """``candidate_reports`` must be one triple list per candidate, ``n`` of them.

    Raises:
        ReleaseFormatError: another container, another count, or a candidate that is not a list.
    """
    if isinstance(reports, np.ndarray) and reports.ndim == 1:
        reports = list(reports)  # an object array of per-candidate lists
    if not isinstance(reports, (list, tuple)):
        raise ReleaseFormatError(
            f"{display}: expected a list with one list of (section, phrase, value) triples per candidate, "
            f"got {type(reports).__name__}"
        )
    if len(reports) != n:
        raise ReleaseFormatError(
            f"{display} holds {len(reports)} reports, the bank (candidate_studies.csv / embeddings) has {n}"
        )
    for i, r in enumerate(reports):
        if isinstance(r, (str, bytes, Mapping)) or not isinstance(r, (Sequence, np.ndarray)):
            raise ReleaseFormatError(
                f"{display}: candidate {i} is a {type(r).__name__}, expected a list of (section, phrase, value) triples"
            )
    return list(reports)


def check_labels(labels: Any, display: str) -> dict[str, dict[Any, Any]]:
    """``candidate_labels`` must be ``{phenotype: {study_id: value}}`` with string phenotype names.

    Raises:
        ReleaseFormatError: another shape, naming the offending key.
    """
    if not isinstance(labels, Mapping):
        raise ReleaseFormatError(
            f"{display}: expected {{phenotype: {{study_id: value}}}}, got {type(labels).__name__}"
        )
    for name, by_study in labels.items():
        if not isinstance(name, str):
            raise ReleaseFormatError(f"{display}: phenotype key {name!r} is not a string")
        if not isinstance(by_study, Mapping):
            raise ReleaseFormatError(
                f"{display}: labels[{name!r}] is a {type(by_study).__name__}, expected {{study_id: value}}"
            )
    missing = [p for p in taxonomy.PHENOTYPE_NAMES if p not in labels]
    if missing:
        raise ReleaseFormatError(
            f"{display}: no labels for the phenotypes {missing} (it has {sorted(labels)[:25]}); "
            "the published release labels all 21"
        )
    return {name: dict(by_study) for name, by_study in labels.items()}


def check_section_to_phenotypes(mapping: Any, display: str) -> dict[str, list[str]]:
    """The release's ``{section: [phenotype, ...]}`` must pair the same phenotypes with the same
    sections as :data:`echoprime.taxonomy.SECTION_TO_PHENOTYPES` (the pairing predictions use).

    Returns:
        The mapping as plain lists, in the file's key order (the order the positional
        compatibility mode pairs with section-embedding rows).

    Raises:
        ReleaseFormatError: another shape, or a phenotype paired with another section, an
            unknown section or phenotype, or a phenotype missing; every difference is named.
    """
    if not isinstance(mapping, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v)
        for k, v in mapping.items()
    ):
        raise ReleaseFormatError(f"{display}: expected {{section: [phenotype, ...]}} with string names")
    got = {p: s for s, ps in mapping.items() for p in ps}
    want = {p.name: p.section for p in taxonomy.PHENOTYPES}
    problems = [
        f"{p!r} is under {s!r}, expected {want[p]!r}" for p, s in got.items() if p in want and want[p] != s
    ]
    problems += [f"unknown phenotype {p!r} (under {s!r})" for p, s in got.items() if p not in want]
    problems += [f"{p!r} is missing (expected under {want[p]!r})" for p in want if p not in got]
    problems += [f"section {s!r} has no section embedding" for s in mapping if s not in taxonomy.MIL_SECTIONS]
    if problems:
        raise ReleaseFormatError(
            f"{display} does not pair phenotypes with sections as the published release does: "
            + "; ".join(problems[:10])
        )
    return {s: list(ps) for s, ps in mapping.items()}


def check_vocabulary_sections(sections: Sequence[str], display: str) -> None:
    """The vocabulary must name every report section that gets a section embedding.

    Raises:
        ReleaseFormatError: naming the sections it lacks.
    """
    missing = [s for s in taxonomy.MIL_SECTIONS if s not in sections]
    if missing:
        raise ReleaseFormatError(
            f"{display} lacks the report sections {missing}; its sections are {list(sections)}. "
            "Generated reports need every section by its exact name."
        )
