"""The evaluation's figures, drawn from ``metrics.json`` alone (matplotlib, Agg backend, PNG).

Each function takes the metrics dict (and an output path) and returns the path written, or None
when its section was skipped; the report embeds them with relative links.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from echoprime.taxonomy import BINARY_PHENOTYPES

DPI = 110


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: files only, same output on a server and a laptop
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return path


def retrieval_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Recall@k of the four retrieval settings, with the chance level of each."""
    r = m.get("retrieval", {})
    if "skipped" in r:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    settings = [(lvl, d) for lvl in ("study", "video") for d in ("v2t", "t2v")]
    ks = sorted(int(key[2:]) for key in r["study"]["v2t"] if key.startswith("r@"))
    width = 0.8 / len(ks)
    for j, k in enumerate(ks):
        xs = np.arange(len(settings)) + (j - (len(ks) - 1) / 2) * width
        ax.bar(xs, [r[lvl][d][f"r@{k}"] for lvl, d in settings], width, label=f"R@{k}")
        ax.scatter(xs, [r[lvl][d][f"chance_r@{k}"] for lvl, d in settings], marker="_", s=200, color="k",
                   label="chance" if j == 0 else None, zorder=3)  # fmt: skip
    names = {"v2t": "video->text", "t2v": "text->video"}
    ax.set_xticks(range(len(settings)))
    ax.set_xticklabels([f"{lvl} {names[d]}\n(pool {r[lvl][d]['pool']})" for lvl, d in settings], fontsize=8)
    ax.set_ylabel("recall")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=len(ks) + 1)
    ax.set_title("Retrieval on the test split")
    return _save(fig, path)


