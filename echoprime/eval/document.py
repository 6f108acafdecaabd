"""The evaluation's headline numbers and its Markdown report (tables + figures, readable on GitHub)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from echoprime.taxonomy import BINARY_PHENOTYPES, REGRESSION_PHENOTYPES

ORDER = ("one_frame", "one_video", "mean", "table", "attention")


def jsonable(x: Any) -> Any:
    """Metrics -> plain JSON values: numpy scalars and arrays to Python, NaN and inf to None."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _f(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def headline(m: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers the project stands behind, flat (None where a section was skipped)."""
    r = m.get("retrieval", {})
    cs, zs = m.get("clinical", {}).get("summary", {}), m.get("zero_shot", {}).get("summary", {})
    hs = m.get("hidden", {}).get("summary", {})
    study = r.get("study", {})
    out: dict[str, Any] = {
        "test_studies": m["splits"]["test"]["studies"],
        "v2t_r@1_study": study.get("v2t", {}).get("r@1"),
        "t2v_r@1_study": study.get("t2v", {}).get("r@1"),
        "v2t_r@10_study": study.get("v2t", {}).get("r@10"),
        "t2v_r@10_study": study.get("t2v", {}).get("r@10"),
        "chance_r@10_study": study.get("v2t", {}).get("chance_r@10"),
        "v2t_r@10_video": r.get("video", {}).get("v2t", {}).get("r@10"),
        "t2v_r@10_video": r.get("video", {}).get("t2v", {}).get("r@10"),
        "ef_mae_knn": cs.get("ejection_fraction_mae_knn"),
        "ef_mae_linear": cs.get("ejection_fraction_mae_linear"),
        "ef_mae_train_mean": cs.get("ejection_fraction_mae_train_mean"),
        "pasp_mae_knn": cs.get("pulmonary_artery_pressure_continuous_mae_knn"),
        "pasp_mae_linear": cs.get("pulmonary_artery_pressure_continuous_mae_linear"),
        "pasp_mae_train_mean": cs.get("pulmonary_artery_pressure_continuous_mae_train_mean"),
        "mean_auc_knn": cs.get("mean_auc_knn"),
        "mean_auc_linear": cs.get("mean_auc_linear"),
        "mean_auc_zero_shot": zs.get("mean_auc_zero_shot"),
        "binary_phenotypes_scored": cs.get("binary_phenotypes_scored"),
        "hidden_mean_auc_knn": hs.get("mean_auc_knn"),
        "hidden_mean_auc_linear": hs.get("mean_auc_linear"),
        "view_accuracy": m.get("views", {}).get("accuracy"),
    }
    gs = m.get("graded", {}).get("summary", {})
    out |= {
        "grade_accuracy_knn": gs.get("grade_accuracy_knn"),
        "grade_qwk_knn": gs.get("grade_qwk_knn"),
        "grade_accuracy_linear": gs.get("grade_accuracy_linear"),
        "grade_qwk_linear": gs.get("grade_qwk_linear"),
        "interval_coverage_mean": gs.get("interval_coverage_mean"),
        "ef_interval_coverage": gs.get("ejection_fraction_interval_coverage"),
        "pasp_interval_coverage": gs.get("pulmonary_artery_pressure_continuous_interval_coverage"),
        "heart_rate_interval_coverage": gs.get("heart_rate_interval_coverage"),
        "ece_raw_mean": gs.get("ece_raw_mean"),
        "ece_calibrated_mean": gs.get("ece_calibrated_mean"),
    }
    for name, v in m.get("ablation", {}).get("variants", {}).items():
        s = v.get("summary", {})
        out[f"ablation_{name}_mean_auc_knn"] = s.get("mean_auc_knn_all")
        out[f"ablation_{name}_mean_auc_linear"] = s.get("mean_auc_linear_all")
        out[f"ablation_{name}_view_limited_auc_knn"] = s.get("mean_auc_knn_view_limited")
    return out


