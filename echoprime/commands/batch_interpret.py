"""Interpret a whole archive of studies offline with Ray Data: the Serve graph's work without HTTP.

Lists every file under --input (local folder or s3://), groups the files into studies (the
archive's videos table when it has one, else DICOM StudyInstanceUID read from headers without
pixels, else the folder), and interprets chunks of studies in an actor pool: each actor loads the
bundle once and encodes on a GPU when the config asks for one (train.use_gpu). With --dicomweb URL
the studies are those of a DICOMweb archive that a QIDO-RS query finds (--study, --modality,
--dates), each streamed to its actor instance by instance (WADO-RS), instances named by their
SOPInstanceUID; the archive's credentials (ECHOPRIME_DICOMWEB_TOKEN, or _USER and _PASSWORD) must
be in the environment of the Ray workers (a local run's inherit this command's). Writes, under --out:

  results/part-<key>.parquet   one row per study: study_id, status, n_files, n_used, views,
                               report_text, report, metrics, evidence, neighbours, files, error
  rejects/part-<key>.parquet   every file that could not be used: study_id, file, reason, code
  findings/part-<key>.parquet  one row per study and finding: value, probability, calibrated
                               probability, decision, grade with the neighbours' vote, the
                               report's grade, interval (docs/batch-interpret.md)
  json/<name>.json             the whole result per study (--json); <name> is the study id, or
                               for an id that is not a plain lower-case file name, a readable
                               prefix + "~" + a hash of the id (two studies never share a file)
  _done/part-<key>.json        the commit record of each chunk, written last

Studies and files are named by keyed pseudonyms by default (s-/f- + HMAC under the site secret
ECHOPRIME_SITE_SECRET, as ingest names them; docs/privacy.md): the output holds no StudyInstanceUID,
folder or file name of the archive. --id-map PATH writes the operator's map back to them (local
disk, outside --out); --original-ids names them as the archive does (authorised local use).
A re-run skips the studies already written (resume after an interruption; it needs the same site
secret, so a run with a one-off secret cannot be resumed); --force starts over.
One job at a time per --out: a second is refused naming the first (OUT/.echoprime.lock); the
lock of a job that died is taken over, saying so.
Actors: --actors (default bank.encode_actors), each with 1 GPU and train.cpus_per_worker CPUs
(reader threads) when train.use_gpu, else 1 CPU. See docs/batch-interpret.md.

Examples:
  echoprime batch-interpret --bundle quickstart-out/bundle --dicomweb http://pacs:8042/dicom-web \\
      --dates 20260101-20260131 --out interpretations --id-map /secure/batch-ids.json
  echoprime batch-interpret --bundle quickstart-out/bundle --input synth-out --out interpretations \\
      --id-map /secure/batch-ids.json
  echoprime batch-interpret --bundle s3://models/bundles/v1 --input s3://data/archive \\
      --out s3://results/v1 --config configs/a6000x2.yaml --json
"""

from __future__ import annotations

import argparse

from echoprime.commands import add_config_arguments, add_dicomweb_arguments, default_config_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="model bundle (folder or s3://)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="archive folder or s3://bucket/prefix")
    add_dicomweb_arguments(p, src)
    p.add_argument("--out", required=True, help="output folder or s3://bucket/prefix")
    p.add_argument(
        "--manifest",
        default=None,
        help="videos table (CSV/Parquet: path, study_id) deciding each file's study; default: "
        "manifest.parquet/.csv at the top of --input when there is one",
    )
    p.add_argument("--json", action="store_true", help="also write json/<study_id>.json per study")
    p.add_argument(
        "--actors", type=int, default=None, help="interpreter actors (default: bank.encode_actors)"
    )
    p.add_argument("--chunk", type=int, default=8, help="studies per actor call and per output part")
    p.add_argument("--k", type=int, default=None, help="neighbours for the metrics (default: interpret.k)")
    p.add_argument("--force", action="store_true", help="discard earlier results in --out and start over")
    p.add_argument(
        "--id-map",
        default=None,
        metavar="PATH",
        help="write the operator's map from the output's study and file keys back to the archive's "
        "study ids and file paths (JSON, mode 600, local disk outside --out); see docs/privacy.md",
    )
    p.add_argument(
        "--original-ids",
        action="store_true",
        help="name studies and files as the archive does (StudyInstanceUID, folder, path) instead of "
        "by keyed pseudonyms: for authorised local use only",
    )
    add_config_arguments(p, default=default_config_path())
