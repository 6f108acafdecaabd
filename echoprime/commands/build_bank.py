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

from echoprime.commands import add_config_arguments, default_config_path


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
    add_config_arguments(p, default=default_config_path())
