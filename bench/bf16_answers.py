"""What ``precision="bf16"`` buys and what it moves: each study interpreted in fp32 and in bf16.

For every study folder under ``--studies`` (or a synthetic study of ``--videos`` files when none
is given), the same clips go through the towers in fp32 and under bf16 autocast; reported: the
towers' time per clip in each, how far the unit embeddings move (cosine), whether each video's
view changes, and what the study's answers do: report sections with another text, binary
findings with another decision, measurements' absolute change.

    python bench/bf16_answers.py --bundle B [--studies DIR] [--videos 12] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from echoprime.inference import StudyEncoding, StudyInterpreter  # noqa: E402


def answers(interp: StudyInterpreter, clips: torch.Tensor, reports: list) -> tuple[dict, torch.Tensor, float]:
    t0 = time.perf_counter()
    probs = interp.towers.classify(clips)
    emb = interp.towers.embed_with_tasks(clips)
    took = time.perf_counter() - t0
    d = interp.towers.embed_dim
    sections, weights = interp.attend(emb[:, :d], probs.argmax(1))
    tasks = emb[:, d:].numpy() if interp.parts.heads else None
    (res,) = interp.results.build([StudyEncoding(sections, weights, probs.numpy(), tasks)], [reports])
    out = res.to_dict()
    out["_views"] = probs.argmax(1).tolist()
    return out, emb[:, :d], took


def compare(a: dict, b: dict) -> dict[str, float]:
    sec_a = {s["section"]: s["text"] for s in a["report"]}
    sec_b = {s["section"]: s["text"] for s in b["report"]}
    changed = sum(sec_a[k] != sec_b.get(k) for k in sec_a)
    dec, meas = [], []
    for name, m in a["metrics"].items():
        n = b["metrics"].get(name, {})
        if "decision" in m and m.get("decision") is not None:
            dec.append(m["decision"] != n.get("decision"))
        elif isinstance(m.get("value"), (int, float)) and isinstance(n.get("value"), (int, float)):
            meas.append(abs(m["value"] - n["value"]))
    views = np.mean([x != y for x, y in zip(a["_views"], b["_views"], strict=True)])
    return {
        "sections_changed": changed,
        "sections": len(sec_a),
        "decisions_changed": int(sum(dec)),
        "decisions": len(dec),
        "measurement_abs_change_max": float(max(meas)) if meas else 0.0,
        "views_changed_fraction": float(views),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument(
        "--studies", default=None, help="a folder of study folders (default: one synthetic study)"
    )
    ap.add_argument("--max-studies", type=int, default=20)
    ap.add_argument("--videos", type=int, default=12, help="videos of the synthetic study")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    fp32 = StudyInterpreter.from_bundle(args.bundle, device="cpu")
    bf16 = StudyInterpreter.from_bundle(args.bundle, device="cpu", precision="bf16")
    with tempfile.TemporaryDirectory() as tmp:
        if args.studies:
            folders = sorted(p for p in Path(args.studies).iterdir() if p.is_dir())[: args.max_studies]
        else:
            from study_stages import make_study

            (Path(tmp) / "s").mkdir()
            make_study(Path(tmp) / "s", args.videos, 60)
            folders = [Path(tmp) / "s"]
        rows, cos, t32, t16, n = [], [], 0.0, 0.0, 0
        for i, folder in enumerate(folders):
            clips, reports = fp32.load_study(folder)
            if clips.shape[0] == 0:
                continue
            a, ea, ta = answers(fp32, clips, reports)
            b, eb, tb = answers(bf16, clips, reports)
            if i == 0:  # once more each, the first call of a tower pays one-off costs
                _, _, ta = answers(fp32, clips, reports)
                _, _, tb = answers(bf16, clips, reports)
            t32, t16, n = t32 + ta, t16 + tb, n + clips.shape[0]
            cos.extend(torch.nn.functional.cosine_similarity(ea, eb).tolist())
            rows.append(compare(a, b))
    summary = {
        "bundle": args.bundle,
        "studies": len(rows),
        "clips": n,
        "threads": args.threads,
        "towers_s_per_clip_fp32": t32 / max(n, 1),
        "towers_s_per_clip_bf16": t16 / max(n, 1),
        "speedup": t32 / max(t16, 1e-9),
        "embedding_cosine_min": float(min(cos)) if cos else None,
        "embedding_cosine_median": float(np.median(cos)) if cos else None,
        "views_changed_fraction": float(np.mean([r["views_changed_fraction"] for r in rows]))
        if rows
        else None,
        "report_sections_changed": f"{sum(r['sections_changed'] for r in rows)} / {sum(r['sections'] for r in rows)}",
        "decisions_changed": f"{sum(r['decisions_changed'] for r in rows)} / {sum(r['decisions'] for r in rows)}",
        "measurement_abs_change_max": max((r["measurement_abs_change_max"] for r in rows), default=0.0),
    }
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps({"summary": summary, "studies": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
