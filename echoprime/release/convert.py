"""Convert a trusted copy of the published release, once, into a pickle-free model bundle.

``import_release`` reads the release (pickles included: the caller vouches for them), checks it
the same way :func:`~echoprime.release.load.load_release_parts` does, and writes an ordinary
bundle (echoprime.bundle): safetensors weights, the MIL table as CSV, the bank as ``.npy`` +
Parquet + JSON, thresholds as JSON, every file hashed in the manifest. The manifest's ``extra``
records where it came from (the sha256 and size of every release file read) and the release's
``section_to_phenotypes`` order. From then on ``StudyInterpreter.from_bundle`` /
``EchoPrime.from_bundle`` load it and give the same encodings, predictions and report text as
the release itself, without reading a pickle again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.release.files import RELEASE_FILES, ReleaseFormatError, locate
from echoprime.release.load import RELEASE_FORMAT, TEXT_MODEL, VIDEO_MODEL, VIEW_MODEL, load_release_parts


def _check_round_trip(table: np.ndarray) -> None:
    """The bundle must hold the release's MIL weights exactly, or its answers would drift.

    Raises:
        ReleaseFormatError: the bundle's table format would round a weight.
    """
    from echoprime.bundle import read_mil_table, write_mil_table

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mil_table.csv"
        write_mil_table(path, table)
        back = read_mil_table(path)
    if not np.array_equal(back, table):
        err = float(np.abs(back.astype(np.float64) - table).max())
        raise ReleaseFormatError(
            f"the bundle's MIL table format would round the release's weights (largest change {err:.3g}), "
            "so the converted bundle would not reproduce the release; echoprime.bundle.write_mil_table "
            "must write float32 values exactly (9 significant digits)"
        )


def _pseudonymous_bank(bank: Any, environ: Any = None) -> tuple[Any, dict[str, str], str]:
    """A copy of the release's bank whose study ids are keyed pseudonyms (as build-bank stores
    them; docs/privacy.md): ``(bank, {original: pseudonym}, secret source)``. Rows, order,
    reports and labels are the release's."""
    import copy

    from echoprime.retrieval.pseudonyms import pseudonymise, site_secret

    secret, source = site_secret(environ)
    ids = [str(s) for s in bank.study_ids]
    pseudo = pseudonymise(ids, secret)
    out = copy.copy(bank)
    out.study_ids = np.array([pseudo[s] for s in ids])
    return out, pseudo, source


def write_release_bundle(
    parts: Any,
    out: str | os.PathLike,
    *,
    extra: dict[str, Any] | None = None,
    id_map: str | os.PathLike | None = None,
) -> Path:
    """Write interpreter parts read from a release as a bundle in the new folder ``out``.

    The bank's study ids (the release's candidate studies) are stored as keyed pseudonyms, as
    in every bundle (``ECHOPRIME_SITE_SECRET``, or a one-off secret; docs/privacy.md).

    Args:
        parts: :func:`load_release_parts` output.
        out: a folder that does not exist yet or is empty.
        extra: more provenance for the manifest's ``extra``.
        id_map: also write the map from the pseudonyms to the release's study ids here (a local
            file outside ``out``).

    Raises:
        ValueError: ``parts`` did not come from a release.
        ReleaseFormatError: ``out`` is not empty, or the bundle could not hold the release exactly.
    """
    from echoprime.bundle import assemble_bundle

    man = parts.manifest or {}
    if man.get("format") != RELEASE_FORMAT:
        raise ValueError(f"parts must come from load_release_parts (manifest format {man.get('format')!r})")
    root = Path(out)
    # assemble_bundle clears a non-empty folder without a manifest; never let that be a user's folder.
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ReleaseFormatError(
            f"--out {str(root)!r} exists and is not an empty folder; choose a new folder"
        )
    if id_map is not None:
        from echoprime.retrieval.pseudonyms import check_map_outside

        check_map_outside(id_map, root, "the bundle")
    table = parts.mil.table.detach().cpu().numpy().astype(np.float32)
    _check_round_trip(table)
    from echoprime.retrieval.pseudonyms import SCHEME, write_id_map

    bank, pseudo, secret_source = _pseudonymous_bank(parts.bank)
    info = {
        "source": "published EchoPrime release (converted by echoprime import-release)",
        "section_to_phenotypes": man["section_to_phenotypes"],
        "text_features": man["text_features"],
        "release_thresholds": man["thresholds"],
        "release_source": man["source"],
        "study_ids": {"scheme": SCHEME, "secret": secret_source},
    } | dict(extra or {})
    with tempfile.TemporaryDirectory() as tmp:
        text = tok_dir = None
        if parts.text_encoder is not None and parts.tokenizer is not None:
            text = (parts.text_encoder, TEXT_MODEL, {})  # BundleWriter copies tied weights apart
            tok_dir = parts.tokenizer.save_pretrained(Path(tmp) / "tokenizer")
        done = assemble_bundle(
            root,
            spec=parts.spec.to_dict(),
            video_encoder=(parts.video_encoder, VIDEO_MODEL, {}),
            video_normalize=parts.normalize_embeddings,
            view_classifier=(parts.view_classifier, VIEW_MODEL, {}),
            bank=bank,
            mil_table=table,
            text_encoder=text,
            tokenizer_dir=tok_dir,
            thresholds=parts.thresholds,
            config=None,
            extra=info,
        )
    if id_map is not None:  # after the commit: a map always belongs to a committed bundle
        write_id_map(id_map, pseudo, source=secret_source)
    return done


def release_file_digests(
    model_data_dir: str | os.PathLike, assets_dir: str | os.PathLike
) -> dict[str, dict[str, Any]]:
    """``{model_data/...: {"sha256", "bytes"}}`` of every release file present (provenance)."""
    from echoprime.bundle import sha256_file

    paths = locate(model_data_dir, assets_dir)
    return {
        f.display: {"sha256": sha256_file(paths[f.key]), "bytes": paths[f.key].stat().st_size}
        for f in RELEASE_FILES
        if paths.has(f.key)
    }


def import_release(
    model_data_dir: str | os.PathLike,
    assets_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    trust_pickles: bool = False,
    text_tokenizer: str | os.PathLike | None = None,
    id_map: str | os.PathLike | None = None,
) -> Path:
    """Convert a user's copy of the published release into a pickle-free bundle at ``out``.

    Args:
        model_data_dir: the release's ``model_data`` folder.
        assets_dir: the release's ``assets`` folder.
        out: new (or empty) folder for the bundle.
        trust_pickles: required: the release's pickles are read this one time.
        text_tokenizer: local folder of the BiomedBERT tokenizer; without it (and without
            BiomedBERT in the local Hugging Face cache) the bundle has no text encoder.
        id_map: write the map from the bank's pseudonyms to the release's study ids here.

    Returns:
        The committed bundle's folder.

    Raises:
        UntrustedPickleError: ``trust_pickles`` is False.
        ReleaseFormatError: missing or malformed release files, or a non-empty ``out``.
    """
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ReleaseFormatError(
            f"--out {str(root)!r} exists and is not an empty folder; choose a new folder"
        )
    parts = load_release_parts(
        model_data_dir, assets_dir, trust_pickles=trust_pickles, text_tokenizer=text_tokenizer
    )
    digests = release_file_digests(model_data_dir, assets_dir)
    return write_release_bundle(parts, root, extra={"release_files": digests}, id_map=id_map)
