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
from echoprime.interpret import StudyInput, StudyInterpreter, StudyResult


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
        from echoprime.release.load import load_release_parts

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
        return self.interpreter.process_dicoms(INPUT)

    def process_mp4s(self, INPUT: str | os.PathLike) -> torch.Tensor:  # noqa: N803 - the published name
        """Every MP4 (or other video file) under the folder ``INPUT`` -> ``N x 3 x 16 x 224 x 224``."""
        return self.interpreter.process_mp4s(INPUT)

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

    @torch.no_grad()
    def embed_videos(self, stack_of_videos: torch.Tensor) -> torch.Tensor:
        """``N`` clips -> ``N x 512`` video embeddings as the encoder outputs them (not normalised)."""
        self._check(stack_of_videos)
        b = self.interpreter.video_batch  # one clip a forward for this tower on a CPU (faster there)
        out = [
            self.parts.video_encoder(stack_of_videos[i : i + b].to(self.device, torch.float32)).float().cpu()
            for i in range(0, stack_of_videos.shape[0], b)
        ]
        dim = self.parts.bank.dim
        return torch.cat(out) if out else torch.zeros((0, dim))

    @torch.no_grad()
    def get_views(
        self, stack_of_videos: torch.Tensor, return_view_list: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[str]]:
        """Each clip's view from its first frame: ``N x 11`` one-hot (and the view names).

        The view is the argmax of the classifier's 11 logits (order ``taxonomy.VIEWS``).
        """
        self._check(stack_of_videos)
        b = self.interpreter.batch_size
        # The classifier takes the frames it needs (ConvNeXt: the first one, 3 x 224 x 224).
        idx = [
            self.parts.view_classifier(stack_of_videos[i : i + b].to(self.device, torch.float32))
            .argmax(dim=1)
            .cpu()
            for i in range(0, stack_of_videos.shape[0], b)
        ]
        views = torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long)
        onehot = F.one_hot(views, len(taxonomy.VIEWS)).float()  # N x 11
        if return_view_list:
            return onehot, [taxonomy.VIEWS[int(v)] for v in views]
        return onehot

    def encode_study(self, stack_of_videos: torch.Tensor) -> torch.Tensor:
        """The study encoding ``N x (512 + 11)``: each clip's embedding, then its one-hot view."""
        return torch.cat([self.embed_videos(stack_of_videos), self.get_views(stack_of_videos)], dim=1)

    def section_embeddings(self, study_embedding: torch.Tensor) -> torch.Tensor:
        """``N x 523`` -> ``15 x 512``: ``normalize(sum_i w[s, view_i] * emb_i)`` per MIL section."""
        sec, _ = self.interpreter.section_embeddings(torch.as_tensor(study_embedding))
        return torch.from_numpy(sec)

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
        from echoprime.retrieval import predict_metrics, release_values

        sec, _ = self.interpreter.section_embeddings(torch.as_tensor(study_embedding))
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
        return self.interpreter.generate_report(torch.as_tensor(study_embedding))

    def interpret(self, study: StudyInput, **kwargs: Any) -> StudyResult:
        """This package's full answer (views with confidence, evidence, neighbours, decisions).

        It pools the encoder's raw clip embeddings, as the release and :meth:`encode_study` do
        (the parts' ``normalize_embeddings`` is False), so its metrics are the release's numbers
        with the kNN neighbours paired by section name.
        """
        return self.interpreter.interpret(study, **kwargs)