def _forest_rows(m: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    rows = [(p, m["clinical"][p]) for p in BINARY_PHENOTYPES if p in m.get("clinical", {})]
    hidden = m.get("hidden", {})
    rows += [(f"[hidden] {p}", v) for p, v in hidden.items() if p not in ("summary", "skipped")]
    return rows


def clinical_auc_plot(m: dict[str, Any], path: str | os.PathLike) -> Path:
    """AUC with its 95 % interval for each binary phenotype (and hidden diagnosis), per method."""
    plt = _plt()
    rows = _forest_rows(m)
    zs = m.get("zero_shot", {})
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    styles = {
        "knn": ("o", "C0", "kNN (bank)"),
        "linear": ("s", "C1", "linear probe"),
        "zero_shot": ("^", "C2", "zero-shot"),
    }
    for method, (marker, color, label) in styles.items():
        ys, xs, lo, hi = [], [], [], []
        for i, (name, entry) in enumerate(rows):
            res = zs.get(name, {}).get("zero_shot", {}) if method == "zero_shot" else entry.get(method, {})
            if res.get("computable"):
                off = {"knn": -0.22, "linear": 0.0, "zero_shot": 0.22}[method]
                ys.append(i + off), xs.append(res["auc"]), lo.append(res["auc"] - res["auc_low"])
                hi.append(res["auc_high"] - res["auc"])
        if xs:
            ax.errorbar(
                xs, ys, xerr=[lo, hi], fmt=marker, color=color, ms=4, lw=0.8, capsize=1.5, label=label
            )
    for i, (_, entry) in enumerate(rows):
        if not any(entry.get(mt, {}).get("computable") for mt in ("knn", "linear")):
            ax.text(0.02, i, "not computable", va="center", fontsize=7, color="0.4")
    ax.axvline(0.5, color="0.5", lw=0.8, ls="--")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n for n, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("AUC (test split, bootstrap 95 % interval)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def calibration_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Reliability diagram of the binary probabilities pooled over phenotypes, per method."""
    cal = m.get("calibration", {})
    if not cal:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--", label="perfect")
    for (method, res), color in zip(cal.items(), ("C0", "C1"), strict=False):
        if not res.get("computable"):
            continue
        c = res["reliability"]
        ax.plot(c["mean_predicted"], c["positive_rate"], "o-", color=color, ms=3,
                label=f"{method} (ECE {res['ece']:.3f})")  # fmt: skip
    ax.set_xlabel("predicted probability")
    ax.set_ylabel("observed positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title("Calibration (all binary phenotypes pooled)", fontsize=9)
    return _save(fig, path)


def ablation_plot(m: dict[str, Any], path: str | os.PathLike) -> Path:
    """Mean AUC (all binaries, view-limited ones) and EF MAE of each ablation variant."""
    plt = _plt()
    variants = {n: v for n, v in m["ablation"]["variants"].items() if v.get("present")}
    names = list(variants)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    series = [("knn", "all"), ("linear", "all"), ("knn", "view_limited"), ("linear", "view_limited")]
    width = 0.8 / len(series)
    for j, (method, subset) in enumerate(series):
        vals = [variants[n]["summary"].get(f"mean_auc_{method}_{subset}") for n in names]
        xs = np.arange(len(names)) + (j - (len(series) - 1) / 2) * width
        axes[0].bar(xs, [v if v is not None else 0 for v in vals], width,
                    label=f"{method}, {subset.replace('_', '-')}", hatch="//" if subset != "all" else None)  # fmt: skip
    axes[0].axhline(0.5, color="0.5", lw=0.8, ls="--")
    axes[0].set_xticks(range(len(names)))
    axes[0].set_xticklabels([n.replace("_", " ") for n in names], fontsize=8)
    axes[0].set_ylim(0.3, 1)
    axes[0].set_ylabel("mean AUC")
    axes[0].legend(fontsize=7, ncol=2)
    for j, method in enumerate(("knn", "linear")):
        vals = [variants[n]["summary"].get(f"ejection_fraction_mae_{method}") for n in names]
        xs = np.arange(len(names)) + (j - 0.5) * 0.4
        axes[1].bar(xs, [v if v is not None else 0 for v in vals], 0.4, label=method)
    base = m.get("clinical", {}).get("summary", {}).get("ejection_fraction_mae_train_mean")
    if base is not None:
        axes[1].axhline(base, color="k", lw=0.8, ls="--", label="train mean")
    axes[1].set_xticks(range(len(names)))
    axes[1].set_xticklabels([n.replace("_", " ") for n in names], fontsize=7, rotation=30)
    axes[1].set_ylabel("EF MAE (%)")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"Ablation on {m['ablation']['test_studies']} test studies", fontsize=10)
    return _save(fig, path)


def view_confusion_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Row-normalised confusion matrix of the view classifier."""
    v = m.get("views", {})
    if not v.get("computable"):
        return None
    plt = _plt()
    conf = np.asarray(v["confusion"], np.float64)
    norm = conf / np.maximum(conf.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(conf.shape[0]):
        for j in range(conf.shape[1]):
            if conf[i, j]:
                ax.text(j, i, int(conf[i, j]), ha="center", va="center", fontsize=6,
                        color="w" if norm[i, j] > 0.6 else "k")  # fmt: skip
    ax.set_xticks(range(len(v["views"])))
    ax.set_xticklabels(v["views"], rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(v["views"])))
    ax.set_yticklabels(v["views"], fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Views: accuracy {v['accuracy']:.3f} on {v['n']} clips", fontsize=9)
    return _save(fig, path)


def attention_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """The learned section x view tables beside the generator's visibility table."""
    at = m.get("attention_tables", {})
    panels = [(n, np.asarray(t["table"])) for n, t in at.get("tables", {}).items() if t.get("present")]
    if "visibility" in at:
        panels.append(("generator's visibility table", np.asarray(at["visibility"])))
    if not panels:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.5, 4.4), squeeze=False)
    for ax, (name, table) in zip(axes[0], panels, strict=True):
        ax.imshow(table, cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_title(name, fontsize=8)
        ax.set_xticks(range(len(at["views"])))
        ax.set_xticklabels(at["views"], rotation=70, ha="right", fontsize=6)
        ax.set_yticks(range(len(at["sections"])))
        ax.set_yticklabels(at["sections"] if ax is axes[0][0] else [], fontsize=6)
    return _save(fig, path)


def zero_shot_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Zero-shot AUC against the kNN AUC of the same phenotype."""
    zs = m.get("zero_shot", {})
    pts = [
        (n, e["knn"]["auc"], e["zero_shot"]["auc"])
        for n, e in zs.items()
        if n not in ("summary", "skipped") and e.get("kind") == "binary"
        and e["knn"].get("computable") and e["zero_shot"].get("computable")
    ]  # fmt: skip
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.6))
    ax.plot([0, 1], [0, 1], color="0.5", lw=0.8, ls="--")
    ax.axhline(0.5, color="0.8", lw=0.6)
    ax.axvline(0.5, color="0.8", lw=0.6)
    for n, x, y in pts:
        ax.scatter(x, y, s=12, color="C2")
        ax.annotate(n.replace("_", " ")[:18], (x, y), fontsize=5.5, xytext=(2, 2), textcoords="offset points")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("kNN AUC (bank, labels)")
    ax.set_ylabel("zero-shot AUC (text prompts, no labels)")
    return _save(fig, path)


def _panels(n: int, *, cols: int, width: float, height: float) -> tuple[Any, list[Any]]:
    """A figure of ``n`` small panels, ``cols`` to a row (the spare ones blank), and the ``n`` axes."""
    plt = _plt()
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, list(axes.flat[:n])


def grade_confusion_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """One confusion matrix (true grade x kNN grade) per graded finding, with its accuracy and kappa."""
    grades = {p: e for p, e in m.get("graded", {}).get("grades", {}).items() if e["knn"].get("computable")}
    if not grades:
        return None
    fig, axes = _panels(len(grades), cols=4, width=3.1, height=3.6)
    for ax, (ph, e) in zip(axes, grades.items(), strict=False):
        c = np.asarray(e["knn"]["confusion"], dtype=float)
        share = c / np.maximum(c.sum(1, keepdims=True), 1)  # each true grade's row sums to 1
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for i in range(c.shape[0]):
            for j in range(c.shape[1]):
                if c[i, j]:
                    ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
        ticks = [lv[:4] for lv in e["scale"]]
        ax.set_xticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_yticks(range(len(ticks)), ticks, fontsize=7)
        ax.set_title(f"{ph}\nacc {e['knn']['accuracy']:.2f}, kappa {e['knn']['qwk']:.2f}", fontsize=8)
        ax.set_xlabel("kNN grade", fontsize=7)
        ax.set_ylabel("report's grade", fontsize=7)
    fig.suptitle("Graded findings on the test split (kNN through the bank; rows: true grade)", fontsize=10)
    return _save(fig, path)


def reliability_plot(m: dict[str, Any], path: str | os.PathLike) -> Path | None:
    """Per binary finding: the reliability curve of the raw vote share and of the calibrated probability."""
    cal = {p: c for p, c in m.get("graded", {}).get("calibration", {}).items() if c.get("computable")}
    if not cal:
        return None
    fig, axes = _panels(len(cal), cols=5, width=2.6, height=2.6)
    for ax, (ph, c) in zip(axes, cal.items(), strict=False):
        ax.plot([0, 1], [0, 1], color="0.6", lw=0.7, ls="--")
        for key, color, name in (
            ("reliability_raw", "C3", "raw"),
            ("reliability_calibrated", "C0", c["method"]),
        ):
            r = c[key]
            ece = c["ece_raw"] if key == "reliability_raw" else c["ece_calibrated"]
            ax.plot(r["mean_predicted"], r["positive_rate"], "o-", ms=2.5, lw=1, color=color,
                    label=f"{name} {ece:.2f}")  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(ph, fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=5.5, loc="upper left", title="ECE", title_fontsize=5.5)
    fig.suptitle("Reliability before (raw vote share) and after calibration, test split", fontsize=10)
    return _save(fig, path)


PLOTS = {
    "retrieval.png": retrieval_plot,
    "clinical_auc.png": clinical_auc_plot,
    "calibration.png": calibration_plot,
    "ablation.png": ablation_plot,
    "view_confusion.png": view_confusion_plot,
    "attention_vs_visibility.png": attention_plot,
    "zeroshot.png": zero_shot_plot,
    "grade_confusion.png": grade_confusion_plot,
    "reliability.png": reliability_plot,
}


def write_plots(m: dict[str, Any], out: str | os.PathLike) -> dict[str, str]:
    """Draw every figure into ``out``; returns ``{figure name: file name}`` of those drawn."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for name, fn in PLOTS.items():
        if fn(m, out / name) is not None:
            drawn[name.removesuffix(".png")] = name
    return drawn
