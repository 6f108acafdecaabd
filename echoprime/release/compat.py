"""``EchoPrime``: the published class's methods, names and inputs/outputs, on this package.

A notebook written for the published code ports by changing its import::

    from echoprime.release import EchoPrime

    ep = EchoPrime("model_data", "assets", trust_pickles=True)   # or EchoPrime.from_bundle(path)
    clips = ep.process_dicoms("study_folder/")                     # N x 3 x 16 x 224 x 224
    encoding = ep.encode_study(clips)                              # N x 523
    metrics = ep.predict_metrics(encoding)                         # {phenotype: value}
    report = ep.generate_report(encoding)                          # "Left Ventricle: ... [SEP] ..."

The computation is the release's algorithm (docs/release-compat.md): raw encoder
outputs (not normalised) next to the one-hot view of each clip's first frame; per section
``normalize(sum_i w[s, view_i] * emb_i)``; kNN means of the neighbours' labels; each report
section from the most similar candidate whose report has it. Two defects of the published
code are not reproduced (docs/release-compat.md): phenotypes read their OWN section's
neighbours (``compat_positional=True`` restores the positional pairing, for comparisons only),
and report sections are found from the report's structure, with "not assessed" when no
candidate has one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F

from echoprime import taxonomy
from echoprime.inference import StudyInput, StudyInterpreter, StudyResult
from echoprime.io.folders import process_dicoms, process_mp4s
from echoprime.release.load import load_release_parts
from echoprime.retrieval import generate_report, predict_metrics, release_values


class EchoPrime:
    """Release-compatible interpretation of echo studies.

    Args:
        model_data_dir: the release's ``model_data`` folder (default: ``model_data`` in the
            working directory, where the published code looks).
        assets_dir: the release's ``assets`` folder.
        trust_pickles: the copy comes from a trusted source, so its pickles may be read
            (convert it once with ``echoprime import-release`` and use :meth:`from_bundle` after).
        device: where the networks run (default: CUDA when present).
        text_tokenizer: local folder of the BiomedBERT tokenizer for text features (optional).
        batch_size: clips per forward pass (the release uses 50).

    Raises:
        echoprime.release.ReleaseFormatError: a missing or malformed release file, named.
        echoprime.release.UntrustedPickleError: pickles without ``trust_pickles=True``.
    """

    def __init__(
        self,
        model_data_dir: str | os.PathLike = "model_data",
        assets_dir: str | os.PathLike = "assets",
        trust_pickles: bool = False,
        device: str | torch.device | None = None,
        *,
        text_tokenizer: str | os.PathLike | None = None,
        batch_size: int = 50,
    ) -> None:
        parts = load_release_parts(
            model_data_dir, assets_dir, trust_pickles=trust_pickles, text_tokenizer=text_tokenizer
        )
        self._attach(StudyInterpreter(parts, device=device, batch_size=batch_size))

    @classmethod
    def from_bundle(
        cls, uri: str | os.PathLike, device: str | torch.device | None = None, *, batch_size: int = 50
    ) -> EchoPrime:
        """The same API on a model bundle (e.g. one written by ``echoprime import-release``)."""
        return cls.from_interpreter(StudyInterpreter.from_bundle(uri, device=device, batch_size=batch_size))

    @classmethod
    def from_interpreter(cls, interpreter: StudyInterpreter) -> EchoPrime:
        """Wrap an already loaded :class:`StudyInterpreter`."""
        obj = cls.__new__(cls)
        obj._attach(interpreter)
        return obj

    def _attach(self, interpreter: StudyInterpreter) -> None:
        self.interpreter = interpreter
        self.parts = interpreter.parts
        self.towers = interpreter.towers
        self.device = interpreter.device
        man = self.parts.manifest or {}
        # A release's (or an imported bundle's) own section -> phenotypes order, which only the
        # positional compatibility mode depends on; the taxonomy's for other bundles.
        s2p = man.get("section_to_phenotypes") or man.get("extra", {}).get("section_to_phenotypes")
        self.section_to_phenotypes: dict[str, list[str]] = {
            s: list(ps) for s, ps in (s2p or taxonomy.SECTION_TO_PHENOTYPES).items()
        }

    # ----------------------------------------------------------------------- preprocessing
    def process_dicoms(self, INPUT: str | os.PathLike) -> torch.Tensor:  # noqa: N803 - the published name
        """Every DICOM cine under the folder ``INPUT`` -> ``N x 3 x 16 x 224 x 224`` (files in sorted
        order; stills and non-DICOM files are skipped, see ``StudyInterpreter.load_study`` for reasons)."""
        return process_dicoms(INPUT, self.parts.spec)[0]

    def process_mp4s(self, INPUT: str | os.PathLike) -> torch.Tensor:  # noqa: N803 - the published name
        """Every MP4 (or other video file) under the folder ``INPUT`` -> ``N x 3 x 16 x 224 x 224``."""
        return process_mp4s(INPUT, self.parts.spec)[0]

    # ---------------------------------------------------------------------------- encoding
    def _check(self, clips: torch.Tensor) -> None:
        s = self.parts.spec
        if (
            not isinstance(clips, torch.Tensor)
            or clips.ndim != 5
            or tuple(clips.shape[1:]) != (3, s.frames, s.size, s.size)
        ):
            shape = tuple(clips.shape) if isinstance(clips, torch.Tensor) else type(clips).__name__
            raise ValueError(
                f"expected preprocessed clips N x 3 x {s.frames} x {s.size} x {s.size} "
                f"(process_dicoms / process_mp4s output), got {shape}"
            )

    def embed_videos(self, stack_of_videos: torch.Tensor) -> torch.Tensor:
        """``N`` clips -> ``N x 512`` video embeddings as the release pools them (the encoder's raw
        outputs for a release; unit-norm for a bundle of ours, as its interpretation pools them)."""
        self._check(stack_of_videos)
        return self.towers.embed(stack_of_videos)

    def get_views(
        self, stack_of_videos: torch.Tensor, return_view_list: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Each clip's view from its first frame: ``N x 11`` one-hot (and the view names).

        The view is the most probable of the classifier's 11 (order ``taxonomy.VIEWS``).
        """
        self._check(stack_of_videos)
        views = self.towers.classify(stack_of_videos).argmax(dim=1)
        onehot = F.one_hot(views, len(taxonomy.VIEWS)).float()  # N x 11
        if return_view_list:
            return onehot, [taxonomy.VIEWS[int(v)] for v in views]
        return onehot

    def encode_study(self, stack_of_videos: torch.Tensor) -> torch.Tensor:
        """The study encoding ``N x (512 + 11)``: each clip's embedding, then its one-hot view."""
        return torch.cat([self.embed_videos(stack_of_videos), self.get_views(stack_of_videos)], dim=1)

    def section_embeddings(self, study_embedding: torch.Tensor) -> torch.Tensor:
        """``N x 523`` -> ``15 x 512``: ``normalize(sum_i w[s, view_i] * emb_i)`` per MIL section."""
        return torch.from_numpy(self._sections(study_embedding))

    def _sections(self, study_embedding: torch.Tensor) -> Any:
        enc = torch.as_tensor(study_embedding)
        n_views, dim = len(taxonomy.VIEWS), self.parts.bank.dim
        if enc.ndim != 2 or enc.shape[0] == 0 or enc.shape[1] != dim + n_views:
            raise ValueError(
                f"encoding must be N x {dim + n_views} with N >= 1 (embedding + one-hot view), "
                f"got {tuple(enc.shape)}"
            )
        return self.interpreter.attend(enc[:, :-n_views].float(), enc[:, -n_views:].argmax(dim=1))[0]

    # ------------------------------------------------------------------------------ outputs
    def predict_metrics(
        self, study_embedding: torch.Tensor, k: int = 50, *, compat_positional: bool = False
    ) -> dict[str, float]:
        """``{phenotype: value}``: for each phenotype the mean label of the ``k`` candidates nearest
        to its own section's embedding (regressions in their units, binaries as the positive
        fraction; NaN when no neighbour is labelled).

        Args:
            study_embedding: :meth:`encode_study` output.
            k: neighbours per section.
            compat_positional: pair the ``i``-th key of the release's ``section_to_phenotypes``
                with the ``i``-th section-embedding row, as the published code does (a defect,
                see docs/release-compat.md); only for reproducing published numbers.

        Raises:
            ValueError: ``k`` outside ``1..len(bank)`` or a malformed encoding.
        """
        sec = self._sections(study_embedding)
        bank = self.parts.bank
        pairs = {p: s for s, ps in self.section_to_phenotypes.items() for p in ps if p in bank.phenotypes}
        preds = predict_metrics(
            sec,
            bank,
            k,
            phenotype_sections=pairs,
            thresholds=self.parts.thresholds or None,
            compat_positional=compat_positional,
        )
        return release_values(preds)

    def decisions(self, metrics: dict[str, float]) -> dict[str, bool | None]:
        """Binary phenotypes' decisions ``value >= threshold`` (``roc_thresholds.csv``); None for NaN."""
        out: dict[str, bool | None] = {}
        for p, v in metrics.items():
            if p in self.parts.thresholds and taxonomy.PHENOTYPE_BY_NAME[p].kind == "binary":
                out[p] = None if v != v else bool(v >= self.parts.thresholds[p])
        return out

    def generate_report(self, study_embedding: torch.Tensor) -> str:
        """The retrieval-augmented report: for each of the 15 sections, the section text of the
        most similar candidate whose report has it (``"<Section>: not assessed [SEP]"`` when none
        has), joined by spaces."""
        return generate_report(self._sections(study_embedding), self.parts.bank, top=self.interpreter.k).text

    def interpret(self, study: StudyInput, **kwargs: Any) -> StudyResult:
        """This package's full answer (views with confidence, evidence, neighbours, decisions).

        It pools the encoder's raw clip embeddings, as the release and :meth:`encode_study` do
        (the parts' ``normalize_embeddings`` is False), so its metrics are the release's numbers
        with the kNN neighbours paired by section name.
        """
        return self.interpreter.interpret(study, **kwargs)
