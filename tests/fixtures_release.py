"""A fake copy of the published EchoPrime release, in exactly its file formats, for tests.

Nothing here comes from the release: the weights are random (drawn directly into the real
architectures' state-dict shapes, so the files are as large as the real ones), the phrase
vocabulary is this project's own (``echoprime/reports/vocabulary.json``) plus one phrase, and
the bank's reports are written by the synthetic report writer for random patients. The layout,
file names, pickle shapes, CSV headers and tensor shapes are those of the published release
(docs/release-compat.md, "The files, and what is read from each", and the quirks it lists).

To exercise the report rules, the bank is shaped on purpose:

* ``absent_sections`` (default Pulmonic Valve) are in no candidate's report: the generated
  section must read "not assessed" (the published code would search forever);
* ``rare_sections`` (default Pulmonary Veins, 2 %) are in few reports: the top-50 usually lacks
  them and the search must go further down the ranking;
* 30 % of candidates miss one more random section;
* ``IVC_PHRASE``, a Pericardium phrase that names the IVC, is in ~8 % of reports (often ones
  without an IVC section): a header-string search would take it for the IVC section;
* labels: 20 % missing at random, and ``SPARSE_PHENOTYPE`` labelled for 1 % only (NaN predictions);
* some numeric slot values are floats (``55.0`` must print as ``55.0``), study ids are integers;
* ``roc_thresholds.csv`` holds exactly the published file's 16 rows (:data:`PUBLISHED_ROC_FEATURES`):
  13 binaries, three names that are no phenotype, no row for six binaries.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

IVC_PHRASE = "Pericardial fluid tracks along the IVC."
# The rows of the published roc_thresholds.csv, in the order the format page lists them: 13 of
# the 19 binary phenotypes, then three names that are no phenotype of the taxonomy (the last
# with a threshold above 1). Six binaries have no row.
PUBLISHED_ROC_BINARIES = (
    "pacemaker",
    "impella",
    "tavr",
    "mitraclip",
    "aortic_stenosis",
    "aortic_regurgitation",
    "dilated_ivc",
    "left_atrium_dilation",
    "mitral_annular_calcification",
    "mitral_regurgitation",
    "rv_systolic_function_depressed",
    "right_ventricle_dilation",
    "tricuspid_valve_regurgitation",
)
PUBLISHED_ROC_EXTRA = {
    "elevated_left_atrial_pressure": None,
    "wall_motion_hypokinesis": None,
    "atrial_septum_hypertrophy": 1.06,
}
PUBLISHED_ROC_FEATURES = {**dict.fromkeys(PUBLISHED_ROC_BINARIES), **PUBLISHED_ROC_EXTRA}
PUBLISHED_ROC_MISSING = (
    "right_atrium_dilation",
    "mitral_stenosis",
    "bicuspid_aov_morphology",
    "tricuspid_stenosis",
    "pericardial_effusion",
    "aortic_root_dilation",
)
SPARSE_PHENOTYPE = "tricuspid_stenosis"
EMBED_DIM = 512


@dataclass(frozen=True)
class FakeRelease:
    """Where the fake release is, and what was put in it (for tests that need the truth)."""

    root: Path
    model_data: Path
    assets: Path
    study_ids: tuple[int, ...]
    reports: tuple[tuple[tuple[int, int, Any], ...], ...]
    ivc_phrase: tuple[int, int]  # (section index, phrase index) of IVC_PHRASE


def _random_state_dict(
    module: nn.Module, gen: torch.Generator, ties: dict[str, str] | None = None
) -> dict[str, torch.Tensor]:
    """Random values in ``module``'s state-dict shapes (``module`` may live on the meta device).

    Matrices and kernels ~ N(0, 1/fan_in) (activations keep their scale through the depth),
    norm scales ~ 1 + N(0, 0.1^2), ConvNeXt layer scales and everything else ~ N(0, 0.02^2).
    ``ties`` maps a key to the key whose tensor it shares (BERT's decoder = word embeddings).
    """
    out: dict[str, torch.Tensor] = {}
    for k, t in module.state_dict().items():
        shape, dtype = tuple(t.shape), t.dtype
        if not dtype.is_floating_point:
            out[k] = torch.zeros(shape, dtype=dtype)
            continue
        z = torch.randn(shape, generator=gen, dtype=torch.float32)
        if "layer_scale" in k:
            v = 0.1 * z
        elif len(shape) >= 2:
            v = z / math.sqrt(max(1, math.prod(shape[1:])))
        elif k.endswith("weight"):
            v = 1.0 + 0.1 * z
        else:
            v = 0.02 * z
        out[k] = v.to(dtype)
    for k, src in (ties or {}).items():
        out[k] = out[src]
    return out


def _release_state_dicts(gen: torch.Generator, text_encoder: bool) -> dict[str, dict[str, torch.Tensor]]:
    """The three state dicts, built on the meta device (no memory, no slow random init)."""
    from torchvision.models import convnext_base
    from torchvision.models.video import mvit_v2_s
    from transformers import BertForMaskedLM

    from echoprime.models.text import biomedbert_config

    with torch.device("meta"):
        enc = mvit_v2_s()
        enc.head[-1] = nn.Linear(768, EMBED_DIM)
        views = convnext_base()
        views.classifier[-1] = nn.Linear(1024, 11)
    out = {
        "echo_prime_encoder.pt": _random_state_dict(enc, gen),
        "view_classifier.pt": _random_state_dict(views, gen),
    }
    if text_encoder:
        with torch.device("meta"):
            text = nn.Module()
            text.backbone = BertForMaskedLM(biomedbert_config())
            text.text_projection = nn.Linear(768, EMBED_DIM)
        ties = {
            "backbone.cls.predictions.decoder.weight": "backbone.bert.embeddings.word_embeddings.weight",
            "backbone.cls.predictions.decoder.bias": "backbone.cls.predictions.bias",
        }
        out["echo_prime_text_encoder.pt"] = _random_state_dict(text, gen, ties)
    return out


def _vocabulary_layout() -> dict[str, dict[str, list[str]]]:
    from echoprime.reports import default_vocabulary

    layout = default_vocabulary().to_dict()
    # A new last sub-heading keeps every other phrase index as it was.
    layout["Pericardium"]["Extent"] = [IVC_PHRASE]
    return layout


def _bank_reports(
    rng: np.random.Generator,
    ids: list[int],
    vocab: Any,
    absent_sections: tuple[str, ...],
    rare_sections: dict[str, float],
) -> tuple[list[list[tuple[int, int, Any]]], list[dict[str, float]]]:
    from echoprime.synth.report import compose_report
    from echoprime.synth.state import sample_state
    from echoprime.taxonomy import MIL_SECTIONS

    peri, ivc = vocab.section_index("Pericardium"), vocab.section_index("IVC")
    ivc_phrase = (peri, vocab.phrase_index("Pericardium", IVC_PHRASE), math.nan)
    drop_always = {vocab.section_index(s) for s in absent_sections}
    reports, truths = [], []
    for i, sid in enumerate(ids):
        state = sample_state(rng, f"fake-patient-{i}", str(sid))
        triples = compose_report(state, rng, vocab).to_triples(vocab)
        drop = set(drop_always)
        drop |= {vocab.section_index(s) for s, p in rare_sections.items() if rng.random() >= p}
        if rng.random() < 0.3:
            drop.add(vocab.section_index(MIL_SECTIONS[int(rng.integers(len(MIL_SECTIONS)))]))
        if rng.random() < 0.15:
            drop.add(ivc)
        triples = [t for t in triples if t[0] not in drop]
        if rng.random() < 0.08 and any(t[0] == peri for t in triples):
            last = max(j for j, t in enumerate(triples) if t[0] == peri)
            triples.insert(last + 1, ivc_phrase)  # inside the Pericardium run: sections stay contiguous
        if rng.random() < 0.1:
            # Banks that went through floats print "55.0": the decoder must keep that.
            triples = [(s, p, float(v) if isinstance(v, int) else v) for s, p, v in triples]
        reports.append(triples)
        truths.append(state.labels())
    return reports, truths


def write_roc_thresholds(
    path: Path, rng: np.random.Generator, features: dict[str, float | None]
) -> dict[str, float]:
    """``roc_thresholds.csv`` as pandas writes it (header ``,feature,threshold``, a row index
    first); a feature's value is drawn in [0.1, 0.6) unless given. Returns what was written."""
    written = {
        name: float(value) if value is not None else round(float(rng.uniform(0.1, 0.6)), 6)
        for name, value in features.items()
    }
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["", "feature", "threshold"])
        for i, (name, value) in enumerate(written.items()):
            w.writerow([i, name, repr(value)])
    return written


