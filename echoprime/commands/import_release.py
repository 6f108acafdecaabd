"""Convert a copy of the published EchoPrime release into a pickle-free model bundle (no Ray needed).

Reads MODEL_DATA (weights/, candidates_data/) and ASSETS (all_phr.json, MIL_weights.csv,
section_to_phenotypes.pkl, roc_thresholds.csv), checks every file, and writes a bundle whose
manifest holds the sha256 of every file. The release keeps its report bank and labels in Python
pickles, which can run code when loaded: --trust-pickles says this copy comes from a source you
trust; they are read this one time, and the bundle holds no pickle. Load the bundle afterwards
with `echoprime interpret --bundle BUNDLE`, StudyInterpreter.from_bundle or
echoprime.release.EchoPrime.from_bundle: same encodings, predictions and report text.

The bank's candidate studies are stored under keyed pseudonyms, as in every bundle
(ECHOPRIME_SITE_SECRET; --id-map PATH writes the map back to the release's ids; docs/privacy.md).

Text features (embedding and searching report text) need the BiomedBERT tokenizer, which the
release does not ship: pass --tokenizer DIR (a save_pretrained folder) or have it in the local
Hugging Face cache; without it the bundle has no text encoder and says so.

Example:
  echoprime import-release --model-data model_data --assets assets --out bundles/echoprime-release --trust-pickles
"""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-data", required=True, metavar="DIR", help="the release's model_data folder")
    p.add_argument("--assets", required=True, metavar="DIR", help="the release's assets folder")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="new (or empty) folder for the bundle")
    p.add_argument(
        "--trust-pickles",
        action="store_true",
        help="this copy comes from a trusted source: read its pickles (once) to convert them",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        metavar="DIR",
        help="BiomedBERT tokenizer folder for text features (default: the local Hugging Face cache, if present)",
    )

    p.add_argument(
        "--id-map",
        default=None,
        metavar="PATH",
        help="also write the map from the bank's study pseudonyms to the release's candidate study ids "
        "(JSON, mode 600, outside the bundle); see docs/privacy.md",
    )


def run(args: argparse.Namespace) -> int:
    # torch comes with these (~2 s): `echoprime --help` imports this module for add_arguments.
    from echoprime.bundle import read_manifest
    from echoprime.release import import_release

    root = import_release(
        args.model_data,
        args.assets,
        args.out,
        trust_pickles=args.trust_pickles,
        text_tokenizer=args.tokenizer,
        id_map=args.id_map,
    )
    man = read_manifest(root, verify=False)
    summary = {
        "bundle": str(root),
        "files": len(man["files"]),
        "components": sorted(man["components"]),
        "text_features": man["extra"]["text_features"],
        "pickles": [f for f in man["files"] if f.endswith((".pkl", ".pickle"))],
    }
    print(json.dumps(summary, indent=2))
    return 0
