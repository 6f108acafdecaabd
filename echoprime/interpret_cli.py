"""Interpret one echo study with a model bundle (no Ray needed).

Reads every file in STUDY_DIR (DICOM of any encoding, MP4, AVI; other files are reported as
skipped with the reason), and prints each video's view, the report section by section, and the
21 phenotype predictions with their decisions. --json writes the whole result (views, report,
metrics with value/probability/decision/spread, per-section video weights, neighbours).

Example:
  echoprime interpret --bundle quickstart-out/bundle path/to/study --json result.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY_DIR", help="folder with the study's video files")
    p.add_argument("--bundle", required=True, help="model bundle (folder or s3://)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full result as JSON")
    p.add_argument("--k", type=int, default=None, help="neighbours for the metrics (default: the bundle's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")


def format_result(d: dict) -> str:
    """A person-readable summary of a StudyResult dict."""
    lines = [f"status: {d['status']}"]
    for f in d["files"]:
        if f["status"] != "used":
            lines.append(f"  skipped {f['path']}: {f['reason']}")
    for v in d["videos"]:
        lines.append(f"  {Path(v['file']).name}: {v['view']} ({v['confidence']:.2f})")
    if d["status"] != "ok":
        return "\n".join(lines)
    lines.append("report:")
    for s in d["report"]:
        lines.append(f"  {s['text']}")
    lines.append("metrics:")
    for name, m in d["metrics"].items():
        if m["kind"] == "regression":
            val = "n/a" if m["value"] is None else f"{m['value']:.1f} {m['unit']} (+/- {m['spread']:.1f})"
        else:
            val = (
                "n/a"
                if m["value"] is None
                else f"p={m['value']:.2f} -> {'present' if m['decision'] else 'absent'}"
            )
        lines.append(f"  {name:<38} {val}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from echoprime.interpret import StudyInterpreter

    interp = StudyInterpreter.from_bundle(args.bundle, device=args.device)
    if args.k is not None and not 1 <= args.k <= len(interp.parts.bank):
        raise ValueError(f"--k must be between 1 and the bank size {len(interp.parts.bank)}, got {args.k}")
    result = interp.interpret(args.study, k=args.k).to_dict()
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if result["status"] == "ok" else 1
