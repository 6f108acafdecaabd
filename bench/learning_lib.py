"""Shared pieces of the learning benchmark (``bench/learning.py``): data, batches, metrics, tables.

No Ray anywhere: the benchmark trains in-process with the library's own training loop.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from echoprime.data.shards import clips_to_numpy, read_manifest, read_split  # noqa: E402
from echoprime.models.tokenizer import ReportTokenizer  # noqa: E402
from echoprime.reports import extract_findings  # noqa: E402
from echoprime.synth.state import PHENOTYPE_FIELD, VISIBILITY  # noqa: E402
from echoprime.taxonomy import PHENOTYPE_BY_NAME, PHENOTYPES, grade_column  # noqa: E402
from echoprime.training.batch import Augmentation, prepare_batch  # noqa: E402
from echoprime.training.labels import label_row  # noqa: E402
from echoprime.training.loop import embed_for_retrieval  # noqa: E402
from echoprime.training.setup import study_index  # noqa: E402

SHORT = {
    "impella": "impella",
    "ejection_fraction": "EF",
    "pacemaker": "pacer",
    "rv_systolic_function_depressed": "RVfn",
    "right_ventricle_dilation": "RV",
    "left_atrium_dilation": "LA",
    "right_atrium_dilation": "RA",
    "mitraclip": "clip",
    "mitral_annular_calcification": "MAC",
    "mitral_stenosis": "MS",
    "mitral_regurgitation": "MR",
    "tavr": "TAVR",
    "bicuspid_aov_morphology": "bicusp",
    "aortic_stenosis": "AS",
    "aortic_regurgitation": "AR",
    "tricuspid_stenosis": "TS",
    "tricuspid_valve_regurgitation": "TR",
    "pericardial_effusion": "effus",
    "aortic_root_dilation": "root",
    "dilated_ivc": "IVC",
    "pulmonary_artery_pressure_continuous": "PASP",
}


def parse_kv(text: str | None) -> dict[str, Any]:
    """``"a=1,b=x"`` -> ``{"a": 1, "b": "x"}`` (numbers parsed, everything else a string)."""
    out: dict[str, Any] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"expected key=value, got {part!r} in {text!r}")
        k, v = part.split("=", 1)
        try:
            out[k.strip()] = int(v)
        except ValueError:
            try:
                out[k.strip()] = float(v)
            except ValueError:
                out[k.strip()] = v.strip()
    return out


# ----------------------------------------------------------------------------------- data
def load_split(shards: str, split: str) -> dict[str, Any]:
    """Clips (uint8 ``N x T x H x W x 3``), study ids, views, reports and per-study labels."""
    m = read_manifest(shards)
    t = read_split(shards, split, ["clip", "study_id", "view", "report", "labels"])
    if t.num_rows == 0:
        raise ValueError(f"{shards} has no rows in split {split!r}")
    return _split_dict(
        clips_to_numpy(t.column("clip"), m.clip_shape),
        t.column("study_id").to_pylist(),
        t.column("view").to_pylist(),
        t.column("report").to_pylist(),
        t.column("labels").to_pylist(),
    )


def _split_dict(
    clip: np.ndarray, studies: list[str], views: list[str], reports: list[str], labels: list[str]
) -> dict[str, Any]:
    """A split as the benchmark holds it: per-clip columns, per-study labels and set of views."""
    by_study: dict[str, dict[str, float]] = {}
    seen: dict[str, set[str]] = {}
    for st, v, lab in zip(studies, views, labels, strict=True):
        by_study.setdefault(st, json.loads(lab))
        seen.setdefault(st, set()).add(v)
    return {
        "clip": clip,
        "study": studies,
        "view": views,
        "report": reports,
        "labels": by_study,
        "views": seen,
    }


def stream_split(shards: str, stream: str, cfg: Any) -> dict[str, Any]:
    """A training split of ``N`` stream studies (``"N"`` or ``"N,seed"``), in :func:`load_split`'s
    shape, rendered at the shards' spec with the config's synth shape (as pretraining does)."""
    import hashlib

    from echoprime.data.stream import stream_rows
    from echoprime.preprocess import PreprocessSpec

    n, _, seed = stream.partition(",")
    kw = {
        "seed": int(seed or 1),
        "spec": PreprocessSpec.from_dict(read_manifest(shards).spec),
        "min_videos": cfg.synth.min_videos,
        "max_videos": cfg.synth.max_videos,
        "frames": cfg.synth.frames,
        "size": cfg.synth.size,
        "clips_per_video": cfg.ingest.clips_per_video,
    }
    # Rendering thousands of studies takes minutes; runs of one sweep share a cache (the rows
    # are a pure function of these settings).
    key = hashlib.sha256(repr((int(n), sorted(kw.items(), key=str))).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / "echoprime-bench-stream" / f"{key}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            rows = {k: z[k] if k == "clip" else z[k].astype(object) for k in z.files}
    else:
        rows = stream_rows(range(int(n)), **kw)
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, **{k: v if k == "clip" else v.astype(str) for k, v in rows.items()})
        tmp.replace(cache)
    return _split_dict(
        rows["clip"],
        rows["study_id"].tolist(),
        rows["view"].tolist(),
        rows["report"].tolist(),
        rows["labels"].tolist(),
    )


def concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    out = {
        "clip": np.concatenate([p["clip"] for p in parts]),
        "labels": {},
        "views": {},
    }
    for key in ("study", "view", "report"):
        out[key] = [x for p in parts for x in p[key]]
    for p in parts:
        out["labels"].update(p["labels"])
        out["views"].update(p["views"])
    return out


def encode(
    data: dict[str, Any], tok: ReportTokenizer, grades: tuple[str, ...] = ()
) -> dict[str, torch.Tensor]:
    """Model-ready columns; the ``grades`` phenotypes' label columns hold the report's grade
    (``train.label_grades``, echoprime.training.labels)."""
    enc = tok(data["report"])
    graded: dict[str, dict[str, float]] = {}
    for s, r in zip(data["study"], data["report"], strict=True):
        if grades and s not in graded:
            found = extract_findings(r)
            graded[s] = {p: found[grade_column(p)] for p in grades}
    return {
        "clip": torch.from_numpy(np.ascontiguousarray(data["clip"])),
        **enc,
        "study_idx": torch.tensor([study_index(s) for s in data["study"]]),
        "labels": torch.from_numpy(
            np.stack([label_row(data["labels"][s], graded.get(s)) for s in data["study"]])
        ),
    }


def epoch_order(studies: list[str], sampler: str, g: torch.Generator) -> torch.Tensor:
    """Row order for one epoch.

    ``random``: a permutation of the clips. ``study``: rounds, each holding one clip of every
    study that has one left, in a random study order, so a batch rarely holds two clips of one
    study (only where rounds meet). ``grouped``: studies in a random order, each with all its
    clips together (for study-level losses).
    """
    n = len(studies)
    if sampler == "random":
        return torch.randperm(n, generator=g)
    if sampler not in ("study", "grouped"):
        raise ValueError(f"sampler must be 'random', 'study' or 'grouped', got {sampler!r}")
    by: dict[str, list[int]] = {}
    for i, s in enumerate(studies):
        by.setdefault(s, []).append(i)
    rows = list(by.values())
    if sampler == "grouped":
        # whole studies one after the other (a batch holds every clip of most of its studies)
        return torch.tensor([i for j in torch.randperm(len(rows), generator=g).tolist() for i in rows[j]])
    shuffled = [[r[j] for j in torch.randperm(len(r), generator=g).tolist()] for r in rows]
    order: list[int] = []
    for rnd in range(max(len(r) for r in rows)):
        left = [r[rnd] for r in shuffled if len(r) > rnd]
        order += [left[j] for j in torch.randperm(len(left), generator=g).tolist()]
    return torch.tensor(order)


def batches(
    data: dict[str, torch.Tensor],
    order: torch.Tensor,
    batch_size: int,
    spec: dict[str, Any],
    aug: Augmentation,
    g: torch.Generator,
    device: str,
) -> Iterator[dict[str, torch.Tensor]]:
    """Full batches in ``order``; clips normalised and augmented by ``prepare_batch`` on ``device``.

    The clip comes out as the normalised float ``B x 3 x T x H x W`` that ``train_one_epoch``
    passes through unchanged.
    """
    for i in range(len(order) // batch_size):
        idx = order[i * batch_size : (i + 1) * batch_size]
        b = prepare_batch({k: v[idx] for k, v in data.items()}, spec, device, augmentation=aug, generator=g)
        b["clip"] = b.pop("video")
        yield b


# ------------------------------------------------------------------------------- metrics
def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


def visibility_ceiling(name: str, truth: np.ndarray, prior: float, views: list[set[str]]) -> float | None:
    """AUC (MAE for regressions) of an oracle exact on studies holding a view that shows the
    finding and answering the training prior elsewhere."""
    seen = np.array([bool(v & set(VISIBILITY[PHENOTYPE_FIELD[name]])) for v in views])
    pred = np.where(seen, truth, prior)
    if PHENOTYPE_BY_NAME[name].kind == "regression":
        return float(np.mean(np.abs(pred - truth)))
    if 0 < truth.sum() < len(truth):
        return _auc(truth, pred)
    return None


def knn_metrics(model: torch.nn.Module, d: dict[str, Any], k: int, device: str) -> dict[str, dict[str, Any]]:
    """Per-phenotype kNN metrics of held-out studies through the training report bank."""
    tr, ev, spec = d["tr"], d["ev"], d["spec"]

    def chunks(x: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        n = len(x["study_idx"])
        return [{kk: v[i : i + 256] for kk, v in x.items()} for i in range(0, n, 256)]

    e_tr = embed_for_retrieval(model, chunks(d["TR"]), device, spec=spec)
    e_ev = embed_for_retrieval(model, chunks(d["EV"]), device, spec=spec)
    idx_to_id = {study_index(s): s for s in tr["study"]} | {study_index(s): s for s in ev["study"]}
    bank_ids = [idx_to_id[int(i)] for i in e_tr["text_study"]]
    vs = e_ev["video_study"]
    studies = sorted(set(vs.tolist()))
    # a study's embedding: the normalised mean of its clips' (StudyInterpreter's unweighted case)
    q = torch.nn.functional.normalize(torch.stack([e_ev["video"][vs == s].mean(0) for s in studies]), dim=1)
    top = (q @ e_tr["text"].T).topk(k, dim=1).indices.tolist()
    # The same vote with the study's own report as the query: how well the text space alone
    # sorts the findings (a ceiling for the video side; low means the text tower is the limit).
    tq = torch.stack([e_ev["text"][e_ev["text_study"] == s][0] for s in studies])
    top_t = (tq @ e_tr["text"].T).topk(k, dim=1).indices.tolist()
    ids = [idx_to_id[s] for s in studies]
    views = [ev["views"][s] for s in ids]
    out: dict[str, dict[str, Any]] = {}
    for ph in PHENOTYPES:
        bank = np.array([tr["labels"][b][ph.name] for b in bank_ids], dtype=float)
        truth = np.array([ev["labels"][s][ph.name] for s in ids], dtype=float)
        pred = np.array([np.nanmean(bank[row]) for row in top])
        pred_t = np.array([np.nanmean(bank[row]) for row in top_t])
        prior = float(np.nanmean(bank))
        ceil = visibility_ceiling(ph.name, truth, prior, views)
        if ph.kind == "regression":
            out[ph.name] = {
                "mae": float(np.mean(np.abs(pred - truth))),
                "chance": float(np.mean(np.abs(prior - truth))),
                "ceiling": ceil,
                "text_mae": float(np.mean(np.abs(pred_t - truth))),
            }
        elif 0 < truth.sum() < len(truth):
            out[ph.name] = {
                "auc": _auc(truth, pred),
                "positives": int(truth.sum()),
                "ceiling": ceil,
                "text_auc": _auc(truth, pred_t),
            }
    return out


def knn_ceiling(ev: dict[str, Any], tr: dict[str, Any]) -> dict[str, float | None]:
    """The visibility ceiling of every phenotype for the held-out studies."""
    ids = sorted(set(ev["study"]))
    out = {}
    for ph in PHENOTYPES:
        truth = np.array([ev["labels"][s][ph.name] for s in ids], dtype=float)
        prior = float(np.mean([tr["labels"][s][ph.name] for s in set(tr["study"])]))
        out[ph.name] = visibility_ceiling(ph.name, truth, prior, [ev["views"][s] for s in ids])
    return out


def summary(metrics: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Mean AUC (and mean ceiling) over the binary phenotypes with at least 3 held-out positives."""
    aucs = [v["auc"] for v in metrics.values() if "auc" in v and v["positives"] >= 3]
    ceil = [v["ceiling"] for v in metrics.values() if "auc" in v and v["positives"] >= 3]
    text = [v["text_auc"] for v in metrics.values() if "text_auc" in v and v["positives"] >= 3]
    return {
        "mean_auc": float(np.mean(aucs)),
        "mean_ceiling_auc": float(np.mean(ceil)),
        "mean_text_auc": float(np.mean(text)) if text else float("nan"),
        "n_auc": len(aucs),
    }


