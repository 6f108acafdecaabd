"""Build the candidate-report bank, fit decision thresholds, and commit the bundle.

Every training study's report (and, with ``stream.bank_studies``, the reports of that many
synthetic stream studies) is embedded by the pretrained text tower (Ray Data, an actor pool
of encoders) and stored with its study id, its structured form (phrase-id triples) and its labels;
exact inner-product search by default, an IVF/PQ faiss index above bank.ivf_threshold reports.
The validation studies are then interpreted through the staged models (video encoder, view
classifier, attention) to fit one decision threshold per binary phenotype (Youden's J), a
calibration map per binary and an 80 % interval per measurement (echoprime.retrieval.calibration),
and the bundle's manifest is written last, with the sha256 of every file. Besides the stored
labels, the bank keeps what each report's text states beyond them: every graded phenotype's grade
and the heart rate (echoprime.reports.extract_findings).

The bank stores keyed pseudonyms of the study ids, never the ids themselves (HMAC-SHA256 with
the site secret in ECHOPRIME_SITE_SECRET, or a one-off secret when it is unset: docs/privacy.md);
--id-map writes the operator-only map back to the originals, outside the bundle.

Writes BUNDLE/bank/, BUNDLE/thresholds.json, BUNDLE/calibration.json, BUNDLE/manifest.json
(the commit).

Example:
  echoprime build-bank --shards shards --bundle bundle --config configs/tiny-cpu.yaml
  echoprime build-bank ... --publish s3://models/echoprime/v1   # also upload the committed bundle
  ECHOPRIME_SITE_SECRET=... echoprime build-bank ... --id-map /secure/ids.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.config import EchoPrimeConfig


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shards",
        required=True,
        help="ingest output (the train split becomes the bank; val fits thresholds)",
    )
    p.add_argument(
        "--bundle", required=True, help="the bundle folder being built (pretrained/, views/, mil/ done)"
    )
    p.add_argument(
        "--publish", default=None, help="also copy the committed bundle to this folder or s3:// URI"
    )
    p.add_argument(
        "--id-map",
        default=None,
        metavar="PATH",
        help="also write the operator-only map from the bank's pseudonyms to the original study ids "
        "(JSON, owner-readable only; refused inside the bundle)",
    )
    from echoprime.cli import add_config_arguments
    from ray_jobs.common import default_config_path

    add_config_arguments(p, default=default_config_path())


class EmbedReports:
    """Ray Data UDF: report texts -> unit-norm text embeddings with the staged text tower."""

    def __init__(self, bundle: str) -> None:
        import torch

        from echoprime.models.tokenizer import ReportTokenizer
        from echoprime.staging import load_component, staged_components

        torch.set_num_threads(1)
        self.text = load_component(bundle, "text_encoder").eval()
        self.tok = ReportTokenizer.from_pretrained(
            Path(bundle) / staged_components(bundle)["text_encoder"]["tokenizer"]
        )

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import torch
        import torch.nn.functional as F

        enc = self.tok([str(r) for r in batch["report"]])
        with torch.no_grad():
            e = self.text(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
        return {"study_id": batch["study_id"], "emb": F.normalize(e.float(), dim=-1).numpy()}


def _studies(shards: str, split: str) -> dict[str, tuple[str, str]]:
    from echoprime.data.shards import read_split

    t = read_split(shards, split, columns=["study_id", "report", "labels"]).to_pylist()
    return {r["study_id"]: (r["report"], r["labels"]) for r in t}


def _report_extras(report: str) -> dict[str, float]:
    """What a report states beyond the release's 21 labels: grades (``<phenotype>_grade``) and the
    extra measurements (heart rate), read from its text."""
    from echoprime.reports import extract_findings
    from echoprime.taxonomy import PHENOTYPE_NAMES

    found = extract_findings(report)
    return {k: v for k, v in found.items() if k not in PHENOTYPE_NAMES}


def section_embeddings_of(bundle: str, cols: dict[str, Any]) -> tuple[list[str], np.ndarray]:
    """Per study of an embedded split: its 15 x D section embeddings from the staged attention."""
    import torch

    from echoprime.staging import load_component

    mil = load_component(bundle, "mil").eval()
    by: dict[str, list[int]] = {}
    for i, s in enumerate(cols["study_id"]):
        by.setdefault(str(s), []).append(i)
    ids, secs = [], []
    with torch.no_grad():
        for sid, idx in by.items():
            emb = torch.from_numpy(cols["emb"][idx].astype(np.float32))
            views = torch.from_numpy(cols["view_probs"][idx].argmax(1))
            secs.append(mil(emb, views)["section_embeddings"].numpy())
            ids.append(sid)
    return ids, np.stack(secs)


def run_build_bank(
    cfg: EchoPrimeConfig,
    shards: str,
    bundle: str,
    publish: str | None = None,
    *,
    val_embeddings: dict | None = None,
    id_map: str | None = None,
) -> dict[str, Any]:
    """Build the bank, fit thresholds, commit (and optionally publish) the bundle; returns numbers.

    Args:
        val_embeddings: the validation split's clip embeddings from ``fit-mil`` in this process
            (same staged encoders), to skip embedding them again.
        id_map: also write the map from the bank's pseudonyms to the original study ids here
            (a local path outside the bundle).

    Raises:
        ValueError: ``id_map`` inside the bundle, or a site secret that is too short.
    """
    import ray

    from echoprime.bundle import publish as publish_bundle
    from echoprime.data.shards import parse_labels
    from echoprime.reports import ReportParseError, StructuredReport, default_vocabulary
    from echoprime.retrieval import CandidateBank, build_index, fit_thresholds, predict_metrics_batch
    from echoprime.retrieval.calibration import fit_calibration
    from echoprime.retrieval.pseudonyms import (
        SCHEME,
        check_map_outside,
        pseudonymise,
        site_secret,
        write_id_map,
    )
    from echoprime.staging import commit
    from echoprime.taxonomy import (
        BINARY_PHENOTYPES,
        EXTRA_MEASUREMENTS,
        GRADE_SCALES,
        MEASUREMENTS,
        grade_column,
    )
    from ray_jobs._embed import embed_split
    from ray_jobs.common import POOL_RETRIES, configure_ray_data, ray_session

    t0 = time.perf_counter()
    if id_map is not None:
        check_map_outside(id_map, bundle, "the bundle")
    secret, secret_source = site_secret()  # checked before the minutes of embedding
    vocab = default_vocabulary()
    train = _studies(shards, "train")
    if cfg.stream.bank_studies:
        from echoprime.data.stream import check_stream_seed, stream_reports

        check_stream_seed(cfg, shards)

        train |= stream_reports(range(cfg.stream.bank_studies), seed=cfg.stream.seed)
    triples, keep, unparsed = {}, [], []
    for sid, (rep, _) in train.items():
        try:
            triples[sid] = StructuredReport.from_text(rep, vocab).to_triples(vocab)
            keep.append(sid)
        except (ReportParseError, ValueError) as e:
            unparsed.append((sid, str(e)[:200]))
    if not keep:
        raise ValueError(  # the reason only: a study id is no part of an error message
            f"no training report of {shards} could be read into the phrase vocabulary "
            f"(first error: {unparsed[0][1] if unparsed else 'no reports'})"
        )
    with ray_session(cfg.ray):
        configure_ray_data()
        ds = ray.data.from_items([{"study_id": s, "report": train[s][0]} for s in keep])
        ds = ds.map_batches(
            EmbedReports,
            fn_constructor_args=(bundle,),
            batch_size=cfg.bank.batch_size,
            num_cpus=1,
            compute=ray.data.ActorPoolStrategy(size=cfg.bank.encode_actors),
            **POOL_RETRIES,
        )
        got: dict[str, np.ndarray] = {}
        for b in ds.iter_batches(batch_size=1024, batch_format="numpy"):
            got.update(zip((str(s) for s in b["study_id"]), b["emb"], strict=True))
        va = (
            val_embeddings
            if val_embeddings is not None
            else embed_split(cfg, shards, "val", bundle, with_views=True)
        )
    emb = np.stack([got[s] for s in keep]).astype(np.float32)
    # The bank holds pseudonyms only (docs/privacy.md): rows, order and labels are as before.
    pseudo = pseudonymise(keep, secret)
    del secret
    labels: dict[str, dict[str, float]] = {}
    for s in keep:
        # The stored labels (the release's 21), then what else the report states: each graded
        # phenotype's grade and the extra measurements (issue 23).
        for p, v in (_report_extras(train[s][0]) | parse_labels(train[s][1])).items():
            if v == v:  # NaN = no label
                labels.setdefault(p, {})[pseudo[s]] = v
    bank = CandidateBank.build(emb, [pseudo[s] for s in keep], [triples[s] for s in keep], labels, vocab)
    index = build_index(bank.embeddings, kind=cfg.bank.index, ivf_threshold=cfg.bank.ivf_threshold)
    if not getattr(index, "is_exact", False):
        bank.set_index(index)
    bank_dir = Path(bundle) / "bank"
    bank.save(bank_dir, overwrite=True)

    # Thresholds from the validation studies, interpreted exactly as at inference time.
    ids, secs = section_embeddings_of(bundle, va)
    k = min(cfg.interpret.k, len(bank))
    preds = predict_metrics_batch(secs, bank, k)
    val_labels = {}
    for s, lab in zip(va["study_id"], va["labels"], strict=True):
        val_labels.setdefault(str(s), parse_labels(lab))
    val_reports: dict[str, str] = {}
    for s, rep in zip(va["study_id"], va["report"], strict=True):
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
    val_truth = {s: _report_extras(val_reports.get(s, "")) | val_labels[s] for s in ids}
    calibration = fit_calibration(
        probs,
        truth,
        {m: np.array([pr[m].value for pr in preds]) for m in measured},
        {m: np.array([pr[m].spread for pr in preds]) for m in measured},
        {m: np.array([val_truth[s].get(m, np.nan) for s in ids]) for m in measured},
        {p: sc for p, sc in GRADE_SCALES.items() if grade_column(p) in bank.phenotypes},
    )
    calibration.to_json(Path(bundle) / "calibration.json")
    manifest = commit(
        bundle,
        cfg.to_dict(),
        extra={
            "bank_studies": len(keep),
            "unparsed_reports": len(unparsed),
            "threshold_studies": len(ids),
            "k": k,
            "study_ids": {"scheme": SCHEME, "secret": secret_source},
        },
    )
    if id_map is not None:  # after the commit: a map always belongs to a committed bank
        write_id_map(id_map, pseudo, source=secret_source)
    published = publish_bundle(bundle, publish) if publish else None
    not_fitted = thresholds.not_fitted()
    return {
        "bank_reports": len(keep),
        "bank_stream_reports": cfg.stream.bank_studies,
        "unparsed_reports": len(unparsed),
        "index": type(bank.index).__name__,
        "threshold_studies": len(ids),
        "thresholds_fitted": len(probs) - len(not_fitted),
        "thresholds_not_fitted": len(not_fitted),
        "calibration_maps": {m: c.method for m, c in calibration.probabilities.items()},
        "intervals": sorted(calibration.intervals),
        "graded_findings": len(calibration.grade_scales),
        "bundle_files": len(manifest["files"]),
        "published": published,
        "study_id_secret": secret_source,
        "id_map": id_map,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def run(args: argparse.Namespace) -> int:
    from ray_jobs.common import resolve_config

    res = run_build_bank(resolve_config(args), args.shards, args.bundle, args.publish, id_map=args.id_map)
    print(
        f"build-bank: {res['bank_reports']} reports in the bank ({res['index']}), {res['unparsed_reports']} unreadable; "
        f"thresholds fitted for {res['thresholds_fitted']} phenotypes on {res['threshold_studies']} val studies; "
        f"bundle committed at {args.bundle}"
        + (f", published to {res['published']}" if res["published"] else "")
    )
    if res["study_id_secret"] == "one-off":
        print(
            "build-bank: ECHOPRIME_SITE_SECRET is unset: the bank's study pseudonyms come from a one-off "
            "secret (stable in this bundle, different in any other build)"
        )
    print(json.dumps(res))
    return 0


def main(argv: list[str] | None = None) -> int:
    from echoprime.cli import main as cli_main

    return cli_main(["build-bank", *(argv or [])])


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
