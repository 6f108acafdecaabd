"""The main job: the whole echoprime pipeline end to end on a local Ray, in minutes.

Starts a local Ray (or joins the one in the config), then runs each stage into its own folder
under --out and records its status, wall time and headline numbers in DIR/summary.json:

  synth/      a synthetic cohort of echo studies (parallel Ray tasks): train/val studies, and
              synth.test_studies (200) test studies from a seed namespace no training step reaches
  shards/     the cohort ingested into Parquet study shards (Ray Data)
  bundle/     the model bundle, stage by stage:
                pretrained/  video-report pretraining (Ray Train; train.num_workers workers)
                views/       the view classifier (Ray Train)
                mil/         the anatomical attention (per-section weights over a study's videos)
                bank/        the candidate report bank, thresholds, and the committed manifest
  interpret/  one held-out study interpreted, next to its true report and labels
  eval/       the bundle evaluated on the test split (metrics.json, report.md, figures)
  serve/      the bundle served as the Ray Serve graph; the same study sent over HTTP

Every later capability of the project joins this job as a stage. With configs/tiny-cpu.yaml
(the default) it runs on a 2-core laptop without a GPU in under 10 minutes.

Example:
  echoprime quickstart --out quickstart-out
  echoprime quickstart --out /tmp/qs synth.studies=120 train.time_budget_s=60
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from echoprime.commands import add_config_arguments, default_config_path
from echoprime.config import EchoPrimeConfig
from echoprime.interpret_cli import format_result
from echoprime.runlog import StageRecord, ensure_writable_dir
from echoprime.taxonomy import PHENOTYPE_BY_NAME


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="quickstart-out", help="output folder (default: ./quickstart-out)")
    p.add_argument("--clean", action="store_true", help="delete the output folder first")
    add_config_arguments(p, default=default_config_path())


def say(stage: str, text: str) -> None:
    """One line (or block) of a stage's progress, as ``[stage] text``."""
    print(f"[{stage}] {text}", flush=True)


def prepare_output(cfg: EchoPrimeConfig, out: Path, clean: bool) -> None:
    """Empty ``out`` with ``clean``, make sure it is writable and say where the run goes."""
    if clean and out.exists():
        shutil.rmtree(out)
    ensure_writable_dir(out)
    print(f"echoprime quickstart: config {cfg.name}, output {out.resolve()}", flush=True)


def stage_config(cfg: EchoPrimeConfig, out: Path) -> EchoPrimeConfig:
    """The config the stages run with: training runs kept under ``out/runs``."""
    return cfg.replace(train={**cfg.train.model_dump(), "storage_path": str(out / "runs")})


def cohort_secret(seed: int) -> tuple[bytes, str]:
    """The pseudonym key of the quickstart's ingest.

    The cohort is synthetic (no patient behind any id), so its pseudonyms are keyed with a
    secret made from the seed: the same run gives the same shards, ids included. A real
    archive's ingest uses $ECHOPRIME_SITE_SECRET or a one-off secret."""
    return hashlib.sha256(f"echoprime synthetic cohort, seed {seed}".encode()).digest(), "synthetic-seed"


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _without(*keys: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda res: {k: v for k, v in res.items() if k not in keys}


# stage -> (the numbers of its result that summary.json records, its progress line)
_STAGES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], Callable[[dict[str, Any]], str]]] = {
    "synth": (
        _without("out"),
        lambda r: (
            f"{r['studies']} studies, {r['videos']} videos, splits {r['splits']} ({r['videos_per_s']} videos/s)"
        ),
    ),
    "ingest": (
        _without("out"),
        lambda r: f"rows {r['rows']}, studies {r['studies']}, {r['rejects']} rejected ({r['wall_s']} s)",
    ),
    "pretrain": (
        _without("out", "run"),
        lambda r: (
            f"{r['steps']} steps, loss {r['loss_first']:.2f} -> {r['loss_last']:.2f}; val video->report "
            f"R@1/5/10 {r['val_v2t_r@1']:.2f}/{r['val_v2t_r@5']:.2f}/{r['val_v2t_r@10']:.2f} "
            f"(chance R@10 {r['chance_r@10']:.2f}); {r['clips_per_s']:.0f} clips/s, data wait {100 * r['data_wait_frac']:.0f} %"
        ),
    ),
    "views": (
        _without(),
        lambda r: (
            f"view accuracy {r['val_accuracy']:.3f} on {r['val_clips']} val clips (chance {r['chance']:.3f})"
        ),
    ),
    "mil": (
        _without(),
        lambda r: ", ".join(f"{k} {v}" for k, v in r.items() if k.startswith(("val_section", "alignment"))),
    ),
    "bank": (
        _without(),
        lambda r: (
            f"{r['bank_reports']} reports; thresholds for {r['thresholds_fitted']} phenotypes; bundle committed"
        ),
    ),
    "evaluate": (
        lambda r: {k: v for k, v in r.items() if k != "out" and not isinstance(v, dict | list)},
        lambda r: "\n  ".join(f"{k}: {_fmt(v)}" for k, v in r.items() if k != "out"),
    ),
}


def report_stage(stage: str, st: StageRecord, res: dict[str, Any]) -> None:
    """Record a stage's headline numbers in the summary and print its progress line."""
    numbers, line = _STAGES[stage]
    st.record(**numbers(res))
    say(stage, line(res))