def format_headline(h: Mapping[str, Any]) -> str:
    """The headline as a plain-text table for the terminal."""
    lines = [
        f"test studies                         {h['test_studies']}",
        f"retrieval R@1, study level           video->text {_f(h.get('v2t_r@1_study'))}  text->video "
        f"{_f(h.get('t2v_r@1_study'))}",
        f"retrieval R@10, study level          video->text {_f(h['v2t_r@10_study'])}  text->video "
        f"{_f(h['t2v_r@10_study'])}  (chance {_f(h['chance_r@10_study'])})",
        f"retrieval R@10, video level          video->text {_f(h['v2t_r@10_video'])}  text->video {_f(h['t2v_r@10_video'])}",
        f"EF MAE (%)                           kNN {_f(h['ef_mae_knn'], 2)}  probe {_f(h['ef_mae_linear'], 2)}  "
        f"train mean {_f(h['ef_mae_train_mean'], 2)}",
        f"PASP MAE (mmHg)                      kNN {_f(h.get('pasp_mae_knn'), 2)}  probe "
        f"{_f(h.get('pasp_mae_linear'), 2)}  train mean {_f(h.get('pasp_mae_train_mean'), 2)}",
        f"mean AUC, {h['binary_phenotypes_scored'] or 0} binary phenotypes      kNN {_f(h['mean_auc_knn'])}  probe "
        f"{_f(h['mean_auc_linear'])}  zero-shot {_f(h['mean_auc_zero_shot'])}",
        f"hidden diagnoses mean AUC            kNN {_f(h['hidden_mean_auc_knn'])}  probe {_f(h['hidden_mean_auc_linear'])}",
        f"view accuracy                        {_f(h['view_accuracy'])}",
        f"graded findings (kNN / probe)        accuracy {_f(h.get('grade_accuracy_knn'))} / "
        f"{_f(h.get('grade_accuracy_linear'))}  weighted kappa {_f(h.get('grade_qwk_knn'))} / {_f(h.get('grade_qwk_linear'))}",
        f"80 % interval coverage               EF {_f(h.get('ef_interval_coverage'))}  PASP "
        f"{_f(h.get('pasp_interval_coverage'))}  heart rate {_f(h.get('heart_rate_interval_coverage'))}",
        f"mean ECE, binaries                   raw {_f(h.get('ece_raw_mean'))}  calibrated {_f(h.get('ece_calibrated_mean'))}",
        "ablation mean AUC (kNN / probe)      "
        + "  ".join(
            f"{n} {_f(h.get(f'ablation_{n}_mean_auc_knn'))}/{_f(h.get(f'ablation_{n}_mean_auc_linear'))}"
            for n in (*ORDER, "oracle")
            if h.get(f"ablation_{n}_mean_auc_knn") is not None
        ),
    ]
    return "\n".join(lines)


def _auc_cell(res: Mapping[str, Any]) -> str:
    if not res.get("computable"):
        return f"not computable ({res.get('reason', '')})"
    return f"{res['auc']:.3f} [{res['auc_low']:.2f}, {res['auc_high']:.2f}]"


def _decision_cell(res: Mapping[str, Any]) -> str:
    if not res.get("computable") or "sensitivity" not in res:
        return ""
    return f"{res['sensitivity']:.2f} / {res['specificity']:.2f} @ {res['threshold']:.2f}"


def _mae_cell(res: Mapping[str, Any]) -> str:
    if not res.get("computable"):
        return f"not computable ({res.get('reason', '')})"
    return f"{res['mae']:.2f} [{res['mae_low']:.2f}, {res['mae_high']:.2f}]"


def _img(plots: Mapping[str, str], name: str, alt: str) -> list[str]:
    return [f"![{alt}]({plots[name]})", ""] if name in plots else []


