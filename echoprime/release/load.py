"""Read a user's copy of the published release into :class:`~echoprime.inference.InterpreterParts`.

What is built from which file (formats in docs/release-compat.md):

* video encoder: ``create_model("echoprime_mvit_v2_s")`` + ``echo_prime_encoder.pt``, strictly;
* view classifier: ``create_model("echoprime_convnext_base_views")`` + ``view_classifier.pt``;
* anatomical attention: :class:`~echoprime.models.mil.TableMIL` from ``MIL_weights.csv``;
* bank: ``candidate_embeddings_p1.pt`` and ``_p2.pt`` concatenated, ids from
  ``candidate_studies.csv``, phrase-id reports and labels from the two pickles, phrases from
  ``all_phr.json``;
* thresholds: ``roc_thresholds.csv``;
* text encoder (optional): ``create_model("biomedbert")`` + ``echo_prime_text_encoder.pt``, with
  the BiomedBERT tokenizer, which the release does not ship: it is taken from a local folder
  or the local Hugging Face cache, and without it text features are off (a logged reason).

Files are checked before anything heavy is read (all missing files named at once, pickles
refused unless trusted), and cheap files are read before the weights so that a bad copy
fails in a second, not after loading a gigabyte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from echoprime import taxonomy
from echoprime.inference.parts import InterpreterParts
from echoprime.release.files import (
    RELEASE_FILE_BY_KEY,
    ReleaseFormatError,
    ReleasePaths,
    check_labels,
    check_reports,
    check_section_to_phenotypes,
    check_trust,
    check_vocabulary_sections,
    load_tensor_file,
    load_trusted_pickle,
    locate,
    read_bank_embeddings,
    read_study_ids,
)

log = logging.getLogger(__name__)

RELEASE_FORMAT = "echoprime-release"
VIDEO_MODEL = "echoprime_mvit_v2_s"
VIEW_MODEL = "echoprime_convnext_base_views"
TEXT_MODEL = "biomedbert"
TEXT_MAX_LEN = 512  # the release tokenises reports to 512 tokens

# torch.nn.init functions that module constructors call to draw random weights.
_INIT_FUNCTIONS = (
    "uniform_",
    "normal_",
    "trunc_normal_",
    "constant_",
    "ones_",
    "zeros_",
    "eye_",
    "dirac_",
    "xavier_uniform_",
    "xavier_normal_",
    "kaiming_uniform_",
    "kaiming_normal_",
    "orthogonal_",
    "sparse_",
)
_init_lock = threading.Lock()


@contextlib.contextmanager
def _without_random_init() -> Iterator[None]:
    """Build modules without drawing random weights (transformers' ``no_init_weights`` trick).

    Every weight is overwritten by a strict state-dict load right after construction, and the
    random initialisation of ConvNeXt-Base and BERT-base costs seconds (3.3 s each on a 2-core
    box) for nothing. Only ``torch.nn.init`` is patched, so buffers computed by the constructors
    (BERT's ``position_ids``) are still right. The patch is process-wide while it lasts; the lock
    keeps two loaders from interleaving their restore.
    """
    with _init_lock:
        saved = {name: getattr(torch.nn.init, name) for name in _INIT_FUNCTIONS}
        try:
            for name in _INIT_FUNCTIONS:
                setattr(torch.nn.init, name, _keep)
            yield
        finally:
            for name, fn in saved.items():
                setattr(torch.nn.init, name, fn)


def _keep(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return tensor


def load_release_model(paths: ReleasePaths, key: str, model: str) -> nn.Module:
    """Build the registered ``model`` and load the release's state dict ``key`` into it strictly.

    Raises:
        ReleaseFormatError: the file is unreadable or does not match the architecture (naming
            missing/unexpected keys and shape mismatches).
    """
    from echoprime.models import create_model
    from echoprime.models.state_dict import load_release_state_dict

    display = RELEASE_FILE_BY_KEY[key].display
    state = load_tensor_file(paths[key], display)
    with _without_random_init():
        module = create_model(model)
    try:
        load_release_state_dict(module, state, source=f"{display} ({str(paths[key])!r})")
    except ValueError as e:
        raise ReleaseFormatError(str(e)) from None
    return module.eval()


def read_release_tables(paths: ReleasePaths, *, trust_pickles: bool) -> dict[str, Any]:
    """Everything but the weights: vocabulary, MIL table, thresholds, phenotype pairing, bank.

    Returns:
        ``{"vocab", "mil_table" (15 x 11 float32), "thresholds" (one per binary phenotype),
        "threshold_info" (see :func:`_release_thresholds`), "section_to_phenotypes", "bank"}``.

    Raises:
        ReleaseFormatError: any file malformed or inconsistent with another, naming it.
        UntrustedPickleError: a pickle without ``trust_pickles``.
    """
    from echoprime.bundle import read_mil_table
    from echoprime.reports import Vocabulary
    from echoprime.retrieval import BankFormatError, CandidateBank, ReportTable, read_release_thresholds

    disp = {k: f.display for k, f in RELEASE_FILE_BY_KEY.items()}
    try:
        vocab = Vocabulary.from_json(paths["vocabulary"])
    except ValueError as e:
        raise ReleaseFormatError(f"{disp['vocabulary']}: {e}") from None
    check_vocabulary_sections(vocab.sections, disp["vocabulary"])
    try:
        table = read_mil_table(paths["mil_weights"])
    except (ValueError, IndexError) as e:
        raise ReleaseFormatError(f"{disp['mil_weights']}: {e}") from None
    try:
        thresholds = read_release_thresholds(paths["roc_thresholds"])
    except ValueError as e:
        raise ReleaseFormatError(f"{disp['roc_thresholds']}: {e}") from None
    thresholds, threshold_info = _release_thresholds(thresholds, disp["roc_thresholds"])
    s2p = check_section_to_phenotypes(
        load_trusted_pickle(
            paths["section_to_phenotypes"], disp["section_to_phenotypes"], trust_pickles=trust_pickles
        ),
        disp["section_to_phenotypes"],
    )

    ids = read_study_ids(paths["candidate_studies"], disp["candidate_studies"])
    emb = read_bank_embeddings(
        [(paths[k], disp[k]) for k in ("candidate_embeddings_p1", "candidate_embeddings_p2")]
    )
    if emb.shape[0] != len(ids):
        raise ReleaseFormatError(
            f"{disp['candidate_studies']} lists {len(ids)} studies but the embeddings "
            f"({disp['candidate_embeddings_p1']} + _p2) hold {emb.shape[0]} rows; they must match row for row"
        )
    raw_reports = check_reports(
        load_trusted_pickle(
            paths["candidate_reports"], disp["candidate_reports"], trust_pickles=trust_pickles
        ),
        len(ids),
        disp["candidate_reports"],
    )
    try:
        reports = ReportTable.from_triples(raw_reports)
        reports.validate(vocab)
    except BankFormatError as e:
        raise ReleaseFormatError(
            f"{disp['candidate_reports']} (phrase ids of {disp['vocabulary']}): {e}"
        ) from None
    del raw_reports  # the column table holds them now; the lists cost ~100 bytes a triple
    labels = check_labels(
        load_trusted_pickle(paths["candidate_labels"], disp["candidate_labels"], trust_pickles=trust_pickles),
        disp["candidate_labels"],
    )
    try:
        bank = CandidateBank.build(emb, ids, reports, labels, vocab)
    except BankFormatError as e:
        raise ReleaseFormatError(f"{disp['candidate_labels']}: {e}") from None
    return {
        "vocab": vocab,
        "mil_table": table,
        "thresholds": thresholds,
        "threshold_info": threshold_info,
        "section_to_phenotypes": s2p,
        "bank": bank,
    }


def _release_thresholds(read: Any, display: str) -> tuple[Any, dict[str, Any]]:
    """The release's thresholds for the taxonomy's binaries, and what the file did not cover.

    The published ``roc_thresholds.csv`` has rows for 13 of the 19 binary phenotypes plus three
    names that are no phenotype (docs/release-compat.md). Binaries without a row decide at the
    default 0.5 of neighbours (``source: default``); rows without a phenotype are kept in the
    returned info, not used. One warning at load names both (not one per study).

    Returns:
        ``(thresholds, info)``: thresholds for exactly the binary phenotypes, in taxonomy order;
        ``info = {"from_file": [...], "default": [...], "rows_without_phenotype": {name: value}}``.
    """
    from echoprime.retrieval.thresholds import DEFAULT_THRESHOLD

    binaries = taxonomy.BINARY_PHENOTYPES
    unused = {name: read[name] for name in read if name not in binaries}
    missing = [p for p in binaries if p not in read]
    reason = f"{display} has no row for it; decided at the default {DEFAULT_THRESHOLD} of neighbours"
    thresholds = read.select(binaries).with_defaults(missing, reason).select(binaries)
    info = {
        "from_file": [p for p in binaries if p in read],
        "default": missing,
        "rows_without_phenotype": unused,
    }
    if missing or unused:
        log.warning(
            "%s: binary phenotypes without a row decide at the default %s of neighbours: %s; "
            "rows that name no phenotype are kept but not used: %s",
            display,
            DEFAULT_THRESHOLD,
            missing or "none",
            sorted(unused) or "none",
        )
    return thresholds, info


def load_release_text(
    paths: ReleasePaths, text_tokenizer: str | os.PathLike | None
) -> tuple[nn.Module | None, Any, str]:
    """The text encoder and its tokenizer, or ``(None, None, reason)`` when text features are off.

    Args:
        paths: the release files.
        text_tokenizer: a local tokenizer folder or Hugging Face name; None tries BiomedBERT's
            name in the local cache and turns text features off (with the reason) when absent.

    Raises:
        echoprime.models.text.TextModelNotFoundError: an explicitly given tokenizer is not available.
        ReleaseFormatError: the text encoder file is malformed, or the tokenizer's vocabulary is
            larger than the encoder's.
    """
    from echoprime.models.text import BIOMEDBERT_NAME, TextModelNotFoundError, load_pretrained_tokenizer
    from echoprime.models.tokenizer import ReportTokenizer

    display = RELEASE_FILE_BY_KEY["text_encoder"].display
    if not paths.has("text_encoder"):
        reason = f"unavailable: {display} is not in this copy of the release"
        log.warning("release text features off: %s", reason)
        return None, None, reason
    try:
        hf_tok = load_pretrained_tokenizer(text_tokenizer or BIOMEDBERT_NAME)
    except TextModelNotFoundError as e:
        if text_tokenizer is not None:
            raise
        reason = (
            f"unavailable: the release does not ship the BiomedBERT tokenizer that {display} needs, and it "
            f"is not in the local Hugging Face cache; pass text_tokenizer=DIR (command line: --tokenizer DIR). {e}"
        )
        log.warning("release text features off: %s", reason)
        return None, None, reason
    text = load_release_model(paths, "text_encoder", TEXT_MODEL)
    if len(hf_tok) > text.vocab_size:
        raise ReleaseFormatError(
            f"tokenizer {str(text_tokenizer or BIOMEDBERT_NAME)!r} has {len(hf_tok)} tokens, more than the "
            f"{text.vocab_size} rows of {display}'s embedding table: it is not this encoder's tokenizer"
        )
    # BiomedBERT has 2 token types, so token types stay 0 (section_type_ids=False) as in the
    # release; free text is allowed (strict_sections=False) since search queries are free text.
    tok = ReportTokenizer(hf_tok, max_len=TEXT_MAX_LEN, section_type_ids=False, strict_sections=False)
    return text, tok, "available"


def load_release_parts(
    model_data_dir: str | os.PathLike,
    assets_dir: str | os.PathLike,
    trust_pickles: bool = False,
    *,
    text_tokenizer: str | os.PathLike | None = None,
) -> InterpreterParts:
    """Read a user's copy of the published release into interpreter parts.

    Args:
        model_data_dir: the release's ``model_data`` folder.
        assets_dir: the release's ``assets`` folder.
        trust_pickles: the copy comes from a trusted source, so its three pickles may be read.
        text_tokenizer: local folder (or cached Hugging Face name) of the BiomedBERT tokenizer;
            default: BiomedBERT from the local cache when present, else text features are off.

    Returns:
        :class:`echoprime.inference.InterpreterParts`; ``manifest`` describes the source
        (``format: echoprime-release``, the folders, ``section_to_phenotypes`` in file order,
        ``text_features``).

    Raises:
        ReleaseFormatError: a folder or file missing (all named), or a malformed file (named).
        UntrustedPickleError: ``trust_pickles`` is False.
    """
    from echoprime.models.mil import TableMIL
    from echoprime.preprocess import PreprocessSpec

    paths = locate(model_data_dir, assets_dir)
    check_trust(paths, trust_pickles)
    tables = read_release_tables(paths, trust_pickles=trust_pickles)
    video = load_release_model(paths, "video_encoder", VIDEO_MODEL)
    if video.embed_dim != tables["bank"].dim:
        raise ReleaseFormatError(
            f"{RELEASE_FILE_BY_KEY['video_encoder'].display} embeds into {video.embed_dim} dimensions but the "
            f"candidate embeddings have {tables['bank'].dim}"
        )
    views = load_release_model(paths, "view_classifier", VIEW_MODEL)
    text, tok, text_status = load_release_text(paths, text_tokenizer)
    spec = PreprocessSpec.release()
    manifest = {
        "format": RELEASE_FORMAT,
        "source": {"model_data": str(paths.model_data.resolve()), "assets": str(paths.assets.resolve())},
        "spec": spec.to_dict(),
        "components": {"video_encoder": VIDEO_MODEL, "view_classifier": VIEW_MODEL, "mil": "table"}
        | ({"text_encoder": TEXT_MODEL} if text is not None else {}),
        "bank": {"n": len(tables["bank"]), "dim": tables["bank"].dim},
        "section_to_phenotypes": tables["section_to_phenotypes"],
        "thresholds": tables["threshold_info"],
        "text_features": text_status,
    }
    return InterpreterParts(
        spec=spec,
        video_encoder=video,
        view_classifier=views,
        mil=TableMIL(torch.from_numpy(np.asarray(tables["mil_table"], dtype=np.float32))),
        bank=tables["bank"],
        thresholds=tables["thresholds"],
        text_encoder=text,
        tokenizer=tok,
        manifest=manifest,
        normalize_embeddings=False,  # the release pools the encoder's raw outputs
    )
