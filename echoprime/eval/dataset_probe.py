"""Frozen-embedding probes on a labelled dataset, as the field reports them (``echoprime probe``).

A dataset's studies are embedded by a bundle's video tower (each clip as interpretation embeds
it, unit-normalised); a study's feature is the mean of its clips' embeddings (test-time
multi-clip averaging: for a linear probe the same as averaging the clips' predictions). On the
dataset's own splits, per target:

* ``linear``: ``Ridge`` (regressions) or balanced ``LogisticRegression`` (binaries) on
  standardised features (echoprime.eval.probes.fit_probe), the penalty chosen on the val split
  (lowest MAE / highest AUC) from :data:`ALPHAS` / :data:`CS`, fitted on train;
* ``knn``: the mean label of the ``k`` most cosine-similar training studies, ``k`` chosen on val
  from :data:`KS`;
* ``mean``: the train split's mean (regressions) or prevalence (binaries): the floor;
* ``attentive`` (when the clips' tokens are given): the frozen attentive probe over every token
  of the tower's last layer (echoprime.eval.attentive_probe), the published comparisons' protocol.

Scored on the test split: MAE (with a bootstrap 95 % interval) and R² for regressions, AUC (with
its interval) for binaries. A study with an ejection fraction also gives the binary ``ef_below_40``
(EF < 40 %), the field's "reduced EF" detection task; a ``<finding>_grade`` label (a grade
index) is probed as a regression and also scored by the accuracy of the rounded prediction. A fitted linear probe folds into one linear
layer on the embedding (:func:`linear_weights`), which ``echoprime probe --head-out`` stores as a
head (echoprime.training.heads) that interpretation and Serve answer with.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from echoprime.eval.probes import NotComputable, bootstrap_auc, fit_probe

ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
"""Ridge penalties tried (on standardised features)."""
CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)
"""Inverse logistic penalties tried."""
KS: tuple[int, ...] = (5, 10, 20, 50)
"""Neighbours tried by the kNN probe."""
MIN_TRAIN = 10
"""Labelled train studies a target needs (``auto`` targets with fewer are left out)."""
UNITS: dict[str, str] = {
    "ejection_fraction": "%",
    "esv": "mL",
    "edv": "mL",
    "pulmonary_artery_pressure_continuous": "mmHg",
    "heart_rate": "bpm",
    "IVSd": "cm",
    "LVIDd": "cm",
    "LVPWd": "cm",
    "LVIDs": "cm",
}
"""Units of the label keys the dataset adapters write (docs/datasets/)."""

PUBLISHED: dict[str, list[dict[str, Any]]] = {
    "echonet-dynamic": [
        {"target": "ejection_fraction", "metric": "mae", "model": "EchoJEPA-G (frozen attentive probe)", "value": 3.97,
         "source": "EchoJEPA preprint"},
        {"target": "ejection_fraction", "metric": "mae", "model": "EchoPrime (frozen attentive probe)", "value": 4.87,
         "source": "EchoJEPA preprint"},
        {"target": "ejection_fraction", "metric": "mae", "model": "PanEcho (frozen attentive probe)", "value": 5.10,
         "source": "EchoJEPA preprint"},
        {"target": "ejection_fraction", "metric": "mae", "model": "EchoNet-Dynamic (supervised, end to end)",
         "value": 4.1, "source": "Ouyang et al., Nature 2020"},
    ],
    "echonet-pediatric": [
        {"target": "ejection_fraction", "metric": "mae", "model": "EchoPrime, probe fitted on Dynamic / refitted",
         "value": "5.10 / 4.53", "source": "EchoJEPA preprint"},
        {"target": "ejection_fraction", "metric": "mae", "model": "PanEcho, probe fitted on Dynamic / refitted",
         "value": "5.66 / 5.34", "source": "EchoJEPA preprint"},
    ],
}  # fmt: skip
"""Figures as published, shown beside ours in the report; never claimed for our model."""


@dataclass
class Studies:
    """One split's studies: ids, features ``S x D`` (the mean of their clips' embeddings), labels."""

    ids: list[str]
    x: np.ndarray
    labels: list[dict[str, float]]
    clips: np.ndarray


def study_features(emb: np.ndarray, study_ids: Sequence[Any], labels: Sequence[str | None]) -> Studies:
    """Clip rows -> one row per study (in id order): mean embedding, the study's labels.

    Raises:
        ValueError: embeddings and ids of different lengths.
    """
    from echoprime.data.shards import parse_labels

    emb = np.asarray(emb, np.float64)
    if emb.ndim != 2 or len(emb) != len(study_ids) or len(labels) != len(study_ids):
        raise ValueError(
            f"{len(emb)} embeddings, {len(study_ids)} study ids and {len(labels)} labels must match"
        )
    # Studies in id order: the same numbers whatever order the clips arrived in (Ray's actor pool).
    order = {s: i for i, s in enumerate(sorted({str(s) for s in study_ids}))}
    inv = np.array([order[str(s)] for s in study_ids], dtype=np.int64)
    n = np.bincount(inv, minlength=len(order)).astype(np.float64)
    x = np.zeros((len(order), emb.shape[1]))
    np.add.at(x, inv, emb)
    x /= np.maximum(n, 1)[:, None]
    lab: list[dict[str, float]] = [{} for _ in order]
    for i, cell in zip(inv, labels, strict=True):
        if not lab[i]:
            lab[i] = parse_labels(cell)
    return Studies(list(order), x, lab, n.astype(np.int64))


def _column(st: Studies, key: str) -> np.ndarray:
    if key == "ef_below_40":
        ef = _column(st, "ejection_fraction")
        return np.where(np.isnan(ef), np.nan, (ef < 40).astype(np.float64))
    return np.array([float(d.get(key, math.nan)) for d in st.labels], dtype=np.float64)


def choose_targets(train: Studies, wanted: Sequence[str] | None = None) -> dict[str, str]:
    """``{target: "regression" | "binary"}``: ``wanted`` (every name must be labelled on train),
    or every numeric label key with at least :data:`MIN_TRAIN` labelled train studies, plus
    ``ef_below_40`` when the ejection fraction is there.

    Raises:
        ValueError: a wanted target that the train split does not label.
    """
    keys = sorted({k for d in train.labels for k in d}) if wanted is None else list(wanted)
    if wanted is None and "ejection_fraction" in keys:
        keys.append("ef_below_40")
    out: dict[str, str] = {}
    for k in keys:
        y = _column(train, k)
        y = y[~np.isnan(y)]
        if len(y) < (MIN_TRAIN if wanted is None else 1):
            if wanted is not None:
                raise ValueError(
                    f"no train study is labelled {k!r} (labels seen: {sorted({k for d in train.labels for k in d})})"
                )
            continue
        out[k] = "binary" if set(np.unique(y)) <= {0.0, 1.0} else "regression"
    return out


def _r2(y: np.ndarray, p: np.ndarray) -> float:
    ss = float(((y - y.mean()) ** 2).sum())
    return 1.0 - float(((y - p) ** 2).sum()) / ss if ss > 0 else math.nan


def _score(
    kind: str, y: np.ndarray, p: np.ndarray, rng: np.random.Generator, n_boot: int, graded: bool = False
) -> dict[str, Any]:
    if kind == "binary":
        try:
            auc, lo, hi = bootstrap_auc(y, p, n_boot, rng)
        except NotComputable as err:
            return {"computable": False, "reason": str(err)}
        return {
            "computable": True,
            "auc": auc,
            "auc_low": lo,
            "auc_high": hi,
            "n": len(y),
            "n_pos": int(y.sum()),
        }
    err = np.abs(p - y)
    boot = err[rng.integers(0, len(err), size=(n_boot, len(err)))].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    out = {"computable": True, "mae": float(err.mean()), "mae_low": float(lo), "mae_high": float(hi),
           "r2": _r2(y, p), "n": len(y)}  # fmt: skip
    if graded:  # a grade index: also the share of studies whose rounded prediction is their grade
        out["accuracy"] = float((np.rint(p) == y).mean())
    return out


def _val_score(kind: str, y: np.ndarray, p: np.ndarray) -> float:
    """Higher is better: -MAE, or AUC (NaN when val has one class)."""
    if kind == "regression":
        return -float(np.abs(p - y).mean())
    pos = y == 1
    if pos.all() or not pos.any():
        return math.nan
    from scipy.stats import rankdata

    r = rankdata(p)
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def probe_target(
    key: str, kind: str, train: Studies, val: Studies, test: Studies, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Fit and score the probes of one target (module docstring).

    Returns:
        ``{"kind", "n_train", "n_val", "n_test", "linear": {score, "alpha" | "c", "val_score"},
        "knn": {score, "k", "val_score"}, "mean": {score}, "test": {"truth", "linear", "knn"}}``
        (``test`` holds the per-study test predictions, for plots), or ``{"kind",
        "computable": False, "reason"}``.
    """
    task = "binary" if kind == "binary" else "regression"
    data = {}
    for name, st in (("train", train), ("val", val), ("test", test)):
        y = _column(st, key)
        keep = ~np.isnan(y)
        data[name] = (st.x[keep], y[keep])
    (xtr, ytr), (xva, yva), (xte, yte) = data["train"], data["val"], data["test"]
    out: dict[str, Any] = {"kind": kind, "n_train": len(ytr), "n_val": len(yva), "n_test": len(yte)}
    if min(len(ytr), len(yva), len(yte)) == 0:
        return out | {
            "computable": False,
            "reason": f"labelled studies train/val/test {len(ytr)}/{len(yva)}/{len(yte)}",
        }
    try:
        best: dict[str, Any] = {}
        for name, grid, arg in (
            ("linear", ALPHAS if task == "regression" else CS, "alpha" if task == "regression" else "c"),
            ("knn", KS, "k"),
        ):
            tried = []
            for v in grid:
                if arg == "k" and v > len(ytr):
                    continue
                probe = fit_probe(
                    xtr, ytr, "linear" if name == "linear" else "knn", task=task, **{arg: v}, seed=seed
                )
                tried.append((_val_score(kind, yva, probe.predict(xva)), v, probe))
            finite = [t for t in tried if not math.isnan(t[0])]
            score, v, probe = max(finite, key=lambda t: t[0]) if finite else tried[len(tried) // 2]
            best[name] = (probe, {arg: v, "val_score": score})
    except NotComputable as err:
        return out | {"computable": False, "reason": str(err)}
    rng = np.random.default_rng(seed)
    out["computable"] = True
    preds = {}
    for name, (probe, chosen) in best.items():
        preds[name] = probe.predict(xte)
        out[name] = _score(kind, yte, preds[name], rng, n_boot, key.endswith("_grade")) | chosen
    if kind == "regression":
        out["mean"] = _score(kind, yte, np.full(len(yte), ytr.mean()), rng, n_boot, key.endswith("_grade"))
    else:  # a constant score ranks nothing: AUC 0.5 by definition
        out["mean"] = {"computable": True, "auc": 0.5, "auc_low": 0.5, "auc_high": 0.5, "n": len(yte),
                       "prevalence": float(ytr.mean())}  # fmt: skip
    out["test"] = {"truth": yte.tolist(), **{k: v.tolist() for k, v in preds.items()}}
    out["_linear"] = best["linear"][0]  # the fitted probe (dropped before the JSON)
    return out


def linear_weights(probe: Any) -> tuple[np.ndarray, np.ndarray]:
    """A fitted linear probe (standardiser + ridge / logistic) as one linear layer on the raw
    features: ``(W 1 x D, b 1)`` with ``W x + b`` the ridge's value or the logistic's logit."""
    scaler, head = probe.model[0], probe.model[-1]
    coef = np.asarray(head.coef_, np.float64).reshape(1, -1)
    scale = np.where(scaler.scale_ == 0, 1.0, scaler.scale_)
    w = coef / scale[None, :]
    b = np.asarray(head.intercept_, np.float64).reshape(1) - (w * scaler.mean_[None, :]).sum(1)
    return w, b


def attentive_target(
    key: str,
    kind: str,
    studies: Mapping[str, Studies],
    tokens: Mapping[str, Any],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    epochs: int | None = None,
) -> tuple[dict[str, Any], list[float]]:
    """The frozen attentive probe of one target (echoprime.eval.attentive_probe) on the splits'
    clip tokens: ``(its test score | {"weight_decay", "epoch", "epochs", "val_score"}, its per-study test
    predictions)``, scored as :func:`probe_target` scores the others. ``"epoch"`` is the best
    of the ``"epochs"`` run."""
    from echoprime.eval import attentive_probe as ap

    ys = {s: _column(studies[s], key) for s in ("train", "val", "test")}
    kw = {} if epochs is None else {"epochs": epochs}
    preds, chosen = ap.fit_and_score(
        kind, *((tokens[s], ys[s]) for s in ("train", "val", "test")), val_score=_val_score, seed=seed, **kw
    )
    keep = ~np.isnan(ys["test"])
    y, p = ys["test"][keep], preds[keep]
    score = _score(kind, y, p, np.random.default_rng(seed), n_boot, key.endswith("_grade"))
    return score | chosen, p.tolist()


def run_all(
    train: Studies,
    val: Studies,
    test: Studies,
    targets: Mapping[str, str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    tokens: Mapping[str, Any] | None = None,
    epochs: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every target: ``(metrics by target, fitted linear probes by target)``. With ``tokens``
    (``{split: ClipTokens}``), each computable target also gets the frozen attentive probe
    (``attentive``; ``epochs`` overrides its default)."""
    metrics, fitted = {}, {}
    for key, kind in targets.items():
        r = probe_target(key, kind, train, val, test, n_boot=n_boot, seed=seed)
        if "_linear" in r:
            fitted[key] = r.pop("_linear")
        if tokens is not None and r.get("computable"):
            splits = {"train": train, "val": val, "test": test}
            r["attentive"], r["test"]["attentive"] = attentive_target(
                key, kind, splits, tokens, n_boot=n_boot, seed=seed, epochs=epochs
            )
        metrics[key] = r
    return metrics, fitted


def _fmt(r: Mapping[str, Any], kind: str, unit: str) -> str:
    if not r.get("computable", True):
        return "n/a"
    if kind == "regression":
        acc = f", accuracy {r['accuracy']:.2f}" if "accuracy" in r else ""
        return f"{r['mae']:.2f} ({r['mae_low']:.2f}-{r['mae_high']:.2f}){' ' + unit if unit else ''}, R² {r['r2']:.2f}{acc}"
    return f"{r['auc']:.3f} ({r['auc_low']:.3f}-{r['auc_high']:.3f})"


def report_markdown(doc: Mapping[str, Any]) -> str:
    """``report.md`` of a probe run: the setting, a table per target, the published figures."""
    lines = [
        f"# Frozen-embedding probes: {doc.get('dataset') or doc['shards']}",
        "",
        f"Bundle `{doc['bundle_name']}` (manifest sha256 `{doc['bundle_sha256'][:16]}...`), "
        f"{doc['studies']['train']} / {doc['studies']['val']} / {doc['studies']['test']} train / val / test "
        f"studies ({doc['clips']} clips), seed {doc['seed']}, {doc['n_boot']} bootstrap resamples.",
        "For the linear and kNN probes a study is the mean of its clips' unit embeddings; penalties and k "
        "chosen on val; every probe scored on test "
        "(MAE with its 95 % interval and R² for measurements, AUC with its interval for binaries).",
        f"Protocol: {doc.get('protocol', 'own splits')}.",
        "",
    ]
    attentive = any("attentive" in r for r in doc["targets"].values())
    if attentive:
        lines += [
            "The attentive probe: a learned query attends over every token of the frozen tower's last "
            "layer, then a linear layer; weight decay and epoch chosen on val; a study's prediction is "
            "the mean of its clips' (the protocol of the published comparisons).",
            "",
        ]
    lines += [
        f"| target | kind | n test |{' attentive |' if attentive else ''} linear | kNN | train mean (floor) |",
        f"| --- | --- | --- |{' --- |' if attentive else ''} --- | --- | --- |",
    ]
    for key, r in doc["targets"].items():
        kind, unit = r["kind"], UNITS.get(key, "")
        if not r.get("computable"):
            blank = " |" * (3 if attentive else 2)
            lines.append(f"| {key} | {kind} | {r.get('n_test', 0)} | n/a: {r.get('reason', '')} |{blank}")
            continue
        att = f" {_fmt(r['attentive'], kind, unit)} |" if attentive else ""
        lines.append(
            f"| {key} | {kind} | {r['n_test']} |{att} {_fmt(r['linear'], kind, unit)} | {_fmt(r['knn'], kind, unit)} "
            f"| {_fmt(r['mean'], kind, unit)} |"
        )
    pub = PUBLISHED.get(doc.get("dataset") or "", [])
    if pub:
        lines += [
            "",
            "## Published figures on this dataset (as published; other models, other protocols: beside ours, not ours)",
            "",
            "| target | metric | model | value | source |",
            "| --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {p['target']} | {p['metric']} | {p['model']} | {p['value']} | {p['source']} |" for p in pub
        ]
    if doc.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{k}]({v})" for k, v in doc["plots"].items()]
    if doc.get("head"):
        lines += ["", f"The linear probe of `{doc['head']['target']}` is a head of bundle `{doc['head']['bundle_name']}` "
                  "(`tasks` in `interpret` and Serve results)."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_plots(metrics: Mapping[str, Any], out: Any) -> dict[str, str]:
    """Predicted against true and Bland-Altman, per regression target (linear probe, test split)."""
    from pathlib import Path

    from echoprime.eval.plots import _plt, _save

    plt = _plt()
    made = {}
    for key, r in metrics.items():
        if r.get("kind") != "regression" or not r.get("computable"):
            continue
        y, p = np.array(r["test"]["truth"]), np.array(r["test"]["linear"])
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
        lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
        a.scatter(y, p, s=10, alpha=0.7)
        a.plot([lo, hi], [lo, hi], "k--", lw=1)
        a.set_xlabel(f"true {key} ({UNITS.get(key, '')})")
        a.set_ylabel("predicted (linear probe)")
        a.set_title(f"{key}: MAE {r['linear']['mae']:.2f}, R² {r['linear']['r2']:.2f}")
        m, d = (y + p) / 2, p - y
        b.scatter(m, d, s=10, alpha=0.7)
        bias, sd = float(d.mean()), float(d.std())
        for v, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
            b.axhline(v, color="k", ls=style, lw=1)
        b.set_xlabel("mean of true and predicted")
        b.set_ylabel("predicted - true")
        b.set_title(f"Bland-Altman: bias {bias:+.2f}, limits ±{1.96 * sd:.2f}")
        name = f"probe_{key}.png"
        _save(fig, Path(out) / name)
        made[key] = name
    return made


def to_json(doc: Mapping[str, Any]) -> str:
    """The metrics document as JSON (NaN written as null, as a StudyResult is)."""
    from echoprime.inference.result import json_ready

    return json.dumps(json_ready(dict(doc)), indent=2)