def ablation_findings(m: Mapping[str, Any]) -> list[str]:
    """Plain statements of what the ablation shows: whether the expected ordering holds, and what
    the oracle table and the tables' alignment with visibility say about why not."""
    v = m["ablation"]["variants"]
    out = []
    for method in ("knn", "linear"):
        key = f"mean_auc_{method}_view_limited"
        vals = [
            (n, v[n]["summary"][key])
            for n in ORDER
            if v.get(n, {}).get("present") and v[n]["summary"].get(key) is not None
        ]
        names = [n for n, _ in vals]
        seq = [x for _, x in vals]
        weighted = max((x for n, x in vals if n in ("table", "attention")), default=None)
        holds = (
            len(seq) >= 4
            and seq[names.index("one_frame")] < seq[names.index("one_video")] < seq[names.index("mean")]
            and weighted is not None
            and weighted > seq[names.index("mean")]
        )
        desc = ", ".join(f"{n} {x:.3f}" for n, x in vals)
        out.append(
            f"- **{method}, view-limited findings**: {desc}. Expected ordering one frame < one video < mean < "
            f"table/attention: **{'holds' if holds else 'does not hold'}**."
        )
    if v.get("oracle", {}).get("present"):
        o, t = v["oracle"]["summary"], v["table"]["summary"] if v.get("table", {}).get("present") else {}
        mean = v["mean"]["summary"]
        out.append(
            f"- The generator's visibility table (oracle) gives mean kNN AUC {_f(o['mean_auc_knn_all'])} "
            f"(view-limited {_f(o['mean_auc_knn_view_limited'])}) against {_f(mean['mean_auc_knn_all'])} for the "
            f"plain average and {_f(t.get('mean_auc_knn_all'))} for the bundle's learned table: "
            + (
                "weighting videos by the views that show a section helps on these embeddings, so a learned "
                "table that falls short of the oracle points at the attention fit, not at the data."
                if (o["mean_auc_knn_all"] or 0) > (mean["mean_auc_knn_all"] or 0)
                else "even the right weighting does not help on these embeddings: the video embeddings carry "
                "too little of the findings for any weighting to matter (pretraining, not attention)."
            )
        )
    cs = m.get("clinical", {}).get("summary", {})
    knn, lin = cs.get("mean_auc_knn"), cs.get("mean_auc_linear")
    if knn is not None and lin is not None and lin - knn > 0.03:
        out.append(
            f"- On the same section embeddings the linear probe reaches mean AUC {lin:.3f} and the bank's kNN "
            f"{knn:.3f}: the video embeddings hold findings that their nearest report texts do not carry, "
            "so the video-text alignment (pretraining) limits what retrieval recovers."
        )
    for name, t in m.get("attention_tables", {}).get("tables", {}).items():
        a = t.get("alignment_with_visibility")
        if a:
            out.append(
                f"- {name}: alignment with the visibility table, mean per-section AUC {_f(a['mean_auc'])} "
                f"(0.5 = unrelated, 1 = every visible view above every invisible one), correlation "
                f"{_f(a['mean_correlation'])}, Spearman rho {_f(a.get('mean_spearman'))}."
            )
    return out


