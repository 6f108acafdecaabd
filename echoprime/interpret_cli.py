"""Interpret one echo study with a model bundle (no Ray needed).

Reads every file in STUDY_DIR (DICOM of any encoding, MP4, AVI; other files are reported as
skipped with the reason), or a study of a DICOMweb archive by its StudyInstanceUID, and prints
each video's view, the report section by section, and the 21 phenotype predictions with their
decisions. --json writes the whole result (views, report, metrics with value/probability/
decision/spread, per-section video weights, neighbours). For a hospital (docs/integration.md):
--sr writes a DICOM Comprehensive SR, --pdf the report as PDF (and, for a DICOM study, as an
Encapsulated PDF instance next to it, FILE.dcm), --fhir a FHIR R4 DiagnosticReport bundle, and
--store sends the SR and the PDF back to the DICOMweb archive (STOW-RS).

Examples:
  echoprime interpret --bundle quickstart-out/bundle path/to/study --json result.json
  echoprime interpret --bundle quickstart-out/bundle --dicomweb http://pacs:8042/dicom-web \\
      --study 1.2.840.113619.2.55.3 --sr report-sr.dcm --pdf report.pdf --fhir report.json --store
Credentials for the archive come from ECHOPRIME_DICOMWEB_TOKEN (bearer), or
ECHOPRIME_DICOMWEB_USER and ECHOPRIME_DICOMWEB_PASSWORD (basic); never from the command line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "study", metavar="STUDY_DIR", nargs="?", default=None, help="folder with the study's video files"
    )
    p.add_argument("--bundle", required=True, help="model bundle (folder or s3://)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the full result as JSON")
    p.add_argument("--k", type=int, default=None, help="neighbours for the metrics (default: the bundle's)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the towers' arithmetic: bf16 autocast is faster on a GPU or a CPU with AVX512-BF16/AMX, "
        "and its answers can differ slightly from fp32's (docs/benchmarks.md); default fp32",
    )
    p.add_argument(
        "--dicomweb",
        default=None,
        metavar="URL",
        help="read the study from this DICOMweb root (with --study)",
    )
    p.add_argument(
        "--study", dest="study_uid", default=None, metavar="UID", help="StudyInstanceUID (with --dicomweb)"
    )
    p.add_argument("--sr", default=None, metavar="FILE", help="write a DICOM Comprehensive SR of the result")
    p.add_argument(
        "--pdf", default=None, metavar="FILE", help="write the report as PDF (and FILE.dcm, Encapsulated PDF)"
    )
    p.add_argument(
        "--fhir", default=None, metavar="FILE", help="write a FHIR R4 DiagnosticReport bundle (JSON)"
    )
    p.add_argument(
        "--store",
        action="store_true",
        help="send the SR and the PDF to the --dicomweb archive (STOW-RS), in the study, a new series each",
    )


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
        lines.append(f"  {name:<38} {_metric_line(m)}")
    if d.get("tasks"):
        lines.append("fine-tuned heads:")
        for name, t in d["tasks"].items():
            lines.append(f"  {name:<38} {_task_line(t)}")
    return "\n".join(lines)


def _task_line(t: dict) -> str:
    """A head's answer: "58.3 % (Left Ventricle videos)", "p=0.71", "moderate (p=0.52)", views per video."""
    if t["kind"] == "regression":
        return f"{t['value']:.1f} {t['unit']} (pooled by the {t['pooled_by']} attention)"
    if t["kind"] == "binary":
        return f"p={t['probability']:.2f}"
    if t["kind"] == "graded":
        return f"{t['grade']} (p={t['probabilities'][t['grade']]:.2f})"
    return ", ".join(f"{Path(v['file']).name}: {v['view']}" for v in t["videos"])


