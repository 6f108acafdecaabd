"""Hand-made study results for the viewer's browser tests and its render benchmark: any number
of videos, each with a real loop (:func:`echoprime.api.previews.clip_loop` of a clip whose frames move),
every finding of the taxonomy, attention weights for each section x video, a report with the
release's ``[SEP]`` separators and bank pseudonyms (and one original bank id, which the page must
not show), and a synthetic example's truth beside it. No model is needed to make them.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import numpy as np

from echoprime.api.previews import clip_loop
from echoprime.taxonomy import FINDING_BY_NAME, GRADE_SCALES, MIL_SECTIONS, SECTIONS, VIEWS
from tests.fixtures_graded import graded_result

BANK_ID = "s0_000207"  # an original bank study id: shown nowhere (issue 18, 24)


def moving_clip(frames: int, size: int, seed: int) -> np.ndarray:
    """``frames x size x size x 3`` uint8: a grey sector-like wedge and a bright disc that moves
    across it, so that every frame differs from the next."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size  # S x S
    wedge = (np.abs(xx - 0.5) < yy * 0.6) & (yy < 0.95)
    base = (wedge * (60 + 40 * rng.random((size, size)))).astype(np.float32)
    out = np.empty((frames, size, size, 3), np.uint8)
    for t in range(frames):
        cx, cy = 0.3 + 0.4 * t / max(1, frames - 1), 0.45 + 0.15 * np.sin(2 * np.pi * t / frames)
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2) < 0.012
        img = np.where(disc, 230.0, base)
        out[t] = np.repeat(img[..., None], 3, axis=2).astype(np.uint8)
    return out


def _metrics() -> dict[str, Any]:
    """Every finding of the taxonomy: issue 23's hand-made cases, the others filled in."""
    g = graded_result()["metrics"]
    out: dict[str, Any] = {}
    for i, (name, f) in enumerate(FINDING_BY_NAME.items()):
        if name in g:
            out[name] = copy.deepcopy(g[name])
            continue
        if f.kind == "regression":
            out[name] = copy.deepcopy(g["heart_rate"]) | {"unit": f.unit, "value": 40.0, "interval": None}
        else:
            p = round(0.1 + 0.8 * ((i * 37) % 11) / 10, 2)
            out[name] = copy.deepcopy(g["pacemaker"]) | {"value": p, "probability": p, "decision": p >= 0.5}
            if name in GRADE_SCALES:
                levels = GRADE_SCALES[name].levels
                dist = [round(1 / len(levels), 4)] * len(levels)
                grade = GRADE_SCALES[name].positive_from if p >= 0.5 else 0
                out[name]["grade"] = {
                    "scale": list(levels),
                    "positive_from": GRADE_SCALES[name].positive_from,
                    "distribution": dist,
                    "n_graded": 10,
                    "grade": grade,
                    "label": levels[grade],
                    "report_grade": None,
                    "report_label": None,
                    "agrees_with_report": None,
                }
    out |= {n: copy.deepcopy(m) for n, m in g.items() if n not in FINDING_BY_NAME}  # future_finding
    return out


def study_result(n_videos: int = 5, size: int = 32, frames: int = 16, seed: int = 0) -> dict[str, Any]:
    """A ``POST /v1/interpret?loops=true`` answer for a study of ``n_videos`` MP4 files."""
    rng = np.random.default_rng(seed)
    names = [f"clip{j:02d}.mp4" for j in range(n_videos)]
    views = [VIEWS[(j * 5) % len(VIEWS)] for j in range(n_videos)]
    loops = [clip_loop(moving_clip(frames, size, seed + j), frames, 50.0, 2) for j in range(n_videos)]
    evidence = {}
    for s in MIL_SECTIONS:
        w = rng.dirichlet(np.full(n_videos, 0.5))
        order = np.argsort(-w, kind="stable")
        evidence[s] = [{"video": int(j), "file": names[j], "weight": float(w[j])} for j in order]
    report = []
    for i, s in enumerate(SECTIONS[:15]):
        source = BANK_ID if s == "Atrial Septum" else f"p-{i:024x}"
        report.append(
            {
                "section": s,
                "text": f"{s}: Finding {i} of the retrieved report. Another sentence. [SEP]",
                "source_study": source,
                "similarity": 0.5,
            }
        )
    return {
        "status": "ok",
        "files": [
            {"path": n, "status": "used", "reason": "", "n_frames": frames * 2, "fps": 50.0, "code": None}
            for n in names
        ],
        "videos": [{"file": n, "view": v, "confidence": 0.9} for n, v in zip(names, views, strict=True)],
        "report": report,
        "report_text": " ".join(r["text"] for r in report),
        "metrics": _metrics(),
        "evidence": evidence,
        "neighbours": {s: [{"study_id": "p-" + "0" * 24, "similarity": 0.5}] for s in MIL_SECTIONS},
        "tasks": {  # fine-tuned heads (echoprime finetune / probe), the three kinds the viewer shows
            "ef": {
                "task": "ef",
                "kind": "regression",
                "target": "ejection_fraction",
                "value": 41.26,
                "unit": "%",
                "pooled_by": "Left Ventricle",
            },
            "mitral_regurgitation:grade": {
                "task": "mitral_regurgitation:grade",
                "kind": "graded",
                "target": "mitral_regurgitation",
                "grade": "moderate",
                "pooled_by": "Mitral Valve",
                "probabilities": {"none": 0.05, "trace": 0.1, "mild": 0.2, "moderate": 0.55, "severe": 0.1},
            },
            "views": {
                "task": "views",
                "kind": "views",
                "target": "view",
                "videos": [
                    {"file": n, "view": v, "probabilities": {v: 0.8}}
                    for n, v in zip(names, views, strict=True)
                ],
            },
        },  # fmt: skip
        "loops": loops,
    }


def example_for(result: dict[str, Any], index: int = 7) -> dict[str, Any]:
    """A ``GET /v1/examples/{index}`` answer whose files are ``result``'s: the first video's
    true view differs from the predicted one; the truth agrees with some findings, not all."""
    views = [v["view"] for v in result["videos"]]
    true_views = [VIEWS[(VIEWS.index(views[0]) + 1) % len(VIEWS)], *views[1:]]
    findings = {}
    for name, m in result["metrics"].items():
        if m["kind"] == "regression":
            value = m["value"] + (2.0 if name != "heart_rate" else 30.0)  # heart rate outside its interval
        else:
            value = float(bool(m["decision"])) if name != "aortic_stenosis" else float(not m["decision"])
        findings[name] = {"value": value, "grade": None, "label": None}
    return {
        "index": index,
        "report": " ".join(f"{s}: The true {s.lower()}. [SEP]" for s in SECTIONS[:15]),
        "views": true_views,
        "files": [
            {
                "name": f["path"],
                "media_type": "video/mp4",
                "data": base64.b64encode(b"x").decode(),
                "view": v,
            }
            for f, v in zip(result["files"], true_views, strict=True)
        ],
        "truth": {
            "sections": [{"section": s, "text": f"The true {s.lower()}."} for s in SECTIONS[:15]],
            "findings": findings,
        },
    }
