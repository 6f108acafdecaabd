"""Everything interpretation needs, loaded from a bundle: :class:`InterpreterParts`.

A published EchoPrime release gives the same parts through
:func:`echoprime.release.load_release_parts`; :class:`~echoprime.inference.StudyInterpreter`
takes either and does not know which it got.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from echoprime.preprocess import PreprocessSpec


@dataclass
class InterpreterParts:
    """Everything interpretation needs, however it was loaded (a bundle, a published release).

    Attributes:
        spec: preprocessing of a clip into model input.
        video_encoder: ``B x 3 x T x S x S -> B x D``.
        view_classifier: clip (or first frame) ``-> B x V`` logits.
        mil: ``(embeddings, view_ids, mask) -> {"weights", "section_embeddings"}`` (learned or table).
        bank: the candidate report bank.
        thresholds: decision threshold per binary phenotype.
        text_encoder: report -> embedding (optional: text embedding and search).
        tokenizer: the text encoder's :class:`ReportTokenizer` (optional).
        manifest: where it came from (bundle manifest or a description of the release).
        normalize_embeddings: clip embeddings are unit-normalised before the attention pools
            them (our bundles); False pools the encoder's raw outputs, as the published release
            does (its converted bundles record ``normalize: false``).
        calibration: the bundle's ``calibration.json`` (probability maps, measurement
            intervals, grade scales); None for bundles without one (a converted release), whose
            results then carry no calibrated probabilities, intervals or grades.
        heads: supervised heads fitted by ``echoprime finetune`` (none by default).

    A part not loaded (``load_bundle_parts(..., components=...)``) is ``None``.
    """

    spec: PreprocessSpec
    video_encoder: torch.nn.Module | None
    view_classifier: torch.nn.Module | None
    mil: torch.nn.Module | None
    bank: Any
    thresholds: Mapping[str, float] = field(default_factory=dict)
    text_encoder: torch.nn.Module | None = None
    tokenizer: Any = None
    manifest: dict[str, Any] = field(default_factory=dict)
    normalize_embeddings: bool = True
    calibration: Any = None
    heads: list[Any] = field(default_factory=list)
    """The bundle's fine-tuned task heads (echoprime.training.heads.LoadedHead), in logit order."""


COMPONENTS = ("video_encoder", "view_classifier", "mil", "bank", "text_encoder", "heads")
"""The parts :func:`load_bundle_parts` can load on their own."""


def load_bundle_parts(
    uri: str, *, verify: bool = True, components: Collection[str] | None = None
) -> InterpreterParts:
    """Read a bundle into :class:`InterpreterParts` (see echoprime.bundle for the layout).

    Args:
        uri: the bundle (local folder or ``s3://``).
        verify: check every file's sha256.
        components: the parts to load (:data:`COMPONENTS`; default all); the others are ``None``.

    Raises:
        ValueError: an unknown component name.
    """
    from echoprime.bundle import BundleError, fetch, load_module, read_manifest, read_mil_table
    from echoprime.models.mil import TableMIL
    from echoprime.retrieval import CandidateBank, Thresholds
    from echoprime.retrieval.calibration import Calibration

    root = fetch(uri)
    manifest = read_manifest(root, verify=verify)
    comps = manifest["components"]
    for need in ("video_encoder", "view_classifier", "mil"):
        if need not in comps:
            raise BundleError(f"bundle {uri}: manifest lists no {need}")
    want = set(COMPONENTS if components is None else components)
    if unknown := want - set(COMPONENTS):
        raise ValueError(f"unknown bundle components {sorted(unknown)}; expected some of {COMPONENTS}")
    spec = PreprocessSpec.from_dict(manifest["spec"])
    video = load_module(root, comps["video_encoder"]) if "video_encoder" in want else None
    views = load_module(root, comps["view_classifier"]) if "view_classifier" in want else None
    mil_info, mil = comps["mil"], None
    if "mil" in want and mil_info.get("kind") == "learned":
        mil = load_module(root, mil_info)
    elif "mil" in want:
        mil = TableMIL(torch.from_numpy(read_mil_table(root / mil_info["table"])))
    bank = CandidateBank.load(root / "bank") if want & {"bank", "mil"} else None
    thresholds = (
        Thresholds.from_json(root / "thresholds.json") if (root / "thresholds.json").is_file() else {}
    )
    calibration = (
        Calibration.from_json(root / "calibration.json") if (root / "calibration.json").is_file() else None
    )
    text = tok = None
    if "text_encoder" in comps and "text_encoder" in want:
        from echoprime.models.tokenizer import ReportTokenizer

        text = load_module(root, comps["text_encoder"])
        tok = ReportTokenizer.from_pretrained(root / comps["text_encoder"].get("tokenizer", "tokenizer"))
    normalize = bool(comps["video_encoder"].get("normalize", True))
    heads = []
    if "heads" in want:
        from echoprime.training.heads import load_heads

        heads = load_heads(root, manifest)
    return InterpreterParts(
        spec, video, views, mil, bank, thresholds, text, tok, manifest, normalize, calibration=calibration,
        heads=heads,
    )  # fmt: skip