def make_fake_release(
    root: str | Path,
    n_candidates: int = 3000,
    seed: int = 0,
    *,
    text_encoder: bool = True,
    absent_sections: tuple[str, ...] = ("Pulmonic Valve",),
    rare_sections: dict[str, float] | None = None,
    mil_decimals: int = 4,
) -> FakeRelease:
    """Write ``root/model_data`` and ``root/assets`` in the release's formats.

    Args:
        root: folder to write into (created).
        n_candidates: bank size.
        seed: everything random is drawn from this seed.
        text_encoder: also write the ~440 MB text-encoder state dict.
        absent_sections: sections no candidate report has.
        rare_sections: ``{section: fraction of reports that keep it}`` (default Pulmonary Veins 2 %).
        mil_decimals: decimals of the MIL weights in the CSV.
    """
    from echoprime.reports import Vocabulary
    from echoprime.taxonomy import MIL_SECTIONS, PHENOTYPES, SECTION_TO_PHENOTYPES, VIEWS

    root = Path(root)
    md, assets = root / "model_data", root / "assets"
    (md / "weights").mkdir(parents=True, exist_ok=True)
    (md / "candidates_data").mkdir(parents=True, exist_ok=True)
    assets.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)

    for name, sd in _release_state_dicts(gen, text_encoder).items():
        torch.save(sd, md / "weights" / name)

    layout = _vocabulary_layout()
    (assets / "all_phr.json").write_text(json.dumps(layout, indent=2), "utf-8")
    vocab = Vocabulary(layout, source="fake all_phr.json")

    ids = [int(x) for x in rng.choice(np.arange(1_000_000, 9_999_999), n_candidates, replace=False)]
    reports, truths = _bank_reports(
        rng,
        ids,
        vocab,
        absent_sections,
        {"Pulmonary Veins": 0.02} if rare_sections is None else rare_sections,
    )
    with open(md / "candidates_data" / "candidate_studies.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Study"])
        w.writerows([[s] for s in ids])
    emb = rng.standard_normal((n_candidates, EMBED_DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cut = int(n_candidates * 0.6)
    torch.save(torch.from_numpy(emb[:cut].copy()), md / "candidates_data" / "candidate_embeddings_p1.pt")
    torch.save(torch.from_numpy(emb[cut:].copy()), md / "candidates_data" / "candidate_embeddings_p2.pt")
    with open(md / "candidates_data" / "candidate_reports.pkl", "wb") as f:
        pickle.dump(reports, f)

    labels: dict[str, dict[int, Any]] = {}
    for p in PHENOTYPES:
        keep = 0.01 if p.name == SPARSE_PHENOTYPE else 0.8
        labels[p.name] = {
            sid: (int(t[p.name]) if p.kind == "binary" else float(t[p.name]))
            for sid, t in zip(ids, truths, strict=True)
            if rng.random() < keep
        }
    with open(md / "candidates_data" / "candidate_labels.pkl", "wb") as f:
        pickle.dump(labels, f)

    table = np.round(rng.random((len(MIL_SECTIONS), len(VIEWS))), mil_decimals)
    table[rng.random(table.shape) < 0.2] = 0.0  # views that say nothing about a section
    table[np.arange(len(MIL_SECTIONS)), table.argmax(axis=1)] = 1.0
    with open(assets / "MIL_weights.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Section", *VIEWS])
        for s, row in zip(MIL_SECTIONS, table, strict=True):
            w.writerow([s, *(repr(float(x)) for x in row)])
    with open(assets / "section_to_phenotypes.pkl", "wb") as f:
        pickle.dump({s: list(ps) for s, ps in SECTION_TO_PHENOTYPES.items()}, f)
    write_roc_thresholds(assets / "roc_thresholds.csv", rng, PUBLISHED_ROC_FEATURES)

    return FakeRelease(
        root=root,
        model_data=md,
        assets=assets,
        study_ids=tuple(ids),
        reports=tuple(tuple(r) for r in reports),
        ivc_phrase=(vocab.section_index("Pericardium"), vocab.phrase_index("Pericardium", IVC_PHRASE)),
    )


_CACHE: dict[tuple, FakeRelease] = {}


def cached_fake_release(tmp_path_factory: Any, n_candidates: int = 3000, seed: int = 0) -> FakeRelease:
    """One fake release per test session and settings (the weights take ~1 GB and ~10 s to write)."""
    key = (n_candidates, seed)
    if key not in _CACHE:
        _CACHE[key] = make_fake_release(tmp_path_factory.mktemp(f"release-{seed}"), n_candidates, seed)
    return _CACHE[key]


def mirror_release(
    src: FakeRelease, dst: Path, *, drop: tuple[str, ...] = (), replace: dict[str, bytes] | None = None
) -> tuple[Path, Path]:
    """A copy of ``src`` made of symlinks (no gigabyte copies), without the files in ``drop`` and
    with the files in ``replace`` written with new content; paths as ``model_data/...``."""
    replace = replace or {}
    for f in src.root.rglob("*"):
        if not f.is_file():
            continue
        rel = f.relative_to(src.root).as_posix()
        if rel in drop:
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if rel in replace:
            target.write_bytes(replace[rel])
        else:
            target.symlink_to(f)
    return dst / "model_data", dst / "assets"