def _metric_line(m: dict) -> str:
    """One finding as a reader wants it: "37.0 mmHg (80 % interval 27.0-47.0)", or
    "p=0.20 (calibrated 0.26) -> present, grade moderate (report: trace)"."""
    if m["value"] is None:
        return "n/a"
    if m["kind"] == "regression":
        iv = m.get("interval")
        if iv and iv["low"] is not None:
            return (
                f"{m['value']:.1f} {m['unit']} ({iv['level']:.0%} interval {iv['low']:.1f}-{iv['high']:.1f})"
            )
        return f"{m['value']:.1f} {m['unit']} (+/- {m['spread']:.1f})"
    out = f"p={m['value']:.2f}"
    if m.get("calibrated_probability") is not None:
        out += f" (calibrated {m['calibrated_probability']:.2f})"
    out += f" -> {'present' if m['decision'] else 'absent'}"
    g = m.get("grade")
    if g and g["label"] is not None:
        out += f", grade {g['label']}"
        if g["agrees_with_report"] is False:
            out += f" (report: {g['report_label']})"
    return out


def run(args: argparse.Namespace) -> int:
    from echoprime.inference import StudyInterpreter

    if (args.dicomweb is None) != (args.study_uid is None):
        raise ValueError("--dicomweb URL and --study UID go together")
    if (args.study is None) == (args.dicomweb is None):
        raise ValueError("give a STUDY_DIR, or --dicomweb URL --study UID (not both)")
    if args.store and args.dicomweb is None:
        raise ValueError(
            "--store sends the SR and PDF back to the archive the study came from: it needs --dicomweb"
        )
    interp = StudyInterpreter.from_bundle(args.bundle, device=args.device, precision=args.precision)
    if args.k is not None and not 1 <= args.k <= len(interp.parts.bank):
        raise ValueError(f"--k must be between 1 and the bank size {len(interp.parts.bank)}, got {args.k}")
    archive = None
    if args.dicomweb is not None:
        from echoprime.hospital.dicomweb import Archive
        from echoprime.hospital.outputs import interpret_archive_study

        archive = Archive(args.dicomweb)
        result, headers = interpret_archive_study(interp, archive, args.study_uid, k=args.k)
    else:
        result = interp.interpret(args.study, k=args.k).to_dict()
        headers = None
    print(format_result(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    if result["status"] != "ok":
        if args.sr or args.pdf or args.fhir or args.store:
            print("no SR, PDF or FHIR report: the study has no usable echo video")
        return 1
    if args.sr or args.pdf or args.fhir or args.store:
        _hospital(args, interp, result, headers, archive)
    return 0


def _hospital(args: argparse.Namespace, interp, result: dict, headers, archive) -> None:
    from echoprime.hospital.outputs import algorithm_for, dicom_headers, hospital_outputs, key_frames

    if headers is None:  # local files: their DICOM headers, by the names the result uses
        headers = dicom_headers(v["file"] for v in result["videos"])

    def source(name: str):
        if archive is None:
            return Path(name)
        ds = headers[name]
        return archive.retrieve_instance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), name)

    frames = key_frames(result, source) if (args.pdf or args.store) else None
    out = hospital_outputs(
        result,
        headers,
        algorithm_for(args.bundle),
        sr=bool(args.sr or args.store),
        pdf=bool(args.pdf or args.store),
        fhir=bool(args.fhir),
        frames=frames,
    )
    for note in out.notes:
        print(f"note: {note}")
    if args.sr:
        out.sr.save_as(args.sr, enforce_file_format=True)
        print(f"SR: {args.sr}")
    if args.pdf:
        Path(args.pdf).write_bytes(out.pdf)
        print(f"PDF: {args.pdf}")
        if out.pdf_dicom is not None:
            out.pdf_dicom.save_as(args.pdf + ".dcm", enforce_file_format=True)
            print(f"Encapsulated PDF: {args.pdf}.dcm")
    if args.fhir:
        Path(args.fhir).write_text(json.dumps(out.fhir, indent=2))
        print(f"FHIR: {args.fhir}")
    if args.store:
        sent = [ds for ds in (out.sr, out.pdf_dicom) if ds is not None]
        stored = archive.store(sent)
        print(f"stored in {archive.url}: {len(stored)} instances (SR and PDF) in study {args.study_uid}")
