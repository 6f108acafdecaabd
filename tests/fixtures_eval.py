"""A planted cohort for the evaluation tests: embeddings whose signal is known exactly.

Synthetic patients (``synth.state.sample_state``) with their real reports and labels. Each
phenotype has its own orthogonal direction ``u_p`` in a ``D``-dim space:

* a report embeds as ``normalize(sum_p s_p u_p)`` (``s_p`` = the label, EF and PA pressure
  centred and scaled), read back from the text with the report label extractor, so a prompt
  or a single section embeds consistently with whole reports;
* a clip of view ``v`` embeds as ``normalize(sum_{p visible in v} s_p u_p + noise)``: it shows
  only the findings the generator draws in that view (``synth.state.VISIBILITY``), and the
  hidden diagnoses (amyloidosis in every LV view, STEMI in its views) along two more directions.

So the generator's visibility table is the best section x view weighting by construction, one
video misses most findings, and retrieval and the probes have a signal of known strength.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from echoprime.eval.ablation import PHENOTYPE_FIELD
from echoprime.synth.state import VISIBILITY, sample_state
from echoprime.taxonomy import HIDDEN_DIAGNOSES, PHENOTYPE_NAMES, VIEWS

DIM = 48
SCALE = {"ejection_fraction": (55.0, 15.0), "pulmonary_artery_pressure_continuous": (30.0, 10.0)}
NAMES = (*PHENOTYPE_NAMES, *HIDDEN_DIAGNOSES)
FIELD = {**PHENOTYPE_FIELD, "amyloidosis": "amyloidosis", "stemi": "stemi"}


def directions(dim: int = DIM) -> np.ndarray:
    """One orthonormal direction per label, then one shared by every text (no text embeds to 0)."""
    q, _ = np.linalg.qr(np.random.default_rng(123).standard_normal((dim, dim)))
    return q[: len(NAMES) + 1].astype(np.float32)


def _vec(labels: dict[str, float], u: np.ndarray, names: tuple[str, ...] = NAMES) -> np.ndarray:
    v = np.zeros(u.shape[1], np.float64)
    for j, name in enumerate(names):
        x = labels.get(name, float("nan"))
        if x == x:
            mu, sd = SCALE.get(name, (0.0, 1.0))
            v += (x - mu) / sd * u[j]
    return v


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.where(n == 0, 1.0, n)).astype(np.float32)


def embed_text(texts: list[str] | tuple[str, ...]) -> np.ndarray:
    """The planted text tower: labels read from the text, then their directions."""
    from echoprime.reports import extract_labels

    u = directions()
    return _unit(np.stack([_vec(extract_labels(t), u, PHENOTYPE_NAMES) + 0.5 * u[-1] for t in texts]))


def cohort(
    n: int, seed: int, *, noise: float = 0.3, videos: tuple[int, int] = (4, 6), view_acc: float = 1.0
) -> dict[str, Any]:
    """Per-clip columns of ``n`` planted studies, as ``ray_jobs.evaluate`` hands them over."""
    from echoprime.synth.report import compose_report

    rng = np.random.default_rng(seed)
    u = directions()
    cols: dict[str, list] = {k: [] for k in ("study_id", "view", "labels", "hidden_labels", "report", "emb",
                                             "emb_static", "view_probs")}  # fmt: skip
    for i in range(n):
        st = sample_state(rng, f"p{seed}_{i}", f"s{seed}_{i:04d}")
        labels, hidden = st.labels(), st.hidden_labels()
        report = compose_report(st, rng).to_text()
        for v in rng.choice(len(VIEWS), size=int(rng.integers(videos[0], videos[1] + 1)), replace=False):
            shown = {
                name: x for name, x in {**labels, **hidden}.items() if VIEWS[v] in VISIBILITY[FIELD[name]]
            }
            emb = _vec(shown, u) + noise * rng.standard_normal(u.shape[1])
            probs = np.full(len(VIEWS), (1 - view_acc) / (len(VIEWS) - 1))
            probs[v if rng.random() < view_acc else (v + 1) % len(VIEWS)] = view_acc
            cols["study_id"].append(st.study_id)
            cols["view"].append(VIEWS[v])
            cols["labels"].append(json.dumps(labels))
            cols["hidden_labels"].append(json.dumps(hidden))
            cols["report"].append(report)
            cols["emb"].append(emb)
            cols["emb_static"].append(
                0.3 * emb + rng.standard_normal(u.shape[1])
            )  # a first frame: mostly lost
            cols["view_probs"].append(probs)
    out = {
        k: np.array(v, dtype=object) for k, v in cols.items() if k not in ("emb", "emb_static", "view_probs")
    }
    out["emb"] = _unit(np.stack(cols["emb"]))
    out["emb_static"] = _unit(np.stack(cols["emb_static"]))
    out["view_probs"] = np.stack(cols["view_probs"]).astype(np.float32)
    return out


def parts_for(train_cols: dict[str, Any], mil: torch.nn.Module) -> SimpleNamespace:
    """Bundle-like parts: the given attention, a bank of the training reports, 0.5 thresholds."""
    from echoprime.reports import StructuredReport, default_vocabulary, extract_findings
    from echoprime.retrieval import CandidateBank
    from echoprime.retrieval.calibration import fit_calibration
    from echoprime.taxonomy import BINARY_PHENOTYPES, MEASUREMENTS

    vocab = default_vocabulary()
    seen: dict[str, tuple[str, str]] = {}
    for sid, rep, lab in zip(train_cols["study_id"], train_cols["report"], train_cols["labels"], strict=True):
        seen.setdefault(str(sid), (rep, lab))
    ids = list(seen)
    reports = [seen[s][0] for s in ids]
    labels = {p: {s: json.loads(seen[s][1])[p] for s in ids} for p in PHENOTYPE_NAMES}
    # What else the reports state (grades, heart rate), as build-bank stores it.
    extras = [{k: v for k, v in extract_findings(r).items() if k not in PHENOTYPE_NAMES} for r in reports]
    for k in extras[0]:
        labels[k] = {s: e[k] for s, e in zip(ids, extras, strict=True)}
    triples = [StructuredReport.from_text(r, vocab).to_triples(vocab) for r in reports]
    bank = CandidateBank.build(embed_text(reports), ids, triples, labels, vocab)
    # Calibration maps and intervals fitted on random pairs (their fitting is tested elsewhere;
    # here the evaluation's graded section needs them present).
    rng = np.random.default_rng(0)
    probs = {p: rng.random(60) for p in BINARY_PHENOTYPES}
    values = {m: rng.uniform(20, 80, 60) for m in MEASUREMENTS}
    calibration = fit_calibration(
        probs,
        {p: (rng.random(60) < probs[p]).astype(float) for p in BINARY_PHENOTYPES},
        values,
        {m: rng.uniform(1, 8, 60) for m in MEASUREMENTS},
        {m: values[m] + rng.normal(0, 5, 60) for m in MEASUREMENTS},
    )
    return SimpleNamespace(
        mil=mil,
        bank=bank,
        thresholds={p: 0.5 for p in BINARY_PHENOTYPES},
        text_encoder=None,
        calibration=calibration,
    )