def held_out_study(synth_dir: Path) -> tuple[str, list[Path], dict[str, Any]]:
    """The first test-split study of the cohort: (study id, its video files, its row in studies.parquet)."""
    studies = {r["study_id"]: r for r in pq.read_table(synth_dir / "studies.parquet").to_pylist()}
    videos = pq.read_table(synth_dir / "manifest.parquet").to_pylist()
    sid = sorted(s for s, r in studies.items() if r["split"] == "test")[0]
    files = [synth_dir / v["path"] for v in videos if v["study_id"] == sid]
    return sid, files, studies[sid]


def compare_with_truth(result: dict[str, Any], truth: dict[str, Any]) -> dict[str, Any]:
    """Headline agreement of an interpretation with a synthetic study's true labels."""
    labels = json.loads(truth["labels"])
    agree = total = 0
    rows = []
    for name, m in result["metrics"].items():
        t = labels.get(name)
        if t is None or m["value"] is None:
            continue
        if PHENOTYPE_BY_NAME[name].kind == "binary":
            total += 1
            ok = bool(m["decision"]) == bool(t)
            agree += ok
            rows.append(
                (
                    name,
                    f"p={m['value']:.2f} -> {'present' if m['decision'] else 'absent'}",
                    "present" if t else "absent",
                    ok,
                )
            )
        else:
            rows.append((name, f"{m['value']:.1f}", f"{t:.0f}", abs(m["value"] - t)))
    return {"binary_agreement": agree / max(total, 1), "binary_total": total, "rows": rows}


def interpret_held_out(
    st: StageRecord, synth_dir: Path, bundle: Path, out: Path
) -> tuple[str, list[Path], dict[str, Any]]:
    """The interpret stage: the cohort's first held-out study through :class:`StudyInterpreter`,
    saved as ``out/interpret/<study>.json`` and printed beside its true report and labels.

    Returns:
        (study id, its video files, the interpretation as a dict) for the serve stage.
    """
    # torch comes with the interpreter (~2 s): `echoprime --help` imports this module.
    from echoprime.inference import StudyInterpreter

    sid, files, truth = held_out_study(synth_dir)
    interp = StudyInterpreter.from_bundle(bundle)
    result = interp.interpret(files).to_dict()
    (out / "interpret").mkdir(exist_ok=True)
    (out / "interpret" / f"{sid}.json").write_text(json.dumps(result, indent=2))
    cmp = compare_with_truth(result, truth)
    st.record(
        study=sid,
        videos=len(files),
        binary_agreement=round(cmp["binary_agreement"], 3),
        ef_pred=result["metrics"]["ejection_fraction"]["value"],
        ef_true=json.loads(truth["labels"])["ejection_fraction"],
    )
    say("interpret", f"held-out study {sid} ({len(files)} videos):\n{format_result(result)}")
    say("interpret", f"true report:\n  {truth['report']}")
    say(
        "interpret",
        "predicted vs true: " + "; ".join(f"{n} {p} vs {t}" for n, p, t, _ in cmp["rows"]),
    )
    return sid, files, result


def same_interpretation(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-4) -> bool:
    """The served answer and the in-process one agree: report texts, decisions, values to ``tol``."""
    if [r["text"] for r in a["report"]] != [r["text"] for r in b["report"]]:
        return False
    for name, m in b["metrics"].items():
        o = a["metrics"].get(name)
        if o is None or o.get("decision") != m.get("decision"):
            return False
        if (o["value"] is None) != (m["value"] is None):
            return False
        if m["value"] is not None and abs(o["value"] - m["value"]) > tol * max(1.0, abs(m["value"])):
            return False
    return True


def report_served(
    st: StageRecord, sid: str, answer: dict[str, Any], result: dict[str, Any], out: Path, t0: float
) -> None:
    """The serve stage's record: the HTTP answer for study ``sid`` (saved as
    ``out/serve/<study>.json``) against the in-process ``result``; ``t0`` is when serving began.

    Raises:
        RuntimeError: the two interpretations differ.
    """
    (out / "serve").mkdir(exist_ok=True)
    (out / "serve" / f"{sid}.json").write_text(json.dumps(answer, indent=2))
    same = same_interpretation(answer, result)
    st.record(
        study=sid,
        http_status=200,
        same_as_in_process=same,
        round_trip_s=round(time.perf_counter() - t0, 1),
    )
    say(
        "serve",
        f"POST /v1/interpret for {sid}: {answer['status']}, report of {len(answer['report'])} sections; "
        f"{'the same' if same else 'NOT the same'} as the in-process interpretation",
    )
    if not same:
        raise RuntimeError("the served graph's answer differs from StudyInterpreter's for " + sid)


def print_summary(result: dict[str, Any], out: Path, wall: float) -> int:
    """The closing table of every stage; the exit status (0 when every stage passed)."""
    print(
        f"\nquickstart finished in {wall:.0f} s; status {result['status']}; summary: {out / 'summary.json'}"
    )
    for name, st in result["stages"].items():
        nums = {k: v for k, v in st.items() if k not in ("status", "wall_s")}
        print(f"  {name:<10} {st['status']:<7} {st['wall_s']:>7.1f} s  {json.dumps(nums, default=str)[:160]}")
    return 0 if result["status"] == "ok" else 1
