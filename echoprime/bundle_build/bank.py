"""``build-bank`` without Ray: the bank's reports and labels, the bank, thresholds, commit.

The job (``ray_jobs/build_bank.py``) reads the training reports (:func:`shard_reports`, then
:func:`parse_reports`), embeds them with an actor pool of text towers, embeds the validation
clips, and hands the embeddings here: :func:`save_bank` stores the bank under keyed pseudonyms,
:func:`fit_decisions` fits the thresholds and calibration on the validation studies interpreted
as at inference time (:func:`section_embeddings_of`), and :func:`commit_bank` writes the manifest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.bundle import publish as publish_bundle
from echoprime.config import EchoPrimeConfig
from echoprime.data.shards import parse_labels, read_split
from echoprime.inference import attend
from echoprime.reports import ReportParseError, StructuredReport, Vocabulary, extract_findings
from echoprime.retrieval import CandidateBank, Thresholds, build_index, fit_thresholds, predict_metrics_batch
from echoprime.retrieval.calibration import Calibration, fit_calibration
from echoprime.retrieval.pseudonyms import SCHEME, pseudonymise, write_id_map
from echoprime.staging import commit, load_component
from echoprime.taxonomy import (
    BINARY_PHENOTYPES,
    EXTRA_MEASUREMENTS,
    GRADE_SCALES,
    MEASUREMENTS,
    PHENOTYPE_NAMES,
    grade_column,
)


def shard_reports(shards: str, split: str) -> dict[str, tuple[str, str]]:
    """``{study_id: (report text, labels JSON)}`` of one split of the shards."""
    t = read_split(shards, split, columns=["study_id", "report", "labels"]).to_pylist()
    return {r["study_id"]: (r["report"], r["labels"]) for r in t}


@dataclass
class ParsedReports:
    """The bank's reports read into the phrase vocabulary: ``keep`` (study ids, bank order) with
    their phrase-id ``triples``; ``unparsed`` the (study id, reason) of the others."""

    vocab: Vocabulary
    keep: list[str] = field(default_factory=list)
    triples: dict[str, Any] = field(default_factory=dict)
    unparsed: list[tuple[str, str]] = field(default_factory=list)


def parse_reports(reports: dict[str, tuple[str, str]], vocab: Vocabulary, shards: str) -> ParsedReports:
    """Read every report into ``vocab``'s phrase-id triples; those that do not read are counted.

    Raises:
        ValueError: not one report of ``shards`` reads (the reason only: a study id is no part
            of an error message).
    """
    got = ParsedReports(vocab)
    for sid, (rep, _) in reports.items():
        try:
            got.triples[sid] = StructuredReport.from_text(rep, vocab).to_triples(vocab)
            got.keep.append(sid)
        except (ReportParseError, ValueError) as e:
            got.unparsed.append((sid, str(e)[:200]))
    if not got.keep:
        raise ValueError(
            f"no training report of {shards} could be read into the phrase vocabulary "
            f"(first error: {got.unparsed[0][1] if got.unparsed else 'no reports'})"
        )
    return got


def report_extras(report: str) -> dict[str, float]:
    """What a report states beyond the release's 21 labels: grades (``<phenotype>_grade``) and the
    extra measurements (heart rate), read from its text."""
    found = extract_findings(report)
    return {k: v for k, v in found.items() if k not in PHENOTYPE_NAMES}


def save_bank(
    cfg: EchoPrimeConfig,
    bundle: str,
    embeddings: dict[str, np.ndarray],
    reports: dict[str, tuple[str, str]],
    parsed: ParsedReports,
    secret: bytes,
) -> tuple[CandidateBank, dict[str, str]]:
    """Build the bank of the ``parsed`` reports (``embeddings``: study id -> text embedding) and
    save it under BUNDLE/bank; returns it and the map from study ids to their pseudonyms.

    The bank holds pseudonyms only (docs/privacy.md); besides the stored labels (the release's
    21) it keeps what else each report states: each graded phenotype's grade and the extra
    measurements (issue 23). An IVF/PQ index replaces exact search above ``bank.ivf_threshold``.
    """
    keep = parsed.keep
    emb = np.stack([embeddings[s] for s in keep]).astype(np.float32)
    pseudo = pseudonymise(keep, secret)
    labels: dict[str, dict[str, float]] = {}
    for s in keep:
        for p, v in (report_extras(reports[s][0]) | parse_labels(reports[s][1])).items():
            if v == v:  # NaN = no label
                labels.setdefault(p, {})[pseudo[s]] = v
    bank = CandidateBank.build(
        emb, [pseudo[s] for s in keep], [parsed.triples[s] for s in keep], labels, parsed.vocab
    )
    index = build_index(bank.embeddings, kind=cfg.bank.index, ivf_threshold=cfg.bank.ivf_threshold)
    if not getattr(index, "is_exact", False):
        bank.set_index(index)
    bank.save(Path(bundle) / "bank", overwrite=True)
    return bank, pseudo


def section_embeddings_of(bundle: str, cols: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Per study of an embedded split: its 15 x D section embeddings from the staged attention."""
    mil = load_component(bundle, "mil").eval()
    by: dict[str, list[int]] = {}
    for i, s in enumerate(cols["study_id"]):
        by.setdefault(str(s), []).append(i)
    ids, secs = [], []
    for sid, idx in by.items():
        secs.append(attend(mil, cols["emb"][idx].astype(np.float32), cols["view_probs"][idx].argmax(1))[0])
        ids.append(sid)
    return ids, np.stack(secs)