def write_report(m: Mapping[str, Any], plots: Mapping[str, str], context: Mapping[str, Any]) -> str:
    """The Markdown report: headline, then one section per task with its table and figure."""
    h = headline(m)
    L = [f"# Evaluation of `{context['bundle']}`", ""]
    L += [
        f"Shards `{context['shards']}`; test split {m['splits']['test']['studies']} studies / "
        f"{m['splits']['test']['clips']} clips (train {m['splits']['train']['studies']}, val "
        f"{m['splits']['val']['studies']}); kNN k = {m['k']}; bootstrap {context.get('n_boot')} resamples; "
        f"seed {context.get('seed')}; {context.get('created', '')}.",
        "",
        "## Headline",
        "",
        "```",
        format_headline(h),
        "```",
        "",
    ]
    r = m["retrieval"]
    L += ["## Retrieval (test split)", ""]
    if "skipped" in r:
        L += [f"Skipped: {r['skipped']}.", ""]
    else:
        L += [
            "| level | direction | queries | pool | R@1 | R@5 | R@10 | median rank | chance R@10 |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for lvl in ("video", "study"):
            for d, name in (("v2t", "video -> text"), ("t2v", "text -> video")):
                x = r[lvl][d]
                L.append(
                    f"| {lvl} | {name} | {x['queries']} | {x['pool']} | {x['r@1']:.3f} | {x['r@5']:.3f} | "
                    f"{x['r@10']:.3f} | {x['median_rank']:.0f} | {x['chance_r@10']:.3f} |"
                )
        L += [
            "",
            "Video level: each clip ranks the split's study reports; each report ranks the clips (a hit "
            "when any clip of its study is in the top k). Study level: the normalised mean of a study's "
            "clip embeddings against its report.",
            "",
        ]
        L += _img(plots, "retrieval", "retrieval recall")
    L += _clinical_section(m, plots)
    L += _graded_section(m, plots)
    L += _hidden_section(m)
    L += ["## Ablation (Fig 2A form)", ""]
    a = m["ablation"]
    L += [
        f"Same tasks from section embeddings built six ways; single-video variants averaged over {a['draws']} "
        f"draws. View-limited findings (drawn in at most 2 of the 11 views): {', '.join(a['view_limited'])}.",
        "",
        "| variant | kNN mean AUC | probe mean AUC | kNN view-limited | probe view-limited | EF MAE kNN | EF MAE probe |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in a["variants"].values():
        if not v.get("present"):
            L.append(f"| {v['description']} | not present in this bundle | | | | | |")
            continue
        s = v["summary"]
        note = f" ({v['note']})" if v.get("note") else ""
        L.append(
            f"| {v['description']}{note} | {_f(s['mean_auc_knn_all'])} | {_f(s['mean_auc_linear_all'])} | "
            f"{_f(s['mean_auc_knn_view_limited'])} | {_f(s['mean_auc_linear_view_limited'])} | "
            f"{_f(s['ejection_fraction_mae_knn'], 2)} | {_f(s['ejection_fraction_mae_linear'], 2)} |"
        )
    L += ["", *ablation_findings(m), ""]
    L += _img(plots, "ablation", "ablation")
    L += _views_section(m, plots)
    L += _zero_shot_section(m, plots)
    L += ["## Method notes", "", *[f"- {n}" for n in context.get("notes", [])], ""]
    return "\n".join(L)


def _clinical_section(m: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    c = m["clinical"]
    L = [
        "## Clinical tasks (Fig 2B form)",
        "",
        "Each phenotype from its own section embedding (the bundle's attention). kNN: mean label of the "
        "k nearest training reports in the bank, decision at the bundle's fitted threshold. Probe: "
        "linear probe fitted on the train split, threshold fitted on the val split (Youden's J).",
        "",
        "| phenotype | pos / neg | kNN AUC [95 % CI] | kNN sens / spec | kNN ECE | probe AUC [95 % CI] | probe sens / spec | probe ECE |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in BINARY_PHENOTYPES:
        e = c[p]
        k, lin = e["knn"], e["linear"]
        counts = f"{k.get('n_pos', '?')} / {k.get('n_neg', '?')}"
        L.append(
            f"| {p} | {counts} | {_auc_cell(k)} | {_decision_cell(k)} | {_f(k.get('ece'))} | {_auc_cell(lin)} | "
            f"{_decision_cell(lin)} | {_f(lin.get('ece'))} |"
        )
    L += [
        "",
        "| regression | kNN MAE [95 % CI] | probe MAE [95 % CI] | train-mean MAE |",
        "|---|---|---|---|",
    ]
    for p in REGRESSION_PHENOTYPES:
        e = c[p]
        base = e["knn"].get("baseline_mae", e["linear"].get("baseline_mae"))
        L.append(f"| {p} | {_mae_cell(e['knn'])} | {_mae_cell(e['linear'])} | {_f(base, 2)} |")
    s = c["summary"]
    L += [
        "",
        f"Mean AUC over the {s['binary_phenotypes_scored']} binaries computable for both: kNN "
        f"{_f(s['mean_auc_knn'])}, probe {_f(s['mean_auc_linear'])}.",
        "",
    ]
    cal = m.get("calibration", {})
    if cal:
        L += [
            "Calibration, all binaries pooled: "
            + ", ".join(
                f"{k} ECE {_f(v.get('ece'))} (n {v.get('n')})" for k, v in cal.items() if v.get("computable")
            )
            + ".",
            "",
        ]
    L += _img(plots, "clinical_auc", "AUC per phenotype") + _img(plots, "calibration", "reliability")
    return L


def _hidden_section(m: Mapping[str, Any]) -> list[str]:
    hd = m["hidden"]
    L = ["## Beyond the report: hidden diagnoses", ""]
    if "skipped" in hd:
        return [*L, f"Skipped: {hd['skipped']}.", ""]
    L += [
        "Diagnoses the generator never writes into a report. kNN probe (k = 10, cosine) and linear probe on "
        "the study embedding (normalised mean of the clip embeddings), trained on the train split.",
        "",
        "| diagnosis | pos / neg | kNN AUC [95 % CI] | probe AUC [95 % CI] |",
        "|---|---|---|---|",
    ]
    for name, e in hd.items():
        if name == "summary":
            continue
        k = e["knn"]
        L.append(
            f"| {name} | {k.get('n_pos', '?')} / {k.get('n_neg', '?')} | {_auc_cell(k)} | {_auc_cell(e['linear'])} |"
        )
    return [*L, ""]


def _views_section(m: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    v = m["views"]
    L = ["## Views", ""]
    if not v.get("computable"):
        L += [f"View accuracy not computable: {v.get('reason')}.", ""]
    else:
        L += [f"Accuracy {v['accuracy']:.3f} on {v['n']} test clips.", "", "| view | recall |", "|---|---|"]
        L += [f"| {name} | {_f(x)} |" for name, x in v["per_view_recall"].items()]
        L += [""]
        L += _img(plots, "view_confusion", "view confusion matrix")
    L += _img(plots, "attention_vs_visibility", "learned attention next to the visibility table")
    return L


def _zero_shot_section(m: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    zs = m["zero_shot"]
    L = ["## Zero-shot (text prompts, no labels)", ""]
    if "skipped" in zs:
        return [*L, f"Skipped: {zs['skipped']}.", ""]
    L += [
        "Score: similarity of the phenotype's section embedding to positive prompts minus negative prompts, "
        "built from the phrase vocabulary (e.g. 'Aortic Valve: Severe aortic regurgitation. [SEP]' vs 'Aortic "
        "Valve: No aortic regurgitation is seen. [SEP]'). Regressions: mean value of the 5 nearest prompts of a grid.",
        "",
        "| phenotype | zero-shot | kNN |",
        "|---|---|---|",
    ]
    for name, e in zs.items():
        if name == "summary":
            continue
        cell = _auc_cell if e["kind"] == "binary" else _mae_cell
        L.append(f"| {name} | {cell(e['zero_shot'])} | {cell(e['knn'])} |")
    s = zs["summary"]
    L += ["", f"Mean AUC: zero-shot {_f(s['mean_auc_zero_shot'])}, kNN {_f(s['mean_auc_knn'])}.", ""]
    return L + _img(plots, "zeroshot", "zero-shot vs kNN")


def _graded_section(m: Mapping[str, Any], plots: Mapping[str, str]) -> list[str]:
    g = m.get("graded", {})
    L = ["## Graded findings, measurement intervals, calibration", ""]
    if "skipped" in g or not g:
        return [*L, f"Skipped: {g.get('skipped', 'not computed')}.", ""]
    L += [
        "Grades: the true grade is what the test study's report states; kNN = the grade the "
        "neighbours' vote gives on the side of the binary decision (as interpretation reports it); "
        "probe = a ridge probe on the grade index from the section embedding, rounded. Kappa is "
        "quadratic-weighted (1 perfect, 0 chance).",
        "",
        "| finding | scale | n | kNN accuracy | kNN within one | kNN kappa | probe accuracy | probe kappa |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for ph, e in g["grades"].items():
        kn, li = e["knn"], e.get("linear", {})
        if not kn.get("computable"):
            L.append(f"| {ph} | {' / '.join(e['scale'])} | not computable ({kn.get('reason')}) | | | | | |")
            continue
        L.append(
            f"| {ph} | {' / '.join(e['scale'])} | {kn['n']} | {_f(kn['accuracy'])} | {_f(kn['within_one'])} | "
            f"{_f(kn['qwk'])} | {_f(li.get('accuracy')) if li.get('computable') else 'n/a'} | "
            f"{_f(li.get('qwk')) if li.get('computable') else 'n/a'} |"
        )
    L += ["", *_img(plots, "grade_confusion", "grade confusion matrices")]
    L += [
        "Intervals: split-conformal, scaled by the neighbours' spread, fitted on the validation split "
        "(echoprime.retrieval.calibration); coverage is the share of test studies whose true value lies inside.",
        "",
        "| measurement | n | MAE | nominal | coverage | mean width |",
        "|---|---|---|---|---|---|",
    ]
    for name, v in g["intervals"].items():
        if not v.get("computable"):
            L.append(f"| {name} | not computable ({v.get('reason')}) | | | | |")
            continue
        L.append(
            f"| {name} ({v['unit']}) | {v['n']} | {v['mae']:.2f} | {v['level']:.0%} | {v['coverage']:.3f} | "
            f"{v['mean_width']:.1f} |"
        )
    L += [
        "",
        "Calibration: expected calibration error (10 equal-width bins) of the raw kNN vote share and of the "
        "bundle's calibrated probability (a Platt or isotonic map fitted on the validation split).",
        "",
        "| finding | map | n | ECE raw | ECE calibrated |",
        "|---|---|---|---|---|",
    ]
    for ph, c in g["calibration"].items():
        if not c.get("computable"):
            L.append(f"| {ph} | not computable ({c.get('reason')}) | | | |")
            continue
        L.append(f"| {ph} | {c['method']} | {c['n']} | {c['ece_raw']:.3f} | {c['ece_calibrated']:.3f} |")
    s = g["summary"]
    L += [
        f"| **mean** | | | **{_f(s.get('ece_raw_mean'))}** | **{_f(s.get('ece_calibrated_mean'))}** |",
        "",
        *_img(plots, "reliability", "reliability diagrams before and after calibration"),
    ]
    return L