# ------------------------------------------------------------------------------- tables
BRIEF = (
    "pericardial_effusion",
    "mitral_regurgitation",
    "impella",
    "pacemaker",
    "tricuspid_valve_regurgitation",
    "left_atrium_dilation",
    "rv_systolic_function_depressed",
    "dilated_ivc",
)


def table(results: list[dict[str, Any]], brief: bool = False) -> str:
    """One row per run: retrieval vs chance, EF/PASP MAE, AUC per binary phenotype (``brief``: a few)."""
    names = [p.name for p in PHENOTYPES if p.kind == "binary" and (not brief or p.name in BRIEF)]
    head = [
        "tag",
        "n",
        "steps",
        "s",
        "loss",
        "R@1",
        "R@5",
        "R@10",
        "EF",
        "PASP",
        "meanAUC",
        "txtEF",
        "txtAUC",
    ]
    head += [SHORT[x] for x in names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(tag: str, r: dict[str, Any], key: str) -> list[str]:
        ph = r["phenotypes"]
        cells = [f"{ph[x][key]:.2f}" if x in ph and ph[x].get(key) is not None else "" for x in names]
        return cells

    for r in results:
        f, ph = r["final"], r["phenotypes"]
        cells = [
            r["tag"],
            str(r.get("n_runs", 1)),
            str(r["steps"]),
            f"{r['train_s']:.0f}",
            f"{f['loss']:.2f}",
            f"{f['v2t_r@1']:.2f}",
            f"{f['v2t_r@5']:.2f}",
            f"{f['v2t_r@10']:.2f}",
            f"{ph['ejection_fraction']['mae']:.1f}",
            f"{ph['pulmonary_artery_pressure_continuous']['mae']:.1f}",
            f"{r['summary']['mean_auc']:.3f}",
            f"{ph['ejection_fraction'].get('text_mae', float('nan')):.1f}",
            f"{r['summary'].get('mean_text_auc', float('nan')):.3f}",
        ] + row(r["tag"], r, "auc")
        lines.append("| " + " | ".join(cells) + " |")
    if results:
        r = results[-1]
        ph, c = r["phenotypes"], r["chance_r@k"]
        lines.append(
            "| chance | | | | | "
            + " | ".join(f"{c[k]:.2f}" for k in ("r@1", "r@5", "r@10"))
            + f" | {ph['ejection_fraction']['chance']:.1f} | {ph['pulmonary_artery_pressure_continuous']['chance']:.1f}"
            + " | 0.5 | | | "
            + " | ".join("0.50" for _ in names)
            + " |"
        )
        lines.append(
            "| visibility ceiling | | | | | | | | "
            + f"{ph['ejection_fraction']['ceiling']:.1f} | {ph['pulmonary_artery_pressure_continuous']['ceiling']:.1f}"
            + f" | {r['summary']['mean_ceiling_auc']:.3f} | | | "
            + " | ".join(row("", r, "ceiling"))
            + " |"
        )
        lines.append(
            "| positives |"
            + " |" * 12
            + " "
            + " | ".join(str(int(ph[x]["positives"])) if x in ph else "" for x in names)
            + " |"
        )
    return "\n".join(lines)


def mean_over_seeds(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Average runs whose tags differ only after an ``@`` (``name@1``, ``name@2`` -> ``name``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["tag"].split("@")[0], []).append(r)
    out = []
    for tag, rs in groups.items():

        def avg(get: Any, rs: list[dict[str, Any]] = rs) -> float:
            vals = [v for v in (get(r) for r in rs) if v is not None]
            return float(np.mean(vals)) if vals else float("nan")

        first = rs[0]
        final = {k: avg(lambda r, k=k: r["final"].get(k)) for k in first["final"]}
        ph = {
            name: {k: avg(lambda r, name=name, k=k: r["phenotypes"].get(name, {}).get(k)) for k in v}
            for name, v in first["phenotypes"].items()
        }
        summ = {k: avg(lambda r, k=k: r["summary"].get(k)) for k in first["summary"]}
        out.append(
            first
            | {
                "tag": tag,
                "n_runs": len(rs),
                "steps": int(avg(lambda r: r["steps"])),
                "train_s": avg(lambda r: r["train_s"]),
                "final": final,
                "phenotypes": ph,
                "summary": summ,
            }
        )
    return out
