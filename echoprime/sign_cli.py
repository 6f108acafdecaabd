"""Sign a committed model bundle, or check one, with the bundle key of the environment.

Signing checks every file against the manifest first, then writes BUNDLE/manifest.sig beside
the manifest (it signs the manifest's bytes, which list every file's sha256). Keys come from the
environment only: $ECHOPRIME_BUNDLE_KEY or $ECHOPRIME_BUNDLE_KEY_FILE (HMAC-SHA256, at least 16
bytes) and/or $ECHOPRIME_BUNDLE_SIGNING_KEY (a PEM ed25519 private key file). With --check it
verifies instead, as loading does (with $ECHOPRIME_BUNDLE_PUBLIC_KEY for ed25519). See
docs/privacy.md.

Example:
  export ECHOPRIME_BUNDLE_KEY_FILE=/etc/echoprime/bundle.key
  echoprime sign-bundle quickstart-out/bundle
  echoprime sign-bundle --check s3://echoprime-models/bundles/v1
"""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "bundle", metavar="BUNDLE", help="the committed bundle: a local folder or s3://bucket/prefix"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="verify the signature and every file instead of signing (fails when no key is configured)",
    )


def run(args: argparse.Namespace) -> int:
    from echoprime.bundle import fetch, read_manifest, sign_bundle
    from echoprime.signing import BundleKeys

    keys = BundleKeys.from_env()
    if args.check:
        if not keys.configured:
            raise ValueError(
                "no bundle key configured: set $ECHOPRIME_BUNDLE_KEY (or _FILE) or $ECHOPRIME_BUNDLE_PUBLIC_KEY"
            )
        man = read_manifest(fetch(args.bundle, keys=keys), verify=True, keys=keys)
        print(f"{args.bundle}: signature ({keys.describe()}) and {len(man['files'])} files verified")
        return 0
    where = sign_bundle(args.bundle, keys)
    print(f"{args.bundle}: signed with {keys.describe()} -> {where}")
    return 0