@dataclass
class Decisions:
    """What :func:`fit_decisions` fitted: on ``studies`` validation studies, with ``k`` neighbours,
    the ``thresholds`` of the ``n_binaries`` binaries and the ``calibration``."""

    studies: int
    k: int
    n_binaries: int
    thresholds: Thresholds
    calibration: Calibration


def fit_decisions(cfg: EchoPrimeConfig, bundle: str, val: dict[str, Any], bank: CandidateBank) -> Decisions:
    """Fit one threshold per binary phenotype, the calibration maps, the measurement intervals and
    the grade scales on the validation studies (``val``: their embedded clips), interpreted exactly
    as at inference time; writes BUNDLE/thresholds.json and BUNDLE/calibration.json."""
    ids, secs = section_embeddings_of(bundle, val)
    k = min(cfg.interpret.k, len(bank))
    preds = predict_metrics_batch(secs, bank, k)
    val_labels: dict[str, dict[str, float]] = {}
    for s, lab in zip(val["study_id"], val["labels"], strict=True):
        val_labels.setdefault(str(s), parse_labels(lab))
    val_reports: dict[str, str] = {}
    for s, rep in zip(val["study_id"], val["report"], strict=True):
        val_reports.setdefault(str(s), str(rep))
    probs = {p: np.array([pr[p].value for pr in preds]) for p in BINARY_PHENOTYPES if p in preds[0]}
    truth = {p: np.array([val_labels[s].get(p, np.nan) for s in ids]) for p in probs}
    thresholds = fit_thresholds(probs, truth)
    thresholds.to_json(Path(bundle) / "thresholds.json")
    # Calibration maps, measurement intervals and the grade scales, from the same predictions.
    extra = {m.name: m.section for m in EXTRA_MEASUREMENTS if m.name in bank.phenotypes}
    if extra:
        more = predict_metrics_batch(secs, bank, k, phenotype_sections=extra)
        preds = [a | b for a, b in zip(preds, more, strict=True)]
    measured = [m for m in MEASUREMENTS if m in preds[0]]
    val_truth = {s: report_extras(val_reports.get(s, "")) | val_labels[s] for s in ids}
    calibration = fit_calibration(
        probs,
        truth,
        {m: np.array([pr[m].value for pr in preds]) for m in measured},
        {m: np.array([pr[m].spread for pr in preds]) for m in measured},
        {m: np.array([val_truth[s].get(m, np.nan) for s in ids]) for m in measured},
        {p: sc for p, sc in GRADE_SCALES.items() if grade_column(p) in bank.phenotypes},
    )
    calibration.to_json(Path(bundle) / "calibration.json")
    return Decisions(len(ids), k, len(probs), thresholds, calibration)


def commit_bank(
    cfg: EchoPrimeConfig,
    bundle: str,
    bank: CandidateBank,
    parsed: ParsedReports,
    decisions: Decisions,
    pseudo: dict[str, str],
    secret_source: str,
    *,
    publish: str | None = None,
    id_map: str | None = None,
) -> dict[str, Any]:
    """Commit the bundle (its manifest, written last), then write the id map and publish; returns
    build-bank's numbers (without ``wall_s``)."""
    manifest = commit(
        bundle,
        cfg.to_dict(),
        extra={
            "bank_studies": len(parsed.keep),
            "unparsed_reports": len(parsed.unparsed),
            "threshold_studies": decisions.studies,
            "k": decisions.k,
            "study_ids": {"scheme": SCHEME, "secret": secret_source},
        },
    )
    if id_map is not None:  # after the commit: a map always belongs to a committed bank
        write_id_map(id_map, pseudo, source=secret_source)
    published = publish_bundle(bundle, publish) if publish else None
    not_fitted = decisions.thresholds.not_fitted()
    calibration = decisions.calibration
    return {
        "bank_reports": len(parsed.keep),
        "bank_stream_reports": cfg.stream.bank_studies,
        "unparsed_reports": len(parsed.unparsed),
        "index": type(bank.index).__name__,
        "threshold_studies": decisions.studies,
        "thresholds_fitted": decisions.n_binaries - len(not_fitted),
        "thresholds_not_fitted": len(not_fitted),
        "calibration_maps": {m: c.method for m, c in calibration.probabilities.items()},
        "intervals": sorted(calibration.intervals),
        "graded_findings": len(calibration.grade_scales),
        "bundle_files": len(manifest["files"]),
        "published": published,
        "study_id_secret": secret_source,
        "id_map": id_map,
    }


def summary_lines(res: dict[str, Any], bundle: str) -> list[str]:
    """What ``echoprime build-bank`` prints of its numbers ``res`` (:func:`commit_bank`)."""
    lines = [
        f"build-bank: {res['bank_reports']} reports in the bank ({res['index']}), {res['unparsed_reports']} unreadable; "
        f"thresholds fitted for {res['thresholds_fitted']} phenotypes on {res['threshold_studies']} val studies; "
        f"bundle committed at {bundle}" + (f", published to {res['published']}" if res["published"] else "")
    ]
    if res["study_id_secret"] == "one-off":
        lines.append(
            "build-bank: ECHOPRIME_SITE_SECRET is unset: the bank's study pseudonyms come from a one-off "
            "secret (stable in this bundle, different in any other build)"
        )
    return [*lines, json.dumps(res)]
