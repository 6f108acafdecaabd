"""A small bundle with random weights and a synthetic report bank, for tests that need one fast.

The models are the tiny CPU variants with random weights; the bank holds reports written by the
synthetic report writer (so texts, triples and labels are real and consistent). Results are not
meaningful predictions, but every part of the format and every code path is exercised. As
build-bank does, the bank stores keyed pseudonyms (key :data:`TEST_SECRET`) of its study ids
(``bank00000``, ...: :func:`original_ids`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

TEST_SECRET = b"echoprime tests: not a site secret"


def original_ids(n_bank: int) -> list[str]:
    """The study ids the random bank's ``n_bank`` reports stand for (stored only as pseudonyms)."""
    return [f"bank{i:05d}" for i in range(n_bank)]


def make_random_bundle(
    out: Path,
    *,
    n_bank: int = 300,
    seed: int = 0,
    size: int = 32,
    frames: int = 16,
    towers: str = "tiny",
    id_map: Path | None = None,
) -> Path:
    """A bundle with random weights and a bank of ``n_bank`` synthetic reports.

    Args:
        towers: ``"tiny"`` (the CPU test models at ``size`` x ``frames``) or ``"release"`` (the
            release-size mViT v2 S and ConvNeXt-base at 224 x 16, for cost measurements;
            ``size`` and ``frames`` are then ignored).
        id_map: also write the pseudonym -> original id map here (outside ``out``).
    """
    if towers not in ("tiny", "release"):
        raise ValueError(f"towers must be 'tiny' or 'release', got {towers!r}")
    from echoprime.bundle import assemble_bundle
    from echoprime.models import create_model
    from echoprime.models.factory import create_text_encoder
    from echoprime.models.tokenizer import ReportTokenizer, train_wordpiece_tokenizer
    from echoprime.preprocess import PreprocessSpec
    from echoprime.reports import default_vocabulary, extract_findings
    from echoprime.retrieval import CandidateBank, fit_thresholds
    from echoprime.retrieval.calibration import fit_calibration
    from echoprime.retrieval.pseudonyms import pseudonymise, write_id_map
    from echoprime.synth.report import compose_report
    from echoprime.synth.state import sample_state
    from echoprime.taxonomy import BINARY_PHENOTYPES, MEASUREMENTS, MIL_SECTIONS, VIEWS

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    vocab = default_vocabulary()
    reports = [
        compose_report(sample_state(rng, f"bp{i}", sid), rng) for i, sid in enumerate(original_ids(n_bank))
    ]
    texts = [r.to_text() for r in reports]
    tok = ReportTokenizer(
        train_wordpiece_tokenizer(texts, vocab_size=800), max_len=320, section_type_ids=True
    )
    tok_dir = tok.save_pretrained(out.parent / f"{out.name}-tokenizer")
    text = create_text_encoder("tiny_bag", vocab_size=tok.vocab_size).eval()
    with torch.no_grad():
        enc = tok(texts)
        emb = torch.nn.functional.normalize(
            text(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]), dim=-1
        ).numpy()
    labels = [extract_findings(t) for t in texts]  # the 21 labels, the grades and the heart rate
    pseudo = pseudonymise(original_ids(n_bank), TEST_SECRET)
    if id_map is not None:
        write_id_map(id_map, pseudo, source="site")
    ids = list(pseudo.values())
    lab = {
        p: {ids[i]: labels[i][p] for i in range(n_bank) if labels[i][p] == labels[i][p]} for p in labels[0]
    }
    bank = CandidateBank.build(emb, ids, [r.to_triples(vocab) for r in reports], lab, vocab)
    probs = {p: rng.random(50) for p in BINARY_PHENOTYPES}
    truth = {p: (rng.random(50) < 0.4).astype(float) for p in BINARY_PHENOTYPES}
    # Calibration maps, intervals and grade scales as build-bank fits them (here on random pairs).
    values = {m: rng.uniform(20, 80, 50) for m in MEASUREMENTS}
    calibration = fit_calibration(
        probs,
        truth,
        values,
        {m: rng.uniform(1, 8, 50) for m in MEASUREMENTS},
        {m: values[m] + rng.normal(0, 5, 50) for m in MEASUREMENTS},
    )
    if towers == "release":
        size, frames = 224, 16
        video = (create_model("echoprime_mvit_v2_s").eval(), "echoprime_mvit_v2_s", {})
        views = (create_model("echoprime_convnext_base_views").eval(), "echoprime_convnext_base_views", {})
    else:
        video = (
            create_model("echoprime_tiny", frames=frames, size=size).eval(),
            "echoprime_tiny",
            {"frames": frames, "size": size},
        )
        views = (create_model("tiny_views").eval(), "tiny_views", {})
    spec = PreprocessSpec(size=size, frames=frames)
    return assemble_bundle(
        out,
        spec=spec.to_dict(),
        video_encoder=video,
        view_classifier=views,
        bank=bank,
        mil_table=rng.random((len(MIL_SECTIONS), len(VIEWS))).astype(np.float32),
        mil=(create_model("section_attention_mil").eval(), "section_attention_mil", {}),
        text_encoder=(text, "tiny_bag", {"vocab_size": tok.vocab_size}),
        tokenizer_dir=tok_dir,
        thresholds=fit_thresholds(probs, truth),
        calibration=calibration,
        config=None,
        extra={"note": "random weights, for tests"},
    )


def add_test_heads(bundle: Path, out: Path, seed: int = 0) -> Path:
    """``bundle`` plus three fine-tuning heads with random weights (echoprime.training.heads): an
    EF head on the bundle's embeddings, a mitral regurgitation grade head with its own (perturbed)
    copy of the video tower, and a views head, so every head path runs (answers meaningless)."""
    from echoprime.inference import load_bundle_parts
    from echoprime.training.heads import TaskModel, resolve_task, write_bundle_with_head

    src = Path(bundle)
    g = torch.Generator().manual_seed(seed)
    for i, (name, tuned) in enumerate(
        (("ef", False), ("mitral_regurgitation:grade", True), ("views", False))
    ):
        enc = load_bundle_parts(str(bundle), components=["video_encoder"]).video_encoder
        model = TaskModel(enc, resolve_task(name), int(getattr(enc, "embed_dim", 512) or 512))
        with torch.no_grad():
            model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=g))
            if tuned:
                for p in model.video_encoder.parameters():
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
        dst = out if i == 2 else out.parent / f"{out.name}.step{i}"
        write_bundle_with_head(src, str(dst), model, encoder_trained=tuned, metrics={})
        src = dst
    return out
